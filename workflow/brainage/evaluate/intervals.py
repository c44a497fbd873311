"""95 % bootstrap intervals of MAE, r and R², and paired intervals of MAE differences between models."""

from __future__ import annotations

import numpy as np

#: Two-sided coverage of every interval.
LEVEL = 0.95


def bootstrap_indices(n_subjects: int, n_resamples: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """Subjects drawn with replacement: one row of indices per resample.

    The same rows serve every model of a set, so differences between models are paired (each
    resample holds the same people for both).

    Parameters
    ----------
    n_subjects : int
    n_resamples : int
    seed : int or numpy.random.SeedSequence
        Seeds ``numpy.random.default_rng``: the intervals are reproducible.

    Returns
    -------
    ndarray of int64, shape (n_resamples, n_subjects)
    """
    return np.random.default_rng(seed).integers(0, n_subjects, size=(n_resamples, n_subjects))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """Percentile interval at ``LEVEL``, NaN resamples (e.g. constant predictions for r) left out."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _resampled_r(age: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pearson r per row of ``(n_resamples, n)`` arrays; NaN where either side is constant."""
    a = age - age.mean(axis=1, keepdims=True)
    p = predicted - predicted.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (p * p).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * p).sum(axis=1) / denominator, np.nan)


def metric_intervals(age: np.ndarray, predicted: np.ndarray, indices: np.ndarray) -> dict:
    """Bootstrap percentile intervals of one model's MAE, r and R².

    Parameters
    ----------
    age, predicted : ndarray, shape (n_subjects,), float (years)
    indices : ndarray of int, shape (n_resamples, n_subjects)
        From :func:`bootstrap_indices`.

    Returns
    -------
    dict
        ``mae_ci_low``, ``mae_ci_high`` (years), ``r_ci_low``, ``r_ci_high``, ``r2_ci_low``,
        ``r2_ci_high``. r is NaN in a resample where the predictions are constant (the dummy):
        those resamples are left out, and the interval is NaN when all are.
    """
    age, predicted = np.asarray(age, dtype=float), np.asarray(predicted, dtype=float)
    a, p = age[indices], predicted[indices]  # (n_resamples, n_subjects)
    mae = np.abs(p - a).mean(axis=1)
    total = ((a - a.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(total > 0, 1 - ((p - a) ** 2).sum(axis=1) / total, np.nan)
    out = {}
    for name, values in (("mae", mae), ("r", _resampled_r(a, p)), ("r2", r2)):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _percentiles(values)
    return out


def paired_mae_difference(
    age: np.ndarray, predicted: np.ndarray, reference: np.ndarray, indices: np.ndarray | None
) -> tuple[float, float, float]:
    """MAE of ``predicted`` minus MAE of ``reference`` on the same subjects, with its paired interval.

    Parameters
    ----------
    age, predicted, reference : ndarray, shape (n_subjects,), float (years)
        The same subjects in the same order for both models.
    indices : ndarray of int, shape (n_resamples, n_subjects), or None
        None: the difference only (``low`` and ``high`` NaN).

    Returns
    -------
    difference, low, high : float
        Negative: ``predicted`` is the more accurate. An interval that excludes 0 is a
        difference at the 5 % level (two-sided, percentile bootstrap).
    """
    age, predicted, reference = (np.asarray(x, dtype=float) for x in (age, predicted, reference))
    per_subject = np.abs(predicted - age) - np.abs(reference - age)
    if indices is None:
        return float(per_subject.mean()), float("nan"), float("nan")
    low, high = _percentiles(per_subject[indices].mean(axis=1))
    return float(per_subject.mean()), low, high
