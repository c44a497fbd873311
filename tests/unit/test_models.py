"""Tests for brainage.models: registry, contract over every model, planted effects, parameters."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_fixtures import GRID_AFFINE, TINY_PARAMS, ages_for, blob_mask, planted_series, planted_volumes

from brainage.errors import ConfigError
from brainage.models import get_model, list_models, make_config, reads_atlas
from brainage.models.cnn_rnn import CnnRnnNet, FrameEncoder, augment_volumes, mirror_index
from brainage.torchloop.data import masked_frames
from brainage.models.roi_gru import RoiGruNet

REPO = Path(__file__).resolve().parents[2]


def _data(kind: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ages = ages_for(n, rng)
    if kind == "predictions":  # two base models' predicted ages: noisy, and biased to the mean
        return list(np.column_stack([ages + rng.normal(0, 3, n), 0.5 * ages + 20 + rng.normal(0, 3, n)])), ages
    X = planted_series(ages, rng, n_timepoints=30, offset=2.0) if kind == "series" else planted_volumes(ages, rng)
    return X, ages


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- registry -----------------------------------------------------------------------------


def test_list_models_names_every_registered_model():
    assert list_models() == ["cnn_conn", "cnn_rnn", "connectome_ridge", "dummy", "roi_conn", "roi_gru", "stack"]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'nope'; valid models: cnn_conn, cnn_rnn, connectome_ridge, dummy, roi_conn, roi_gru, stack"):
        get_model("nope", {}, 0)


def test_unknown_parameter_is_named_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'roi_gru': unknown parameter\(s\) hiden; allowed: batch_size, bf16, compile, conv_channels"):
        get_model("roi_gru", {"hiden": 3}, 0)
    with pytest.raises(ValueError, match=r"'dummy': unknown parameter\(s\) alpha; allowed: none"):
        get_model("dummy", {"alpha": 1}, 0)


def _plain(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def test_config_yaml_lists_every_model_parameter_at_its_dataclass_default():
    # One definition of each default (the Config dataclass); config.yaml shows users the same values.
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert sorted(config["models"]) == list_models()
    for name in list_models():
        assert config["models"][name] == _plain(make_config(name, {})), name


def test_schema_declares_the_model_parameters_without_defaults():
    schema = yaml.safe_load((REPO / "config" / "config.schema.yaml").read_text())["properties"]
    models = schema["models"]["properties"]
    assert sorted(models) == list_models()
    for name, spec in models.items():
        properties = spec.get("properties", {})
        assert sorted(properties) == sorted(_plain(make_config(name, {}))), name
        assert [k for k, v in properties.items() if "default" in v] == [], name
    assert [k for k, v in schema["pretrain"]["properties"].items() if "default" in v] == []


def test_config_yaml_models_build():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name, params in config["models"].items():
        model = get_model(name, params, seed=1)
        assert dataclasses.asdict(model.config) == {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("connectome_ridge", {"kind": "covariance"}, "kind 'covariance' is not one of correlation, tangent"),
        ("connectome_ridge", {"alphas": []}, "alphas must be a non-empty list of positive numbers"),
        ("connectome_ridge", {"alphas": [1.0, -2.0]}, "alphas must be a non-empty list of positive numbers"),
        ("connectome_ridge", {"target": "sqrt_age"}, "target 'sqrt_age' is not one of age, log_age"),
        ("cnn_rnn", {"rnn": "rnn"}, "rnn 'rnn' is not one of gru, lstm"),
        ("cnn_rnn", {"channels": []}, "channels must be a non-empty list of integers >= 1"),
        ("cnn_rnn", {"channels": [8, 0]}, "channels must be a non-empty list of integers >= 1"),
        ("roi_gru", {"conv_channels": 0}, "conv_channels must be an integer >= 1, got 0"),
        ("roi_gru", {"window": 1}, "window must be an integer >= 2, got 1"),
        ("cnn_rnn", {"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
        ("roi_gru", {"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ("roi_gru", {"dropout": 0.95}, r"need lr > 0, weight_decay >= 0 and 0 <= dropout <= 0.9, got lr=0.001"),
        ("roi_gru", {"lr": 0.0}, r"need lr > 0.*got lr=0.0,"),
        ("cnn_rnn", {"compile": "fastest"},
         "compile must be true, false or one of default, reduce-overhead, max-autotune, got 'fastest'"),
    ],
)
def test_invalid_parameter_values(name, params, match):
    with pytest.raises(ConfigError, match=match):
        get_model(name, params, 0)


def test_compile_takes_a_torch_compile_mode():
    assert get_model("cnn_rnn", {"compile": "reduce-overhead"}, 0).config.compile == "reduce-overhead"


# --- contract over every registered model ------------------------------------------------


# cnn_conn reads Volumes with an affine and an atlas folder: its own contract in test_models_cnn_conn.py.
ON_BARE_INPUTS = [m for m in list_models() if not reads_atlas(m)]


@pytest.mark.parametrize("name", ON_BARE_INPUTS)
def test_every_model_fits_and_predicts_one_age_per_subject(name):
    model = get_model(name, TINY_PARAMS[name], seed=3)
    X, ages = _data(model.input_kind, 10)
    assert model.fit(X[:8], ages[:8], X[8:], ages[8:]) is model
    pred = model.predict(X)
    assert pred.shape == (10,) and pred.dtype == np.float64 and np.all(np.isfinite(pred))
    assert isinstance(model.fit_info_, dict)


@pytest.mark.parametrize("name", list_models())
def test_every_model_rejects_bad_inputs(name):
    model = get_model(name, TINY_PARAMS[name], seed=3)
    X, ages = _data(model.input_kind, 6)
    with pytest.raises(ValueError, match=f"{name}: 5 ages for 6 subjects"):
        model.fit(X, ages[:5])
    with pytest.raises(ValueError, match=f"{name}: no subjects given"):
        model.fit([], [])
    wrong = np.zeros((3, 3)) if model.input_kind == "predictions" else np.zeros(3)
    with pytest.raises(ValueError, match=re.escape(f"{name}: subject 1 has an array of shape {wrong.shape}; expected")):
        model.fit([X[0], wrong], ages[:2])
    with pytest.raises(ValueError, match=f"{name}: ages must be finite"):
        model.fit(X[:2], [np.nan, 3.0])


@pytest.mark.parametrize("name", ["roi_gru", "roi_conn", "cnn_rnn"])
def test_torch_models_reject_other_frame_shapes(name):
    model = get_model(name, TINY_PARAMS[name], seed=3)
    X, ages = _data(model.input_kind, 6)
    model.fit(X, ages)
    shape = "on the same grid" if name == "cnn_rnn" else "of shape"
    with pytest.raises(ValueError, match=f"{name}: every subject needs frames {shape}"):
        model.predict([x[:, :-1] for x in X])


# --- baselines ---------------------------------------------------------------------------


def test_dummy_predicts_the_training_mean_exactly():
    X, _ = _data("series", 4)
    model = get_model("dummy", {}, 0).fit(X, [10.0, 20.0, 30.0, 60.0])
    np.testing.assert_array_equal(model.predict(X[:3]), [30.0, 30.0, 30.0])


def test_connectome_ridge_recovers_a_planted_connectivity_effect():
    rng = np.random.default_rng(7)
    ages = ages_for(90, rng)
    X = planted_series(ages, rng, n_timepoints=300, n_regions=6)
    model = get_model("connectome_ridge", {}, 0).fit(X[:60], ages[:60])
    r = np.corrcoef(model.predict(X[60:]), ages[60:])[0, 1]
    assert r > 0.9


def test_connectome_ridge_parameters_change_the_model():
    X, ages = _data("series", 20)
    base = get_model("connectome_ridge", {"kind": "correlation", "alphas": [1.0]}, 0).fit(X, ages)
    assert base.fit_info_["alpha"] == 1.0
    tangent = get_model("connectome_ridge", {"kind": "tangent", "alphas": [1.0]}, 0).fit(X, ages)
    assert tangent.pipeline_.named_steps["connectivity"].kind == "tangent"
    assert not np.allclose(base.predict(X), tangent.predict(X))
    heavy = get_model("connectome_ridge", {"kind": "correlation", "alphas": [1e6]}, 0).fit(X, ages)
    assert heavy.fit_info_["alpha"] == 1e6
    # A huge penalty shrinks every prediction towards the mean age.
    assert np.std(heavy.predict(X)) < 0.1 * np.std(base.predict(X))


def _log_planted_series(n: int, seed: int):
    """Ages 6-60 y, log-uniform; the region 0-1 correlation rises linearly with log(age) (0 to 0.8)."""
    rng = np.random.default_rng(seed)
    log_ages = rng.permutation(np.linspace(np.log(6.0), np.log(60.0), n))
    X = []
    for rel in (log_ages - np.log(6.0)) / np.log(10.0):
        x = rng.standard_normal((1000, 4))
        x[:, 1] = 0.8 * rel * x[:, 0] + np.sqrt(1 - (0.8 * rel) ** 2) * x[:, 1]
        X.append(x)
    return X, np.exp(log_ages)


def test_connectome_ridge_log_age_target_fits_a_multiplicative_age_effect():
    X, ages = _log_planted_series(90, seed=11)
    train, test = slice(0, 60), slice(60, None)
    params = {"kind": "correlation", "alphas": [1.0]}
    linear = get_model("connectome_ridge", {**params, "target": "age"}, 0).fit(X[train], ages[train])
    logged = get_model("connectome_ridge", {**params, "target": "log_age"}, 0).fit(X[train], ages[train])
    # The ridge inside predicts log(age); the model returns exp of it, in years.
    np.testing.assert_allclose(logged.predict(X[test]), np.exp(logged.pipeline_.predict(X[test])))
    mae_linear = np.mean(np.abs(linear.predict(X[test]) - ages[test]))
    mae_logged = np.mean(np.abs(logged.predict(X[test]) - ages[test]))
    # Age is exponential in the feature: a straight line in age misfits both ends, one in log(age) does not.
    assert mae_logged < 0.7 * mae_linear
    assert np.all(logged.predict(X) > 0)


def test_connectome_ridge_log_age_rejects_non_positive_ages():
    X, ages = _data("series", 4)
    with pytest.raises(ValueError, match="connectome_ridge: target log_age needs ages > 0, found 0.0"):
        get_model("connectome_ridge", {"target": "log_age"}, 0).fit(X, [0.0, *ages[1:]])


# --- torch networks ---------------------------------------------------------------------


def test_roi_gru_network_one_batch_shape():
    net = RoiGruNet(n_regions=5, conv_channels=4, hidden=3, dropout=0.0)
    assert net(torch.randn(7, 11, 5)).shape == (7,)


def _depth_to_space(frames: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Undo Unmask's 2x2x2 blocks by hand: (N, 8, X2+1, Y2+1, Z2+1) -> (N, X, Y, Z)."""
    n, blocks = frames.shape[0], [b - 1 for b in frames.shape[2:]]
    # channel = px*4 + py*2 + pz; block b+1 holds voxels 2b + p
    inner = frames[:, :, 1:, 1:, 1:].reshape(n, 2, 2, 2, *blocks)  # (N, px, py, pz, bx, by, bz)
    grid = inner.permute(0, 4, 1, 5, 2, 6, 3).reshape(n, *(2 * b for b in blocks))  # (N, bx, px, by, py, bz, pz)
    return grid[:, : shape[0], : shape[1], : shape[2]]


