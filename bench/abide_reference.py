"""ABIDE I PCP cc200 brain-age reference: connectivity -> RidgeCV on log(age), plain and through brainage.

Usage: python bench/abide_reference.py [--data DIR] [--cache DIR] [--kinds ...] [--brainage-tangent-folds ...]
       [--no-append]   (BLAS threads: OMP_NUM_THREADS, default 1; about 10 min on one core)

The issue's reference recipe, on the 831 real subjects of ``shared/data/abide1_pcp_cpac_filtglobal_cc200``:
nilearn ``ConnectivityMeasure(kind, vectorize=True, discard_diagonal=True, standardize="zscore_sample")``
(default LedoitWolf covariance) -> ``StandardScaler`` -> ``RidgeCV(alphas=np.logspace(-1, 5, 25))`` fitted
on log(age), predictions exp(...) in years; 5-fold CV stratified on age deciles, shuffled with seed 42.
Expected (from the issue): correlation MAE 3.19 y (MAE/SD 0.44, r 0.76, R^2 0.55); tangent MAE 3.26,
r 0.78; dummy MAE 5.12 (matched by a dummy on log age: exp of the training mean of log age).

It runs the recipe twice: with plain nilearn / scikit-learn only (folds built here), and with brainage's
``ConnectomeRidge(target="log_age")`` on ``brainage.splits.make_folds(seed=42, n_folds=5)``. Prints a
table and appends a dated section to bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import sys

# Thread limits must be set before numpy loads its BLAS. One thread: on a busy 2-core machine two
# OpenBLAS threads per 200 x 200 eigh spin and wait on each other (tangent took > 25 CPU-min a fold
# with 2 threads, 1 min with 1).
_THREADS = os.environ.setdefault("OMP_NUM_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import datetime  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from nilearn.connectome import ConnectivityMeasure  # noqa: E402
from scipy.stats import pearsonr  # noqa: E402
from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.metrics import mean_absolute_error, r2_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/abide1_pcp_cpac_filtglobal_cc200")
ALPHAS = np.logspace(-1, 5, 25)
SEED, N_FOLDS = 42, 5
EXPECTED = {  # model -> (MAE, MAE/SD, r, R^2) from the issue; None = not given
    "dummy": (5.12, None, None, None),
    "dummy (log age)": (5.12, None, None, None),
    "correlation": (3.19, 0.44, 0.76, 0.55),
    "tangent": (3.26, None, 0.78, None),
}


def load(data: Path) -> tuple[list[np.ndarray], pd.DataFrame]:
    """ROI series (one (n_timepoints, 200) float32 array per subject) and participants, same order."""
    participants = pd.read_csv(data / "participants.tsv", sep="\t")
    table = pd.read_parquet(data / "timeseries_cc200.parquet").sort_values(["participant_id", "t"])
    rois = [c for c in table.columns if c.startswith("roi_")]
    groups = {pid: g[rois].to_numpy() for pid, g in table.groupby("participant_id", sort=False)}
    series = [groups[pid] for pid in participants["participant_id"]]
    return series, participants


def plain_folds(ages: np.ndarray) -> np.ndarray:
    """Age-decile strata, StratifiedKFold(5, shuffle, seed 42): fold index per subject."""
    strata = pd.qcut(ages, q=10, labels=False)
    folds = np.empty(len(ages), dtype=int)
    for k, (_, test) in enumerate(StratifiedKFold(N_FOLDS, shuffle=True, random_state=SEED).split(ages, strata)):
        folds[test] = k
    return folds


def _connectivity(kind: str) -> ConnectivityMeasure:
    return ConnectivityMeasure(kind=kind, vectorize=True, discard_diagonal=True, standardize="zscore_sample")


def plain_predictions(series: list[np.ndarray], ages: np.ndarray, folds: np.ndarray, kind: str) -> tuple:
    """Out-of-fold predicted ages (years) and the alpha chosen in each fold; connectivity fitted per fold."""
    predicted, alphas = np.empty(len(ages)), []
    for k in range(N_FOLDS):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        conn = _connectivity(kind)
        x_train = conn.fit_transform([series[i] for i in train])
        x_test = conn.transform([series[i] for i in test])
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(x_train, np.log(ages[train]))
        predicted[test] = np.exp(model.predict(x_test))
        alphas.append(float(model[-1].alpha_))
        print(f"plain {kind}: fold {k} done", flush=True)
    return predicted, alphas


def dummy_predictions(ages: np.ndarray, folds: np.ndarray, log: bool = False) -> np.ndarray:
    """Training mean of age, or with ``log`` exp(training mean of log age) (the geometric mean)."""
    predicted = np.empty(len(ages))
    for k in range(N_FOLDS):
        train = ages[folds != k]
        predicted[folds == k] = np.exp(np.log(train).mean()) if log else train.mean()
    return predicted


def brainage_dummy(series: list[np.ndarray], ages: np.ndarray, folds: np.ndarray) -> np.ndarray:
    from brainage.models import get_model

    predicted = np.empty(len(ages))
    for k in range(N_FOLDS):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        model = get_model("dummy", {}, SEED).fit([series[i] for i in train], ages[train])
        predicted[test] = model.predict([series[i] for i in test])
    return predicted


def brainage_predictions(series: list[np.ndarray], ages: np.ndarray, folds: np.ndarray, kind: str,
                          only: list[int] | None = None) -> tuple:
    """Out-of-fold predictions of brainage's ConnectomeRidge; NaN outside the folds in ``only``."""
    from brainage.models import get_model

    predicted, alphas = np.full(len(ages), np.nan), []
    for k in only if only is not None else range(N_FOLDS):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        model = get_model("connectome_ridge", {"kind": kind, "alphas": ALPHAS.tolist(), "target": "log_age"}, SEED)
        model.fit([series[i] for i in train], ages[train])
        predicted[test] = model.predict([series[i] for i in test])
        alphas.append(model.fit_info_["alpha"])
        print(f"brainage {kind}: fold {k} done", flush=True)
    return predicted, alphas


