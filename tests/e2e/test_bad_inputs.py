"""Bad inputs on a user's fMRIPrep derivatives: each subject is excluded with one clear reason, the rest finish."""

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.demo.generate import generate_demo
from snakemake_helpers import make_workdir, snakemake

pytestmark = pytest.mark.e2e

FUNC = "derivatives/sub-{s}/func/sub-{s}_task-rest"
BOLD = FUNC + "_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold"
CONFOUNDS = FUNC + "_desc-confounds_timeseries.tsv"


def _corrupt(src):
    """Break seven subjects in seven different ways; return {participant_id: (stage, reason pattern)}."""
    def bold(s):
        return src / (BOLD.format(s=s) + ".nii.gz")

    img = nib.load(bold("001"))
    nib.save(nib.Nifti1Image(img.get_fdata()[..., 0].astype(np.float32), img.affine), bold("001"))
    img = nib.load(bold("002"))
    data = img.get_fdata().astype(np.float32)
    inside = np.argwhere(nib.load(src / (FUNC.format(s="002") + "_space-MNI152NLin2009cAsym_res-8_desc-brain_mask.nii.gz")).get_fdata() > 0)
    data[tuple(inside[len(inside) // 2])][5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), bold("002"))  # float32: int16 cannot hold a NaN
    confounds = pd.read_csv(src / CONFOUNDS.format(s="003"), sep="\t")
    confounds.loc[5:70, "framewise_displacement"] = 2.0
    confounds.to_csv(src / CONFOUNDS.format(s="003"), sep="\t", index=False, na_rep="n/a")
    confounds = pd.read_csv(src / CONFOUNDS.format(s="004"), sep="\t")
    confounds.drop(columns=[c for c in confounds if c.startswith("trans_")]).to_csv(
        src / CONFOUNDS.format(s="004"), sep="\t", index=False, na_rep="n/a"
    )
    sidecar = src / (BOLD.format(s="005") + ".json")
    meta = json.loads(sidecar.read_text())
    del meta["RepetitionTime"]
    sidecar.write_text(json.dumps(meta))
    for path in (src / FUNC.format(s="008")).parent.glob("*preproc_bold*"):
        path.unlink()
    participants = pd.read_csv(src / "participants.tsv", sep="\t", dtype=str)
    participants.loc[participants.participant_id == "sub-006", "age"] = "n/a"
    participants.loc[participants.participant_id == "sub-007", "age"] = "unknown"
    participants.to_csv(src / "participants.tsv", sep="\t", index=False)
    return {
        "sub-001": ("extract", r"sub-001_task-rest.*bold\.nii\.gz.*4D"),
        "sub-002": ("extract", r"sub-002_task-rest.*bold\.nii\.gz.*(NaN|non-finite)"),
        "sub-003": ("extract", r"sub-003.*frames"),
        "sub-004": ("extract", r"sub-004_task-rest_desc-confounds_timeseries\.tsv.*trans_x"),
        "sub-005": ("extract", r"sub-005_task-rest.*\.json.*RepetitionTime"),
        "sub-006": ("participants", r"no age in .*participants\.tsv row 6"),
        "sub-007": ("participants", r"age 'unknown' is not a number in .*participants\.tsv row 7"),
        "sub-008": ("participants", r"no preprocessed BOLD.*sub-008"),
    }


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("study")
    generate_demo(src, {"n_subjects": 20, "sites": ["siteA", "siteB"], "n_timepoints": 80, "tr": 2.0,
                        "voxel_size": 8, "age_min": 8.0, "age_max": 80.0}, seed=7)
    expected = _corrupt(src)
    config = {
        "inputs": {"source": "fmriprep", "derivatives": str(src / "derivatives"),
                   "participants": str(src / "participants.tsv"), "dataset": "study", "res": "8"},
        "atlases": [{"name": "kmeans", "n_regions": 20}],
        "extract": {"volume_voxel_size": 16},
        "dataset": {"n_folds": 3},
        "train": {"models": ["dummy", "connectome_ridge"]},
    }
    workdir = make_workdir(tmp_path_factory.mktemp("work"), config)
    result = snakemake(workdir, "--cores", "2")
    return workdir, expected, result


def test_every_bad_subject_is_excluded_with_its_reason(bad_run):
    workdir, expected, _ = bad_run
    exclusions = pd.read_csv(workdir / "results/dataset/exclusions.tsv", sep="\t").set_index("participant_id")
    assert sorted(exclusions.index) == sorted(expected)
    for participant, (stage, reason) in expected.items():
        assert exclusions.loc[participant, "stage"] == stage
        assert re.search(reason, exclusions.loc[participant, "reason"]), (
            participant, exclusions.loc[participant, "reason"])


def test_the_other_subjects_finish(bad_run):
    workdir, expected, _ = bad_run
    predictions = pd.read_parquet(workdir / "results/evaluate/predictions.parquet")
    kept = {f"sub-{i:03d}" for i in range(1, 21)} - set(expected)
    for model in ("dummy", "connectome_ridge"):
        assert set(predictions.loc[predictions.model == model, "participant_id"]) == kept


def test_each_failure_is_one_clear_log_line(bad_run):
    workdir, _, _ = bad_run
    log = (workdir / "logs/extract/sub-001.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "sub-001_task-rest" in errors[0]


def test_report_shows_every_exclusion(bad_run):
    workdir, expected, _ = bad_run
    html = (workdir / "results/report.html").read_text()
    for participant in expected:
        assert participant in html