def test_cnn_rnn_network_one_batch_shape_and_frames_in_one_call():
    mask = np.zeros((9, 10, 8), dtype=bool)
    mask[2:7, 1:9, 3:] = True
    net = CnnRnnNet((2, 3), hidden=4, rnn="gru", dropout=0.0, mask=mask)
    calls = []
    net.encoder.register_forward_hook(lambda mod, inp, out: calls.append((inp[0], out.shape)))
    x = torch.randn(3, 5, int(mask.sum()))
    assert net(x).shape == (3,)
    # One encoder call on all B*T frames, each embedded into C*(1+8) features.
    (frames, out_shape), = calls
    assert out_shape == (15, 3 * 9)
    # 2x2x2 blocks as 8 channels, a zero block leading each axis: (9, 10, 8) -> 1 + (5, 5, 4).
    assert frames.shape == (15, 8, 6, 6, 5)
    assert frames.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.isclose(frames.sum(), x.sum()) and torch.all(frames[:, :, 0] == 0) and torch.all(frames[:, :, :, :, 0] == 0)
    # The in-mask voxels land where the mask says, zeros elsewhere.
    grids = _depth_to_space(frames, mask.shape)
    torch.testing.assert_close(grids[7][torch.from_numpy(mask)], x[1, 2])
    assert torch.all(grids[:, torch.from_numpy(~mask)] == 0)
    # Without space-to-depth: the plain channels-last grid.
    plain = CnnRnnNet((2, 3), hidden=4, rnn="gru", dropout=0.0, mask=mask, space_to_depth=False).unmask(x[0])
    assert plain.shape == (5, 1, 9, 10, 8) and plain.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(plain[:, 0], grids[:5])


