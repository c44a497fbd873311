"""scikit-learn baselines: the training-mean dummy and functional connectivity -> RidgeCV."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from nilearn.connectome import ConnectivityMeasure
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from brainage.errors import ConfigError
from brainage.models._inputs import TARGETS, check_ages, check_arrays
from brainage.models.harmonize import Combat, check_sites

logger = logging.getLogger(__name__)

_KINDS = ("correlation", "tangent", "partial correlation")
_HARMONIZE = ("none", "combat")


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
    harmonize : {"none", "combat"}
        "combat": remove site effects from the connectivity features with ComBat (age preserved),
        learned on the training subjects; the model then needs each subject's site
        (``brainage.models.harmonize`` says how unseen sites and test ages are handled).
    """

    kind: str = "correlation"
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    target: str = "age"
    harmonize: str = "none"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ConfigError(f"connectome_ridge: kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ConfigError(f"connectome_ridge: alphas must be a non-empty list of positive numbers, got {self.alphas}")
        if self.target not in TARGETS:
            raise ConfigError(f"connectome_ridge: target {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.harmonize not in _HARMONIZE:
            raise ConfigError(f"connectome_ridge: harmonize {self.harmonize!r} is not one of {', '.join(_HARMONIZE)}")


class ConnectomeRidge(RegressorMixin, BaseEstimator):
    """Functional connectivity (vectorised lower triangle) -> standard scaling -> RidgeCV.

    A classic, strong brain-age baseline (Dadi et al. 2019, NeuroImage 192:115-134: tangent
    space connectivity with a ridge model ranks among the best pipelines). Everything, the
    tangent reference mean included, is fitted on the training subjects only (one Pipeline).

    With ``harmonize="combat"`` a ComBat step (``brainage.models.harmonize.Combat``, fitted on the
    training features, sites and ages) sits between connectivity and scaling: training subjects
    are harmonised with their own ages (ComBat's answer), test subjects without ages. It needs
    each subject's site, which a Pipeline hands to a middle step only with scikit-learn's global
    metadata-routing switch on, so the steps are then run one after the other:
    ``connectivity_`` -> ``combat_`` -> ``pipeline_`` (scaling and ridge).

    Parameters
    ----------
    config : ConnectomeRidgeConfig
    seed : int
        Unused (RidgeCV's leave-one-out search is deterministic).

    Attributes
    ----------
    pipeline_ : Pipeline
        The fitted steps connectivity -> scale -> ridge; with ComBat only scale -> ridge, on the
        harmonised features.
    connectivity_, combat_ : ConnectivityMeasure, Combat
        With ComBat only: the fitted steps before ``pipeline_``.
    fit_info_ : dict
        ``alpha``; with ComBat also ``combat_sites`` (the sites it was fitted on) and
        ``combat_unharmonised_sites`` (training sites with too few subjects, left unharmonised).
    predict_info_ : dict
        After ``predict`` with ComBat: ``unharmonised_sites`` (sites not seen in training, their
        subjects predicted from unharmonised features) and ``n_unharmonised`` (how many subjects);
        empty without ComBat.
    """

    name = "connectome_ridge"
    input_kind = "series"
    Config = ConnectomeRidgeConfig

    def __init__(self, config: ConnectomeRidgeConfig = ConnectomeRidgeConfig(), seed: int = 0):
        self.config = config
        self.seed = seed

    @property
    def uses_sites(self) -> bool:
        """Whether ``fit`` and ``predict`` need each subject's site (``harmonize="combat"``)."""
        return self.config.harmonize == "combat"

    def _connectivity(self) -> ConnectivityMeasure:
        return ConnectivityMeasure(
            kind=self.config.kind,
            vectorize=True,
            discard_diagonal=True,
            # Explicit: nilearn 0.14 changes the default to this (shared/docs/ENVIRONMENT.md).
            standardize="zscore_sample",
        )

    def _pipeline(self, connectivity: bool = True) -> Pipeline | TransformedTargetRegressor:
        steps = [("scale", StandardScaler()), ("ridge", RidgeCV(alphas=np.asarray(self.config.alphas, dtype=float)))]
        if connectivity:
            steps.insert(0, ("connectivity", self._connectivity()))
        pipeline = Pipeline(steps)
        if self.config.target == "age":
            return pipeline
        # scikit-learn's wrapper rather than our own log/exp: it also checks that they invert.
        return TransformedTargetRegressor(regressor=pipeline, func=np.log, inverse_func=np.exp)

    def fit(self, X, y, X_valid=None, y_valid=None, sites=None):
        """Fit on ``X`` (list of (n_timepoints, n_regions) arrays) and ages ``y`` (years).

        ``X_valid``/``y_valid`` are not needed: RidgeCV chooses alpha by leave-one-out.
        ``sites`` (str per subject, (n_subjects,)) is needed with ``harmonize="combat"`` and
        ignored otherwise.
        """
        arrays = check_arrays(X, self.input_kind, self.name)
        ages = check_ages(y, len(arrays), self.name, self.config.target)
        if self.uses_sites:
            labels = check_sites(sites, len(arrays), self.name)
            self.connectivity_ = self._connectivity()
            features = self.connectivity_.fit_transform(arrays)  # (n_subjects, n_edges)
            self.combat_ = Combat()
            # ComBat's covariate is age in years whatever the ridge's target.
            harmonised = self.combat_.fit_transform(features, labels, ages)
            model = self._pipeline(connectivity=False).fit(harmonised, ages)
        else:
            model = self._pipeline().fit(arrays, ages)
        self.model_ = model
        # The fitted Pipeline (TransformedTargetRegressor fits a clone of it as regressor_).
        self.pipeline_ = model if isinstance(model, Pipeline) else model.regressor_
        self.fit_info_ = {"alpha": float(self.pipeline_.named_steps["ridge"].alpha_)}
        if self.uses_sites:
            self.fit_info_["combat_sites"] = list(self.combat_.sites_)
            self.fit_info_["combat_unharmonised_sites"] = list(self.combat_.last_unharmonised_)
        return self

    def predict(self, X, sites=None) -> np.ndarray:
        """Return predicted ages (years), shape (n_subjects,), float64.

        ``sites`` as in ``fit``; test ages are never used (``brainage.models.harmonize``).
        """
        arrays = check_arrays(X, self.input_kind, self.name)
        self.predict_info_ = {}
        if not self.uses_sites:
            return np.asarray(self.model_.predict(arrays), dtype=np.float64).reshape(-1)
        labels = check_sites(sites, len(arrays), self.name)
        harmonised = self.combat_.transform(self.connectivity_.transform(arrays), labels)
        unseen, n_unseen = list(self.combat_.last_unharmonised_), self.combat_.last_n_unharmonised_
        self.predict_info_ = {"unharmonised_sites": unseen, "n_unharmonised": n_unseen}
        if n_unseen:
            logger.warning("%s: %d subject(s) of site(s) %s not harmonised (site absent from training or with "
                           "fewer than 2 training subjects)",
                           self.name, n_unseen, ", ".join(unseen))
        return np.asarray(self.model_.predict(harmonised), dtype=np.float64).reshape(-1)
