"""Stacking: a non-negative linear combination of the base models' cross-fitted predictions, or the
choice of one of them (hyperparameter selection by inner cross-validation)."""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.linear_model import LinearRegression

from brainage.errors import ConfigError
from brainage.models._inputs import check_ages, check_arrays


METHODS = ("nnls", "select")


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """Parameters of ``stack`` and their defaults (config/config.yaml lists the same values).

    Attributes
    ----------
    models : tuple of str
        The base models combined: names of ``train.models`` (variants included), each trained
        in the same outer folds. Empty: every other model of ``train.models`` except the dummy
        (filled in by the workflow).
    method : {"nnls", "select"}
        ``nnls``: an intercept plus non-negative weights (stacked generalisation). ``select``: the
        one base model whose cross-fitted predictions of the training subjects have the lowest mean
        absolute error, unchanged (weight 1, intercept 0). Listing variants of one model that differ
        in a hyperparameter makes ``select`` a choice of that hyperparameter by inner
        cross-validation, on each outer fold's training subjects only.
    """

    models: tuple[str, ...] = ()
    method: str = "nnls"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"stack: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if "stack" in self.models:
            raise ConfigError("stack: models must not include the stack itself")
        if len(set(self.models)) < len(self.models):
            raise ConfigError(f"stack: models lists a model twice: {list(self.models)}")


class Stack:
    """Age = intercept + sum of w_m x (model m's predicted age), every weight w_m >= 0.

    Stacked generalisation (Wolpert 1992; Breiman 1996, Machine Learning 24:49: non-negative
    weights keep the combination an interpolation rather than a fit of noise). The weights are
    learned on the base models' *cross-fitted* predictions of the training subjects (each
    predicted by a base model that never saw it) and applied to their predictions of the test
    subjects, so the outer test fold never steers the combination. A weight of 0 drops a model:
    the choice of the stacking set is made on the training subjects only. scikit-learn's
    ``LinearRegression(positive=True)`` solves the constrained least squares (scipy's NNLS).
    With ``method="select"`` the combination is the single base model of lowest cross-fitted MAE.

    Parameters
    ----------
    config : StackConfig
    seed : int
        Unused (the fit is deterministic).
    """

    name = "stack"
    input_kind = "predictions"
    Config = StackConfig

    def __init__(self, config: StackConfig = StackConfig(), seed: int = 0):
        self.config = config
        self.seed = seed

    def _matrix(self, X) -> np.ndarray:
        arrays = check_arrays(X, self.input_kind, self.name)
        widths = {a.shape[0] for a in arrays}
        if widths != {len(self.config.models)}:
            raise ValueError(
                f"{self.name}: each subject needs one prediction per base model ({len(self.config.models)}: "
                f"{', '.join(self.config.models)}); found {sorted(widths)}"
            )
        matrix = np.vstack(arrays).astype(np.float64)
        if not np.isfinite(matrix).all():
            raise ValueError(f"{self.name}: base predictions contain NaN or inf")
        return matrix

    def fit(self, X, y, X_valid=None, y_valid=None):
        """Fit the weights on ``X`` (per subject: the base models' predicted ages) and ages ``y``."""
        matrix = self._matrix(X)
        ages = check_ages(y, len(matrix), self.name)
        if self.config.method == "select":
            errors = np.abs(matrix - ages[:, None]).mean(axis=0)
            self.weights_ = np.eye(len(self.config.models))[int(np.argmin(errors))]
            self.intercept_ = 0.0
            extra = {"inner_mae": {m: float(e) for m, e in zip(self.config.models, errors)}}
        else:
            regression = LinearRegression(positive=True).fit(matrix, ages)
            self.weights_, self.intercept_, extra = regression.coef_, float(regression.intercept_), {}
        weights = {m: float(w) for m, w in zip(self.config.models, self.weights_)}
        self.fit_info_ = {"weights": weights, "intercept": self.intercept_, **extra}
        return self

    def predict(self, X) -> np.ndarray:
        """Return the combined predicted ages (years), shape (n_subjects,), float64."""
        return np.asarray(self.intercept_ + self._matrix(X) @ self.weights_, dtype=np.float64)