@pytest.mark.parametrize("shape", [(9, 10, 8), (5, 7, 3), (2, 2, 2), (3, 1, 4), (1, 1, 1)])
def test_space_to_depth_first_layer_computes_the_plain_network(shape):
    # The k2 convolution over 2x2x2 blocks with rearranged weights is the k3 stride-2 pad-1
    # convolution: same outputs and same gradients (float64; even, odd and single-voxel axes).
    mask = np.random.default_rng(1).random(shape) < 0.7
    mask.flat[0] = True
    torch.manual_seed(0)
    plain = CnnRnnNet((3, 4), hidden=5, rnn="gru", dropout=0.0, mask=mask, space_to_depth=False).double()
    blocks = CnnRnnNet((3, 4), hidden=5, rnn="gru", dropout=0.0, mask=mask).double()
    blocks.load_state_dict(plain.state_dict())  # weights only: the scatter positions are not state
    x = torch.randn(2, 3, int(mask.sum()), dtype=torch.float64)
    # (Unmask makes float32 outside autocast; run both float64 by hand.)
    outs = [net.rnn(net.encoder(net.unmask(x.reshape(6, -1)).double()).reshape(2, 3, -1))[0] for net in (plain, blocks)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for out in outs:
        out.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), blocks.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert plain.encoder.features[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(4, 6, 8), (5, 7, 3), (2, 2, 2), (3, 1, 4)])
