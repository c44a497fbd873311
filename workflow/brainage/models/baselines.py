"""scikit-learn baselines: the training-mean dummy and functional connectivity -> RidgeCV."""

from __future__ import annotations

import dataclasses

import numpy as np
from nilearn.connectome import ConnectivityMeasure
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from brainage.errors import ConfigError
from brainage.models._inputs import check_ages, check_arrays

_KINDS = ("correlation", "tangent", "partial correlation")
_TARGETS = ("age", "log_age")


@dataclasses.dataclass(frozen=True)
class DummyConfig:
    """The dummy model has no parameters."""


class DummyAge(RegressorMixin, BaseEstimator):
    """Predict the training mean age for everyone: the reference every model must beat.

    Parameters
    ----------
    config : DummyConfig
    seed : int
        Unused (nothing is random); kept so every model is built the same way.
    """

    name = "dummy"
    input_kind = "series"
    Config = DummyConfig

    def __init__(self, config: DummyConfig = DummyConfig(), seed: int = 0):
        self.config = config
        self.seed = seed

    def fit(self, X, y, X_valid=None, y_valid=None):
        """Store the mean of ``y`` (years); ``X_valid``/``y_valid`` are not needed."""
        arrays = check_arrays(X, self.input_kind, self.name)
        self.mean_ = float(np.mean(check_ages(y, len(arrays), self.name)))
        self.fit_info_ = {"mean_age": self.mean_}
        return self

    def predict(self, X) -> np.ndarray:
        """Return the training mean, shape (n_subjects,), float64."""
        arrays = check_arrays(X, self.input_kind, self.name)
        return np.full(len(arrays), self.mean_, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class ConnectomeRidgeConfig:
    """Parameters of ``connectome_ridge`` and their defaults (config/config.yaml lists the same values).

    Attributes
    ----------
    kind : {"correlation", "tangent", "partial correlation"}
        nilearn ``ConnectivityMeasure`` kind.
    alphas : tuple of float
        Ridge penalties searched by ``RidgeCV`` (efficient leave-one-out).
    target : {"age", "log_age"}
        What the ridge is fitted on: age (years), or log(age) with predictions mapped back
        by exp to years. Cohorts of mostly children and adolescents (ABIDE: 6-58 y, mean 16)
        have right-skewed ages and connectivity that changes fastest at young ages; a linear
        model of log(age) fits that better (``bench/abide_reference.py`` measures it).
    """

    kind: str = "correlation"
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    target: str = "age"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ConfigError(f"connectome_ridge: kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ConfigError(f"connectome_ridge: alphas must be a non-empty list of positive numbers, got {self.alphas}")
        if self.target not in _TARGETS:
            raise ConfigError(f"connectome_ridge: target {self.target!r} is not one of {', '.join(_TARGETS)}")


class ConnectomeRidge(RegressorMixin, BaseEstimator):
    """Functional connectivity (vectorised lower triangle) -> standard scaling -> RidgeCV.

    A classic, strong brain-age baseline (Dadi et al. 2019, NeuroImage 192:115-134: tangent
    space connectivity with a ridge model ranks among the best pipelines). Everything, the
    tangent reference mean included, is fitted on the training subjects only (one Pipeline).

    Parameters
    ----------
    config : ConnectomeRidgeConfig
    seed : int
        Unused (RidgeCV's leave-one-out search is deterministic).
    """

    name = "connectome_ridge"
    input_kind = "series"
    Config = ConnectomeRidgeConfig

    def __init__(self, config: ConnectomeRidgeConfig = ConnectomeRidgeConfig(), seed: int = 0):
        self.config = config
        self.seed = seed

    def _pipeline(self) -> Pipeline | TransformedTargetRegressor:
        connectivity = ConnectivityMeasure(
            kind=self.config.kind,
            vectorize=True,
            discard_diagonal=True,
            # Explicit: nilearn 0.14 changes the default to this (shared/docs/ENVIRONMENT.md).
            standardize="zscore_sample",
        )
        pipeline = Pipeline(
            [
                ("connectivity", connectivity),
                ("scale", StandardScaler()),
                ("ridge", RidgeCV(alphas=np.asarray(self.config.alphas, dtype=float))),
            ]
        )
        if self.config.target == "age":
            return pipeline
        # scikit-learn's wrapper rather than our own log/exp: it also checks that they invert.
        return TransformedTargetRegressor(regressor=pipeline, func=np.log, inverse_func=np.exp)

    def fit(self, X, y, X_valid=None, y_valid=None):
        """Fit on ``X`` (list of (n_timepoints, n_regions) arrays) and ages ``y`` (years).

        ``X_valid``/``y_valid`` are not needed: RidgeCV chooses alpha by leave-one-out.
        """
        arrays = check_arrays(X, self.input_kind, self.name)
        ages = check_ages(y, len(arrays), self.name)
        if self.config.target == "log_age" and np.any(ages <= 0):
            raise ValueError(f"{self.name}: target log_age needs ages > 0, found {ages.min()}")
        model = self._pipeline().fit(arrays, ages)
        self.model_ = model
        # The fitted Pipeline (TransformedTargetRegressor fits a clone of it as regressor_).
        self.pipeline_ = model if isinstance(model, Pipeline) else model.regressor_
        self.fit_info_ = {"alpha": float(self.pipeline_.named_steps["ridge"].alpha_)}
        return self

    def predict(self, X) -> np.ndarray:
        """Return predicted ages (years), shape (n_subjects,), float64."""
        arrays = check_arrays(X, self.input_kind, self.name)
        return np.asarray(self.model_.predict(arrays), dtype=np.float64).reshape(-1)
