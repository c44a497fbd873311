"""brainage.participants.discover: runs found by their BIDS entities, as fMRIPrep names them."""

import json

import pandas as pd
import pytest
from fmriprep_layouts import SPACE, write_run

from brainage.participants import build_manifest, subject_files
from brainage.participants.__main__ import main
from brainage.participants.discover import Selection, find_raw_runs, find_runs, parse_entities, raw_run_inputs

REST = Selection(task="rest", space=SPACE)


def _study(deriv):
    """A derivatives folder as a real fMRIPrep 24/25 run writes it, with the answer for each subject.

    01: ses-1 and ses-2, two runs each, no res- (a space asked for without one): ses-1 run-1.
    02: no session, run-2 and an acq- variant of run-1 (acq-mb, acq-sb): run-1 acq-mb (acq order).
    03: res-2 only (fMRIPrep asked for MNI152NLin2009cAsym:res-2), plus another space and task: it.
    04: its mask is missing. 05: its confounds are missing.
    06: only a task-nback run. 07: run-1 in both res-1 and res-2: ambiguous without inputs.res.
    08: per-echo outputs besides the combined BOLD: the combined one.
    """
    for ses in ("1", "2"):
        for run in (1, 2):
            write_run(deriv, "01", ses=ses, run=run)
    write_run(deriv, "02", run=2)
    write_run(deriv, "02", run=1, acq="sb")
    write_run(deriv, "02", run=1, acq="mb")
    write_run(deriv, "03", res="2")
    write_run(deriv, "03", space="MNI152NLin6Asym", res="2")
    write_run(deriv, "03", task="nback", res="2")
    write_run(deriv, "04", skip=("mask",))
    write_run(deriv, "05", skip=("confounds",))
    write_run(deriv, "06", task="nback")
    write_run(deriv, "07", run=1, res="1")
    write_run(deriv, "07", run=1, res="2")
    write_run(deriv, "08")
    write_run(deriv, "08", echo=1)
    write_run(deriv, "08", echo=2)
    return [f"{i:02d}" for i in range(1, 10)]  # 09 has no folder at all


def test_entities_of_fmriprep_names_are_parsed_by_pybids():
    entities = parse_entities(f"/d/sub-01/ses-2/func/sub-01_ses-2_task-rest_acq-mb_run-03_space-{SPACE}_res-2_"
                              "desc-preproc_bold.nii.gz")
    assert {k: entities[k] for k in ("subject", "session", "task", "acquisition", "space", "res", "desc", "suffix")} == {
        "subject": "01", "session": "2", "task": "rest", "acquisition": "mb", "space": SPACE, "res": "2",
        "desc": "preproc", "suffix": "bold"}
    assert entities["run"] == 3


def test_discovery_finds_the_documented_run_of_each_subject_and_says_why_not(tmp_path):
    deriv = tmp_path / "deriv"
    labels = _study(deriv)
    runs, problems = subject_files(labels, deriv, REST)
    chosen = {label: runs[label][0].bold.relative_to(deriv).as_posix() for label in runs}
    assert chosen == {
        "01": f"sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_space-{SPACE}_desc-preproc_bold.nii.gz",
        "02": f"sub-02/func/sub-02_task-rest_acq-mb_run-1_space-{SPACE}_desc-preproc_bold.nii.gz",
        "03": f"sub-03/func/sub-03_task-rest_space-{SPACE}_res-2_desc-preproc_bold.nii.gz",
        "08": f"sub-08/func/sub-08_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz",
    }
    # The companions are the run's own: the confounds table has no space entities.
    assert runs["01"][0].confounds == deriv / "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_desc-confounds_timeseries.tsv"
    assert runs["03"][0].mask.name == f"sub-03_task-rest_space-{SPACE}_res-2_desc-brain_mask.nii.gz"
    assert sorted(problems) == ["04", "05", "06", "07", "09"]
    assert problems["04"] == f"missing input file: {deriv}/sub-04/func/sub-04_task-rest_space-{SPACE}_desc-brain_mask.nii.gz"
    assert problems["05"] == f"missing input file: {deriv}/sub-05/func/sub-05_task-rest_desc-confounds_timeseries.tsv"
    assert problems["06"] == (f"no preprocessed BOLD: nothing named sub-06[_ses-*]_task-rest[_acq-*][_run-*]_space-{SPACE}"
                              f"[_res-*]_desc-preproc_bold.nii.gz in {deriv}/sub-06 (func/ or ses-*/func/)")
    assert problems["07"].startswith("run task-rest_run-1 has 2 preprocessed BOLDs in space MNI152NLin2009cAsym that "
                                     "differ in res-/den-/cohort- (")
    assert problems["07"].endswith("); set inputs.res to choose one")
    assert problems["09"].startswith("no preprocessed BOLD: nothing named sub-09")


