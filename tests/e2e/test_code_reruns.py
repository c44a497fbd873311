"""Code changes rerun the jobs whose imports reach them; jobs import the workflow's own package tree."""

import shutil
import subprocess

import pytest

from snakemake_helpers import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

CONFIG = {"demo": {"n_subjects": 4}, "dataset": {"n_folds": 2}, "train": {"models": ["dummy"]}}
# Outputs that are folders: the atlases, the report's figures, the BIDS-Derivatives export.
FOLDERS = ("resources/atlases/", "results/report_figures", "results/derivatives/brainage")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A copy of the workflow whose every output exists and is recorded, as after a run (no job ran)."""
    workdir = make_workdir(tmp_path_factory.mktemp("reruns"), CONFIG)
    summary = snakemake(workdir, "--summary", "--cores", "1").stdout
    for line in summary.splitlines()[1:]:
        name = line.split("\t")[0]
        path = workdir / name
        if name.startswith(FOLDERS):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    # --forceall: every job is touched in DAG order and its parameters recorded (without it, only
    # jobs whose outputs happen to be older than their inputs are).
    snakemake(workdir, "--touch", "--forceall", "--cores", "1")
    assert planned_jobs(snakemake(workdir, "-n", "--cores", "1")) == {}
    return workdir


def _plan_after_edit(workdir, module):
    path = workdir / "workflow" / "brainage" / module
    original = path.read_text()
    path.write_text(original + "\n# a change\n")
    try:
        result = snakemake(workdir, "-n", "--cores", "1")
    finally:
        path.write_text(original)
    return planned_jobs(result), result.stdout + result.stderr


def test_change_reached_through_another_package_reruns_extraction(finished):
    # brainage.extract imports brainage.preprocess.qc (motion QC): its QC records would be stale.
    jobs, text = _plan_after_edit(finished, "preprocess/qc.py")
    assert jobs == {"extract_subject": 4, "dataset_build": 1, "train_model": 2, "evaluate": 1, "report": 1,
                    "export_derivatives": 1, "all": 1}
    assert "Params have changed" in text, text[-3000:]


def test_change_to_the_shared_torch_loop_reruns_training(finished):
    jobs, _ = _plan_after_edit(finished, "torchloop/loop.py")
    assert jobs == {"train_model": 2, "evaluate": 1, "report": 1, "all": 1}


def test_change_to_the_bids_writers_reruns_only_the_export(finished):
    # brainage.storage.bids is not imported by brainage.storage itself: no other stage's hash has it.
    jobs, _ = _plan_after_edit(finished, "storage/bids.py")
    assert jobs == {"export_derivatives": 1, "all": 1}


def test_jobs_import_brainage_from_the_workflow_copy(finished):
    # Not the installed (or editable) package: the tree the code hashes read.
    (finished / "Snakefile").write_text(
        (finished / "Snakefile").read_text()
        + '\n\nrule where_is_brainage:\n    output:\n        "where.txt",\n'
        '    shell:\n        "python -c \'import brainage; print(brainage.__file__)\' > {output}"\n'
    )
    snakemake(finished, "where.txt", "--cores", "1")
    assert (finished / "where.txt").read_text().strip() == str(finished / "workflow" / "brainage" / "__init__.py")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_commit_that_changes_no_code_reruns_nothing(finished):
    # Outputs record the commit (brainage._version.source_version): it is provenance, in no params
    # or code hash. The outputs were recorded outside git; in a checkout the version names a commit.
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]
    try:
        for args in (["init", "-q"], ["add", "workflow"], ["commit", "-q", "-m", "one"]):
            subprocess.run([*git, *args], cwd=finished, check=True, capture_output=True)
        assert planned_jobs(snakemake(finished, "-n", "--cores", "1")) == {}
    finally:
        shutil.rmtree(finished / ".git", ignore_errors=True)
