"""Brain-age accuracy metrics on pooled out-of-sample predictions, per model and set."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from brainage.evaluate.intervals import bootstrap_indices, metric_intervals, paired_mae_difference
from brainage.splits import SETS

METRIC_COLUMNS = (
    "model", "set", "n", "mae", "rmse", "r", "r2", "mae_over_sd",
    "mae_corrected", "r_corrected", "delta_age_r", "delta_age_r_corrected", "delta_mae_vs_dummy",
    # 95 % bootstrap intervals (subjects resampled; the same resamples for every model of a set)
    "mae_ci_low", "mae_ci_high", "r_ci_low", "r_ci_high", "r2_ci_low", "r2_ci_high",
    "delta_mae_vs_dummy_ci_low", "delta_mae_vs_dummy_ci_high",
    "delta_mae_vs_ridge", "delta_mae_vs_ridge_ci_low", "delta_mae_vs_ridge_ci_high",
)
DUMMY = "dummy"
#: The bar every model must clear: the connectome ridge, on the same folds and subjects.
RIDGE = "connectome_ridge"


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, NaN when either input is constant (e.g. a dummy's predictions).

    Parameters
    ----------
    x, y : ndarray, shape (n_subjects,), float
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    # scipy warns and returns NaN on constant input; say so without the warning.
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def model_metrics(age: np.ndarray, predicted: np.ndarray, corrected: np.ndarray) -> dict:
    """Accuracy of one model's test predictions.

    Parameters
    ----------
    age, predicted, corrected : ndarray, shape (n_subjects,), float (years)
        True age, raw prediction and bias-corrected prediction.

    Returns
    -------
    dict
        ``n``; ``mae``, ``rmse`` (years); ``r`` (Pearson, age vs prediction); ``r2``
        (coefficient of determination, 1 - SS_res / SS_tot); ``mae_over_sd``: MAE divided by
        the sample SD (ddof=1) of the true ages, so cohorts with different age ranges compare
        (a model no better than the mean scores about 0.8 on a normal age distribution);
        ``mae_corrected``, ``r_corrected`` for the corrected predictions; ``delta_age_r``,
        ``delta_age_r_corrected``: Pearson r of the brain-age delta (predicted minus true age)
        with age, raw and corrected. A correction fitted well leaves the corrected delta
        uncorrelated with age (r near 0); the raw delta of a model that regresses to the mean
        correlates negatively (Le et al. 2018, Front Psychiatry 9:35).
    """
    age, predicted, corrected = (np.asarray(a, dtype=float) for a in (age, predicted, corrected))
    sd = float(np.std(age, ddof=1)) if len(age) > 1 else float("nan")
    mae = float(mean_absolute_error(age, predicted))
    return {
        "n": len(age),
        "mae": mae,
        "rmse": float(root_mean_squared_error(age, predicted)),
        "r": pearson_r(age, predicted),
        "r2": float(r2_score(age, predicted)),
        "mae_over_sd": mae / sd if sd > 0 else float("nan"),
        "mae_corrected": float(mean_absolute_error(age, corrected)),
        "r_corrected": pearson_r(age, corrected),
        "delta_age_r": pearson_r(age, predicted - age),
        "delta_age_r_corrected": pearson_r(age, corrected - age),
    }


def metrics_table(test: pd.DataFrame, models: list[str], n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row of metrics per model and set: the ``cv`` rows, then the held-out ``test`` rows.

    Parameters
    ----------
    test : DataFrame
        Evaluated predictions: participant_id, model, set ("cv" or "test"), age,
        predicted_age, predicted_age_corrected. A set without rows gets no metrics rows.
        Within a set every model predicts the same subjects.
    models : list of str
        Model names in the wanted order.
    n_resamples : int
        Bootstrap resamples of the subjects for the intervals; 0: the interval columns are NaN.
    seed : int
        Seeds the resamples (one stream per set, shared by the set's models).

    Returns
    -------
    DataFrame
        Columns ``METRIC_COLUMNS``; within each set the dummy first, the rest in the order of
        ``models``. ``delta_mae_vs_dummy`` (``delta_mae_vs_ridge``) is the model's MAE minus
        the dummy's (the connectome ridge's) on the same subjects (negative = better), NaN
        without that model; their intervals are paired: each resample holds the same subjects
        for both models. Intervals are 95 % percentile bootstrap intervals.

    Raises
    ------
    ValueError
        Two models of a set predict different subjects.
    """
    order = sorted(models, key=lambda m: m != DUMMY)  # stable: the dummy first, the rest as given
    tables = []
    for k, name in enumerate(SETS):
        rows = test[test["set"] == name]
        if not rows.empty:
            stream = np.random.SeedSequence([seed, k])
            tables.append(_set_metrics(rows, order, n_resamples, stream).assign(set=name))
    return pd.concat(tables, ignore_index=True)[list(METRIC_COLUMNS)]


def _set_metrics(test: pd.DataFrame, order: list[str], n_resamples: int, stream) -> pd.DataFrame:
    # One row per subject and model, subjects in one order for every model (paired resamples).
    wide = {model: test[test["model"] == model].set_index("participant_id").sort_index() for model in order}
    subjects = next(iter(wide.values())).index
    for model, part in wide.items():
        if not part.index.equals(subjects):
            raise ValueError(f"model {model!r} predicts other subjects than {order[0]!r} in one set; "
                             "intervals and paired differences need the same subjects")
    indices = bootstrap_indices(len(subjects), n_resamples, stream) if n_resamples else None
    rows = []
    for model, part in wide.items():
        age, predicted = part["age"].to_numpy(), part["predicted_age"].to_numpy()
        scores = model_metrics(age, predicted, part["predicted_age_corrected"].to_numpy())
        if indices is not None:
            scores |= metric_intervals(age, predicted, indices)
        for reference, column in ((DUMMY, "delta_mae_vs_dummy"), (RIDGE, "delta_mae_vs_ridge")):
            if reference in wide:
                difference, low, high = paired_mae_difference(
                    age, predicted, wide[reference]["predicted_age"].to_numpy(), indices)
                scores |= {column: difference, f"{column}_ci_low": low, f"{column}_ci_high": high}
        rows.append({"model": model, **scores})
    return pd.DataFrame(rows).reindex(columns=[c for c in METRIC_COLUMNS if c != "set"])