def test_res_session_and_bids_filter_choose_among_the_runs(tmp_path):
    deriv = tmp_path / "deriv"
    labels = _study(deriv)
    res2, problems = find_runs(deriv, labels, Selection(task="rest", space=SPACE, res="2"))
    assert sorted(res2) == ["03", "07"] and "_res-2_" in res2["07"][0].bold.name
    assert "_res-2[_run" not in problems["01"] and f"_space-{SPACE}_res-2_desc-preproc_bold.nii.gz" in problems["01"]
    ses2, problems = find_runs(deriv, ["01", "02"], Selection(task="rest", space=SPACE, session="2"))
    assert ses2["01"][0].bold.name == f"sub-01_ses-2_task-rest_run-1_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert problems == {"02": "no run in session ses-2 (inputs.session; sessions found: none)"}
    filtered, problems = find_runs(deriv, ["01", "02"], Selection(task="rest", space=SPACE,
                                                                 bids_filter={"acquisition": "sb", "run": [1, "01"]}))
    assert filtered["02"][0].bold.name == f"sub-02_task-rest_acq-sb_run-1_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert problems["01"].endswith("that passes inputs.bids_filter {'acquisition': 'sb', 'run': [1, '01']}")
    # null: the entity must be absent (runs without acq-), then run-2 is the first left.
    plain, _ = find_runs(deriv, ["02"], Selection(task="rest", space=SPACE, bids_filter={"acquisition": None}))
    assert plain["02"][0].bold.name == f"sub-02_task-rest_run-2_space-{SPACE}_desc-preproc_bold.nii.gz"
    # runs: all: every run of the chosen session, in the documented order.
    every, _ = find_runs(deriv, ["01", "02"], Selection(task="rest", space=SPACE, runs="all"))
    assert [r.label for r in every["01"]] == ["ses-1_task-rest_run-1", "ses-1_task-rest_run-2"]
    assert [r.label for r in every["02"]] == ["task-rest_acq-mb_run-1", "task-rest_acq-sb_run-1", "task-rest_run-2"]
    with pytest.raises(ValueError, match="inputs.runs must be one of first, all, got 'last'"):
        Selection(task="rest", space=SPACE, runs="last")


def test_the_manifest_records_each_exclusion_and_its_cli_takes_the_selection(tmp_path):
    deriv = tmp_path / "deriv"
    labels = _study(deriv)
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\tage\tsex\tsite\n" + "".join(f"sub-{x}\t{20 + i}\tF\tA\n" for i, x in enumerate(labels)))
    out, excl = tmp_path / "m.tsv", tmp_path / "e.tsv"
    selection = {"task": "rest", "space": SPACE, "res": None, "session": "first", "runs": "first", "bids_filter": {}}
    assert main(["manifest", "--participants", str(participants), "--dataset", "study", "--derivatives", str(deriv),
                 "--selection", json.dumps(selection), "--out", str(out), "--exclusions-out", str(excl)]) == 0
    assert pd.read_csv(out, sep="\t")["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03", "sub-08"]
    exclusions = pd.read_csv(excl, sep="\t").set_index("participant_id")
    assert list(exclusions.index) == ["sub-04", "sub-05", "sub-06", "sub-07", "sub-09"]
    assert set(exclusions["stage"]) == {"participants"}
    assert exclusions.loc["sub-04", "reason"].startswith("missing input file: ") and "desc-brain_mask" in exclusions.loc["sub-04", "reason"]
    # The same answer as the workflow's (subject_files) for the same selection.
    build_manifest(participants, "study", deriv, Selection.from_config(selection, None), out, excl)
    assert pd.read_csv(excl, sep="\t")["participant_id"].tolist() == list(exclusions.index)


