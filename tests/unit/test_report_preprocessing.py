"""brainage.report.preprocessing: methods text from the fMRIPrep settings, the jobs' records and the QC thresholds."""

import copy
from pathlib import Path

import yaml

from brainage.report.preprocessing import preprocessing_text, qc_text

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
ENTRY = {"pipeline": "cpac", "strategy": "filt_global", "derivative": "rois_cc200", "sites": [], "age_min": None,
         "age_max": None, "max_subjects": None, "qc_pass": False, "task": "rest", "sessions": []}


def _config(**preprocess):
    config = copy.deepcopy(DEFAULT)
    config["inputs"]["source"] = "indi"
    config["datasets"] = [dict(ENTRY, name="adhd200"), dict(ENTRY, name="abide_pcp")]
    config["preprocess"].update(preprocess)
    return config


def test_text_names_version_run_engine_space_and_the_one_run_rule():
    records = [{"fmriprep_version": "25.2.7", "image": "nipreps/fmriprep:25.2.7"}] * 3
    text = preprocessing_text(_config(), records)
    assert text.startswith("The raw BIDS data of ADHD-200 (ADHD-200 Consortium 2012) were preprocessed with fMRIPrep")
    assert "run in its Docker image nipreps/fmriprep:25.2.7 (through fmriprep-docker)" in text
    assert "the pinned version was 25.2.7 and the jobs recorded 25.2.7 for 3 subjects" in text
    assert "the first task-rest run in session, acquisition and run order" in text
    # inputs.res null (the default): the space was asked for without a resolution.
    assert ("MNI152NLin2009cAsym on the BOLD's own grid (no res-), without FreeSurfer surface reconstruction "
            "(--fs-no-reconall).") in text
    assert "ABIDE" not in text  # PCP derivatives were not preprocessed here
    config = _config()
    config["inputs"]["res"] = "2"
    assert "MNI152NLin2009cAsym at res-2, without FreeSurfer" in preprocessing_text(config, records)


def test_text_follows_the_settings_and_mixed_versions():
    records = [{"fmriprep_version": "25.2.7", "image": "/img/f.sif"}, {"fmriprep_version": "24.1.1", "image": "/img/f.sif"}]
    text = preprocessing_text(_config(engine="apptainer", image="/img/f.sif", fs_reconall=True,
                                      extra_args=["--dummy-scans", "4"]), records)
    assert "run in the Apptainer image /img/f.sif" in text
    assert "recorded 24.1.1 for 1 subject, 25.2.7 for 1 subject" in text
    assert "with FreeSurfer surface reconstruction; further arguments: --dummy-scans 4." in text


def test_no_text_without_raw_datasets():
    config = _config()
    config["datasets"] = [dict(ENTRY, name="abide_pcp")]
    assert preprocessing_text(config, []) is None
    assert preprocessing_text(DEFAULT, []) is None  # the demo


def test_qc_text_lists_the_active_thresholds():
    assert qc_text(DEFAULT["qc"]).startswith(
        "Subjects were excluded for mean framewise displacement (Power et al. 2012) above 0.55 mm, computed")
    every = {"max_mean_fd": 0.3, "high_motion_fd": 0.2, "max_high_motion_fraction": 0.2, "max_mean_std_dvars": 1.5}
    assert ("above 0.3 mm; or more than 20% of frames with FD above 0.2 mm; or mean standardised DVARS above 1.5"
            in qc_text(every))
    none = dict(every, max_mean_fd=None, max_high_motion_fraction=None, max_mean_std_dvars=None)
    assert qc_text(none) == "No subject was excluded for motion (every motion threshold was disabled)."
