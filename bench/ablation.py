"""Ablation of the CNN-RNN: plain vs augmentation vs pretraining vs both, next to the ROI models, same folds.

Usage (inside the installed environment, or ``PYTHONPATH=workflow`` on a GPU machine):

    python bench/abide_volumes.py --out /tmp/abide --max-subjects 300      # the projected ABIDE volumes
    python bench/ablation.py --data /tmp/abide --work /tmp/abl [--record]
    python bench/ablation.py --demo --work /tmp/abl_demo                   # the demo cohort (runs snakemake)

``--data`` is a folder as bench/abide_volumes.py writes it (volumes/, series/, participants.tsv);
``--demo`` runs the default workflow's extraction on the embedded demo cohort first and reads its
files. One set of 5 age-stratified folds (``brainage.splits.make_folds``, the config seed) is used
by every model and variant; each (model, variant, fold) is one ``brainage.train.fit.train_model``
call, exactly what the workflow's train rule runs, and pretraining is one
``brainage.pretrain`` job per fold on that fold's training subjects. Reported per variant: MAE
(years) and Pearson r of the pooled out-of-fold test predictions, and the training time.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from demo_run import machine  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from brainage import storage
from brainage.evaluate.metrics import pearson_r
from brainage.splits import make_folds
from brainage.train.fit import train_model

REPO = Path(__file__).resolve().parents[1]
N_FOLDS = 5
# The four CNN-RNN variants: (augment, pretrain).
VARIANTS = {"plain": (False, False), "augment": (True, False), "pretrain": (False, True), "both": (True, True)}
ROI_MODELS = ["dummy", "connectome_ridge", "roi_gru"]


def config() -> dict:
    """The default config (config/config.yaml)."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def demo_inputs(work: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Run the default workflow up to the cohort on the demo; return participants, volume and series files."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # A copy of the workflow (as bench/demo_run.py does): results/ then lands in ``work``.
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("rules", "config", "envs", "workflow"):
        shutil.copytree(REPO / folder, work / folder, dirs_exist_ok=True)
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(os.cpu_count()),
                    "results/dataset/cohort.parquet"], cwd=work, env=env, check=True)
    people = storage.read_table(work / "results/dataset/cohort.parquet")
    volumes = sorted(glob.glob(str(work / "results/extract/**/*volumes.parquet"), recursive=True))
    series = sorted(glob.glob(str(work / "results/extract/**/*timeseries.parquet"), recursive=True))
    return people, volumes, series


