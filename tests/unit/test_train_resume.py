"""A training job killed mid-run resumes from its last per-epoch checkpoint and ends as if never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from train_fixtures import TINY_PARAMS, write_study

from brainage import storage

# Enough epochs that the job is still running when the first checkpoint appears.
PARAMS = dict(TINY_PARAMS["cnn_rnn"], epochs=12, patience=12)


def _command(study, out):
    return [sys.executable, "-m", "brainage.train", "model", "--model", "cnn_rnn", "--fold", "0",
            "--cohort", str(study["cohort"]), "--splits", str(study["splits"]),
            "--inputs", *map(str, study["inputs"]), "--params", json.dumps(PARAMS),
            "--seed", "42", "--threads", "1", "--out-dir", str(out), "--inner-folds", "2"]


def _env():
    return dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the deterministic CPU path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study"), n=24, n_folds=2, kind="volumes")


def test_killed_training_resumes_and_gives_the_uninterrupted_predictions(study, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(_command(study, whole), env=_env(), check=True, timeout=300)
    # The per-epoch states and finished inner fits are removed once the fold's outputs are written.
    assert sorted(p.name for p in whole.iterdir()) == ["card.json", "checkpoint.pt", "predictions.parquet"]

    # Killed in the second inner fit: the first is kept whole (inner-0.pt), the second per epoch.
    job = subprocess.Popen(_command(study, broken), env=_env())
    resume = broken / "resume-inner1.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    state = torch.load(resume, weights_only=True)
    killed_after = state["epoch"]
    # The per-epoch file is a model card too: what (fingerprint), with what (versions), how far.
    assert state["fingerprint"]["model"] == "cnn_rnn" and state["fingerprint"]["params"] == PARAMS
    assert state["versions"]["torch"] == str(torch.__version__)
    assert len(state["history"]["train_loss"]) == killed_after
    assert 1 <= killed_after < PARAMS["epochs"] and not (broken / "predictions.parquet").exists()
    assert (broken / "inner-0.pt").exists()

    rerun = subprocess.run(_command(study, broken), env=_env(), check=True, timeout=300, capture_output=True, text=True)
    assert "inner fit 1: reusing" in rerun.stderr  # not trained again
    card = storage.read_json(broken / "card.json")
    assert card["fit_info"][1]["resumed_from"] == killed_after
    assert [i["resumed_from"] for i in storage.read_json(whole / "card.json")["fit_info"]] == [None, None]
    a = storage.read_table(whole / "predictions.parquet")
    b = storage.read_table(broken / "predictions.parquet")
    np.testing.assert_array_equal(a["predicted_age"], b["predicted_age"])
    assert card["epochs_run"] == storage.read_json(whole / "card.json")["epochs_run"]
    losses = [[info["train_loss"] for info in c["fit_info"]] for c in (card, storage.read_json(whole / "card.json"))]
    assert losses[0] == losses[1]


def test_a_checkpoint_of_another_run_is_ignored(study, tmp_path, caplog):
    out = tmp_path / "out"
    job = subprocess.Popen(_command(study, out), env=_env())
    while not (out / "resume-inner0.pt").exists() and job.poll() is None:
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()
    other = _command(study, out)
    other[other.index("--seed") + 1] = "43"
    result = subprocess.run(other, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "checkpoint of another run (fingerprint differs); training from the start" in result.stderr
    assert storage.read_json(out / "card.json")["fit_info"][0]["resumed_from"] is None
