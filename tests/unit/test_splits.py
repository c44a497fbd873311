"""brainage.splits: subject-level folds, age-stratified or grouped by site."""

import numpy as np
import pytest

from brainage.errors import ConfigError
from brainage.splits import age_bins, held_out, make_folds, make_splits


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


# --- held-out (external) test set ----------------------------------------------------------


def test_held_out_are_exactly_the_named_sites_and_datasets():
    sites = np.array(["A", "B", "C", "A", "B", "C", "D"])
    datasets = np.array(["abide", "abide", "abide", "adhd", "adhd", "adhd", "adhd"])
    np.testing.assert_array_equal(held_out(sites, datasets, ["B"], []), [0, 1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(held_out(sites, datasets, [], ["adhd"]), [0, 0, 0, 1, 1, 1, 1])
    # A site or a dataset named: the union.
    np.testing.assert_array_equal(held_out(sites, datasets, ["A", "C"], ["adhd"]), [1, 0, 1, 1, 1, 1, 1])
    assert not held_out(sites, datasets, [], []).any()


@pytest.mark.parametrize(
    ("test_sites", "test_datasets", "match"),
    [
        (["B", "Z", "Y"], [], r"dataset\.test_sites: no cohort subject has the site\(s\) \['Y', 'Z'\]; "
                             r"the cohort's sites are \['A', 'B'\]"),
        ([], ["nki"], r"dataset\.test_datasets: no cohort subject has the dataset\(s\) \['nki'\]; "
                      r"the cohort's datasets are \['abide'\]"),
    ],
)
def test_held_out_unknown_names_list_what_exists(test_sites, test_datasets, match):
    with pytest.raises(ConfigError, match=match):
        held_out(["A", "B"], ["abide", "abide"], test_sites, test_datasets)


def test_make_splits_folds_only_the_cv_subjects(cohort, caplog):
    ages, sites = cohort
    test = np.isin(sites, ["C", "F"])
    with caplog.at_level("INFO", logger="brainage.splits"):
        folds = make_splits(ages, sites, test, n_folds=5, group_by_site=False, seed=1)
    assert (folds[test] == -1).all() and (folds[~test] >= 0).all()
    # The cv subjects' folds are exactly those made on the cv subjects alone.
    np.testing.assert_array_equal(folds[~test], make_folds(ages[~test], sites[~test], 5, False, 1))
    assert f"held-out test set: {test.sum()} subjects; cross-validation: {(~test).sum()} subjects" in caplog.text
    # Nothing held out: exactly make_folds on everyone.
    np.testing.assert_array_equal(make_splits(ages, sites, np.zeros(100, bool), 5, False, 1),
                                  make_folds(ages, sites, 5, False, 1))


def test_make_splits_grouped_by_site_never_puts_a_held_out_site_in_a_fold(cohort):
    ages, sites = cohort
    test = sites == "H"
    folds = make_splits(ages, sites, test, n_folds=4, group_by_site=True, seed=3)
    assert set(folds[test].tolist()) == {-1}
    assert sorted(set(folds[~test].tolist())) == [0, 1, 2, 3]
    for site in set(sites[~test]):
        assert len(set(folds[sites == site].tolist())) == 1, site


def test_make_splits_errors():
    ages, sites = np.linspace(10, 60, 6), np.array(["A", "A", "B", "B", "C", "C"])
    with pytest.raises(ValueError, match=r"hold out all 6 cohort subjects; none is left for cross-validation"):
        make_splits(ages, sites, np.ones(6, bool), 2, False, 0)
    with pytest.raises(ValueError, match=r"dataset\.n_folds=3 but only 2 subjects; lower dataset\.n_folds; counted "
                                         r"over the 2 cross-validation subjects only \(4 are held out by dataset\.test_sites"):
        make_splits(ages, sites, sites != "A", 3, False, 0)
    with pytest.raises(ValueError, match=r"only 2 sites were found.*; counted over the 4 cross-validation subjects only"):
        make_splits(ages, sites, sites == "C", 3, True, 0)
    with pytest.raises(ValueError, match=r"dataset\.n_folds=7 but only 6 subjects; lower dataset\.n_folds$"):
        make_splits(ages, sites, np.zeros(6, bool), 7, False, 0)
    with pytest.raises(ValueError, match=r"held-out mask \(2,\) and ages \(6,\) must be of one length"):
        make_splits(ages, sites, np.zeros(2, bool), 2, False, 0)
