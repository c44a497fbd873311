"""cnn_conn: the CNN-RNN that reads connectivity (brainage.models.cnn_conn), on Volumes with a real atlas folder."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.linalg import logm
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainage.download.atlas import build_atlas, validate_spec
from brainage.errors import ConfigError
from brainage.models import get_model, list_models, model_class, reads_atlas
from brainage.models.cnn_conn import CnnConnNet, ResidualCNN, atlas_parcels
from brainage.storage import Volumes
from brainage.train.fit import train_model
from train_fixtures import GRID, GRID_AFFINE, ages_for, blob_mask, planted_series, write_study

PARAMS = dict(channels=[], hidden=4, window=1200, epochs=0, batch_size=8, lr=0.01, weight_decay=0.0001, dropout=0.0,
              patience=8, target="age", shrinkage=0.5, frame_dropout=0.0, alphas=[0.1, 1.0, 10.0], bf16=True,
              compile=False)


def _labels() -> np.ndarray:
    # Four regions: the quadrants (x, y) of the blob mask.
    mask = blob_mask()
    x, y, _ = np.indices(GRID)
    return np.where(mask, 1 + (x >= 3) + 2 * (y >= 4), 0).astype(np.int16)


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas")
    nib.save(nib.Nifti1Image(_labels(), GRID_AFFINE), root / "labels.nii.gz")
    out = root / "quadrants"
    spec = validate_spec({"name": "file", "id": "quadrants", "path": str(root / "labels.nii.gz"), "labels": None})
    build_atlas(spec, 0, out, data_dir=root / "cache")
    return out


def _volumes(n: int, seed: int = 0) -> tuple[list[Volumes], np.ndarray]:
    """Each region's voxels carry its series plus voxel noise; regions 1-2 correlate more with age."""
    rng = np.random.default_rng(seed)
    ages = ages_for(n, rng)
    labels, mask = _labels(), blob_mask()
    out = []
    for pid, series in enumerate(planted_series(ages, rng, n_timepoints=60, n_regions=4)):
        grid = np.zeros((len(series), *GRID), dtype=np.float32)
        grid[:, mask] = series[:, labels[mask] - 1] + 0.3 * rng.standard_normal((len(series), mask.sum()))
        out.append(Volumes(f"sub-{pid:02d}", grid[:, mask].astype(np.float16), mask, GRID_AFFINE))
    return out, ages


def _region_means(v: Volumes) -> np.ndarray:
    labels = _labels()[v.mask]
    data = v.data.astype(np.float64)
    return np.stack([data[:, labels == r].mean(axis=1) for r in range(1, 5)], axis=1)


def test_parcellation_starts_as_the_atlas_region_means(atlas_dir):
    (v,), _ = _volumes(1)
    parcels = atlas_parcels(atlas_dir, v.mask, v.affine)
    assert parcels.shape == (v.mask.sum(), 4)
    np.testing.assert_allclose(v.data.astype(np.float64) @ parcels, _region_means(v), atol=1e-5)


def test_untrained_cnn_conn_is_a_ridge_on_the_log_correlation_of_the_atlas_regions(atlas_dir):
    X, ages = _volumes(24)
    model = get_model("cnn_conn", PARAMS, 0)
    model.atlas = atlas_dir
    pred = model.fit(X[:18], ages[:18]).predict(X[18:])

    def features(volumes):
        rows = []
        for v in volumes:
            spd = 0.5 * np.corrcoef(_region_means(v).T) + 0.5 * np.eye(4)
            log = np.real(logm(spd))
            weight = np.where(np.eye(4, dtype=bool), 1.0, np.sqrt(2))
            rows.append((log * weight)[np.triu_indices(4)])
        return np.array(rows)

    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=PARAMS["alphas"]))
    z_mean, z_std = ages[:18].mean(), ages[:18].std()
    ridge.fit(features(X[:18]), (ages[:18] - z_mean) / z_std)
    np.testing.assert_allclose(pred, ridge.predict(features(X[18:])) * z_std + z_mean, atol=1e-3)


def test_the_residual_cnn_passes_frames_unchanged_at_the_start():
    mask = blob_mask()
    cnn = ResidualCNN(mask, (3,))
    x = torch.randn(5, int(mask.sum()))
    torch.testing.assert_close(cnn(x), x)
    torch.nn.init.normal_(cnn.f[-1].weight)
    assert not torch.allclose(cnn(x), x)


