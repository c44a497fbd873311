"""Broken or missing results files: the error names the file, a deleted one is rebuilt with everything
downstream of it, and a killed run's lock is lifted with ``snakemake --unlock`` (README, "When something
goes wrong")."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from brainage import storage
from brainage.demo.generate import generate_demo
from snakemake_helpers import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

VOLUMES = "results/extract/sub-001/sub-001_volumes.parquet"
FOLDS = (0, 1)
MODELS = ("dummy", "cnn_rnn")  # cnn_rnn reads the volumes files


def _config(src):
    return {
        "inputs": {"source": "fmriprep", "derivatives": str(src / "derivatives"),
                   "participants": str(src / "participants.tsv"), "dataset": "study", "res": "8"},
        "atlases": [{"name": "kmeans", "n_regions": 10}],
        "extract": {"volume_voxel_size": 16, "min_frames": 20, "min_seconds": 30},
        "dataset": {"n_folds": len(FOLDS)},
        "train": {"models": list(MODELS), "gpus_per_process": 0},
        "models": {"cnn_rnn": {"channels": [4], "hidden": 8, "window": 8, "epochs": 2, "batch_size": 4}},
        # Four training subjects per fold leave too few inner predictions to fit a bias line.
        "evaluate": {"bias_correction": False},
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    src = tmp_path_factory.mktemp("study")
    generate_demo(src, {"n_subjects": 8, "sites": ["siteA", "siteB"], "n_timepoints": 60, "tr": 2.0,
                        "voxel_size": 8, "age_min": 8.0, "age_max": 80.0}, seed=7)
    return src


def _fold_outputs(workdir):
    return [workdir / f"results/models/model-{m}/fold-{f}/{name}"
            for m in MODELS for f in FOLDS for name in ("predictions.parquet", "card.json")]


def test_truncated_then_deleted_results_file_is_named_then_rebuilt(study, tmp_path):
    workdir = make_workdir(tmp_path / "work", _config(study))
    snakemake(workdir, "--cores", "2")
    volumes = workdir / VOLUMES

    # A truncated file: the training jobs that read it fail, each log naming the file and the cure.
    volumes.write_bytes(volumes.read_bytes()[:1000])
    failed = snakemake(workdir, "--cores", "2", check=False)
    assert failed.returncode != 0
    for fold in FOLDS:
        log = (workdir / f"logs/train/model-cnn_rnn_fold-{fold}.log").read_text()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1, log
        message = errors[0].split(": ", 1)[1]
        assert message.startswith(f"{VOLUMES}: not a readable Parquet file"), message
        assert "delete it and rerun snakemake" in message
        # Snakemake removed the failed jobs' outputs.
        assert not (workdir / f"results/models/model-cnn_rnn/fold-{fold}/predictions.parquet").exists()

    # Deleted, as the message says: the next plain run rebuilds it and everything downstream,
    # although report.html (from the first run) is still there and newer than every existing input.
    volumes.unlink()
    plan = planned_jobs(snakemake(workdir, "-n"))
    assert plan.get("extract_subject") == 1 and plan.get("report") == 1, plan
    snakemake(workdir, "--cores", "2")
    assert storage.read_volumes(volumes).participant_id == "sub-001"
    report = (workdir / "results/report.html").stat().st_mtime_ns
    downstream = [workdir / "results/dataset/cohort.parquet", *_fold_outputs(workdir),
                  workdir / "results/evaluate/predictions.parquet", workdir / "results/evaluate/metrics.tsv"]
    assert all(path.is_file() for path in downstream)
    assert all(report > path.stat().st_mtime_ns for path in downstream)
    assert all(path.stat().st_mtime_ns > volumes.stat().st_mtime_ns for path in downstream)
    assert planned_jobs(snakemake(workdir, "-n")) == {}

    # Any one fold output missing (deleted, or removed with a failed job): its job and all after it rerun.
    (workdir / "results/models/model-dummy/fold-1/card.json").unlink()
    plan = planned_jobs(snakemake(workdir, "-n"))
    assert plan == {"train_model": 1, "evaluate": 1, "report": 1, "all": 1}, plan


def _start(workdir, *args):
    env = dict(os.environ)
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("NILEARN_DATA", str(workdir / ".nilearn_data"))
    cmd = [sys.executable, "-m", "snakemake", *args, "--configfile", "config/test.yaml"]
    # Its own process group, so that the kill takes the running job with it (as closing a terminal does).
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_killed_run_leaves_a_lock_that_unlock_lifts(study, tmp_path):
    workdir = make_workdir(tmp_path / "work", _config(study))
    target = ("--cores", "1", VOLUMES)
    process = _start(workdir, *target)
    locks = workdir / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())):
        assert process.poll() is None, "snakemake ended before it locked the folder"
        assert time.monotonic() < deadline, "no lock file after 120 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert any(locks.iterdir())

    locked = snakemake(workdir, *target, check=False)
    assert locked.returncode != 0
    assert "LockException" in locked.stderr + locked.stdout
    assert "cannot be locked" in locked.stderr + locked.stdout

    snakemake(workdir, "--unlock")
    snakemake(workdir, *target)
    assert storage.read_volumes(workdir / VOLUMES).participant_id == "sub-001"


def test_yaml_syntax_error_in_the_config_file_names_file_line_and_column(tmp_path):
    workdir = make_workdir(tmp_path / "work")
    config = workdir / "config" / "config.yaml"
    lines = config.read_text().splitlines()
    number = lines.index("seed: 42") + 1
    lines[number - 1] = "seed: [42"  # an unclosed list
    config.write_text("\n".join(lines) + "\n")
    result = snakemake(workdir, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    match = re.search(r"config/config\.yaml, line (\d+), column (\d+): not valid YAML: (.*)", output)
    assert match, output
    assert int(match.group(1)) > number and "flow sequence" in match.group(3), output
    assert f"at line {number}" in match.group(3)


def test_yaml_syntax_error_in_a_command_line_config_file_is_shown_with_verbose(tmp_path):
    # Snakemake reads --configfile before the workflow's code runs and names neither file nor line;
    # the README's workaround (--verbose) shows yaml's own message, which names both.
    workdir = make_workdir(tmp_path / "work")
    (workdir / "my.yaml").write_text("train:\n  models: [dummy]\n dataset: {}\n")
    plain = snakemake(workdir, "-n", "--configfile", "my.yaml", check=False)
    assert plain.returncode != 0
    assert "Config file is not valid JSON or YAML" in plain.stdout + plain.stderr
    verbose = snakemake(workdir, "-n", "--configfile", "my.yaml", "--verbose", check=False)
    assert verbose.returncode != 0
    assert re.search(r'in "my\.yaml", line 3, column 2', verbose.stdout + verbose.stderr), verbose.stderr
