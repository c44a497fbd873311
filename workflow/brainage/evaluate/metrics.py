"""Brain-age accuracy metrics on pooled out-of-sample predictions, per model and set."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from brainage.splits import SETS

METRIC_COLUMNS = (
    "model", "set", "n", "mae", "rmse", "r", "r2", "mae_over_sd",
    "mae_corrected", "r_corrected", "delta_mae_vs_dummy",
)
DUMMY = "dummy"


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
        ``mae_corrected``, ``r_corrected`` for the corrected predictions.
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
    }


def metrics_table(test: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row of metrics per model and set: the ``cv`` rows, then the held-out ``test`` rows.

    Parameters
    ----------
    test : DataFrame
        Evaluated predictions: model, set ("cv" or "test"), age, predicted_age,
        predicted_age_corrected. A set without rows gets no metrics rows.
    models : list of str
        Model names in the wanted order.

    Returns
    -------
    DataFrame
        Columns ``METRIC_COLUMNS``; within each set the dummy first, the rest in the order of
        ``models``. ``delta_mae_vs_dummy`` is the model's MAE minus the dummy's on the same
        set (negative = better than the dummy), NaN without a dummy.
    """
    order = sorted(models, key=lambda m: m != DUMMY)  # stable: the dummy first, the rest as given
    tables = []
    for name in SETS:
        rows = test[test["set"] == name]
        if not rows.empty:
            tables.append(_set_metrics(rows, order).assign(set=name))
    return pd.concat(tables, ignore_index=True)[list(METRIC_COLUMNS)]


def _set_metrics(test: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rows = []
    for model in order:
        part = test[test["model"] == model]
        scores = model_metrics(
            part["age"].to_numpy(), part["predicted_age"].to_numpy(), part["predicted_age_corrected"].to_numpy()
        )
        rows.append({"model": model, **scores})
    table = pd.DataFrame(rows)
    dummy_mae = table.loc[table["model"] == DUMMY, "mae"]
    table["delta_mae_vs_dummy"] = table["mae"] - dummy_mae.iloc[0] if len(dummy_mae) else float("nan")
    return table
