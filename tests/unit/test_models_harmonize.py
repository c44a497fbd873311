"""Tests for brainage.models.harmonize (ComBat with real neuroCombat) and connectome_ridge's harmonize option."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging

import numpy as np
import pandas as pd
import pytest
from neuroCombat import neuroCombat
from nilearn.connectome import ConnectivityMeasure
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from brainage.errors import ConfigError
from brainage.models.baselines import ConnectomeRidge, ConnectomeRidgeConfig
from brainage.models.harmonize import Combat

# --- planted site effects on features --------------------------------------------------------

# site: (youngest, oldest, additive offset, noise scale). The age ranges differ, so a site's mean
# mixes its offset with its age difference; ComBat must remove the first and keep the second.
SITES = {"a": (8.0, 16.0, 0.0, 1.0), "b": (14.0, 30.0, 1.5, 1.6), "c": (25.0, 45.0, -1.5, 0.6)}
N_FEATURES = 30
NOISE = 0.3


class Planted:
    """features = 2 + slope * age + offset[site] + scale[site] * noise, per feature."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.slope = rng.uniform(0.05, 0.15, N_FEATURES) * rng.choice([-1, 1], N_FEATURES)
        self.offset = {s: off * rng.uniform(0.5, 1.5, N_FEATURES) for s, (_, _, off, _) in SITES.items()}

    def draw(self, n_per_site: int, rng, sites=tuple(SITES), ages=None):
        X, labels, years = [], [], []
        for site in sites:
            lo, hi, _, scale = SITES[site]
            a = rng.uniform(lo, hi, n_per_site) if ages is None else np.full(n_per_site, float(ages))
            X.append(2.0 + a[:, None] * self.slope + self.offset[site]
                     + scale * NOISE * rng.standard_normal((n_per_site, N_FEATURES)))
            labels += [site] * n_per_site
            years.append(a)
        return np.vstack(X), np.array(labels), np.concatenate(years)


@pytest.fixture(scope="module")
def planted():
    model = Planted(seed=0)
    X, sites, ages = model.draw(100, np.random.default_rng(1))
    return model, X, sites, ages


def _site_means(Y, sites, residual_ages, slope):
    """Per-site mean of feature - planted age effect, shape (n_sites, n_features)."""
    residual = Y - residual_ages[:, None] * slope
    return np.array([residual[sites == s].mean(axis=0) for s in SITES])


def test_combat_removes_planted_site_effects_and_keeps_the_age_slope(planted):
    model, X, sites, ages = planted
    harmonised = Combat().fit_transform(X, sites, ages)
    assert harmonised.shape == X.shape and np.all(np.isfinite(harmonised))

    raw_means = _site_means(X, sites, ages, model.slope)
    means = _site_means(harmonised, sites, ages, model.slope)
    # Planted offsets are there before (about 1 on average), gone after.
    assert np.abs(raw_means - raw_means.mean(0)).mean() > 0.8
    assert np.abs(means - means.mean(0)).max() < 0.3

    # Site scales (noise sd 0.6x to 1.6x) equalised.
    def sd_ratio(Y):
        sd = np.array([(Y - ages[:, None] * model.slope)[sites == s].std(axis=0) for s in SITES])
        return (sd.max(0) / sd.min(0)).max()

    assert sd_ratio(X) > 2.5 and sd_ratio(harmonised) < 1.35

    # Age slope across all subjects: biased by the site offsets before (sites differ in age),
    # back at the planted one after (age is ComBat's preserved covariate).
    def slopes(Y):
        return np.array([np.polyfit(ages, Y[:, j], 1)[0] for j in range(N_FEATURES)])

    assert np.abs(slopes(X) - model.slope).max() > 0.06
    np.testing.assert_allclose(slopes(harmonised), model.slope, atol=0.025)


def test_transform_is_neurocombat_with_the_age_term_at_the_training_mean(planted):
    _, X, sites, ages = planted
    combat = Combat().fit(X, sites, ages)
    # The library itself on the same subjects: its data use each subject's own age term.
    with contextlib.redirect_stdout(io.StringIO()):
        ref = neuroCombat(X.T, pd.DataFrame({"site": sites, "age": ages}), "site", continuous_cols=["age"])
    own_age = ref["estimates"]["mod.mean"].T  # (n_subjects, n_features): beta * age_i
    delta = ref["estimates"]["delta.star"][np.searchsorted(ref["estimates"]["batches"], sites)]
    np.testing.assert_allclose(Combat().fit_transform(X, sites, ages), ref["data"].T, rtol=1e-10, atol=1e-10)
    # Without ages, each age term enters at the training mean: ComBat's answer plus
    # beta * (age - mean age) * (1 / sqrt(delta) - 1), the cost the module docstring states.
    expected = ref["data"].T + (own_age - own_age.mean(0)) * (1 / np.sqrt(delta) - 1)
    np.testing.assert_allclose(combat.transform(X, sites), expected, rtol=1e-10, atol=1e-10)