def folder_inputs(data: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Participants, volume and series files of a bench/abide_volumes.py folder."""
    people = pd.read_csv(data / "participants.tsv", sep="\t", dtype={"participant_id": str})
    return people, sorted(map(str, (data / "volumes").glob("*.parquet"))), sorted(map(str, (data / "series").glob("*.parquet")))


def write_design(people: pd.DataFrame, seed: int, work: Path) -> tuple[Path, Path]:
    """cohort.parquet and splits.tsv: one set of folds for every model and variant."""
    folds = make_folds(people["age"].to_numpy(float), people["site"].astype(str).to_numpy(), N_FOLDS, False, seed)
    cohort = people[["participant_id", "age", "site"]].assign(dataset="bench", sex=people.get("sex", "n/a"))
    storage.write_table(work / "cohort.parquet", cohort, kind="cohort")
    storage.write_tsv(work / "splits.tsv", pd.DataFrame({"participant_id": people["participant_id"], "fold": folds}))
    return work / "cohort.parquet", work / "splits.tsv"


def pretrain(fold: int, design: tuple[Path, Path], volumes: list[str], params: dict, seed: int, out: Path,
             threads: int) -> Path:
    """The fold's self-supervised encoder (``python -m brainage.pretrain encoder``, as the workflow runs it)."""
    encoder = out / f"fold-{fold}" / "encoder.pt"
    if not encoder.exists():
        subprocess.run([sys.executable, "-m", "brainage.pretrain", "encoder", "--fold", str(fold),
                        "--cohort", str(design[0]), "--splits", str(design[1]), "--inputs", *volumes,
                        "--params", json.dumps(params), "--seed", str(seed), "--threads", str(threads),
                        "--out", str(encoder)], check=True)
    return encoder


def run(people, volumes, series, work: Path, epochs: int | None, threads: int, variants: list[str],
        roi: bool, pretrain_epochs: int | None = None) -> pd.DataFrame:
    """Train every (model, variant, fold); return the pooled out-of-fold test predictions."""
    cfg = config()
    seed = cfg["seed"]
    design = write_design(people, seed, work)
    jobs = []
    if roi:
        jobs += [(m, m, cfg["models"][m], series, None) for m in ROI_MODELS]
    for name in variants:
        augment, use_encoder = VARIANTS[name]
        params = dict(cfg["models"]["cnn_rnn"], augment=augment, pretrain=use_encoder)
        if epochs:
            params["epochs"] = epochs
        jobs.append((f"cnn_rnn_{name}", "cnn_rnn", params, volumes, use_encoder))
    rows = []
    for label, model, params, inputs, use_encoder in jobs:
        for fold in range(N_FOLDS):
            init = None
            if use_encoder:
                pre = dict(cfg["pretrain"], channels=cfg["models"]["cnn_rnn"]["channels"])
                if pretrain_epochs:
                    pre["epochs"] = pretrain_epochs
                init = pretrain(fold, design, volumes, pre, seed, work / "pretrain", threads)
            out = work / label / f"fold-{fold}"
            start = time.perf_counter()
            if not (out / "predictions.parquet").exists():
                train_model(model, fold, *design, inputs, params, seed, threads, out, init_encoder=init)
            seconds = time.perf_counter() - start
            pred = storage.read_table(out / "predictions.parquet")
            test = pred[(pred["split"] == "test") & (pred["set"] == "cv")]
            rows.append(test.assign(variant=label, seconds=seconds))
            print(f"{label} fold {fold}: MAE {np.mean(np.abs(test.predicted_age - test.age)):.2f} y "
                  f"({seconds:.0f} s)", file=sys.stderr, flush=True)
    return pd.concat(rows, ignore_index=True)


def summary(predictions: pd.DataFrame) -> pd.DataFrame:
    """MAE, r and training time per variant (pooled out-of-fold test predictions)."""
    out = []
    for label, p in predictions.groupby("variant", sort=False):
        seconds = p.drop_duplicates("fold")["seconds"].sum()
        out.append({"model": label, "n": len(p), "mae": float(np.mean(np.abs(p.predicted_age - p.age))),
                    "r": pearson_r(p.age.to_numpy(), p.predicted_age.to_numpy()), "train_seconds": round(seconds)})
    return pd.DataFrame(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a bench/abide_volumes.py output folder")
    source.add_argument("--demo", action="store_true", help="the embedded demo cohort")
    parser.add_argument("--work", type=Path, required=True, help="folder for every job's outputs (reused)")
    parser.add_argument("--epochs", type=int, default=None, help="override models.cnn_rnn.epochs")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="override pretrain.epochs")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-roi", action="store_true", help="skip the ROI models")
    parser.add_argument("--record", action="store_true", help="append the table to bench/results.md")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    people, volumes, series = demo_inputs(args.work) if args.demo else folder_inputs(args.data)
    start = time.perf_counter()
    predictions = run(people, volumes, series, args.work, args.epochs, args.threads, args.variants, not args.no_roi,
                      args.pretrain_epochs)
    predictions.to_csv(args.work / "predictions.tsv", sep="\t", index=False)
    table = summary(predictions)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    text = (
        f"## CNN-RNN ablation (bench/ablation.py), {datetime.date.today().isoformat()}, "
        f"{'demo' if args.demo else args.data.name}\n\n"
        f"Machine: {machine()}; {device}; torch {torch.__version__}. {len(people)} subjects, {N_FOLDS} folds "
        f"(the same for every row), {time.perf_counter() - start:.0f} s in all. MAE in years, r = Pearson "
        f"(age, prediction), pooled out-of-fold test predictions, no bias correction.\n\n"
        + table.round(3).to_markdown(index=False) + "\n"
    )
    print(text)
    (args.work / "ablation.md").write_text(text)
    if args.record:
        with open(REPO / "bench" / "results.md", "a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
