"""Tests for brainage.pretrain: NT-Xent loss, pair sampler, fold selection, encoder file, init of cnn_rnn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from train_fixtures import GRID_AFFINE, TINY_CNN_RNN, ages_for, blob_mask, planted_volumes, write_study

from brainage import storage
from brainage.errors import ConfigError, InputDataError
from brainage.models import get_model
from brainage.models.cnn_rnn import FrameEncoder
from brainage.pretrain.__main__ import main
from brainage.pretrain.contrastive import PairSampler, PretrainConfig, nt_xent_loss, pretrain_encoder, train_encoder
from brainage.train.__main__ import main as train_main
from brainage.torchloop.data import load_inputs, masked_frames
from brainage.train.fit import train_model

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = {"channels": [2, 4], "epochs": 2, "batch_size": 4, "lr": 0.01, "weight_decay": 0.0001,
                 "temperature": 0.5, "projection": 8}
HELD_OUT = ["sub-02", "sub-05"]


# --- the loss -----------------------------------------------------------------------------


def test_nt_xent_equals_the_hand_computation_on_orthogonal_pairs():
    # Two subjects, views along the axes: for every anchor the positive has cosine 1, both
    # negatives cosine 0, so l = -log(e^(1/t) / (e^(1/t) + 2)) = log(1 + 2 e^(-1/t)).
    # The second view's lengths differ: the loss must normalise.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert float(nt_xent_loss(z1, z2, 1.0)) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    assert float(nt_xent_loss(z1, z2, 0.5)) == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)


def test_nt_xent_equals_a_loop_over_anchors_on_three_subjects():
    z1 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    z2 = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rows = [list(map(float, r)) for r in torch.cat([z1, z2])]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    t, n, total = 0.3, 3, 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(cos(rows[i], rows[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(cos(rows[i], rows[positive]) / t) / denominator)
    assert float(nt_xent_loss(z1, z2, t)) == pytest.approx(total / (2 * n), rel=1e-6)


def test_nt_xent_rejects_views_of_different_shapes():
    with pytest.raises(ValueError, match=r"two \(N, P\) views of the same shape, got \(2, 3\) and \(3, 3\)"):
        nt_xent_loss(torch.zeros(2, 3), torch.zeros(3, 3), 0.5)


# --- the pair sampler ---------------------------------------------------------------------


def test_pair_sampler_draws_every_subject_once_with_two_distinct_frames():
    lengths = [5, 1, 8, 3, 2, 7, 4]
    batches = list(PairSampler(lengths, 3, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [3, 2, 2]  # near-equal: no batch of one subject
    rows = np.concatenate(batches)
    assert sorted(rows[:, 0]) == list(range(7))
    n = np.asarray(lengths)[rows[:, 0]]
    assert np.all((rows[:, 1] >= 0) & (rows[:, 1] < n) & (rows[:, 2] >= 0) & (rows[:, 2] < n))
    assert np.all((rows[:, 1] != rows[:, 2]) | (n == 1))  # a one-frame run pairs its frame with itself
    # Over many passes the second frame covers every other frame of a run uniformly.
    sampler = PairSampler([4, 4], 2, np.random.default_rng(1))
    pairs = np.concatenate([np.concatenate(list(sampler)) for _ in range(2000)])
    counts = np.bincount(pairs[:, 1] * 4 + pairs[:, 2], minlength=16).reshape(4, 4)
    assert np.all(np.diag(counts) == 0)
    off = counts[~np.eye(4, dtype=bool)]
    assert off.min() > 0.8 * off.mean() and off.max() < 1.2 * off.mean()


def test_pair_sampler_needs_two_subjects():
    with pytest.raises(ValueError, match=r"at least 2 subjects with frames, got lengths \[5\]"):
        PairSampler([5], 4, np.random.default_rng(0))


# --- config -------------------------------------------------------------------------------


def test_pretrain_config_defaults_equal_the_config_file():
    # The dataclass owns the defaults; config.yaml lists the same values, the schema none.
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert PretrainConfig().as_dict() == {"channels": config["models"]["cnn_rnn"]["channels"], **config["pretrain"]}
    assert config["models"]["cnn_rnn"]["pretrain"] is False
    schema = yaml.safe_load((REPO / "config" / "config.schema.yaml").read_text())["properties"]
    assert sorted(schema["pretrain"]["properties"]) == sorted(set(PretrainConfig().as_dict()) - {"channels"})
    assert not any("default" in v for v in schema["pretrain"]["properties"].values())


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"tau": 0.1}, r"unknown parameter\(s\) tau; allowed: channels, epochs, batch_size"),
        ({"batch_size": 1}, r"batch_size must be an integer >= 2, got 1"),
        ({"temperature": 0.0}, r"temperature > 0, got .*temperature=0.0"),
        ({"channels": [4, 0]}, r"channels must be a non-empty list of integers >= 1"),
    ],
)
def test_pretrain_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        PretrainConfig.from_params(params)


# --- training -----------------------------------------------------------------------------


def _losses(volumes, epochs=30, seed=1):
    frames, mask = masked_frames(volumes)
    config = PretrainConfig(channels=(2, 4), epochs=epochs, batch_size=6, lr=0.01, temperature=0.5, projection=8)
    # The fixtures' grid is symmetric about x = 0 (GRID_AFFINE): flips mirror the grid.
    return train_encoder(frames, mask, config, seed=seed, device=torch.device("cpu"), affine=GRID_AFFINE)


def test_pretraining_lowers_the_loss_on_planted_subjects_and_not_on_noise():
    # Each planted subject has its own blob amplitude in every frame: two frames of one subject
    # can be matched. With 6 subjects per batch chance is log(2 * 6 - 1) = log(11) = 2.40.
    rng = np.random.default_rng(0)
    planted = planted_volumes(ages_for(12, rng), rng)
    _, losses = _losses(planted)
    assert np.mean(losses[:3]) > 2.2 and np.mean(losses[-5:]) < 2.0
    # Control: frames of independent noise carry no subject identity; the loss stays at chance.
    noise = [np.where(blob_mask(), rng.standard_normal(v.shape), 0.0).astype(np.float32) for v in planted]
    _, control = _losses(noise)
    assert np.mean(control[-5:]) == pytest.approx(math.log(11), abs=0.1)


def test_training_is_seeded_and_deterministic_on_cpu():
    rng = np.random.default_rng(0)
    volumes = planted_volumes(ages_for(6, rng), rng)
    a, loss_a = _losses(volumes, epochs=2, seed=3)
    b, loss_b = _losses(volumes, epochs=2, seed=3)
    c, _ = _losses(volumes, epochs=2, seed=4)
    assert loss_a == loss_b and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    assert a.keys() == FrameEncoder((2, 4)).state_dict().keys()


# --- the stage on a study: fold selection, file, CLI ----------------------------------------


def _study(root: Path) -> dict:
    """12 volume subjects: sub-02 and sub-05 held out (fold -1), the others in folds 0..2."""
    study = write_study(root, n=12, n_folds=3, kind="volumes", extra=1)
    ids = study["ids"][:12]
    cv = [p for p in ids if p not in HELD_OUT]
    folds = {p: i % 3 for i, p in enumerate(cv)} | {p: -1 for p in HELD_OUT}
    storage.write_tsv(study["splits"], pd.DataFrame({
        "participant_id": ids, "fold": [folds[p] for p in ids], "set": ["test" if folds[p] < 0 else "cv" for p in ids],
    }))
    study["train"] = {f: [p for p in cv if folds[p] != f] for f in range(3)}
    return study


def _pretrain_cli(study, out, fold=1, params=None, inputs=None):
    return main(["encoder", "--fold", str(fold), "--cohort", str(study["cohort"]), "--splits", str(study["splits"]),
                 "--inputs", *map(str, inputs or study["inputs"]), "--params", json.dumps(params or TINY_PRETRAIN),
                 "--seed", "42", "--threads", "1", "--out", str(out)])


def test_pretraining_reads_only_the_folds_training_subjects(tmp_path):
    study = _study(tmp_path)
    for fold in range(3):
        # Only the training subjects' files are given: a test-fold or held-out subject the
        # sampler could draw would have to be read, and load_inputs would fail naming it.
        train = study["train"][fold]
        inputs = [p for p in study["inputs"] if Path(p).name.split("_")[0] in train]
        card = pretrain_encoder(fold, study["cohort"], study["splits"], inputs, TINY_PRETRAIN, 42, 1,
                                tmp_path / f"fold-{fold}" / "encoder.pt")
        assert card["subjects"] == train and card["n_subjects"] == len(train) == (6 if fold == 0 else 7)
        assert not set(card["subjects"]) & set(HELD_OUT)
        assert card["sources"] == [f"{p}_volumes.parquet" for p in train]


def test_cli_writes_a_weights_only_encoder_and_its_card(tmp_path):
    study = _study(tmp_path)
    out = tmp_path / "a" / "encoder.pt"
    assert _pretrain_cli(study, out) == 0
    state = torch.load(out, weights_only=True)
    assert state["channels"] == [2, 4] and state["state_dict"].keys() == FrameEncoder((2, 4)).state_dict().keys()
    assert all(v.device.type == "cpu" for v in state["state_dict"].values())
    card = storage.read_json(tmp_path / "a" / "card.json")
    assert card == state["card"]
    assert (card["fold"], card["n_subjects"], card["epochs"], len(card["loss"])) == (1, 7, 2, 2)
    assert card["seeds"]["entropy"][:2] == [42, 1] and card["params"] == TINY_PRETRAIN
    assert set(card["versions"]) >= {"brainage", "torch", "numpy"} and card["seconds"] > 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["card.json", "encoder.pt"]  # no temporary left
    assert _pretrain_cli(study, tmp_path / "b" / "encoder.pt") == 0  # same seed: the same weights
    again = torch.load(tmp_path / "b" / "encoder.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(state["state_dict"][k], again[k]) for k in again)


def test_cli_bad_params_exit_with_one_line(tmp_path, capsys):
    study = _study(tmp_path)
    assert _pretrain_cli(study, tmp_path / "encoder.pt", params={**TINY_PRETRAIN, "tau": 1}) == 1
    assert "pretrain: unknown parameter(s) tau" in capsys.readouterr().err
    assert not (tmp_path / "encoder.pt").exists()


# --- cnn_rnn starts from the encoder ------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """A pretrained encoder (channels [2, 4]) of fold 1 of :func:`_study`, and the study."""
    root = tmp_path_factory.mktemp("encoder")
    study = _study(root)
    assert _pretrain_cli(study, root / "encoder.pt") == 0
    return root / "encoder.pt", study


def test_encoder_loads_into_cnn_rnn_and_fit_starts_from_it(encoder_file):
    path, study = encoder_file
    pretrained = torch.load(path, weights_only=True)["state_dict"]
    X, _ = load_inputs(study["inputs"], study["train"][1], "volumes")
    ages = np.linspace(20, 60, len(X))
    model = get_model("cnn_rnn", {**TINY_CNN_RNN, "pretrain": True, "lr": 1e-9, "epochs": 1}, seed=5)
    model.init_encoder = path
    model.mask_ = blob_mask()
    net = model.build_network(blob_mask().shape)
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in pretrained.items())
    # After one step at a negligible learning rate the conv weights are still the pretrained ones,
    # far from those of a randomly initialised fit with the same seed.
    model.fit(X, ages)
    fresh = get_model("cnn_rnn", {**TINY_CNN_RNN, "lr": 1e-9, "epochs": 1}, seed=5).fit(X, ages)
    first = "features.0.weight"
    torch.testing.assert_close(model.network_.encoder.state_dict()[first], pretrained[first], atol=1e-6, rtol=0)
    assert (fresh.network_.encoder.state_dict()[first] - pretrained[first]).abs().max() > 0.1


def test_encoder_with_other_channels_or_keys_is_refused(encoder_file, tmp_path):
    path, _ = encoder_file
    model = get_model("cnn_rnn", {**TINY_CNN_RNN, "channels": [3]}, seed=0)
    with pytest.raises(InputDataError, match=r"encoder\.pt: encoder pretrained with channels \[2, 4\], but cnn_rnn has channels \[3\]"):
        model.load_encoder(path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputDataError, match=r"other\.pt: not a pretrained frame encoder file"):
        model.load_encoder(tmp_path / "other.pt")


def _train_cli(study, out, fold, params, init=None):
    extra = ["--init-encoder", str(init)] if init else []
    return train_main(["model", "--model", "cnn_rnn", "--fold", str(fold), "--cohort", str(study["cohort"]),
                       "--splits", str(study["splits"]), "--inputs", *map(str, study["inputs"]),
                       "--params", json.dumps(params), "--seed", "42", "--threads", "1", "--out-dir", str(out), *extra])


def test_train_cli_with_init_encoder_records_it(encoder_file, tmp_path):
    path, study = encoder_file
    assert _train_cli(study, tmp_path / "out", 1, {**TINY_CNN_RNN, "pretrain": True}, init=path) == 0
    card = storage.read_json(tmp_path / "out" / "card.json")
    assert card["init_encoder"]["file"] == str(path) and card["init_encoder"]["fold"] == 1
    assert len(card["init_encoder"]["sha256"]) == 64 and card["params"]["pretrain"] is True
    pred = storage.read_table(tmp_path / "out" / "predictions.parquet")
    assert pred.attrs["brainage"]["init_encoder"] == card["init_encoder"]


def test_train_model_checks_the_encoder_against_pretrain_and_the_fold(encoder_file, tmp_path):
    path, study = encoder_file
    args = (study["cohort"], study["splits"], study["inputs"])
    with pytest.raises(ConfigError, match=r"init_encoder must be given exactly when models\.cnn_rnn\.pretrain is true; pretrain is true, init_encoder is None"):
        train_model("cnn_rnn", 1, *args, {**TINY_CNN_RNN, "pretrain": True}, 42, 1, tmp_path / "a")
    with pytest.raises(ConfigError, match=r"pretrain is false, init_encoder is .*encoder\.pt"):
        train_model("cnn_rnn", 1, *args, TINY_CNN_RNN, 42, 1, tmp_path / "b", init_encoder=path)
    # The fold-1 encoder saw fold 0's test subjects: using it for fold 0 would leak them.
    leaked = ", ".join(sorted(set(study["train"][1]) - set(study["train"][0])))
    with pytest.raises(InputDataError, match=rf"outside fold 0's training set: {leaked}"):
        train_model("cnn_rnn", 0, *args, {**TINY_CNN_RNN, "pretrain": True}, 42, 1, tmp_path / "c", init_encoder=path)