def test_transform_of_new_subjects_by_hand_and_on_the_harmonised_distribution(planted):
    model, X, sites, ages = planted
    combat = Combat().fit(X, sites, ages)
    rng = np.random.default_rng(5)
    new, new_sites, _ = model.draw(200, rng, sites=("b",), ages=ages.mean())
    out = combat.transform(new, new_sites)
    k = combat.sites_.index("b")
    sd = np.sqrt(combat.var_pooled_)
    by_hand = ((new - combat.grand_mean_) / sd - combat.gamma_[k]) / np.sqrt(combat.delta_[k]) * sd + combat.grand_mean_
    np.testing.assert_allclose(out, by_hand, rtol=1e-12)
    assert combat.last_unharmonised_ == [] and combat.last_n_unharmonised_ == 0
    # New site-b subjects at the training mean age land where ComBat puts the training subjects
    # (the pooled site), not where site b's own offset would put them.
    target = _site_means(Combat().fit_transform(X, sites, ages), sites, ages, model.slope).mean(0)
    residual = out.mean(0) - ages.mean() * model.slope
    np.testing.assert_allclose(residual, target, atol=0.15)
    assert np.abs(new.mean(0) - ages.mean() * model.slope - target).mean() > 0.8
    # One subject at a time gives the same answer (rows are independent).
    np.testing.assert_allclose(combat.transform(new[:1], new_sites[:1]), out[:1])


def test_transform_takes_no_ages(planted):
    _, X, sites, ages = planted
    assert list(inspect.signature(Combat.transform).parameters) == ["self", "features", "sites"]
    combat = Combat().fit(X, sites, ages)
    with pytest.raises(TypeError):
        combat.transform(X, sites, ages)


def test_unseen_and_single_subject_sites_are_left_unchanged_and_reported(planted):
    model, X, sites, ages = planted
    rng = np.random.default_rng(9)
    # One training subject of site "e": no scale can be estimated, so it is not fitted.
    X_e = X[:1] + 3.0
    combat = Combat()
    train = combat.fit_transform(np.vstack([X, X_e]), np.append(sites, "e"), np.append(ages, 12.0))
    assert combat.sites_ == ["a", "b", "c"]
    np.testing.assert_array_equal(train[-1], X_e[0])
    assert combat.last_unharmonised_ == ["e"] and combat.last_n_unharmonised_ == 1
    # ... and the fit is the one without it.
    alone = Combat().fit(X, sites, ages)
    np.testing.assert_allclose(combat.gamma_, alone.gamma_)
    np.testing.assert_allclose(combat.delta_, alone.delta_)

    new, new_sites, _ = model.draw(4, rng, sites=("a", "b"))
    new_sites = np.array(["a", "d", "e", "d", "b", "a", "d", "e"])
    out = combat.transform(new, new_sites)
    unseen = np.isin(new_sites, ["d", "e"])
    np.testing.assert_array_equal(out[unseen], new[unseen])
    assert not np.allclose(out[~unseen], new[~unseen])
    assert combat.last_unharmonised_ == ["d", "e"] and combat.last_n_unharmonised_ == 5


def test_constant_features_pass_through_without_nan(planted):
    _, X, sites, ages = planted
    with_constant = np.insert(X, 3, 7.0, axis=1)
    combat = Combat()
    train = combat.fit_transform(with_constant, sites, ages)
    assert np.all(np.isfinite(train)) and not combat.varying_[3] and combat.varying_.sum() == N_FEATURES
    np.testing.assert_array_equal(train[:, 3], 7.0)
    # The other features are harmonised exactly as without the constant one.
    np.testing.assert_allclose(np.delete(train, 3, axis=1), Combat().fit_transform(X, sites, ages))
    test = combat.transform(with_constant[:5], sites[:5])
    assert np.all(np.isfinite(test))
    np.testing.assert_array_equal(test[:, 3], 7.0)


