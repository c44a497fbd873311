"""Bad inputs on a user's fMRIPrep derivatives: each subject is excluded with one clear reason, the rest finish."""

import html
import json
import os
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.demo.generate import generate_demo
from fmriprep_layouts import rename_demo_run, run_names
from snakemake_helpers import make_workdir, snakemake

pytestmark = pytest.mark.e2e

FUNC = "derivatives/sub-{s}/func/sub-{s}_task-rest"
BOLD = FUNC + "_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold"
MASK = FUNC + "_space-MNI152NLin2009cAsym_res-8_desc-brain_mask.nii.gz"
CONFOUNDS = FUNC + "_desc-confounds_timeseries.tsv"
N_SUBJECTS = 34  # 21 broken, 1 left out by the config, 12 left: enough for 3 folds


def _file_problems(src):
    """Break 14 more subjects' files (empty, truncated, garbled, missing, another subject's);
    store one good subject's files as git-annex symlinks. Return {participant_id: (stage, reason pattern)}."""
    def path(template, s):
        return src / template.format(s=s)

    def half(file):
        data = file.read_bytes()
        file.write_bytes(data[:len(data) // 2])

    confounds = pd.read_csv(path(CONFOUNDS, "009"), sep="\t")
    confounds.loc[20:22, "trans_x"] = np.nan  # n/a beyond the first row, in a regressor of the preset
    confounds.to_csv(path(CONFOUNDS, "009"), sep="\t", index=False, na_rep="n/a")
    path(MASK, "010").write_bytes(b"")
    half(path(MASK, "011"))
    path(MASK, "012").unlink()
    path(CONFOUNDS, "013").unlink()
    path(BOLD + ".json", "014").unlink()
    bold_015 = path(BOLD + ".nii.gz", "015")
    bold_015.unlink()
    bold_015.symlink_to(os.path.relpath(path(BOLD + ".nii.gz", "016"), bold_015.parent))
    half(path(BOLD + ".nii.gz", "017"))
    path(BOLD + ".nii.gz", "018").write_bytes(b"")
    path(BOLD + ".json", "019").write_text('{"RepetitionTime": 2.0,')
    path(CONFOUNDS, "020").write_bytes(b"")
    path(CONFOUNDS, "021").with_suffix(".json").write_bytes(b"\x1f\x8b garbled {")
    confounds_023 = path(CONFOUNDS, "023")
    confounds_023.unlink()
    confounds_023.symlink_to(os.path.relpath(path(CONFOUNDS, "024"), confounds_023.parent))
    # DataLad / git-annex: every file a symlink into .git/annex/objects under a hash name. Allowed.
    for number, file in enumerate(sorted(path(FUNC, "022").parent.iterdir())):
        key = f"SHA256E-s{file.stat().st_size}--{number:064x}{''.join(file.suffixes)}"
        target = src / ".git" / "annex" / "objects" / "pX" / f"{number:02d}" / key / key
        target.parent.mkdir(parents=True)
        file.replace(target)
        file.symlink_to(os.path.relpath(target, file.parent))
    return {
        "sub-009": ("extract", r"sub-009_task-rest_desc-confounds_timeseries\.tsv: n/a or non-finite values.*"
                               r"trans_x at frames 20-22"),
        "sub-010": ("extract", r"sub-010_task-rest.*_desc-brain_mask\.nii\.gz: not a readable NIfTI image"),
        "sub-011": ("extract", r"sub-011_task-rest.*_desc-brain_mask\.nii\.gz: (not a readable NIfTI image|truncated)"),
        "sub-012": ("participants", r"missing input file: .*sub-012_task-rest.*_desc-brain_mask\.nii\.gz"),
        "sub-013": ("participants", r"missing input file: .*sub-013_task-rest_desc-confounds_timeseries\.tsv"),
        "sub-014": ("participants", r"missing input file: .*sub-014_task-rest.*_desc-preproc_bold\.json"),
        "sub-015": ("participants", r"sub-015_task-rest.*_bold\.nii\.gz resolves to .*sub-016_task-rest.*_bold\.nii\.gz, "
                                    r"a file of sub-016"),
        "sub-017": ("extract", r"sub-017_task-rest.*_desc-preproc_bold\.nii\.gz: (truncated|not a readable)"),
        "sub-018": ("extract", r"sub-018_task-rest.*_desc-preproc_bold\.nii\.gz: not a readable NIfTI image"),
        "sub-019": ("extract", r"sub-019_task-rest.*_desc-preproc_bold\.json: not valid JSON"),
        "sub-020": ("extract", r"sub-020_task-rest_desc-confounds_timeseries\.tsv: empty file"),
        "sub-021": ("extract", r"sub-021_task-rest_desc-confounds_timeseries\.json: .*not valid JSON"),
        "sub-023": ("participants", r"sub-023_task-rest_desc-confounds_timeseries\.tsv resolves to "
                                    r".*sub-024_task-rest_desc-confounds_timeseries\.tsv, a file of sub-024"),
    }


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


def _fmriprep_names(src):
    """Give three good subjects the names a real fMRIPrep 24/25 run writes; return the BOLD each must use.

    sub-026: two sessions of two runs, no res- (a space asked for without a resolution); sub-027:
    run-1 in two acquisitions (acq-mb, acq-sb) and a run-2; sub-028: no res-. The copies are
    copies (their own files), not links.
    """
    deriv = src / "derivatives"
    first = rename_demo_run(deriv, "026", "8", ses="1", run=1)
    for ses, run in (("1", 2), ("2", 1), ("2", 2)):
        for kind, name in run_names("026", ses=ses, run=run).items():
            (deriv / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(first[kind], deriv / name)
    sb = rename_demo_run(deriv, "027", "8", acq="sb", run=1, res="8")
    for acq, run in (("mb", 1), (None, 2)):
        for kind, name in run_names("027", acq=acq, run=run, res="8").items():
            shutil.copy(sb[kind], deriv / name)
    rename_demo_run(deriv, "028", "8")
    return {"sub-026": run_names("026", ses="1", run=1)["bold"], "sub-027": run_names("027", acq="mb", run=1, res="8")["bold"],
            "sub-028": run_names("028")["bold"]}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("study")
    generate_demo(src, {"n_subjects": N_SUBJECTS, "sites": ["siteA", "siteB"], "n_timepoints": 80, "tr": 2.0,
                        "voxel_size": 8, "age_min": 8.0, "age_max": 80.0}, seed=7)
    expected = _corrupt(src) | _file_problems(src)
    real_names = _fmriprep_names(src)
    # A good subject left out on purpose, with the user's reason (its files stay untouched).
    expected["sub-025"] = ("participants", r"^excluded in the config \(inputs\.exclude\): incidental finding$")
    config = {
        "inputs": {"source": "fmriprep", "derivatives": str(src / "derivatives"),
                   "participants": str(src / "participants.tsv"), "dataset": "study",
                   "exclude": {"sub-025": "incidental finding"}},
        "atlases": [{"name": "kmeans", "n_regions": 20}],
        "extract": {"volume_voxel_size": 16},
        "dataset": {"n_folds": 3},
        "train": {"models": ["dummy", "connectome_ridge"]},
    }
    workdir = make_workdir(tmp_path_factory.mktemp("work"), config)
    result = snakemake(workdir, "--cores", "2")
    return workdir, expected, result, real_names


def test_every_bad_subject_is_excluded_with_its_reason(bad_run):
    workdir, expected, _, _ = bad_run
    exclusions = pd.read_csv(workdir / "results/dataset/exclusions.tsv", sep="\t").set_index("participant_id")
    assert sorted(exclusions.index) == sorted(expected)
    for participant, (stage, reason) in expected.items():
        assert exclusions.loc[participant, "stage"] == stage
        assert re.search(reason, exclusions.loc[participant, "reason"]), (
            participant, exclusions.loc[participant, "reason"])


def test_runs_named_as_fmriprep_names_them_are_found_and_the_documented_one_is_used(bad_run):
    """Sessions, runs, acquisitions and no res- (inputs.res null): found, and the first run used."""
    workdir, _, _, real_names = bad_run
    for participant, bold in real_names.items():
        qc = json.loads((workdir / f"results/extract/{participant}/{participant}_qc.json").read_text())
        assert qc["status"] == "included" and qc["bold"] == bold.rsplit("/", 1)[1], (participant, qc["bold"])


def test_a_subject_the_config_excludes_is_not_extracted(bad_run):
    workdir, _, _, _ = bad_run
    assert not (workdir / "results/extract/sub-025").exists()
    assert (workdir / "results/extract/sub-024").is_dir()


def test_the_other_subjects_finish(bad_run):
    workdir, expected, _, _ = bad_run
    predictions = pd.read_parquet(workdir / "results/evaluate/predictions.parquet")
    kept = {f"sub-{i:03d}" for i in range(1, N_SUBJECTS + 1)} - set(expected)
    assert {"sub-016", "sub-022", "sub-024"} <= kept  # a link target's owner, an annexed subject
    for model in ("dummy", "connectome_ridge"):
        assert set(predictions.loc[predictions.model == model, "participant_id"]) == kept


@pytest.mark.parametrize("subject", ["001", "009", "010", "011", "017", "021"])
def test_each_failure_is_one_clear_log_line(bad_run, subject):
    workdir, _, _, _ = bad_run
    log = (workdir / f"logs/extract/sub-{subject}.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert f"sub-{subject}_task-rest" in errors[0]
    assert "Traceback" not in log


def test_report_shows_every_exclusion(bad_run):
    workdir, expected, _, _ = bad_run
    page = (workdir / "results/report.html").read_text()
    table = page[page.index('class="dataframe exclusions"'):]
    table = table[:table.index("</table>")]
    shown = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        # pandas writes runs of spaces as &nbsp;: compare with whitespace collapsed.
        cells = [" ".join(html.unescape(cell).split()) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        if cells:
            shown[cells[0]] = (cells[1], cells[2])
    exclusions = pd.read_csv(workdir / "results/dataset/exclusions.tsv", sep="\t").set_index("participant_id")
    for participant in expected:
        stage, reason = exclusions.loc[participant, ["stage", "reason"]]
        assert shown[participant] == (stage, " ".join(reason.split())), participant
