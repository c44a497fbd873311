"""Methods text for downloaded INDI data."""

import pandas as pd
import pytest

from brainage.report import methods, sources
from brainage.report.inputs import check_config
from brainage.errors import ConfigError


def _entry(**overrides):
    entry = {"name": "abide_pcp", "pipeline": "cpac", "strategy": "filt_global", "derivative": "rois_cc200",
             "sites": [], "age_min": None, "age_max": None, "max_subjects": None, "qc_pass": False,
             "task": "rest", "sessions": []}
    return entry | overrides


def _config(*entries):
    return {"inputs": {"source": "indi"}, "datasets": list(entries), "extract": {"min_frames": 40},
            "indi": {"bucket": "fcp-indi", "endpoint_url": "http://127.0.0.1:9000"}}


def test_data_text_names_source_pipeline_and_filters():
    text = sources.data_text(_config(_entry(sites=["NYU", "KKI"], age_min=8, max_subjects=50, qc_pass=True)))
    assert "bucket fcp-indi at http://127.0.0.1:9000" in text
    assert "ABIDE I (Di Martino et al. 2014)" in text and "pipeline cpac with strategy filt_global" in text
    assert "band-pass filtering (0.01-0.1 Hz) and global signal regression" in text
    assert "sites NYU, KKI; ages 8-any years; subjects passing every PCP functional QC rating; " \
           "a seeded random sample of 50 subjects" in text
    assert "(selected:" not in sources.data_text(_config(_entry()))


def test_series_are_described_as_distributed_only_when_every_dataset_is_series():
    config = _config(_entry(strategy="nofilt_noglobal"))
    text = sources.denoising_text(config)
    assert "neither band-pass filtering nor global signal regression" in text and "cc200 atlas" in text
    assert "fewer than 40 frames" in text
    assert "rois_cc200 files" in sources.features_text(config)
    mixed = _config(_entry(), _entry(name="adhd200"))
    assert sources.denoising_text(mixed) is None and sources.features_text(mixed) is None
    assert sources.denoising_text(_config(_entry(derivative="func_preproc"))) is None


def test_methods_use_the_indi_text_and_tolerate_missing_motion():
    config = _config(_entry())
    cohort = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "site": ["NYU", "KKI"], "age": [10.0, 20.0],
                           "sex": ["M", "F"], "n_timepoints": [100, 100], "n_frames_kept": [100, 90],
                           "mean_fd": [float("nan")] * 2})
    text = methods.data_text(config, cohort, 3)
    assert text.startswith("The data were downloaded from the INDI archive")
    assert "framewise displacement" not in text and "2 were analysed" in text


def test_report_config_check_names_missing_indi_keys():
    with pytest.raises(ConfigError, match=r"indi, datasets|datasets.*indi|indi.*datasets"):
        check_config({"seed": 1, "inputs": {"source": "indi"}, "datasets": []})
