"""Checks shared by every model's ``fit``/``predict``: per-subject arrays and ages."""

from __future__ import annotations

import numpy as np

# Dimensions of one subject's array for each input kind:
# series (n_timepoints, n_regions); volumes (n_timepoints, x, y, z); predictions (n_base_models,).
INPUT_NDIM = {"series": 2, "volumes": 4, "predictions": 1}

# What a model may be fitted on (``target`` of connectome_ridge and the torch models): age in
# years, or log(age) with predictions mapped back by exp.
TARGETS = ("age", "log_age")


def check_arrays(X, input_kind: str, model: str) -> list[np.ndarray]:
    """Return ``X`` as a list of arrays after checking their dimensions.

    Parameters
    ----------
    X : sequence of ndarray
        One array per subject, shape (n_timepoints, n_regions) for "series" or
        (n_timepoints, x, y, z) for "volumes"; n_timepoints may differ between subjects.

    Raises
    ------
    ValueError
        If ``X`` is empty or an array has the wrong number of dimensions or no frames.
    """
    arrays = [np.asarray(a) for a in X]
    if not arrays:
        raise ValueError(f"{model}: no subjects given")
    ndim = INPUT_NDIM[input_kind]
    for i, a in enumerate(arrays):
        if a.ndim != ndim or a.shape[0] == 0:
            raise ValueError(
                f"{model}: subject {i} has an array of shape {a.shape}; expected {ndim} dimensions "
                f"({input_kind}) with at least one time point"
            )
    return arrays


def check_ages(y, n_subjects: int, model: str, target: str = "age") -> np.ndarray:
    """Return ages as float64 ``(n_subjects,)`` after checking length and finiteness.

    With ``target="log_age"`` every age must also be positive.

    Raises
    ------
    ValueError
        If the length differs from the number of subjects, an age is not finite, or (log_age)
        an age is not positive.
    """
    ages = np.asarray(y, dtype=np.float64).reshape(-1)
    if ages.shape[0] != n_subjects:
        raise ValueError(f"{model}: {ages.shape[0]} ages for {n_subjects} subjects")
    if not np.all(np.isfinite(ages)):
        raise ValueError(f"{model}: ages must be finite numbers (found NaN or inf)")
    if target == "log_age" and np.any(ages <= 0):
        raise ValueError(f"{model}: target log_age needs ages > 0, found {ages.min()}")
    return ages
