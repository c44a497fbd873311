"""A local raw BIDS dataset (inputs.source: bids) through fMRIPrep (recording stand-ins) to the report."""

import json
import os

import pandas as pd
import pytest
from fmriprep_layouts import write_local_bids
from fmriprep_standins import install

from snakemake_helpers import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

AGES = {f"{i:02d}": 10.0 + 5 * i for i in range(1, 11)}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    bids = write_local_bids(tmp / "mystudy", AGES)
    # sub-09 has no T1w, sub-10 no rest run: both are recorded, the other eight run.
    for path in (bids / "sub-09").rglob("*_T1w.*"):
        path.unlink()
    for path in (bids / "sub-10").rglob("*task-rest*"):
        path.rename(path.with_name(path.name.replace("task-rest", "task-nback")))
    license_path = tmp / "license.txt"
    license_path.write_text("user@example.org\n12345\n *CxYz12345\n FSabcdefgh\n")
    config = {
        "inputs": {"source": "bids", "bids_dir": str(bids), "dataset": "mystudy", "res": "8"},
        "preprocess": {"fs_license": str(license_path), "engine": "docker"},
        "atlases": [{"name": "kmeans", "n_regions": 20}],
        "extract": {"min_frames": 20, "min_seconds": 30},
        "dataset": {"n_folds": 2},
        "train": {"models": ["dummy", "connectome_ridge"], "inner_folds": 2},
    }
    record = tmp / "calls.jsonl"
    bin_dir = install(tmp / "bin", record, mode="derivatives")
    work = make_workdir(tmp / "work", config)
    env = {k: v for k, v in os.environ.items() if k != "FS_LICENSE"}
    dry = snakemake(work, "-n", "--cores", "2", env=env, path_first=bin_dir)
    snakemake(work, "--cores", "2", env=env, path_first=bin_dir)
    return work, bids, record, planned_jobs(dry)


def test_the_dag_knows_every_fmriprep_job_before_anything_runs(local_run):
    _, _, _, jobs = local_run
    assert jobs["fmriprep_subject"] == 8 and jobs["extract_subject"] == 8 and "indi_fetch" not in jobs


def test_fmriprep_reads_the_local_dataset_and_the_first_run(local_run):
    work, bids, record, _ = local_run
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    runs = [c["argv"] for c in calls if c["tool"] == "docker" and c["argv"][0] == "run" and "/data" in c["argv"]]
    assert len(runs) == 8
    mounts = [run[i + 1] for run in runs for i, word in enumerate(run) if word == "-v" and run[i + 1].endswith(":/data:ro")]
    assert set(mounts) == {f"{bids}:/data:ro"}
    assert json.loads((work / "work/fmriprep/sub-01/bids_filter.json").read_text()) == {
        "bold": {"datatype": "func", "suffix": "bold", "session": "1", "task": "rest", "run": 1}}
    qc = json.loads((work / "results/extract/sub-01/sub-01_qc.json").read_text())
    assert qc["bold"] == "sub-01_ses-1_task-rest_run-1_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold.nii.gz"


def test_subjects_without_a_t1w_or_a_rest_run_are_recorded_and_the_others_finish(local_run):
    work, bids, _, _ = local_run
    exclusions = pd.read_csv(work / "results/dataset/exclusions.tsv", sep="\t").set_index("participant_id")
    assert exclusions.loc["sub-09", "stage"] == "participants"
    assert exclusions.loc["sub-09", "reason"] == (f"no T1w image in {bids / 'sub-09'} (anat/ or ses-*/anat/): "
                                                  "fMRIPrep needs one")
    assert exclusions.loc["sub-10", "reason"].startswith("no raw BOLD: nothing named sub-10[_ses-*]_task-rest")
    predictions = pd.read_parquet(work / "results/evaluate/predictions.parquet")
    assert set(predictions["participant_id"]) == {f"sub-{x}" for x in AGES} - {"sub-09", "sub-10"}
    report = (work / "results/report.html").read_text()
    assert "The data were the raw BIDS dataset mystudy" in report and "preprocessed with fMRIPrep" in report


def test_exported_names_keep_the_session_and_run_and_name_the_source(local_run):
    work, bids, _, _ = local_run
    folder = work / "results/derivatives/brainage"
    name = "sub-01_ses-1_task-rest_run-1_space-MNI152NLin2009cAsym_seg-kmeans20_stat-mean_timeseries.tsv"
    assert (folder / "sub-01/ses-1/func" / name).is_file()
    assert len(list(folder.glob("sub-*/ses-1/func/*_stat-pearsoncorrelation_relmat.tsv"))) == 8
    description = json.loads((folder / "dataset_description.json").read_text())
    assert description["SourceDatasets"] == [{"URL": bids.resolve().as_uri()}]
