"""Tiny synthetic inputs with a planted age effect, for the model and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainage import storage

AGE_MIN, AGE_MAX = 10.0, 70.0
# Tiny torch settings: every fit in the tests takes well under a second.
TINY_ROI_GRU = dict(hidden=8, conv_channels=6, window=8, epochs=3, batch_size=4, lr=0.01,
                    weight_decay=0.0001, dropout=0.1, patience=8, target="age", bf16=True, compile=False)
TINY_CNN_RNN = dict(channels=[2, 4], hidden=6, rnn="gru", window=4, epochs=2, batch_size=4, lr=0.01,
                    weight_decay=0.0001, dropout=0.1, patience=8, augment=True, target="age",
                    bf16=True, compile=False)
TINY_ROI_CONN = dict(hidden=4, window=1200, epochs=3, batch_size=4, lr=0.01, weight_decay=0.0001, dropout=0.0,
                     patience=8, target="age", shrinkage=0.5, frame_dropout=0.1, alphas=[0.1, 1.0, 10.0],
                     bf16=True, compile=False)
TINY_CNN_CONN = dict(TINY_ROI_CONN, channels=[2])
TINY_PARAMS = {"dummy": {}, "connectome_ridge": {"kind": "correlation", "alphas": [1.0, 10.0, 100.0]},
               "roi_gru": TINY_ROI_GRU, "roi_conn": TINY_ROI_CONN, "cnn_rnn": TINY_CNN_RNN, "cnn_conn": TINY_CNN_CONN, "stack": {"models": ["ridge", "gru"]}}
GRID = (6, 7, 6)
# 4 mm voxels, world x = 0 half-way between voxels 2 and 3 (the grid's centre, as in MNI space):
# left-right flips mirror the grid.
GRID_AFFINE = np.array([[4.0, 0, 0, -10.0], [0, 4.0, 0, -12.0], [0, 0, 4.0, -10.0], [0, 0, 0, 1.0]])


def ages_for(n: int, rng: np.random.Generator) -> np.ndarray:
    """Ages spread uniformly over [AGE_MIN, AGE_MAX], shuffled."""
    return rng.permutation(np.linspace(AGE_MIN, AGE_MAX, n))


def planted_series(ages: np.ndarray, rng: np.random.Generator, n_timepoints: int = 120, n_regions: int = 6,
                   offset: float = 0.0) -> list[np.ndarray]:
    """ROI series whose region 0-1 correlation rises linearly with age (0 to 0.8).

    With ``offset`` > 0, region 2 also gets a mean shift of ``offset * relative age`` (an
    easy signal for the small networks). Lengths vary by a few frames, like censored runs.
    """
    out = []
    for age in ages:
        rel = (age - AGE_MIN) / (AGE_MAX - AGE_MIN)
        t = n_timepoints - int(rng.integers(0, 5))
        x = rng.standard_normal((t, n_regions))
        c = 0.8 * rel
        x[:, 1] = c * x[:, 0] + np.sqrt(1 - c**2) * x[:, 1]
        x[:, 2] += offset * rel
        out.append(x.astype(np.float32))
    return out


def blob_mask(grid: tuple[int, int, int] = GRID) -> np.ndarray:
    """Brain mask: the grid minus a one-voxel border."""
    mask = np.zeros(grid, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    return mask


def planted_volumes(ages: np.ndarray, rng: np.random.Generator, n_timepoints: int = 10,
                    grid: tuple[int, int, int] = GRID) -> list[np.ndarray]:
    """Frames (n_timepoints, x, y, z): noise plus a blob (left half) whose amplitude is the relative age x 2."""
    mask = blob_mask(grid)
    out = []
    for age in ages:
        rel = (age - AGE_MIN) / (AGE_MAX - AGE_MIN)
        v = 0.3 * rng.standard_normal((n_timepoints, *grid))
        v[:, 1:3, 2:5, 2:4] += 2.0 * rel
        v[:, ~mask] = 0.0
        out.append(v.astype(np.float32))
    return out


def write_study(root: Path, n: int = 12, n_folds: int = 3, kind: str = "series", seed: int = 0,
                extra: int = 1) -> dict:
    """Write cohort.parquet, splits.tsv and per-subject input files (+ ``extra`` non-cohort ones).

    Returns
    -------
    dict
        cohort, splits (paths), inputs (list of paths, cohort and extra subjects), ids, ages, folds.
    """
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i:02d}" for i in range(n + extra)]
    ages = ages_for(n + extra, rng)
    cohort = pd.DataFrame({"participant_id": ids[:n], "dataset": "demo", "site": "siteA", "age": ages[:n],
                           "sex": "F", "mean_fd": 0.1})
    folds = np.arange(n) % n_folds
    storage.write_table(root / "cohort.parquet", cohort, kind="cohort")
    storage.write_tsv(root / "splits.tsv", pd.DataFrame({"participant_id": ids[:n], "fold": folds}))
    inputs = []
    if kind == "series":
        arrays = planted_series(ages, rng, n_timepoints=40, offset=2.0)
        for pid, a in zip(ids, arrays):
            path = root / f"{pid}_timeseries.parquet"
            storage.write_timeseries(path, a, [f"roi_{j:03d}" for j in range(a.shape[1])], participant_id=pid)
            inputs.append(path)
    else:
        for pid, a in zip(ids, planted_volumes(ages, rng)):
            path = root / f"{pid}_volumes.parquet"
            storage.write_volumes(path, a, blob_mask(), GRID_AFFINE, participant_id=pid)
            inputs.append(path)
    return {"cohort": root / "cohort.parquet", "splits": root / "splits.tsv", "inputs": inputs,
            "ids": ids, "ages": ages, "folds": folds}
