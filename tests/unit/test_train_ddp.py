"""Distributed data parallel through torchrun: 2 CPU processes (gloo) train as one process would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from train_fixtures import TINY_PARAMS, write_study

from brainage import storage

# The loop under torchrun, on a network without batch-norm or dropout: averaging the gradients
# of two halves of each batch is the gradient of the whole batch, so the weights must end as in
# one process.
SCRIPT = """
import sys
import numpy as np, torch, torch.distributed as dist
from brainage.torchloop.data import WindowDataset
from brainage.torchloop.loop import LoopSettings, train_network

def run():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((12, 3)).astype(np.float32) for _ in range(8)]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(4 * 3, 1), torch.nn.Flatten(0))
    settings = LoopSettings(epochs=3, batch_size=4, lr=0.05, weight_decay=0.01, patience=3)
    history = train_network(net, WindowDataset(arrays, np.arange(8.0) / 8, 4), settings,
                            rng=np.random.default_rng(1), generator=torch.Generator().manual_seed(0),
                            device=torch.device("cpu"))
    return net, history

if len(sys.argv) > 2:
    dist.init_process_group("gloo")
net, history = run()
rank = dist.get_rank() if dist.is_initialized() else 0
torch.save({"weights": torch.cat([p.detach().flatten() for p in net.parameters()]),
            "windows": history.windows}, f"{sys.argv[1]}-{rank}.pt")
if dist.is_initialized():
    dist.destroy_process_group()
"""


def _torchrun(n: int, *args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(n), *args]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def test_two_processes_end_with_the_weights_of_one(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "single")], check=True, timeout=120)
    result = _torchrun(2, str(script), str(tmp_path / "ddp"), "distributed")
    assert result.returncode == 0, result.stderr
    single = torch.load(tmp_path / "single-0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"ddp-{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)  # in sync
    torch.testing.assert_close(ranks[0]["weights"], single["weights"], rtol=1e-5, atol=1e-6)
    assert not torch.equal(single["weights"], torch.zeros_like(single["weights"]))
    # Each process stepped on half of every batch: 2 of 4, twice per epoch.
    assert single["windows"] == [8, 8, 8] and ranks[0]["windows"] == ranks[1]["windows"] == [4, 4, 4]


def test_train_cli_under_torchrun_writes_one_set_of_outputs(tmp_path):
    study = write_study(tmp_path, n=16, n_folds=2)
    out = tmp_path / "out"
    result = _torchrun(
        2, "-m", "brainage.train", "model", "--model", "roi_gru", "--fold", "0",
        "--cohort", str(study["cohort"]), "--splits", str(study["splits"]),
        "--inputs", *map(str, study["inputs"]), "--params", json.dumps(TINY_PARAMS["roi_gru"]),
        "--seed", "42", "--threads", "1", "--out-dir", str(out), "--inner-folds", "8",
    )
    assert result.returncode == 0, result.stderr
    card = storage.read_json(out / "card.json")
    ddp = card["distributed"]
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    assert ddp["ranks"][0]["weights_checksum"] == ddp["ranks"][1]["weights_checksum"]
    # 8 training subjects, each cross-fitted by one of 8 members; a member trains on 6 of its 7
    # (one early-stopping subject): batches of 4 and 2 shared by the 2 processes.
    assert card["n_train"] == 8 and card["n_inner"] == 8
    assert [r["windows"] for r in ddp["ranks"]] == [card["epochs_run"][-1] * 3] * 2
    pred = storage.read_table(out / "predictions.parquet")
    assert (pred["split"] == "test").sum() == 8 and np.isfinite(pred["predicted_age"]).all()
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "checkpoint.pt", "predictions.parquet"]
