"""brainage.splits: subject-level folds, age-stratified or grouped by site."""

import numpy as np
import pytest

from brainage.splits import age_bins, make_folds


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    ages = rng.uniform(8, 80, 100)
    sites = rng.choice(["A", "B", "C", "D", "E", "F", "G", "H"], 100)
    return ages, sites


def test_every_subject_in_exactly_one_fold_of_near_equal_size(cohort):
    ages, sites = cohort
    folds = make_folds(ages, sites, n_folds=5, group_by_site=False, seed=1)
    assert folds.shape == (100,)
    assert folds.dtype.kind == "i"
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    sizes = np.bincount(folds)
    assert sizes.sum() == 100
    assert sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_age_distributions_are_balanced_across_folds(cohort, seed):
    ages, sites = cohort
    folds = make_folds(ages, sites, n_folds=5, group_by_site=False, seed=seed)
    means = np.array([ages[folds == k].mean() for k in range(5)])
    # A random split of these 100 subjects spreads the fold means over ~10 years on average
    # (SD of ages ~21 y, 20 per fold); stratifying on age deciles keeps them within ~2.
    assert np.ptp(means) < 3.0, means
    for k in range(5):
        # Every fold spans the age range: each holds someone from the youngest and oldest fifth.
        assert ages[folds == k].min() < np.quantile(ages, 0.2)
        assert ages[folds == k].max() > np.quantile(ages, 0.8)


def test_site_grouped_folds_never_split_a_site(cohort):
    ages, sites = cohort
    folds = make_folds(ages, sites, n_folds=4, group_by_site=True, seed=3)
    for site in np.unique(sites):
        assert len(set(folds[sites == site].tolist())) == 1, site
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3]


def test_folds_are_determined_by_the_seed(cohort):
    ages, sites = cohort
    first = make_folds(ages, sites, 4, False, seed=7)
    np.testing.assert_array_equal(first, make_folds(ages, sites, 4, False, seed=7))
    assert not np.array_equal(first, make_folds(ages, sites, 4, False, seed=8))


def test_site_grouped_folds_are_determined_by_the_seed():
    # StratifiedGroupKFold assigns sites greedily to balance the age bins; the seed only
    # orders sites that tie, so plant ties: eight sites with the same ages.
    ages = np.tile(np.linspace(10, 70, 10), 8)
    sites = np.repeat([f"s{i}" for i in range(8)], 10)
    first = make_folds(ages, sites, 4, True, seed=7)
    np.testing.assert_array_equal(first, make_folds(ages, sites, 4, True, seed=7))
    assert not np.array_equal(first, make_folds(ages, sites, 4, True, seed=8))
    assert np.bincount(first).tolist() == [20, 20, 20, 20]


def test_age_bins_hold_at_least_n_folds_subjects():
    ages = np.arange(23, dtype=float)
    bins = age_bins(ages, n_folds=5)
    assert np.bincount(bins).tolist() == [6, 6, 5, 6]  # 23 // 5 = 4 quantile bins
    assert np.bincount(age_bins(np.arange(500.0), 5)).tolist() == [50] * 10  # at most deciles


def test_fewer_subjects_than_folds():
    with pytest.raises(ValueError, match=r"dataset\.n_folds=5 but only 4 subjects"):
        make_folds([10.0, 20.0, 30.0, 40.0], ["A", "B", "C", "D"], 5, False, 0)


def test_fewer_sites_than_folds(cohort):
    ages, _ = cohort
    sites = np.array(["A", "B", "C"] * 33 + ["A"])
    with pytest.raises(ValueError, match=r"dataset\.group_by_site is true and dataset\.n_folds=4, but only 3 sites"):
        make_folds(ages, sites, 4, True, 0)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_grouped_folds_left_empty_are_an_error():
    # A case (found by search) where StratifiedGroupKFold's greedy assignment leaves a fold
    # empty: four very unequal sites for four folds.
    sites = np.array(["a"] * 7 + ["b"] * 6 + ["c"] * 2 + ["d"])
    ages = np.array([37, 11, 65, 44, 37, 65, 26, 55, 24, 47, 46, 26, 26, 55, 24, 27], dtype=float)
    with pytest.raises(ValueError, match=r"dataset\.n_folds=4: site-grouped folds left fold\(s\) \[\d\] empty"):
        make_folds(ages, sites, 4, True, 0)


@pytest.mark.parametrize(
    ("ages", "sites", "match"),
    [
        ([10.0, np.nan, 30.0], ["A", "B", "C"], r"1 ages are missing or not finite"),
        ([10.0, 20.0, 30.0], ["A", "B"], r"ages \(3,\) and sites \(2,\) must be 1-D and of one length"),
    ],
)
def test_invalid_inputs(ages, sites, match):
    with pytest.raises(ValueError, match=match):
        make_folds(ages, sites, 2, False, 0)