def test_site_labels_are_compared_as_strings(planted):
    _, X, sites, ages = planted
    numbers = np.unique(sites, return_inverse=True)[1]  # 0, 1, 2
    combat = Combat().fit(X, numbers, ages)
    assert combat.sites_ == ["0", "1", "2"]
    np.testing.assert_allclose(combat.transform(X, [str(n) for n in numbers]), Combat().fit(X, sites, ages).transform(X, sites))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda X, s, a: Combat().fit(X, None, a), r"combat: ComBat harmonisation needs each subject's site \(sites=None\)"),
        (lambda X, s, a: Combat().fit(X, s[:-1], a), "combat: 299 sites for 300 subjects"),
        (lambda X, s, a: Combat().fit(X, np.where(np.arange(300) == 4, None, s), a), r"combat: subjects \[4\] have no site"),
        (lambda X, s, a: Combat().fit(X, np.where(np.arange(300) == 7, "", s), a), r"combat: subjects \[7\] have no site"),
        (lambda X, s, a: Combat().fit(X, s, a[:-2]), "combat: 298 ages for 300 subjects"),
        (lambda X, s, a: Combat().fit(X[0], s, a), r"combat: features must be a 2-D \(n_subjects, n_features\) array, got shape \(30,\)"),
        (lambda X, s, a: Combat().fit(np.where(X > 3, np.nan, X), s, a), "combat: features must be finite numbers"),
        (lambda X, s, a: Combat().fit(X[:, :1], s, a), "combat: needs at least 2 features that vary across training subjects, got 1"),
        (lambda X, s, a: Combat().fit(X[:101], s[:101], a[:101]),
         "combat: needs at least 2 sites with >= 2 training subjects each; subjects per site: a: 100, b: 1"),
        (lambda X, s, a: Combat().fit(X, s, a).transform(X[:, 1:], s), "combat: fitted on 30 features, got 29"),
        (lambda X, s, a: Combat().fit(X, s, a).transform(X, None), "combat: ComBat harmonisation needs each subject's site"),
    ],
)
def test_combat_rejects_bad_inputs(planted, call, match):
    _, X, sites, ages = planted
    with pytest.raises(ValueError, match=match):
        call(X, sites, ages)


# --- connectome_ridge with harmonize: combat ---------------------------------------------------


def _site_series(ages, sites, rng, n_timepoints=200, n_regions=5):
    """ROI series; region 0-1 correlation rises with age; site "a" adds 0.2 to it and 0.5 to region 2-3's."""
    X = []
    for age, site in zip(ages, sites):
        x = rng.standard_normal((n_timepoints, n_regions))
        c = 0.1 + 0.5 * (age - 10) / 50 + (0.2 if site == "a" else 0.0)
        d = 0.5 if site == "a" else 0.0
        x[:, 1] = c * x[:, 0] + np.sqrt(1 - c**2) * x[:, 1]
        x[:, 3] = d * x[:, 2] + np.sqrt(1 - d**2) * x[:, 3]
        X.append(x)
    return X


@pytest.fixture(scope="module")
def confounded():
    """Training: site a mostly older than site b (site confounded with age); test: same ages at both."""
    rng = np.random.default_rng(0)
    train_sites = np.repeat(["a", "b"], 40)
    train_ages = np.concatenate([rng.uniform(30, 60, 40), rng.uniform(10, 40, 40)])
    test_sites = np.repeat(["a", "b"], 30)
    test_ages = rng.uniform(10, 60, 60)
    return (_site_series(train_ages, train_sites, rng), train_ages, train_sites,
            _site_series(test_ages, test_sites, rng), test_ages, test_sites)


def _errors(model, X, ages, sites):
    err = model.predict(X, sites=sites) - ages
    return np.mean(np.abs(err)), err[sites == "a"].mean() - err[sites == "b"].mean()


def test_combat_removes_a_site_effect_confounded_with_age_in_training(confounded):
    X, ages, sites, X_test, ages_test, sites_test = confounded
    plain = ConnectomeRidge(ConnectomeRidgeConfig(harmonize="none")).fit(X, ages, sites=sites)
    combat = ConnectomeRidge(ConnectomeRidgeConfig(harmonize="combat")).fit(X, ages, sites=sites)
    assert not plain.uses_sites and combat.uses_sites
    assert combat.fit_info_["combat_sites"] == ["a", "b"] and combat.fit_info_["combat_unharmonised_sites"] == []
    mae_plain, gap_plain = _errors(plain, X_test, ages_test, sites_test)
    mae_combat, gap_combat = _errors(combat, X_test, ages_test, sites_test)
    assert combat.predict_info_ == {"unharmonised_sites": [], "n_unharmonised": 0}
    # The plain ridge takes site a's connectivity offset for age: site a is predicted years older
    # than site b at the same ages; ComBat (age kept as covariate) removes the offset, not the age.
    assert gap_plain > 5.0 and abs(gap_combat) < 0.4 * gap_plain
    assert mae_combat < 0.85 * mae_plain