def test_frame_encoder_summary_equals_global_and_adaptive_average_pooling(shape):
    encoder = FrameEncoder((3,))
    f = torch.randn(2, 3, *shape).contiguous(memory_format=torch.channels_last_3d)
    encoder.features = torch.nn.Identity()  # look at the summary alone
    out = encoder(f)
    expected = torch.cat([f.mean(dim=(2, 3, 4)), torch.nn.AdaptiveAvgPool3d(2)(f).flatten(1)], dim=1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", ["roi_gru", "cnn_rnn"])
def test_training_loss_decreases_on_a_planted_set(name):
    params = dict(TINY_PARAMS[name], epochs=20, lr=0.02, dropout=0.0)
    model = get_model(name, params, seed=5)
    X, ages = _data(model.input_kind, 16)
    loss = model.fit(X, ages).history_.train_loss
    assert len(loss) == 20
    # Per-epoch losses are noisy (random windows, batches of 4): compare averages.
    assert np.mean(loss[-5:]) < 0.6 * np.mean(loss[:2])


def _network(name: str, params: dict):
    model = get_model(name, params, 0)
    X, ages = _data(model.input_kind, 6)
    return model.fit(X, ages).network_


@pytest.mark.parametrize(
    ("name", "param", "value"),
    [("roi_gru", "hidden", 5), ("roi_gru", "conv_channels", 3), ("roi_conn", "hidden", 7), ("cnn_rnn", "hidden", 9),
     ("cnn_rnn", "channels", [3]), ("cnn_rnn", "channels", [2, 4, 5]), ("cnn_rnn", "rnn", "lstm")],
)
def test_architecture_parameters_change_the_network(name, param, value):
    base = _network(name, TINY_PARAMS[name])
    other = _network(name, dict(TINY_PARAMS[name], **{param: value}))
    assert _n_params(other) != _n_params(base)
    if param == "rnn":
        assert isinstance(other.rnn, torch.nn.LSTM) and isinstance(base.rnn, torch.nn.GRU)


@pytest.mark.parametrize("name", ["roi_gru", "cnn_rnn"])
def test_dropout_and_loop_parameters_reach_the_network_and_loop(name):
    model = get_model(name, dict(TINY_PARAMS[name], dropout=0.37, patience=4, lr=0.5, weight_decay=0.25,
                                 batch_size=3, epochs=7), 0)
    X, ages = _data(model.input_kind, 6)
    assert model.fit(X, ages).network_.dropout.p == 0.37
    s = model.loop_settings()
    assert (s.patience, s.lr, s.weight_decay, s.batch_size, s.epochs) == (4, 0.5, 0.25, 3, 7)
    assert model.history_.epochs_run == 7


_TRAINING_CHANGES = [("roi_gru", k, v) for k, v in
                     [("window", 5), ("epochs", 4), ("batch_size", 2), ("lr", 0.05), ("weight_decay", 5.0),
                      ("dropout", 0.6)]] + \
                    [("roi_conn", k, v) for k, v in
                     [("window", 10), ("epochs", 1), ("batch_size", 3), ("lr", 0.05), ("weight_decay", 5.0),
                      ("dropout", 0.6), ("shrinkage", 0.9), ("frame_dropout", 0.5), ("alphas", [1000.0]),
                      ("target", "log_age")]] + \
                    [("cnn_rnn", k, v) for k, v in
                     [("window", 3), ("epochs", 3), ("batch_size", 2), ("lr", 0.05), ("weight_decay", 5.0),
                      ("dropout", 0.6), ("augment", False)]]


@pytest.mark.parametrize(("name", "param", "value"), _TRAINING_CHANGES)
def test_training_parameters_change_the_predictions(name, param, value):
    model = get_model(name, TINY_PARAMS[name], seed=2)
    X, ages = _data(model.input_kind, 8)
    base = model.fit(X, ages).predict(X)
    other = get_model(name, dict(TINY_PARAMS[name], **{param: value}), seed=2).fit(X, ages).predict(X)
    assert not np.allclose(base, other)


@pytest.mark.parametrize("name", ["roi_gru", "roi_conn", "cnn_rnn"])
def test_same_seed_gives_identical_predictions(name):
    X, ages = _data("volumes" if name == "cnn_rnn" else "series", 8)
    runs = [get_model(name, TINY_PARAMS[name], seed=s).fit(X[:6], ages[:6], X[6:], ages[6:]).predict(X)
            for s in (11, 11, 12)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


# --- augmentation -----------------------------------------------------------------------


def _affine(x0: float, size: float = 4.0) -> np.ndarray:
    """Diagonal voxel-to-world affine with world x = 0 at voxel coordinate ``x0``."""
    affine = np.diag([size, size, size, 1.0])
    affine[0, 3] = -size * x0
    return affine


def test_mirror_index_maps_each_voxel_to_its_left_right_mirror():
    mask = np.zeros((4, 2, 1), dtype=bool)
    mask[[0, 1, 3], 0, 0] = True  # (0,0,0)<->(3,0,0) both in; (1,0,0)'s mirror (2,0,0) is out
    mask[2, 1, 0] = True  # its mirror (1,1,0) is out
    # x = 0 half-way between voxels 1 and 2 (centres at -6, -2, 2, 6 mm): the grid is symmetric.
    # In-mask order (C order): (0,0,0), (1,0,0), (2,1,0), (3,0,0); V = 4 means "outside".
    np.testing.assert_array_equal(mirror_index(mask, _affine(1.5)), [3, 4, 4, 0])
    # x = 0 at voxel 1 (centres at -4, 0, 4, 8 mm): i <-> 2 - i. (0,0,0)'s mirror (2,0,0) is out,
    # (1,0,0) is its own, (2,1,0)'s mirror (0,1,0) is out, (3,0,0)'s is off the grid.
    np.testing.assert_array_equal(mirror_index(mask, _affine(1.0)), [4, 1, 4, 4])


def test_flip_moves_a_pattern_at_world_x_plus_a_to_minus_a_when_x0_is_not_the_grid_centre():
    # 10 voxels of 4 mm, x = 0 at voxel 3 (the grid's centre is 4.5): a pattern at x = +8 mm
    # (voxel 5) must come back at x = -8 mm (voxel 1), not at the grid mirror (voxel 4).
    mask = np.ones((10, 2, 1), dtype=bool)
    affine = _affine(3.0)
    grid = np.zeros((10, 2, 1), dtype=np.float32)
    grid[5, 1, 0] = 1.0
    x = torch.from_numpy(np.repeat(grid[mask][None, None], 32, axis=0))  # (B=32, T=1, V=20)
    flip_index = torch.from_numpy(mirror_index(mask, affine))
    out = augment_volumes(x, torch.Generator().manual_seed(0), flip_index, scale_std=0.0, noise_std=0.0)
    flipped = np.zeros((32, *mask.shape), dtype=np.float32)
    flipped[:, mask] = out[:, 0].numpy()
    changed = [not np.array_equal(f, grid) for f in flipped]
    assert 0 < sum(changed) < 32
    world = np.array([affine @ [i, 1, 0, 1] for i in range(10)])[:, 0]
    for f in np.array(flipped)[changed]:
        (i,), (j,), _ = np.nonzero(f)
        assert (world[i], j) == (-8.0, 1)


def test_mirror_index_is_an_involution_on_a_symmetric_mask_and_within_half_a_voxel_of_minus_x():
    rng = np.random.default_rng(0)
    mask = rng.random((9, 4, 3)) < 0.5
    mask |= mask[::-1]  # symmetric about voxel 4 = x 0
    index = mirror_index(mask, _affine(4.0, size=8.0))
    assert np.all(index < mask.sum())
    np.testing.assert_array_equal(index[index], np.arange(mask.sum()))
    # 4 mm blocks of fMRIPrep's 2 mm MNI grid (x = 0 at voxel 23.75 of 49): no voxel centre sits
    # at -x, the nearest one is used (half a voxel off at most; the mirror plane, a quarter).
    full = np.ones((49, 1, 1), dtype=bool)
    affine = _affine(23.75)
    index = mirror_index(full, affine)
    x = affine[0, 0] * np.arange(49) + affine[0, 3]
    inside = index < 49
    assert np.all(np.abs(x[index[inside]] + x[inside]) <= 2.0)
    np.testing.assert_array_equal(index[index[inside]], np.flatnonzero(inside))


def test_mirror_index_turns_flips_off_when_x_is_not_the_first_voxel_axis(caplog):
    affine = np.eye(4)[[1, 0, 2, 3]]  # world x along the second voxel axis
    assert mirror_index(np.ones((3, 3, 3), dtype=bool), affine) is None
    assert "left-right flips off: world x is not the first voxel axis" in caplog.text
    assert CnnRnnNet((2,), 4, "gru", 0.0, np.ones((3, 3, 3), dtype=bool), affine=affine).unmask.flip_index is None


def test_mirror_index_warns_when_few_voxels_have_a_mirror_in_the_mask(caplog):
    index = mirror_index(np.ones((4, 1, 1), dtype=bool), _affine(-5.0))  # x = 0 far off the grid
    np.testing.assert_array_equal(index, [4, 4, 4, 4])
    assert "only 0% of the in-mask voxels have a mirror about x = 0 in the mask" in caplog.text


def test_augment_volumes_flips_left_right_and_jitters_inside_the_brain_only():
    grids = np.stack(planted_volumes(np.full(16, 40.0), np.random.default_rng(0), n_timepoints=3)).astype(np.float16)
    frames, mask = masked_frames(list(grids))
    x = torch.from_numpy(np.stack(frames)).float()
    flip_index = torch.from_numpy(mirror_index(mask, GRID_AFFINE))  # x = 0 at the grid's centre
    gen = torch.Generator().manual_seed(0)
    same = augment_volumes(x, gen, None, scale_std=0.0, noise_std=0.0)
    torch.testing.assert_close(same, x)
    flipped = augment_volumes(x, gen, flip_index, scale_std=0.0, noise_std=0.0)
    # Back on the grid, a flipped window is the original mirrored along x (the mask is symmetric).
    assert np.array_equal(mask, mask[::-1])
    on_grid = np.zeros((16, 3, *mask.shape), dtype=np.float32)
    on_grid[:, :, mask] = flipped.numpy()
    is_flipped = [np.array_equal(g, o.astype(np.float32)[:, ::-1]) for g, o in zip(on_grid, grids)]
    is_same = [np.array_equal(g, o.astype(np.float32)) for g, o in zip(on_grid, grids)]
    assert all(a != b for a, b in zip(is_flipped, is_same))  # planted blob is not symmetric
    assert 0 < sum(is_flipped) < 16
    noisy = augment_volumes(x, gen, None)
    assert torch.all(noisy[x == 0] == 0) and not torch.equal(noisy, x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cnn_rnn_trains_on_cuda():
    model = get_model("cnn_rnn", TINY_PARAMS["cnn_rnn"], seed=1)
    X, ages = _data("volumes", 8)
    pred = model.fit(X[:6], ages[:6], X[6:], ages[6:]).predict(X)
    assert model.device_.type == "cuda" and next(model.network_.parameters()).is_cuda
    assert pred.shape == (8,) and np.all(np.isfinite(pred))


def test_registry_input_kinds_match_the_classes_and_import_no_framework():
    import subprocess
    import sys

    from brainage.models import TorchAgeModel, input_kind, is_torch, model_class

    for name in list_models():
        assert input_kind(name) == model_class(name).input_kind
        assert is_torch(name) == issubclass(model_class(name), TorchAgeModel)
    with pytest.raises(ValueError, match=r"unknown model 'svm'; valid models: cnn_conn, cnn_rnn, connectome_ridge, dummy, roi_conn, roi_gru, stack"):
        input_kind("svm")
    # Building the DAG reads input kinds only: importing the registry must not import torch or sklearn.
    code = "import sys, brainage.models as m; m.input_kind('cnn_rnn'); print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
