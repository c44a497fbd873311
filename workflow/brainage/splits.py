"""Subject-level cross-validation folds (stratified by age, optionally grouped by site) and held-out sets."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from brainage.errors import ConfigError

log = logging.getLogger(__name__)

MAX_AGE_BINS = 10  # deciles: enough to balance the age distribution without tiny strata
HELD_OUT_FOLD = -1  # the fold of held-out (external test) subjects: no cross-validation fold
SETS = ("cv", "test")  # values of the ``set`` column: cross-validation, held-out test


def age_bins(ages: np.ndarray, n_folds: int) -> np.ndarray:
    """Quantile bins of age used as strata.

    Parameters
    ----------
    ages : ndarray, shape (n_subjects,), float (years)
    n_folds : int

    Returns
    -------
    ndarray, shape (n_subjects,), int
        Bin index per subject. At most ``n_subjects // n_folds`` bins, so that each bin
        holds at least ``n_folds`` subjects (ties in age aside) and can be spread over
        every fold, as ``StratifiedKFold`` needs.
    """
    n_bins = max(1, min(MAX_AGE_BINS, len(ages) // n_folds))
    # duplicates="drop": tied ages may merge quantile edges; fewer bins is then the right answer.
    return pd.qcut(ages, q=n_bins, labels=False, duplicates="drop").astype(int)


def make_folds(
    ages: np.ndarray,
    sites: np.ndarray,
    n_folds: int,
    group_by_site: bool,
    seed: int,
) -> np.ndarray:
    """Assign each subject to one of ``n_folds`` test folds.

    Age-stratified K-fold (scikit-learn ``StratifiedKFold`` on age quantile bins, shuffled
    with ``seed``) so every fold spans the age range; with ``group_by_site``,
    ``StratifiedGroupKFold`` with site as the group, so a site's subjects are all in one
    fold and a model is always tested on sites it has not seen (leave-site-out style CV;
    Varoquaux et al. 2017, NeuroImage 145:166).

    Parameters
    ----------
    ages : array-like, shape (n_subjects,), float (years)
    sites : array-like, shape (n_subjects,), str
    n_folds : int
        ``dataset.n_folds``.
    group_by_site : bool
        ``dataset.group_by_site``.
    seed : int
        Shuffling seed; the same inputs and seed give the same folds. With
        ``group_by_site`` scikit-learn assigns sites greedily to balance the age bins and
        the seed only orders sites that tie, so it often does not change the folds.

    Returns
    -------
    ndarray, shape (n_subjects,), int
        Fold index in ``0 .. n_folds - 1`` per subject, every fold non-empty.

    Raises
    ------
    ValueError
        Fewer subjects than folds; with ``group_by_site``, fewer sites than folds or a fold
        left empty; ages that are not finite.
    """
    ages = np.asarray(ages, dtype=float)
    sites = np.asarray(sites, dtype=object)
    if ages.shape != sites.shape or ages.ndim != 1:
        raise ValueError(f"ages {ages.shape} and sites {sites.shape} must be 1-D and of one length")
    if not np.isfinite(ages).all():
        raise ValueError(f"{int((~np.isfinite(ages)).sum())} ages are missing or not finite")
    if len(ages) < n_folds:
        raise ValueError(f"dataset.n_folds={n_folds} but only {len(ages)} subjects; lower dataset.n_folds")
    strata = age_bins(ages, n_folds)
    folds = np.full(len(ages), -1, dtype=int)
    if group_by_site:
        n_sites = len(pd.unique(sites))
        if n_sites < n_folds:
            raise ValueError(
                f"dataset.group_by_site is true and dataset.n_folds={n_folds}, but only {n_sites} "
                "sites were found; lower dataset.n_folds or set dataset.group_by_site to false"
            )
        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        # Site labels as integer codes: StratifiedGroupKFold sorts them, which fails on None.
        splits = cv.split(ages, strata, groups=pd.factorize(sites, use_na_sentinel=False)[0])
    else:
        cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = cv.split(ages, strata)
    for fold, (_, test) in enumerate(splits):
        folds[test] = fold
    sizes = np.bincount(folds, minlength=n_folds)
    empty = np.flatnonzero(sizes == 0).tolist()
    if empty:
        raise ValueError(
            f"dataset.n_folds={n_folds}: site-grouped folds left fold(s) {empty} empty "
            "(sites too unequal in size); lower dataset.n_folds"
        )
    kind = "grouped by site" if group_by_site else "age-stratified"
    log.info("%d folds (%s), sizes %s", n_folds, kind, sizes.tolist())
    return folds


def held_out(
    sites: np.ndarray, datasets: np.ndarray, test_sites: list[str], test_datasets: list[str]
) -> np.ndarray:
    """Mark the subjects of the named sites or datasets as the held-out (external) test set.

    Parameters
    ----------
    sites, datasets : array-like, shape (n_subjects,), str
        Each cohort subject's site and dataset label.
    test_sites, test_datasets : list of str
        ``dataset.test_sites`` and ``dataset.test_datasets``; a subject is held out when its
        site *or* its dataset is named.

    Returns
    -------
    ndarray of bool, shape (n_subjects,)
        True for held-out subjects.

    Raises
    ------
    ConfigError
        A named site or dataset has no cohort subject (the message lists those that exist).
    """
    sites = [str(s) for s in sites]
    datasets = [str(d) for d in datasets]
    for key, what, names, present in (
        ("test_sites", "site", test_sites, sites), ("test_datasets", "dataset", test_datasets, datasets)
    ):
        unknown = sorted(set(names) - set(present))
        if unknown:
            raise ConfigError(
                f"dataset.{key}: no cohort subject has the {what}(s) {unknown}; "
                f"the cohort's {what}s are {sorted(set(present))}"
            )
    return np.isin(sites, list(test_sites)) | np.isin(datasets, list(test_datasets))


def make_splits(
    ages: np.ndarray,
    sites: np.ndarray,
    test: np.ndarray,
    n_folds: int,
    group_by_site: bool,
    seed: int,
) -> np.ndarray:
    """Folds of the cross-validation subjects; held-out subjects get :data:`HELD_OUT_FOLD`.

    The folds are made (:func:`make_folds`) on the cross-validation subjects only, so a
    held-out subject never shapes them, and with no held-out subject the folds are exactly
    those of :func:`make_folds` on everyone.

    Parameters
    ----------
    ages : array-like, shape (n_subjects,), float (years)
    sites : array-like, shape (n_subjects,), str
    test : array-like of bool, shape (n_subjects,)
        Held-out subjects (:func:`held_out`).
    n_folds, group_by_site, seed
        As for :func:`make_folds`.

    Returns
    -------
    ndarray, shape (n_subjects,), int
        Fold in ``0 .. n_folds - 1`` for cross-validation subjects, -1 for held-out ones.

    Raises
    ------
    ValueError
        Every subject held out; too few cross-validation subjects (or sites) for ``n_folds``.
    """
    test = np.asarray(test, dtype=bool)
    ages, sites = np.asarray(ages, dtype=float), np.asarray(sites, dtype=object)
    if test.shape != ages.shape:
        raise ValueError(f"held-out mask {test.shape} and ages {ages.shape} must be of one length")
    n_test = int(test.sum())
    if n_test == len(test):
        raise ValueError(
            f"dataset.test_sites / dataset.test_datasets hold out all {n_test} cohort subjects; "
            "none is left for cross-validation and training"
        )
    folds = np.full(len(ages), HELD_OUT_FOLD, dtype=int)
    try:
        folds[~test] = make_folds(ages[~test], sites[~test], n_folds, group_by_site, seed)
    except ValueError as err:
        if not n_test:
            raise
        raise ValueError(f"{err}; counted over the {len(test) - n_test} cross-validation subjects only "
                         f"({n_test} are held out by dataset.test_sites / dataset.test_datasets)") from err
    if n_test:
        log.info("held-out test set: %d subjects; cross-validation: %d subjects", n_test, len(test) - n_test)
    return folds
