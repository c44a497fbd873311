"""ABIDE PCP ``.1D`` ROI series -> brainage ROI series + QC record (brainage.download.pcp)."""

import logging
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shared_paths import SHARED, require_shared

from brainage import storage
from brainage.dataset import QC_KEYS, read_qc
from brainage.download.pcp import convert_pcp_rois
from brainage.errors import ConfigError

# Same place as the ``shared_data`` fixture of tests/conftest.py; needed at collection time here.
DATA = SHARED / "data" / "abide1_pcp_cpac_filtglobal_cc200"
# Without the samples, one test for the file pattern: skipped, or failed under CI (require_shared).
SAMPLES = sorted((DATA / "raw_samples").glob("*_rois_cc200.1D")) or [DATA / "raw_samples" / "*_rois_cc200.1D"]
PARAMS = {"min_frames": 3}


def _write_1d(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _convert(tmp_path, source, params=PARAMS, **kwargs):
    out = {"series_out": tmp_path / "series.parquet", "qc_out": tmp_path / "qc.json"}
    qc = convert_pcp_rois("sub-01", source, params, **out, **kwargs)
    return qc, storage.read_timeseries(out["series_out"]), storage.read_json(out["qc_out"])


def _participant_id(sample: Path) -> str:
    # KKI_0050772_rois_cc200.1D -> sub-0050772 (participants.tsv uses the 7-digit SUB_ID).
    return "sub-" + sample.name.split("_rois_")[0].rsplit("_", 1)[1]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_real_sample_round_trips_to_the_text_and_the_reference_parquet(tmp_path, sample):
    require_shared(sample, "real ABIDE PCP sample")
    pid = _participant_id(sample)
    qc = convert_pcp_rois(pid, sample, {"min_frames": 40}, tmp_path / "s.parquet", tmp_path / "qc.json")
    series = storage.read_timeseries(tmp_path / "s.parquet")
    text = np.loadtxt(sample, delimiter="\t", skiprows=1)  # the 6-decimal text, as float64
    assert series.data.dtype == np.float32 and series.data.shape == text.shape
    np.testing.assert_array_equal(series.data, text.astype(np.float32))
    assert series.labels == [f"roi_{i:03d}" for i in range(1, 201)]
    reference = pq.read_table(DATA / "timeseries_cc200.parquet", filters=[("participant_id", "==", pid)])
    reference = reference.to_pandas().sort_values("t")
    np.testing.assert_array_equal(series.data, reference[series.labels].to_numpy())
    assert qc["status"] == "included" and qc["n_timepoints"] == qc["n_frames_kept"] == text.shape[0]
    assert qc["n_regions"] == 200 and qc["n_constant_regions"] == 0
    assert series.participant_id == pid
    assert series.metadata["sources"] == {"rois": sample.name}
    assert series.metadata["derivative"] == "rois_cc200" and series.metadata["status"] == "included"
    assert series.metadata["frames"] == list(range(text.shape[0]))


def test_header_label_values_become_column_names_and_provenance_is_recorded(tmp_path):
    # rois_aal / rois_ho headers carry the atlas codes (#2001 ..., #10 ...), not 1..n.
    source = _write_1d(tmp_path / "Pitt_0050003_rois_aal.1D", "#2001\t#10\t#9170",
                       ["1.5\t-2.25\t3", "0.5\t4\t-1e-3", "2\t0\t7"])
    params = {**PARAMS, "pcp_pipeline": "cpac", "pcp_strategy": "filt_global"}
    qc, series, on_disk = _convert(tmp_path, source, params, mean_fd=0.12)
    assert series.labels == ["roi_2001", "roi_010", "roi_9170"]
    np.testing.assert_array_equal(series.data, np.float32([[1.5, -2.25, 3], [0.5, 4, -1e-3], [2, 0, 7]]))
    meta = series.metadata
    assert (meta["derivative"], meta["pcp_pipeline"], meta["pcp_strategy"]) == ("rois_aal", "cpac", "filt_global")
    assert meta["params"] == params and meta["sources"] == {"rois": "Pitt_0050003_rois_aal.1D"}
    assert on_disk == qc and qc["mean_fd"] == 0.12 and qc["source"] == "Pitt_0050003_rois_aal.1D"


def test_qc_record_is_read_by_the_dataset_stage(tmp_path):
    source = _write_1d(tmp_path / "x_rois_cc200.1D", "#1\t#2", ["1\t2", "3\t5", "4\t4"])
    qc, _, _ = _convert(tmp_path, source)
    assert set(QC_KEYS) <= set(qc)
    record = read_qc(tmp_path / "qc.json")
    assert (record["participant_id"], record["stage"], record["status"]) == ("sub-01", "extract", "included")
    assert (record["n_timepoints"], record["n_frames_kept"], record["mean_fd"]) == (3, 3, None)


def test_constant_regions_are_kept_and_counted(tmp_path):
    source = _write_1d(tmp_path / "x_rois_cc200.1D", "#1\t#2\t#3", ["0\t2\t7", "0\t5\t7", "0\t1\t7"])
    qc, series, _ = _convert(tmp_path, source)
    assert qc["status"] == "included" and qc["n_constant_regions"] == 2
    assert qc["constant_regions"] == ["roi_001", "roi_003"]
    np.testing.assert_array_equal(series.data[:, 2], [7, 7, 7])


BAD_FILES = {
    "empty file": ("", [], 0, r"expected a header line of tab-separated '#<label>' fields.*found ''"),
    "missing header": ("1\t2", ["3\t4"], 0, r"expected a header line .*found '1\\t2'"),
    "header with a name": ("#1\tMean_2", ["3\t4"], 0, r"expected a header line .*found '#1\\tMean_2'"),
    "repeated label": ("#1\t#1", ["3\t4"], 0, r"header repeats label\(s\) \[1\]"),
    "non-numeric value": ("#1\t#2", ["1\t2", "3\tabc"], 2, r"expected rows of 2 tab-separated numbers: could not convert string 'abc'"),
    "ragged rows": ("#1\t#2", ["1\t2", "3"], 2, r"expected rows of 2 tab-separated numbers: the number of columns changed from 2 to 1"),
    "rows wider than header": ("#1\t#2", ["1\t2\t3", "3\t4\t5"], 2, r"the header names 2 regions, but the rows hold 3 values"),
    "zero rows": ("#1\t#2", [], 2, r"header but no data rows"),
    "NaN": ("#1\t#2", ["1\t2", "3\tnan", "4\t1"], 2, r"1 values are NaN or infinite \(first at data row 2, region roi_002\)"),
    "inf": ("#1\t#2", ["1\t2", "3\t4", "-inf\t1"], 2, r"1 values are NaN or infinite \(first at data row 3, region roi_001\)"),
    "too few frames": ("#1\t#2", ["1\t2", "3\t4"], 2, r"2 frames, need 3 \(extract.min_frames\)"),
    "every ROI constant": ("#1\t#2", ["1\t2", "1\t2", "1\t2"], 2, r"every one of the 2 regions is constant over time"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_excludes_the_subject_with_an_empty_series(tmp_path, caplog, case):
    header, rows, n_labels, match = BAD_FILES[case]
    source = _write_1d(tmp_path / "KKI_0050772_rois_cc200.1D", header, rows)
    with caplog.at_level(logging.INFO, logger="brainage.download.pcp"):
        qc, series, on_disk = _convert(tmp_path, source)
    assert qc["status"] == "excluded" and on_disk == qc
    assert re.search(match, qc["reason"]) and str(source) in qc["reason"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage() == f"sub-01 excluded: {qc['reason']}"
    assert series.data.shape == (0, n_labels) and series.participant_id == "sub-01"
    assert series.metadata["status"] == "excluded" and series.metadata["reason"] == qc["reason"]
    assert read_qc(tmp_path / "qc.json")["status"] == "excluded"


def test_non_text_file_is_excluded(tmp_path):
    source = tmp_path / "x_rois_cc200.1D"
    source.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")  # e.g. a gzip body saved under the .1D name
    qc, series, _ = _convert(tmp_path, source)
    assert qc["status"] == "excluded" and "expected a tab-separated text file, found non-text bytes" in qc["reason"]
    assert series.data.shape == (0, 0)


@pytest.mark.parametrize("params", [{}, {"min_frames": 0}, {"min_frames": "40"}, {"min_frames": True}])
def test_bad_min_frames_raises(tmp_path, params):
    source = _write_1d(tmp_path / "x_rois_cc200.1D", "#1", ["1"])
    with pytest.raises(ConfigError, match="extract.min_frames must be an integer >= 1, found"):
        _convert(tmp_path, source, params)


def test_missing_file_raises_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"PCP ROI series file .*nope_rois_cc200.1D not found"):
        _convert(tmp_path, tmp_path / "nope_rois_cc200.1D")
    assert not (tmp_path / "qc.json").exists() and not (tmp_path / "series.parquet").exists()