def test_the_age_at_the_chosen_session_comes_from_sessions_tsv(tmp_path):
    """Longitudinal data: sub-01's age per session in sub-01/sub-01_sessions.tsv beside participants.tsv."""
    deriv = tmp_path / "deriv"
    for ses in ("1", "2"):
        write_run(deriv, "01", ses=ses)
        write_run(deriv, "02", ses=ses)
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tage\nses-1\t30.5\nses-2\t32.25\n")
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\tage\tsex\tsite\nsub-01\tn/a\tF\tA\nsub-02\t40\tM\tA\n")
    out, excl = tmp_path / "m.tsv", tmp_path / "e.tsv"
    build_manifest(participants, "study", deriv, REST, out, excl)
    manifest = pd.read_csv(out, sep="\t", dtype={"session": str}).set_index("participant_id")
    # sub-01 has no age in participants.tsv: its session's age is used; sub-02 has no sessions file.
    assert manifest.loc["sub-01", "age"] == 30.5 and manifest.loc["sub-02", "age"] == 40.0
    assert manifest["session"].tolist() == ["1", "1"]
    build_manifest(participants, "study", deriv, Selection(task="rest", space=SPACE, session="2"), out, excl)
    assert pd.read_csv(out, sep="\t").set_index("participant_id").loc["sub-01", "age"] == 32.25
    (tmp_path / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tage\nses-1\told\n")
    build_manifest(participants, "study", deriv, REST, out, excl)
    reason = pd.read_csv(excl, sep="\t").set_index("participant_id").loc["sub-01", "reason"]
    assert reason == f"age 'old' is not a number in {tmp_path / 'sub-01' / 'sub-01_sessions.tsv'} row 1"


def test_raw_runs_need_a_bold_of_the_task_and_a_t1w(tmp_path):
    bids = tmp_path / "bids"

    def touch(rel):
        (bids / rel).parent.mkdir(parents=True, exist_ok=True)
        (bids / rel).write_text(rel)

    for run in (2, 1):
        touch(f"sub-01/ses-1/func/sub-01_ses-1_task-rest_run-{run}_bold.nii.gz")
    touch("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    touch("sub-02/func/sub-02_task-rest_bold.nii.gz")  # no anat
    touch(f"sub-03/func/sub-03_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz")  # a derivative, not raw
    touch("sub-03/anat/sub-03_T1w.nii.gz")
    runs, problems = find_raw_runs(bids, ["01", "02", "03"], REST)
    assert [(r.funcdir, r.label) for r in runs["01"]] == [("ses-1/func", "ses-1_task-rest_run-1")]
    assert problems["02"] == f"no T1w image in {bids / 'sub-02'} (anat/ or ses-*/anat/): fMRIPrep needs one"
    assert problems["03"] == (f"no raw BOLD: nothing named sub-03[_ses-*]_task-rest[_acq-*][_run-*]_bold.nii.gz in "
                              f"{bids / 'sub-03'} (func/ or ses-*/func/)")


def test_the_raw_inputs_of_a_run_are_its_bold_the_t1w_images_and_the_sidecars_they_have(tmp_path):
    bids = tmp_path / "bids"
    names = ["sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_bold.nii.gz",
             "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_bold.json",
             "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-2_bold.nii.gz",  # another run: not its input
             "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
             "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
             "sub-01/ses-2/anat/sub-01_ses-2_T1w.json"]
    for rel in names:
        (bids / rel).parent.mkdir(parents=True, exist_ok=True)
        (bids / rel).write_text(rel)
    runs, _ = find_raw_runs(bids, ["01"], REST)
    assert sorted(raw_run_inputs(bids, runs["01"][0])) == sorted(bids / names[i] for i in (0, 1, 3, 4, 5))
