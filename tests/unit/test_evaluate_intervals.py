"""brainage.evaluate.intervals and the interval columns of metrics.tsv: known answers and coverage."""

import math

import numpy as np
import pandas as pd
import pytest

from brainage.evaluate.intervals import bootstrap_indices, metric_intervals, paired_mae_difference
from brainage.evaluate.metrics import METRIC_COLUMNS, metrics_table


def test_a_perfect_model_has_degenerate_intervals():
    age = np.linspace(10, 70, 40)
    out = metric_intervals(age, age.copy(), bootstrap_indices(40, 500, seed=1))
    assert (out["mae_ci_low"], out["mae_ci_high"]) == (0.0, 0.0)
    assert out["r_ci_low"] == pytest.approx(1.0) and out["r_ci_high"] == pytest.approx(1.0)
    assert out["r2_ci_low"] == pytest.approx(1.0) and out["r2_ci_high"] == pytest.approx(1.0)


def test_a_constant_prediction_has_no_r_interval_but_an_mae_interval():
    age = np.linspace(10, 70, 40)
    out = metric_intervals(age, np.full(40, 40.0), bootstrap_indices(40, 500, seed=1))
    assert math.isnan(out["r_ci_low"]) and math.isnan(out["r_ci_high"])
    assert out["mae_ci_low"] < np.abs(age - 40).mean() < out["mae_ci_high"]


def test_paired_difference_of_a_model_worse_by_a_constant_is_exactly_that_constant():
    # Model b errs 0.3 y more than model a on every subject: every resample's difference is 0.3,
    # so the paired interval collapses to it, while the two MAE intervals overlap widely.
    rng = np.random.default_rng(0)
    age = rng.uniform(10, 70, 60)
    error = rng.uniform(1, 8, 60) * rng.choice([-1, 1], 60)
    a, b = age + error, age + error + 0.3 * np.sign(error)
    indices = bootstrap_indices(60, 1000, seed=2)
    difference, low, high = paired_mae_difference(age, b, a, indices)
    assert difference == pytest.approx(0.3) and low == pytest.approx(0.3) and high == pytest.approx(0.3)
    ia, ib = metric_intervals(age, a, indices), metric_intervals(age, b, indices)
    assert ib["mae_ci_low"] < ia["mae_ci_high"]  # unpaired, the intervals would not tell them apart
    assert paired_mae_difference(age, a, a, indices) == (0.0, 0.0, 0.0)
    assert np.isnan(paired_mae_difference(age, b, a, None)[1:]).all()


def test_mae_interval_has_the_width_of_the_normal_theory_interval():
    # Absolute errors with SD s on n subjects: the MAE's standard error is s / sqrt(n), so the
    # 95 % interval is about 2 * 1.96 * s / sqrt(n) wide.
    rng = np.random.default_rng(3)
    n = 400
    age = rng.uniform(10, 70, n)
    predicted = age + rng.normal(0, 5, n)
    out = metric_intervals(age, predicted, bootstrap_indices(n, 4000, seed=4))
    expected = 2 * 1.959964 * np.abs(predicted - age).std(ddof=1) / math.sqrt(n)
    assert out["mae_ci_high"] - out["mae_ci_low"] == pytest.approx(expected, rel=0.1)


def test_mae_interval_covers_the_population_value_95_percent_of_the_time():
    # Errors N(0, 4): the population MAE is 4 * sqrt(2 / pi). Over 300 independent cohorts of 80
    # subjects, the interval should cover it in about 95 % of them (binomial SD 1.3 %).
    rng = np.random.default_rng(5)
    truth = 4 * math.sqrt(2 / math.pi)
    covered = 0
    for k in range(300):
        age = rng.uniform(10, 70, 80)
        out = metric_intervals(age, age + rng.normal(0, 4, 80), bootstrap_indices(80, 400, seed=k))
        covered += out["mae_ci_low"] <= truth <= out["mae_ci_high"]
    assert 0.90 <= covered / 300 <= 0.99


def test_resamples_are_reproducible_from_the_seed():
    assert np.array_equal(bootstrap_indices(30, 50, 7), bootstrap_indices(30, 50, 7))
    assert not np.array_equal(bootstrap_indices(30, 50, 7), bootstrap_indices(30, 50, 8))


def _predictions(models, n=50, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.uniform(10, 70, n)
    rows = []
    for model, noise in models.items():
        predicted = np.full(n, age.mean()) if model == "dummy" else age + rng.normal(0, noise, n)
        rows.append(pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "model": model,
                                  "set": "cv", "age": age, "predicted_age": predicted,
                                  "predicted_age_corrected": predicted}))
    return pd.concat(rows, ignore_index=True)


def test_metrics_table_pairs_each_model_with_the_dummy_and_the_ridge():
    test = _predictions({"dummy": 0, "connectome_ridge": 3.0, "roi_gru": 6.0})
    # Rows in another subject order for one model: the pairing is by participant, not position.
    test = pd.concat([test[test.model != "roi_gru"], test[test.model == "roi_gru"].iloc[::-1]])
    table = metrics_table(test, ["dummy", "connectome_ridge", "roi_gru"], n_resamples=500, seed=1)
    assert list(table.columns) == list(METRIC_COLUMNS)
    rows = table.set_index("model")
    ridge, gru = rows.loc["connectome_ridge"], rows.loc["roi_gru"]
    assert gru["delta_mae_vs_ridge"] == pytest.approx(gru["mae"] - ridge["mae"])
    assert gru["delta_mae_vs_ridge_ci_low"] > 0  # twice the noise: worse than the ridge, and the interval says so
    assert ridge["delta_mae_vs_ridge"] == 0 and ridge["delta_mae_vs_ridge_ci_high"] == 0
    assert rows.loc["connectome_ridge", "delta_mae_vs_dummy_ci_high"] < 0
    for _, row in rows.iterrows():
        assert row["mae_ci_low"] <= row["mae"] <= row["mae_ci_high"]
    # the same seed gives the same table; no resamples give no intervals but the differences
    pd.testing.assert_frame_equal(table, metrics_table(test, ["dummy", "connectome_ridge", "roi_gru"], 500, 1))
    bare = metrics_table(test, ["dummy", "connectome_ridge", "roi_gru"], n_resamples=0).set_index("model")
    assert bare["mae_ci_low"].isna().all() and bare.loc["roi_gru", "delta_mae_vs_ridge"] == gru["delta_mae_vs_ridge"]


def test_metrics_table_without_a_ridge_leaves_its_columns_empty_and_rejects_unpaired_sets():
    test = _predictions({"dummy": 0, "roi_gru": 6.0})
    table = metrics_table(test, ["dummy", "roi_gru"], n_resamples=100)
    assert table["delta_mae_vs_ridge"].isna().all()
    with pytest.raises(ValueError, match=r"model 'roi_gru' predicts other subjects than 'dummy'"):
        metrics_table(test.iloc[:-1], ["dummy", "roi_gru"], n_resamples=100)
