"""Tests for brainage.models.connectivity and roi_conn: known answers for every step of the reader."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from train_fixtures import TINY_PARAMS, ages_for, planted_series

from brainage.errors import ConfigError
from brainage.models import get_model
from brainage.models.connectivity import (
    ConnectivityReader, SymmetricLog, batch_loo_ridge, fit_head, frame_mask, masked_correlation, tangent_vector,
)

torch.set_default_dtype(torch.float32)


def _spd(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((n, n + 3))
    return a @ a.T / (n + 3) + 0.1 * np.eye(n)


def test_symmetric_log_is_the_matrix_logarithm():
    rng = np.random.default_rng(0)
    spd = np.stack([_spd(5, rng) for _ in range(3)])
    out = SymmetricLog.apply(torch.from_numpy(spd)).numpy()
    for matrix, log in zip(spd, out):
        np.testing.assert_allclose(log, scipy.linalg.logm(matrix).real, atol=1e-10)


def _numerical_gradient(f, x: np.ndarray, direction: np.ndarray, h: float = 1e-6) -> float:
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


@pytest.mark.parametrize("repeated", [False, True])
def test_symmetric_log_gradient_matches_finite_differences_even_with_repeated_eigenvalues(repeated):
    # A shrunk correlation matrix of 2 frames and 5 regions: rank 1 before shrinkage, so four
    # eigenvalues equal the shrinkage s, where eigh's own backward divides by zero.
    rng = np.random.default_rng(1)
    if repeated:
        x = rng.standard_normal((2, 5))
        corr = np.corrcoef(x.T)
        spd = 0.7 * corr + 0.3 * np.eye(5)
        assert np.sum(np.isclose(np.linalg.eigvalsh(spd), 0.3)) == 4
    else:
        spd = _spd(5, rng)
    weights = rng.standard_normal((5, 5))
    tensor = torch.from_numpy(spd).requires_grad_(True)
    (SymmetricLog.apply(tensor) * torch.from_numpy(weights)).sum().backward()
    grad = tensor.grad.numpy()
    assert np.all(np.isfinite(grad))
    direction = rng.standard_normal((5, 5))
    direction = direction + direction.T
    expected = _numerical_gradient(lambda m: np.sum(scipy.linalg.logm(m).real * weights), spd, direction)
    assert np.sum(grad * direction) == pytest.approx(expected, rel=1e-5)


def test_masked_correlation_uses_only_the_kept_frames():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, 12, 4))
    mask = np.ones((2, 12))
    mask[0, :5] = 0  # left padding
    mask[1, [3, 7]] = 0  # dropped frames
    z[0, :5] = 99.0  # whatever sits in masked frames must not matter
    out = masked_correlation(torch.from_numpy(z), torch.from_numpy(mask)).numpy()
    for b in range(2):
        np.testing.assert_allclose(out[b], np.corrcoef(z[b][mask[b] == 1].T), atol=1e-5)


def test_frame_mask_marks_all_zero_frames():
    x = torch.ones(2, 4, 3)
    x[0, 0] = 0
    x[1, 2, :2] = 0  # partly zero: still a frame
    np.testing.assert_array_equal(frame_mask(x).numpy(), [[0, 1, 1, 1], [1, 1, 1, 1]])


def test_tangent_vector_keeps_the_frobenius_norm():
    matrix = torch.from_numpy(_spd(6, np.random.default_rng(3)))
    vector = tangent_vector(matrix.unsqueeze(0))[0]
    assert vector.shape == (21,)
    assert float(vector.norm()) == pytest.approx(float(matrix.norm()), rel=1e-12)


def test_batch_loo_ridge_equals_refitting_without_each_subject():
    rng = np.random.default_rng(4)
    features, targets = rng.standard_normal((9, 30)), rng.standard_normal(9)
    out = batch_loo_ridge(torch.from_numpy(features), torch.from_numpy(targets), torch.tensor(2.5)).numpy()
    for i in range(9):
        keep = np.arange(9) != i
        ridge = Ridge(alpha=2.5).fit(features[keep], targets[keep])
        assert out[i] == pytest.approx(ridge.predict(features[i : i + 1])[0], rel=1e-8)


def test_fit_head_makes_the_head_the_ridge_of_the_standardised_features():
    rng = np.random.default_rng(5)
    reader = ConnectivityReader(n_signals=4, hidden=2, shrinkage=0.5, dropout=0.0)
    features = rng.standard_normal((20, 10)) * rng.uniform(0.5, 3, 10) + 2.0  # K (K + 1) / 2 = 10
    targets = rng.standard_normal(20)
    alpha = fit_head(reader, torch.from_numpy(features), targets, [0.1, 1.0, 10.0])
    expected = make_pipeline(StandardScaler(), RidgeCV(alphas=[0.1, 1.0, 10.0])).fit(features, targets)
    assert alpha == expected[-1].alpha_ == pytest.approx(float(reader.alpha))
    standard = (torch.from_numpy(features).float() - reader.feature_mean) / reader.feature_scale
    np.testing.assert_allclose(reader.head(standard).squeeze(-1).detach().numpy(), expected.predict(features),
                               atol=1e-4)


def _log_correlation_features(series: list[np.ndarray], shrinkage: float) -> np.ndarray:
    # The reader's start, in numpy/scipy: upper triangle of logm((1 - s) R + s I), off-diagonal x sqrt 2.
    rows, cols = np.triu_indices(series[0].shape[1])
    out = []
    for x in series:
        spd = (1 - shrinkage) * np.corrcoef(x.T) + shrinkage * np.eye(x.shape[1])
        log = scipy.linalg.logm(spd).real
        out.append(log[rows, cols] * np.where(rows == cols, 1.0, np.sqrt(2)))
    return np.array(out)


def test_roi_conn_starts_as_a_ridge_on_shrunk_log_correlation():
    # epochs 0 keeps the start: identity mix, zero GRU correction, head fitted in closed form.
    # Predictions must be scikit-learn's ridge on the same features (z-scored log-age target,
    # mapped back to years).
    rng = np.random.default_rng(6)
    ages = ages_for(24, rng)
    X = planted_series(ages, rng, n_timepoints=40)
    params = dict(TINY_PARAMS["roi_conn"], epochs=0, target="log_age")
    model = get_model("roi_conn", params, 0).fit(X[:18], ages[:18])
    features = _log_correlation_features(X, params["shrinkage"])
    target = np.log(ages[:18])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=params["alphas"]))
    ridge.fit(features[:18], (target - target.mean()) / target.std())
    expected = np.exp(ridge.predict(features[18:]) * target.std() + target.mean())
    np.testing.assert_allclose(model.predict(X[18:]), expected, rtol=1e-4)
    assert model.fit_info_["head_alpha"] == ridge[-1].alpha_ and model.history_.epochs_run == 0


def test_roi_conn_recovers_a_planted_connectivity_effect():
    # Region 0-1 correlation rises with age (planted_series): nothing else carries age.
    rng = np.random.default_rng(7)
    ages = ages_for(60, rng)
    X = planted_series(ages, rng, n_timepoints=80)
    model = get_model("roi_conn", dict(TINY_PARAMS["roi_conn"], epochs=3), 0).fit(X[:40], ages[:40], X[40:50],
                                                                                 ages[40:50])
    mae = np.mean(np.abs(model.predict(X[50:]) - ages[50:]))
    dummy = np.mean(np.abs(ages[:40].mean() - ages[50:]))
    assert mae < 0.5 * dummy


def test_early_stopping_keeps_the_start_when_no_epoch_beats_it():
    # A learning rate this large wrecks the features in the first step: the start must be kept.
    rng = np.random.default_rng(8)
    ages = ages_for(30, rng)
    X = planted_series(ages, rng, n_timepoints=60)
    model = get_model("roi_conn", dict(TINY_PARAMS["roi_conn"], lr=50.0, epochs=3, patience=2), 0)
    model.fit(X[:20], ages[:20], X[20:], ages[20:])
    history = model.history_
    assert history.best_epoch == 0
    assert len(history.valid_mae) == history.epochs_run + 1 == 3  # the start, then 2 epochs (patience)
    start = get_model("roi_conn", dict(TINY_PARAMS["roi_conn"], epochs=0), 0).fit(X[:20], ages[:20])
    np.testing.assert_allclose(model.predict(X[20:]), start.predict(X[20:]), rtol=1e-5)
    assert np.mean(np.abs(model.predict(X[20:]) - ages[20:])) == pytest.approx(history.valid_mae[0])


def test_training_lowers_the_in_batch_leave_one_out_error():
    # Age sits in the correlation of two mixtures of the regions, weakly: learning the mix helps.
    rng = np.random.default_rng(9)
    ages = ages_for(48, rng)
    X = planted_series(ages, rng, n_timepoints=60, n_regions=8)
    model = get_model("roi_conn", dict(TINY_PARAMS["roi_conn"], epochs=15, batch_size=16, lr=0.01,
                                       frame_dropout=0.0), 0)
    loss = model.fit(X, ages).history_.train_loss
    assert np.mean(loss[-3:]) < 0.8 * np.mean(loss[:2])


@pytest.mark.parametrize(
    ("params", "match"),
    [({"shrinkage": 0.0}, r"shrinkage must be in \(0, 1\], got 0.0"),
     ({"frame_dropout": 0.95}, r"frame_dropout must be in \[0, 0.9\], got 0.95"),
     ({"alphas": []}, "alphas must be a non-empty list of positive numbers"),
     ({"target": "sqrt"}, "target must be one of age, log_age, got 'sqrt'"),
     ({"epochs": -1}, "epochs must be an integer >= 0, got -1")],
)
def test_roi_conn_invalid_parameters(params, match):
    with pytest.raises(ConfigError, match=match):
        get_model("roi_conn", params, 0)


def test_frame_dropout_zeroes_whole_frames_at_the_given_rate():
    model = get_model("roi_conn", {"frame_dropout": 0.3}, 0)
    batch = torch.ones(64, 100, 5)
    out = model.augment(batch, torch.Generator().manual_seed(0))
    kept = frame_mask(out)
    assert set(torch.unique(out).tolist()) == {0.0, 1.0}
    assert torch.equal((out != 0).all(-1).float(), kept)  # a frame is dropped whole or not at all
    assert float(1 - kept.mean()) == pytest.approx(0.3, abs=0.01)


def test_log_age_target_of_a_torch_model_predicts_in_years():
    rng = np.random.default_rng(10)
    ages = ages_for(20, rng)
    X = planted_series(ages, rng, n_timepoints=30, offset=2.0)
    model = get_model("roi_gru", dict(TINY_PARAMS["roi_gru"], target="log_age"), 0).fit(X, ages)
    assert model.target_mean_ == pytest.approx(np.log(ages).mean())
    pred = model.predict(X)
    assert np.all(pred > 0) and abs(np.mean(pred) - np.mean(ages)) < 15
    with pytest.raises(ValueError, match="roi_gru: target log_age needs ages > 0, found -1.0"):
        model.fit(X[:2], [-1.0, 5.0])