def test_the_cnn_in_chunks_with_recomputed_activations_is_the_same_function_and_gradient(atlas_dir):
    # The CNN reads B x T frames in chunks of frames_per_chunk, recomputing each chunk's activations
    # in the backward pass: outputs and every gradient must equal one pass over all frames at once.
    X, ages = _volumes(4)
    mask = X[0].mask
    torch.manual_seed(0)
    net = CnnConnNet(mask, atlas_parcels(atlas_dir, mask, X[0].affine), (3,), 4, 0.5, 0.0)
    for p in net.parameters():  # away from the start (last convolution zero, no correction)
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    x = torch.from_numpy(np.stack([v.data[:50] for v in X]))  # (4 runs, 50 frames, V), float16
    targets = torch.as_tensor((ages - ages.mean()) / ages.std(), dtype=torch.float32)

    def run(frames_per_chunk):
        net.zero_grad()
        net.frames_per_chunk = frames_per_chunk
        out = net(x, targets)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    whole, whole_grads = run(10_000)
    chunked, chunked_grads = run(7)  # 200 frames: 28 chunks of 7 and one of 4
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)
    assert set(chunked_grads) == set(whole_grads) and any(n.startswith("cnn.") for n in whole_grads)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    with torch.no_grad():  # prediction: chunks without recomputation, same signals
        net.frames_per_chunk = 7
        u_chunked, _ = net.signals(x)
        direct = net.parcellation(net.cnn(x.reshape(-1, x.shape[-1]).float())).reshape(4, 50, -1)
        torch.testing.assert_close(u_chunked, direct, rtol=1e-5, atol=1e-6)


def test_trained_cnn_conn_learns_the_planted_connectivity_and_survives_its_checkpoint(atlas_dir):
    X, ages = _volumes(40, seed=1)
    params = {**PARAMS, "channels": [2], "epochs": 2, "frame_dropout": 0.1}
    model = get_model("cnn_conn", params, 0)
    model.atlas = atlas_dir
    model.fit(X[:24], ages[:24], X[24:30], ages[24:30])
    pred = model.predict(X[30:])
    dummy = np.abs(ages[:24].mean() - ages[30:]).mean()
    assert np.abs(pred - ages[30:]).mean() < 0.6 * dummy
    assert model.fit_info_["epochs_run"] >= 1 and "head_alpha" in model.fit_info_
    state = model.checkpoint_state()
    assert state["inputs"]["n_regions"] == 4
    loaded = get_model("cnn_conn", params, 0).load_checkpoint_state(state)  # no atlas needed to predict
    np.testing.assert_allclose(loaded.predict(X[30:]), pred, rtol=1e-6)


def test_cnn_conn_needs_an_atlas_and_volumes_with_an_affine(atlas_dir):
    X, ages = _volumes(6)
    with pytest.raises(ConfigError, match="cnn_conn: no atlas given"):
        get_model("cnn_conn", PARAMS, 0).fit(X, ages)
    model = get_model("cnn_conn", PARAMS, 0)
    model.atlas = atlas_dir
    with pytest.raises(ValueError, match="cnn_conn: the inputs carry no affine"):
        model.fit([v.to_grid() for v in X], ages)
    with pytest.raises(ConfigError, match=r"cnn_conn: channels must be a list of integers >= 1 \(empty: no CNN\)"):
        get_model("cnn_conn", {"channels": [0]}, 0)


def test_the_registry_knows_which_models_read_an_atlas_without_importing_them():
    assert [m for m in list_models() if reads_atlas(m)] == ["cnn_conn"]
    for name in list_models():
        assert reads_atlas(name) == getattr(model_class(name), "reads_atlas", False), name


def test_the_train_job_takes_an_atlas_exactly_for_models_that_start_from_one(tmp_path, atlas_dir):
    study = write_study(tmp_path, kind="series")
    args = dict(fold=0, cohort=study["cohort"], splits=study["splits"], inputs=study["inputs"], seed=0, threads=1)
    with pytest.raises(ConfigError, match=r"dummy: an atlas folder must be given exactly to models that start from one "
                                          r"\(it does not; atlas is .*quadrants\)"):
        train_model("dummy", params={}, out_dir=tmp_path / "dummy", atlas=atlas_dir, **args)
    volumes = write_study(tmp_path / "volumes", kind="volumes")
    args = {**args, "cohort": volumes["cohort"], "splits": volumes["splits"], "inputs": volumes["inputs"]}
    with pytest.raises(ConfigError, match=r"cnn_conn: an atlas folder must be given exactly to models that start from "
                                          r"one \(it does; atlas is None\)"):
        train_model("cnn_conn", params=PARAMS, out_dir=tmp_path / "cnn_conn", **args)
