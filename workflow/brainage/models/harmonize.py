"""ComBat site harmonisation of feature vectors (neuroCombat), learned on training subjects only.

ComBat (Johnson et al. 2007, Biostatistics 8:118-127; for functional connectivity Yu et al. 2018,
Hum Brain Mapp 39:4213-4227) models each feature j of subject i at site k as

    y_ij = alpha_j + beta_j * age_i + gamma_kj + sqrt(delta_kj) * eps_ij

and estimates the site location gamma and scale delta by parametric empirical Bayes (pooled across
features), with age as a covariate so that a site's different age range is not taken for a site
effect. Harmonised: y* = alpha + beta * age + (y - alpha - beta * age - gamma) / sqrt(delta).

Unseen sites. Sites with fewer than 2 training subjects (no scale can be estimated from one) are
left out of the fit; they and sites absent from training are "unseen", and their subjects are
returned unchanged and reported (``last_unharmonised_``). Their gamma and delta cannot be estimated
with age as a covariate without their ages, and estimating them from the site's own features
without ages would align the site's mean with the training mean and so remove the site's real age
difference (a site of older subjects would be made to look as young as the training cohort).

Test ages. ``transform`` never takes ages: a model that predicts age must not see it. As
neuroCombat's ``neuroCombatFromTraining`` does, the age term enters at the training mean age ā:
y* = alpha + beta * ā + (y - alpha - beta * ā - gamma) / sqrt(delta). For a subject of age a this is
ComBat's answer plus beta * (a - ā) * (1 / sqrt(delta) - 1): the subject's age effect is divided by
sqrt(delta) of its site. With delta = 1 (no scale difference) it is exact; a site noisier than the
pool (delta > 1) has its age differences shrunk, a quieter one (delta < 1) has them stretched.
Training subjects (``fit_transform``) get ComBat's answer, with their own ages.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pandas as pd
from neuroCombat import neuroCombat

from brainage.models._inputs import check_ages

logger = logging.getLogger(__name__)

# One subject gives no within-site variance, so no scale delta (neuroCombat would return NaN).
MIN_SUBJECTS_PER_SITE = 2


def check_sites(sites, n_subjects: int, owner: str) -> np.ndarray:
    """Return site labels as a str array ``(n_subjects,)`` after checking length and missing values.

    Raises
    ------
    ValueError
        If ``sites`` is None, its length differs from the number of subjects, or a label is missing
        (None, NaN or empty).
    """
    if sites is None:
        raise ValueError(f"{owner}: ComBat harmonisation needs each subject's site (sites=None)")
    labels = np.asarray(sites, dtype=object).reshape(-1)
    if labels.shape[0] != n_subjects:
        raise ValueError(f"{owner}: {labels.shape[0]} sites for {n_subjects} subjects")
    missing = [i for i, s in enumerate(labels) if pd.isna(s) or str(s) == ""]
    if missing:
        raise ValueError(f"{owner}: subjects {missing[:5]} have no site")
    return np.array([str(s) for s in labels], dtype=str)


def _check_features(features, owner: str) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{owner}: features must be a 2-D (n_subjects, n_features) array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{owner}: features must be finite numbers (found NaN or inf)")
    return X


class Combat:
    """ComBat with age as a preserved covariate: ``fit`` on training subjects, ``transform`` new ones.

    Parametric empirical Bayes, location and scale (neuroCombat's defaults: ``eb=True``,
    ``parametric=True``, ``mean_only=False``). See the module docstring for unseen sites and for how
    test subjects are harmonised without their ages.

    Attributes
    ----------
    sites_ : list of str
        Sites ComBat was fitted on (>= 2 training subjects each), sorted.
    varying_ : ndarray of bool, shape (n_features,)
        Features that vary across the fitted training subjects. Constant ones are left out of the fit
        and passed through unchanged (neuroCombat divides by their zero variance).
    grand_mean_ : ndarray, shape (n_varying,)
        alpha + beta * ā: the feature mean with the age term at the training mean age.
    var_pooled_ : ndarray, shape (n_varying,)
        Pooled residual variance of each feature.
    gamma_, delta_ : ndarray, shape (n_sites, n_varying)
        Empirical Bayes site location (in units of the pooled sd) and scale, rows in ``sites_`` order.
    last_unharmonised_ : list of str
        Sites of the last ``fit_transform``/``transform`` call that were not harmonised (unseen).
    last_n_unharmonised_ : int
        Subjects of the last call that were returned unchanged.
    """

    def fit(self, features, sites, ages) -> Combat:
        """Learn the site effects from training subjects.

        Parameters
        ----------
        features : ndarray, shape (n_subjects, n_features)
        sites : array-like of str, shape (n_subjects,)
        ages : array-like of float, shape (n_subjects,)
            Age in years, the covariate whose effect is preserved.

        Raises
        ------
        ValueError
            If fewer than 2 sites have >= 2 subjects, fewer than 2 features vary, or the inputs do
            not match (see ``check_sites``).
        """
        self._fit(features, sites, ages)
        return self

    def fit_transform(self, features, sites, ages) -> np.ndarray:
        """``fit`` and return the training subjects harmonised with their own ages (ComBat's answer).

        Returns
        -------
        ndarray, shape (n_subjects, n_features), float64
            Subjects of sites with < 2 subjects unchanged.
        """
        return self._fit(features, sites, ages)

    def transform(self, features, sites) -> np.ndarray:
        """Remove the learned site effects from new subjects, without their ages.

        Parameters
        ----------
        features : ndarray, shape (n_subjects, n_features)
        sites : array-like of str, shape (n_subjects,)

        Returns
        -------
        ndarray, shape (n_subjects, n_features), float64
            Subjects of sites not in ``sites_`` unchanged (listed in ``last_unharmonised_``).
        """
        X = _check_features(features, "combat")
        if X.shape[1] != self.varying_.shape[0]:
            raise ValueError(f"combat: fitted on {self.varying_.shape[0]} features, got {X.shape[1]}")
        labels = check_sites(sites, X.shape[0], "combat")
        out = X.copy()
        # Our own few lines rather than neuroCombat's neuroCombatFromTraining (0.2.12), which is the same
        # formula but cannot be called under our numpy (2.4): its int(np.where(old_levels == x)[0])
        # raises TypeError for every subject (converting a 1-element array to a Python scalar,
        # deprecated since numpy 1.25, is now an error).
        sd = np.sqrt(self.var_pooled_)
        for k, site in enumerate(self.sites_):
            rows = labels == site
            if not rows.any():
                continue
            z = (X[np.ix_(rows, self.varying_)] - self.grand_mean_) / sd
            z = (z - self.gamma_[k]) / np.sqrt(self.delta_[k])
            out[np.ix_(rows, self.varying_)] = z * sd + self.grand_mean_
        self._note_unharmonised(labels)
        return out

    def _fit(self, features, sites, ages) -> np.ndarray:
        X = _check_features(features, "combat")
        labels = check_sites(sites, X.shape[0], "combat")
        years = check_ages(ages, X.shape[0], "combat")
        names, counts = np.unique(labels, return_counts=True)
        fitted = names[counts >= MIN_SUBJECTS_PER_SITE]
        if len(fitted) < 2:
            found = ", ".join(f"{n}: {c}" for n, c in zip(names, counts))
            raise ValueError(
                f"combat: needs at least 2 sites with >= {MIN_SUBJECTS_PER_SITE} training subjects each; "
                f"subjects per site: {found}"
            )
        rows = np.isin(labels, fitted)
        varying = np.ptp(X[rows], axis=0) > 0
        if varying.sum() < 2:
            # The empirical Bayes priors are variances across features.
            raise ValueError(
                f"combat: needs at least 2 features that vary across training subjects, got {int(varying.sum())}"
            )
        covars = pd.DataFrame({"site": labels[rows], "age": years[rows]})
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # neuroCombat prints its progress
            result = neuroCombat(
                X[np.ix_(rows, varying)].T,  # (n_features, n_subjects)
                covars,
                "site",
                continuous_cols=["age"],
                eb=True,
                parametric=True,
                mean_only=False,
            )
        logger.debug("neuroCombat on %d subjects, %d sites, %d features:\n%s",
                     rows.sum(), len(fitted), varying.sum(), log.getvalue().strip())
        estimates = result["estimates"]
        self.sites_ = [str(s) for s in estimates["batches"]]
        assert self.sites_ == list(fitted), (self.sites_, fitted)  # both np.unique order
        self.varying_ = varying
        # stand.mean repeats alpha for every subject; mod.mean is beta * age_i: its mean is beta * ā.
        self.grand_mean_ = estimates["stand.mean"][:, 0] + estimates["mod.mean"].mean(axis=1)
        self.var_pooled_ = estimates["var.pooled"][:, 0]
        self.gamma_ = np.asarray(estimates["gamma.star"], dtype=np.float64)
        self.delta_ = np.asarray(estimates["delta.star"], dtype=np.float64)
        out = X.copy()
        out[np.ix_(rows, varying)] = result["data"].T
        self._note_unharmonised(labels)
        return out

    def _note_unharmonised(self, labels: np.ndarray) -> None:
        unseen = ~np.isin(labels, self.sites_)
        self.last_unharmonised_ = sorted(set(labels[unseen].tolist()))
        self.last_n_unharmonised_ = int(unseen.sum())