def metrics(ages: np.ndarray, predicted: np.ndarray) -> dict:
    done = np.isfinite(predicted)  # all subjects, or those of the folds run (--brainage-tangent-folds)
    ages, predicted = ages[done], predicted[done]
    mae = mean_absolute_error(ages, predicted)
    r = pearsonr(ages, predicted).statistic if np.std(predicted) > 0 else float("nan")
    return {"n": int(done.sum()), "MAE": mae, "MAE/SD": mae / np.std(ages, ddof=1), "r": r, "R2": r2_score(ages, predicted)}


def machine() -> str:
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    cpu = cpu.split(":", 1)[-1].strip() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores (BLAS/OpenMP threads: {_THREADS}), Python {sys.version.split()[0]}"


def _cached(cache: Path | None, key: str, compute) -> tuple[np.ndarray, list[float], float]:
    """Predictions, alphas and seconds for ``key``; stored in ``cache`` so a killed run resumes."""
    path = cache / f"{key}.npz" if cache else None
    if path is not None and path.exists():
        saved = np.load(path)
        return saved["predicted"], saved["alphas"].tolist(), float(saved["seconds"])
    start = time.perf_counter()
    predicted, alphas = compute()
    seconds = time.perf_counter() - start
    if path is not None:
        np.savez(path, predicted=predicted, alphas=np.asarray(alphas), seconds=seconds)
    return predicted, alphas, seconds