def test_harmonize_none_is_the_old_pipeline_and_ignores_sites(confounded):
    X, ages, sites, X_test, _, sites_test = confounded
    config = ConnectomeRidgeConfig()
    assert config.harmonize == "none"
    old = Pipeline([
        ("connectivity", ConnectivityMeasure(kind="correlation", vectorize=True, discard_diagonal=True,
                                             standardize="zscore_sample")),
        ("scale", StandardScaler()),
        ("ridge", RidgeCV(alphas=np.asarray(config.alphas))),
    ]).fit(X, ages)
    model = ConnectomeRidge(config).fit(X, ages)
    np.testing.assert_array_equal(model.predict(X_test), old.predict(X_test))
    with_sites = ConnectomeRidge(config).fit(X, ages, sites=sites)
    np.testing.assert_array_equal(with_sites.predict(X_test, sites=sites_test), old.predict(X_test))
    assert model.fit_info_ == {"alpha": old.named_steps["ridge"].alpha_} and model.predict_info_ == {}


def test_combat_ridge_leaves_unseen_test_sites_unharmonised_and_reports_them(confounded, caplog):
    X, ages, sites, X_test, _, _ = confounded
    # One training subject of site "c": not fitted, left as it is, reported.
    train_sites = sites.copy()
    train_sites[0] = "c"
    model = ConnectomeRidge(ConnectomeRidgeConfig(harmonize="combat")).fit(X, ages, sites=train_sites)
    assert model.fit_info_["combat_sites"] == ["a", "b"] and model.fit_info_["combat_unharmonised_sites"] == ["c"]
    test_sites = np.array(["a", "z", "c", "b", "z"])
    with caplog.at_level(logging.WARNING, logger="brainage.models.baselines"):
        pred = model.predict(X_test[:5], sites=test_sites)
    assert model.predict_info_ == {"unharmonised_sites": ["c", "z"], "n_unharmonised": 3}
    assert "3 subject(s) of site(s) c, z not harmonised" in caplog.text
    # Unseen subjects: the ridge on their unharmonised connectivity.
    unseen = [1, 2, 4]
    raw = model.connectivity_.transform([X_test[i] for i in unseen])
    np.testing.assert_allclose(pred[unseen], model.model_.predict(raw))
    # Each subject's prediction does not depend on the others in the call.
    np.testing.assert_allclose(model.predict(X_test[:1], sites=["a"]), pred[:1])


def test_combat_covariate_is_age_in_years_with_the_log_age_target(confounded):
    X, ages, sites, X_test, _, sites_test = confounded
    years = ConnectomeRidge(ConnectomeRidgeConfig(harmonize="combat")).fit(X, ages, sites=sites)
    logged = ConnectomeRidge(ConnectomeRidgeConfig(harmonize="combat", target="log_age")).fit(X, ages, sites=sites)
    np.testing.assert_allclose(logged.combat_.gamma_, years.combat_.gamma_)
    np.testing.assert_allclose(logged.combat_.delta_, years.combat_.delta_)
    features = logged.combat_.transform(logged.connectivity_.transform(X_test), sites_test)
    np.testing.assert_allclose(logged.predict(X_test, sites=sites_test), np.exp(logged.pipeline_.predict(features)))


def test_combat_ridge_needs_sites(confounded):
    X, ages, sites, *_ = confounded
    model = ConnectomeRidge(ConnectomeRidgeConfig(harmonize="combat"))
    with pytest.raises(ValueError, match=r"connectome_ridge: ComBat harmonisation needs each subject's site \(sites=None\)"):
        model.fit(X, ages)
    with pytest.raises(ValueError, match="connectome_ridge: 79 sites for 80 subjects"):
        model.fit(X, ages, sites=sites[:-1])
    model.fit(X, ages, sites=sites)
    with pytest.raises(ValueError, match=r"connectome_ridge: ComBat harmonisation needs each subject's site \(sites=None\)"):
        model.predict(X)


def test_bad_harmonize_value_is_a_config_error():
    with pytest.raises(ConfigError, match="connectome_ridge: harmonize 'neuroharmonize' is not one of none, combat"):
        ConnectomeRidgeConfig(harmonize="neuroharmonize")