def run(data: Path, kinds: list[str], cache: Path | None, tangent_folds: list[int]) -> tuple[pd.DataFrame, dict]:
    series, participants = load(data)
    ages = participants["age"].to_numpy(dtype=float)
    from brainage.splits import make_folds

    folds = {"plain": plain_folds(ages),
             "brainage": make_folds(ages, participants["site"].to_numpy(), N_FOLDS, False, SEED)}
    info = {"n": len(ages), "same_folds": bool(np.array_equal(folds["plain"], folds["brainage"])),
            "n_constant": int((participants["n_zero_variance_rois"] > 0).sum())}
    rows, predictions = [], {}
    dummies = [("plain", "dummy", dummy_predictions(ages, folds["plain"])),
               ("plain", "dummy (log age)", dummy_predictions(ages, folds["plain"], log=True)),
               ("brainage", "dummy", brainage_dummy(series, ages, folds["brainage"]))]
    for route, name, predicted in dummies:
        rows.append({"route": route, "model": name, **metrics(ages, predicted), "alphas": "", "seconds": 0.0})
    for kind in kinds:  # cheap kind first: both routes of correlation before the slow tangent
        # Tangent's geometric mean iterates (up to 30 times) over every training subject: the slow part.
        only = tangent_folds if kind == "tangent" and len(tangent_folds) < N_FOLDS else None
        fits = {"plain": lambda: plain_predictions(series, ages, folds["plain"], kind),
                "brainage": lambda: brainage_predictions(series, ages, folds["brainage"], kind, only)}
        for route in ("plain", "brainage"):
            key = f"{route}_{kind}" + (f"_folds{''.join(map(str, only))}" if route == "brainage" and only else "")
            predicted, alphas, seconds = _cached(cache, key, fits[route])
            predictions[route, kind] = predicted
            rows.append({"route": route, "model": kind, **metrics(ages, predicted),
                         "alphas": " ".join(f"{a:.3g}" for a in alphas), "seconds": seconds})
            print(rows[-1], flush=True)
        info[f"max_diff_{kind}"] = float(np.nanmax(np.abs(predictions["plain", kind] - predictions["brainage", kind])))
    table = pd.DataFrame(rows)
    expected_mae = np.array([EXPECTED[m][0] for m in table["model"]])
    table["expected MAE/SD/r/R2"] = [" / ".join("-" if v is None else f"{v:g}" for v in EXPECTED[m])
                                     for m in table["model"]]
    table["MAE vs expected"] = [f"{100 * v:+.1f}%" for v in table["MAE"] / expected_mae - 1]
    return table, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--kinds", nargs="+", default=["correlation", "tangent"], choices=["correlation", "tangent"])
    parser.add_argument("--brainage-tangent-folds", type=int, nargs="+", default=list(range(N_FOLDS)),
                        help="folds to run brainage's tangent model on (all by default; it is slow)")
    parser.add_argument("--cache", type=Path, help="folder for per-model predictions (a rerun skips what is there)")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch bench/results.md")
    args = parser.parse_args()
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    table, info = run(args.data, args.kinds, args.cache, sorted(set(args.brainage_tangent_folds)))
    diffs = ", ".join(f"{k}: {info[f'max_diff_{k}']:.2g} y" for k in args.kinds)
    shown = table.round({"MAE": 3, "MAE/SD": 3, "r": 3, "R2": 3, "seconds": 1})
    text = shown.to_string(index=False)
    entry = (
        f"\n## ABIDE I PCP cc200 reference (connectivity -> RidgeCV on log age), {datetime.date.today().isoformat()}\n\n"
        f"Machine: {machine()}. `python bench/abide_reference.py`: {info['n']} subjects, 5-fold CV "
        f"(age deciles, seed 42); plain and brainage folds identical: {info['same_folds']}; "
        f"{info['n_constant']} subjects have constant ROIs; largest plain - brainage prediction difference "
        f"{diffs}. `seconds`: CPU-bound wall time per model on a shared, loaded machine. "
        "Metrics on pooled out-of-fold predictions (MAE/SD: SD of true age, ddof 1); `alphas`: RidgeCV's "
        "choice per fold; `n`: subjects whose fold was run. The issue's dummy figure (5.12) is that of a dummy fitted on log(age) like the "
        "ridge, i.e. exp(training mean of log age); brainage's `dummy` predicts the training mean age."
        "\n\n```\n" + text + "\n```\n"
    )
    print(entry)
    if not args.no_append:
        with open(REPO / "bench" / "results.md", "a") as out:
            out.write(entry)


if __name__ == "__main__":
    main()
