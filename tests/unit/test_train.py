"""Tests for brainage.train: inputs and windows, the loop, seeds, inner split, the CLI end to end."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from train_fixtures import GRID_AFFINE, TINY_PARAMS, blob_mask, write_study

from brainage import storage
from brainage.errors import InputDataError
from brainage.train.__main__ import main
from brainage.models.cnn_rnn import mirror_index
from brainage.train.checkpoint import load_checkpoint
from brainage.torchloop.data import (
    WindowDataset,
    WindowSampler,
    load_inputs,
    masked_frames,
    pad_left,
    shared_affine,
    window_starts,
)
from brainage._codehash import code_hash
from brainage._version import source_version
from brainage.train.fit import RESUME_NAME, derive_seeds, inner_folds, inner_split, read_design, train_model
from brainage.torchloop.batches import make_loader
from brainage.torchloop.loop import LoopSettings, predict_network, train_network


# --- windows and inputs -----------------------------------------------------------------


def test_pad_left_prepends_zero_frames():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(pad_left(a, 5), [[0, 0], [0, 0], [0, 1], [2, 3], [4, 5]])
    assert pad_left(a, 2) is a


def test_window_starts_tile_the_run_and_end_on_its_last_frame():
    np.testing.assert_array_equal(window_starts(10, 4), [0, 4, 6])
    np.testing.assert_array_equal(window_starts(8, 4), [0, 4])
    np.testing.assert_array_equal(window_starts(4, 4), [0])


def test_predict_network_averages_the_windows_of_each_run():
    # A "network" returning each window's first frame value: the prediction is the mean of the
    # window starts' values, windows as window_starts cuts them (short runs left-padded).
    net = torch.nn.Sequential()
    net.forward = lambda x: x[:, 0, 0].float()
    runs = [np.arange(10, dtype=np.float16)[:, None], np.arange(1, 4, dtype=np.float16)[:, None]]
    out = predict_network(net, runs, 4, 2, torch.device("cpu"))
    np.testing.assert_allclose(out, [np.mean([0, 4, 6]), 0.0])
    assert out.dtype == np.float64


def test_window_sampler_and_dataset_cut_contiguous_random_windows():
    arrays = [np.arange(20, dtype=np.float32)[:, None], np.arange(3, dtype=np.float32)[:, None] + 1]
    ds = WindowDataset(arrays, np.array([0.5, -1.0]), window=5)
    sampler = WindowSampler(ds.lengths(), 5, batch_size=2, rng=np.random.default_rng(0))
    starts = set()
    for _ in range(20):
        (batch,) = list(sampler)  # one batch of both subjects per epoch, shuffled
        assert sorted(i for i, _ in batch) == [0, 1]
        for i, start in batch:
            x, y = ds[(i, start)]
            assert x.shape == (5, 1) and x.dtype == torch.float32 and float(y) == [0.5, -1.0][i]
            if i == 0:
                np.testing.assert_array_equal(np.diff(x[:, 0].numpy()), 1.0)
                starts.add(start)
            else:  # shorter than the window: its only window is the left-padded run
                assert start == 0
                np.testing.assert_array_equal(x[:, 0].numpy(), [0, 0, 1, 2, 3])
    assert len(starts) > 3 and max(starts) <= 15
    assert len(WindowSampler([5] * 5, 2, 2, np.random.default_rng(0))) == 3
    with pytest.raises(ValueError, match="2 arrays for 1 targets"):
        WindowDataset(arrays, np.array([1.0]), 5)


def test_window_sampler_shares_each_global_batch_between_processes():
    lengths = [30] * 9  # batches of 4: 4, 4, 1 -> the last one is too small for 2 processes
    single = list(WindowSampler(lengths, 5, 4, np.random.default_rng(8)))
    shares = [list(WindowSampler(lengths, 5, 4, np.random.default_rng(8), rank=r, world=2)) for r in (0, 1)]
    assert [len(b) for b in single] == [4, 4, 1] and len(shares[0]) == len(shares[1]) == 2
    assert len(WindowSampler(lengths, 5, 4, np.random.default_rng(8), rank=0, world=2)) == 2
    for whole, a, b in zip(single, *shares):
        assert sorted(a + b) == sorted(whole) and not set(a) & set(b)


def test_loader_gives_the_same_batches_with_worker_processes():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((int(n), 4)).astype(np.float16) for n in rng.integers(6, 20, 9)]
    ds = WindowDataset(arrays, np.arange(9.0), window=6)
    runs = []
    for workers in (0, 2):
        loader = make_loader(ds, 4, workers, np.random.default_rng(7), torch.device("cpu"))
        runs.append([(x.clone(), y.clone()) for _ in range(2) for x, y in loader])  # two epochs
    assert len(runs[0]) == 6 and runs[0][0][0].dtype == torch.float16
    for (x0, y0), (x1, y1) in zip(*runs):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(runs[0][0][1], runs[0][3][1])  # epochs differ (reshuffled)


def test_device_resident_windows_train_exactly_as_the_loader():
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((int(n), 3)).astype(np.float32) for n in rng.integers(3, 15, 10)]
    histories = []
    for placement in ("loader", "device"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(5 * 3, 1), torch.nn.Flatten(0))
        settings = LoopSettings(epochs=3, batch_size=4, lr=0.05, weight_decay=0.0, patience=3, placement=placement)
        histories.append(train_network(net, WindowDataset(arrays, np.arange(10.0), 5), settings,
                                       rng=np.random.default_rng(1), generator=torch.Generator().manual_seed(0),
                                       device=torch.device("cpu")).train_loss)
    assert histories[0] == histories[1] and len(histories[0]) == 3


def test_masked_frames_align_subjects_on_the_union_mask():
    grid = (3, 2, 2)
    a = np.zeros((2, *grid), np.float32)
    a[:, 0, 0, 0], a[:, 1, 1, 1] = [1, 2], [3, 4]
    b = np.zeros((3, *grid), np.float32)
    b[:, 1, 1, 1], b[:, 2, 0, 1] = [5, 6, 7], [8, 9, 10]
    vol = storage.Volumes("sub-b", b[:, b.any(axis=0)].astype(np.float16), b.any(axis=0), np.eye(4))
    frames, mask = masked_frames([a, vol])
    # Union mask in C order: (0,0,0), (1,1,1), (2,0,1).
    assert mask.sum() == 3 and mask[0, 0, 0] and mask[1, 1, 1] and mask[2, 0, 1]
    np.testing.assert_array_equal(frames[0], [[1, 3, 0], [2, 4, 0]])
    np.testing.assert_array_equal(frames[1], [[0, 5, 8], [0, 6, 9], [0, 7, 10]])
    assert frames[0].dtype == np.float16
    # A given (training) mask: voxels outside it are dropped, missing ones are zero.
    narrow = np.zeros(grid, bool)
    narrow[1, 1, 1] = narrow[0, 1, 0] = True
    (only,), _ = masked_frames([vol], narrow)
    np.testing.assert_array_equal(only, [[0, 5], [0, 6], [0, 7]])
    with pytest.raises(ValueError, match=r"same grid, found grids \[\(3, 2, 2\), \(4, 2, 2\)\]"):
        masked_frames([a, np.zeros((2, 4, 2, 2))])


def test_load_inputs_reads_cohort_subjects_in_order_and_ignores_others(tmp_path):
    study = write_study(tmp_path, n=4, extra=2)
    arrays, sources = load_inputs(study["inputs"][::-1], ["sub-02", "sub-00"], "series")
    assert sources == ["sub-02_timeseries.parquet", "sub-00_timeseries.parquet"]
    np.testing.assert_array_equal(arrays[1], storage.read_timeseries(study["inputs"][0]).data)
    assert arrays[0].dtype == np.float32 and arrays[0].shape[1] == 6


def test_load_inputs_volumes_are_masked_voxels(tmp_path):
    study = write_study(tmp_path, n=3, kind="volumes")
    (volumes,), _ = load_inputs(study["inputs"], ["sub-01"], "volumes")
    assert isinstance(volumes, storage.Volumes) and volumes.participant_id == "sub-01"
    assert volumes.data.shape == (10, blob_mask().sum()) and volumes.data.dtype == np.float16
    np.testing.assert_array_equal(volumes.mask, blob_mask())


def test_load_inputs_errors(tmp_path):
    study = write_study(tmp_path, n=3)
    with pytest.raises(InputDataError, match=r"no series file for cohort participant\(s\) sub-01, sub-07"):
        load_inputs([study["inputs"][0], study["inputs"][2]], ["sub-00", "sub-01", "sub-07"], "series")
    storage.write_timeseries(tmp_path / "dup.parquet", np.zeros((5, 6)), list("abcdef"), participant_id="sub-00")
    with pytest.raises(InputDataError, match="dup.parquet: participant 'sub-00' already has an input file"):
        load_inputs(study["inputs"] + [tmp_path / "dup.parquet"], ["sub-00"], "series")
    storage.write_timeseries(tmp_path / "other.parquet", np.zeros((5, 2)), ["a", "b"], participant_id="sub-09")
    with pytest.raises(InputDataError, match="other.parquet: series layout .* differs from the first subject's"):
        load_inputs(study["inputs"] + [tmp_path / "other.parquet"], ["sub-00", "sub-09"], "series")
    storage.write_timeseries(tmp_path / "empty.parquet", np.zeros((0, 6)), [f"roi_{j:03d}" for j in range(6)],
                             participant_id="sub-08")
    with pytest.raises(InputDataError, match="empty.parquet: participant 'sub-08' has no time points"):
        load_inputs([tmp_path / "empty.parquet"], ["sub-08"], "series")
    with pytest.raises(ValueError, match="holds 'timeseries', expected 'volumes'"):
        load_inputs(study["inputs"], ["sub-00"], "volumes")
    with pytest.raises(ValueError, match="unknown input kind 'images'"):
        load_inputs(study["inputs"], ["sub-00"], "images")


# --- loop -------------------------------------------------------------------------------


def test_loop_stops_early_and_restores_the_best_weights():
    net = torch.nn.Linear(3, 1)
    model = torch.nn.Sequential(torch.nn.Flatten(1), net, torch.nn.Flatten(0))  # (B, 1, 3) -> (B,)
    data = WindowDataset([np.ones((4, 3), np.float32)] * 4, np.arange(4.0), 1)
    maes, snapshots = iter([5.0, 4.0, 4.5, 6.0, 3.0]), []

    def validate(m):
        snapshots.append(net.weight.detach().clone())
        return next(maes)

    settings = LoopSettings(epochs=5, batch_size=2, lr=0.1, weight_decay=0.0, patience=2)
    history = train_network(model, data, settings, rng=np.random.default_rng(0),
                            generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), validate=validate)
    assert (history.epochs_run, history.best_epoch, history.valid_mae) == (4, 2, [5.0, 4.0, 4.5, 6.0])
    torch.testing.assert_close(net.weight, snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[3])
    assert len(history.train_loss) == 4


def test_a_per_epoch_state_of_another_network_is_not_loaded(tmp_path, caplog):
    # Same run (fingerprint) but other weights, e.g. a state written before the network changed:
    # training starts over instead of failing on, or silently mis-loading, the state dict.
    data = WindowDataset([np.ones((4, 3), np.float32)] * 4, np.arange(4.0), 1)
    settings = LoopSettings(epochs=2, batch_size=2, lr=0.1, weight_decay=0.0, patience=2)
    path = tmp_path / "resume.pt"

    def run(net):
        return train_network(torch.nn.Sequential(torch.nn.Flatten(1), net, torch.nn.Flatten(0)), data, settings,
                             rng=np.random.default_rng(0), generator=torch.Generator().manual_seed(0),
                             device=torch.device("cpu"), checkpoint=path, fingerprint={"run": 1})

    run(torch.nn.Linear(3, 1))
    assert path.exists()
    history = run(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)))
    assert history.resumed_from is None and len(history.train_loss) == 2
    assert "checkpoint of another network version" in caplog.text
    assert run(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))).resumed_from == 2


def test_a_per_epoch_state_of_other_code_is_not_loaded(tmp_path, caplog):
    # Same run but another code version (its hash under "code"): training starts over.
    data = WindowDataset([np.ones((4, 3), np.float32)] * 4, np.arange(4.0), 1)
    settings = LoopSettings(epochs=2, batch_size=2, lr=0.1, weight_decay=0.0, patience=2)
    path = tmp_path / "resume.pt"

    def run(code):
        net = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(3, 1), torch.nn.Flatten(0))
        return train_network(net, data, settings, rng=np.random.default_rng(0),
                             generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                             checkpoint=path, fingerprint={"run": 1, "code": code})

    run("aaaa")
    history = run("bbbb")
    assert history.resumed_from is None and len(history.train_loss) == 2
    assert "checkpoint written by other code (code hash aaaa, now bbbb); training from the start" in caplog.text
    assert run("bbbb").resumed_from == 2


def test_a_damaged_per_epoch_state_is_ignored_with_its_path_named(tmp_path, caplog):
    # resume.pt is written atomically, so only damage from outside (a full disk, a copy cut short)
    # truncates it: training starts over and says why, instead of a zip-reader traceback.
    data = WindowDataset([np.ones((4, 3), np.float32)] * 4, np.arange(4.0), 1)
    settings = LoopSettings(epochs=2, batch_size=2, lr=0.1, weight_decay=0.0, patience=2)
    path = tmp_path / "resume.pt"

    def run():
        net = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(3, 1), torch.nn.Flatten(0))
        return train_network(net, data, settings, rng=np.random.default_rng(0),
                             generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                             checkpoint=path, fingerprint={"run": 1})

    run()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    history = run()
    assert history.resumed_from is None and len(history.train_loss) == 2
    assert f"{path}: not a readable torch file (truncated or corrupt" in caplog.text
    assert "training from the start" in caplog.text


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign"])
def test_a_damaged_torch_file_is_one_error_naming_it(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    torch.save({"net": {"w": torch.ones(50)}, "model": "dummy"}, path)
    content = {"empty": b"", "truncated": path.read_bytes()[:100], "foreign": b"not a torch file\n" * 10}[damage]
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=rf"^{re.escape(str(path))}: not a readable torch file "
                                            r"\(truncated or corrupt: .*\); delete it and rerun snakemake"):
        load_checkpoint(path)
    with pytest.raises(InputDataError, match=r"file not found"):
        load_checkpoint(tmp_path / "absent.pt")


# --- seeds, design, inner split ---------------------------------------------------------


def test_derive_seeds_follows_the_seed_sequence_formula():
    seeds = derive_seeds(42, 3, "roi_gru")
    expected = np.random.SeedSequence([42, 3, zlib.crc32(b"roi_gru")]).generate_state(2)
    assert (seeds["model"], seeds["split"]) == tuple(int(s) for s in expected)
    assert seeds == derive_seeds(42, 3, "roi_gru")
    assert seeds["model"] != derive_seeds(42, 2, "roi_gru")["model"] != derive_seeds(42, 3, "cnn_rnn")["model"]
    json.dumps(seeds)


def test_inner_split_takes_one_subject_per_age_block():
    ages = np.arange(20.0)[::-1]
    valid = inner_split(ages, 0.2, np.random.default_rng(0))
    assert valid.sum() == 4
    np.testing.assert_array_equal(np.sort(ages[valid]) // 5, [0, 1, 2, 3])
    np.testing.assert_array_equal(valid, inner_split(ages, 0.2, np.random.default_rng(0)))
    assert inner_split(np.array([3.0, 1.0]), 0.2, np.random.default_rng(0)).sum() == 1
    with pytest.raises(ValueError, match="at least 2 subjects, got 1"):
        inner_split(np.array([3.0]), 0.2, np.random.default_rng(0))


def test_read_design_errors(tmp_path):
    study = write_study(tmp_path, n=6, n_folds=3)
    design = read_design(study["cohort"], study["splits"], 1)
    assert design["test"].sum() == 2 and list(design.columns) == ["participant_id", "age", "site", "fold", "set", "test", "train"]
    assert (design["set"] == "cv").all()  # a splits table without a set column: everyone in cross-validation
    with pytest.raises(InputDataError, match=r"fold 5 has 0 test and 6 training.*folds present: \[0, 1, 2\]"):
        read_design(study["cohort"], study["splits"], 5)
    storage.write_tsv(tmp_path / "bad.tsv", pd.DataFrame({"participant_id": ["sub-00"], "fold": [0]}))
    with pytest.raises(InputDataError, match=r"bad.tsv: no fold for cohort participant\(s\) sub-01, sub-02"):
        read_design(study["cohort"], tmp_path / "bad.tsv", 0)
    storage.write_tsv(tmp_path / "cols.tsv", pd.DataFrame({"participant_id": ["sub-00"], "split": [0]}))
    with pytest.raises(InputDataError, match=r"cols.tsv: needs columns \['fold', 'participant_id'\]"):
        read_design(study["cohort"], tmp_path / "cols.tsv", 0)
    cohort = storage.read_table(study["cohort"]).assign(age=np.nan)
    storage.write_table(tmp_path / "nan.parquet", cohort, kind="cohort")
    with pytest.raises(InputDataError, match="nan.parquet: every cohort subject needs a finite age"):
        read_design(tmp_path / "nan.parquet", study["splits"], 0)


# --- the stage end to end ---------------------------------------------------------------


def _cli(study, out, model="dummy", fold=1, seed=42, params=None, inputs=None):
    return main(["model", "--model", model, "--fold", str(fold), "--cohort", str(study["cohort"]),
                 "--splits", str(study["splits"]), "--inputs", *map(str, inputs or study["inputs"]),
                 "--params", json.dumps(TINY_PARAMS[model] if params is None else params),
                 "--seed", str(seed), "--threads", "1", "--out-dir", str(out)])


def _dummy_ensemble_mean(study, fold: int, n_inner: int = 5) -> float:
    # The dummy's members each predict the mean age of the training subjects outside their inner
    # fold; the fold's test (and held-out) subjects get the mean over the members.
    design = read_design(study["cohort"], study["splits"], fold)
    train = design[design["train"]]
    ages = train["age"].to_numpy()
    folds = inner_folds(ages, train["site"].to_numpy(), n_inner, False, derive_seeds(42, fold, "dummy")["inner"])
    return float(np.mean([ages[folds != k].mean() for k in np.unique(folds)]))


def test_cli_dummy_writes_predictions_and_card(tmp_path):
    study = write_study(tmp_path, n=12, n_folds=3, extra=1)
    assert _cli(study, tmp_path / "out") == 0
    pred = storage.read_table(tmp_path / "out" / "predictions.parquet", kind="predictions")
    assert list(pred.columns) == ["participant_id", "model", "fold", "split", "set", "age", "predicted_age"]
    assert (pred["set"] == "cv").all()
    test_ids = [pid for pid, f in zip(study["ids"], study["folds"]) if f == 1]
    assert sorted(pred.loc[pred["split"] == "test", "participant_id"]) == test_ids
    assert len(pred) == 12 and "sub-12" not in set(pred["participant_id"])  # the excluded subject
    assert set(pred["split"]) == {"test", "inner"} and (pred["fold"] == 1).all() and (pred["model"] == "dummy").all()
    np.testing.assert_allclose(pred.loc[pred["split"] == "test", "predicted_age"], _dummy_ensemble_mean(study, 1))
    card = storage.read_json(tmp_path / "out" / "card.json")
    assert (card["n_train"], card["n_inner"], card["n_test"], card["n_heldout"]) == (8, 8, 4, 0)
    assert card["seeds"] == derive_seeds(42, 1, "dummy") and card["params"] == {} and card["input_kind"] == "series"
    assert set(card["versions"]) >= {"brainage", "torch", "sklearn", "nilearn", "numpy"}
    assert card["versions"]["brainage"] == source_version()  # commit-exact in a checkout
    assert card["epochs_run"] == [None] * 5 and card["device"] == "cpu" and len(card["fit_info"]) == 5
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
    assert pred.attrs["brainage"]["sources"][0] == "sub-00_timeseries.parquet"


def test_cli_connectome_ridge_inner_predictions_cover_every_training_subject(tmp_path):
    study = write_study(tmp_path, n=12, n_folds=3)
    assert _cli(study, tmp_path / "out", model="connectome_ridge", fold=0) == 0
    pred = storage.read_table(tmp_path / "out" / "predictions.parquet")
    inner = pred[pred["split"] == "inner"]
    assert sorted(inner["participant_id"]) == [p for p, f in zip(study["ids"], study["folds"]) if f != 0]
    card = storage.read_json(tmp_path / "out" / "card.json")
    assert {info["alpha"] for info in card["fit_info"]} <= {1.0, 10.0, 100.0}
    np.testing.assert_allclose(card["inner_mae"], np.mean(np.abs(inner["predicted_age"] - inner["age"])))


def test_cli_roi_gru_checkpoint_reloads_with_weights_only_and_is_reproducible(tmp_path):
    study = write_study(tmp_path, n=15, n_folds=3)
    assert _cli(study, tmp_path / "a", model="roi_gru") == 0
    pred = storage.read_table(tmp_path / "a" / "predictions.parquet")
    card = storage.read_json(tmp_path / "a" / "card.json")
    assert (card["n_train"], card["n_inner"], card["n_test"]) == (10, 10, 5)  # every training subject cross-fitted
    assert card["epochs_run"] == [3] * 5 and all(1 <= b <= 3 for b in card["best_epoch"]) and card["params"]["window"] == 8
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert len(state["members"]) == 5  # one network per inner fit
    member = state["members"][0]
    assert member["model"] == "roi_gru" and member["config"] == TINY_PARAMS["roi_gru"] and "state_dict" in member
    model = load_checkpoint(tmp_path / "a" / "checkpoint.pt")  # the members; predicts their mean
    test = pred[pred["split"] == "test"]
    X, _ = load_inputs(study["inputs"], test["participant_id"].tolist(), "series")
    np.testing.assert_allclose(model.predict(X), test["predicted_age"], rtol=1e-6)
    assert _cli(study, tmp_path / "b", model="roi_gru") == 0
    again = storage.read_table(tmp_path / "b" / "predictions.parquet")
    np.testing.assert_array_equal(again["predicted_age"], pred["predicted_age"])


def test_resume_state_of_other_code_is_ignored_and_cards_carry_the_code_hash(tmp_path, monkeypatch, capfd):
    # The per-epoch state carries the hash of the training job's code (``python -m brainage.train``'s
    # import graph, read from the imported package): a state written by other code is not resumed.
    import brainage.torchloop.loop as loop

    states = []
    save = loop._save_epoch_state

    def keep(path, *args):
        save(path, *args)
        states.append(torch.load(path, weights_only=True))

    monkeypatch.setattr(loop, "_save_epoch_state", keep)
    study = write_study(tmp_path, n=15, n_folds=3)
    assert _cli(study, tmp_path / "a", model="roi_gru") == 0
    code = code_hash("brainage.train.__main__")
    assert storage.read_json(tmp_path / "a" / "card.json")["code"] == code
    first = [st for st in states if st["fingerprint"]["fit"] == "inner 0"][-1]  # inner fit 0, epoch 3
    assert first["fingerprint"]["code"] == code and first["epoch"] == 3

    same, other = tmp_path / "same", tmp_path / "other"
    for out, state_code in ((same, code), (other, "0123456789abcdef")):
        out.mkdir()
        torch.save(dict(first, fingerprint=dict(first["fingerprint"], code=state_code)), out / RESUME_NAME.format(k=0))
        assert _cli(study, out, model="roi_gru") == 0
    assert storage.read_json(same / "card.json")["fit_info"][0]["resumed_from"] == 3
    assert storage.read_json(other / "card.json")["fit_info"][0]["resumed_from"] is None
    assert f"checkpoint written by other code (code hash 0123456789abcdef, now {code})" in capfd.readouterr().err


def test_cli_cnn_rnn_on_volumes(tmp_path):
    study = write_study(tmp_path, n=10, n_folds=2, kind="volumes")
    assert _cli(study, tmp_path / "out", model="cnn_rnn", fold=0) == 0
    pred = storage.read_table(tmp_path / "out" / "predictions.parquet")
    assert (pred["split"] == "test").sum() == 5 and (pred["split"] == "inner").sum() == 5
    card = storage.read_json(tmp_path / "out" / "card.json")
    assert card["input_kind"] == "volumes" and card["params"]["channels"] == [2, 4]
    model = load_checkpoint(tmp_path / "out" / "checkpoint.pt").members[0]
    assert model.network_.encoder.out_features == 4 * 9
    # The volumes' affine travels with the checkpoint: flips mirror about world x = 0.
    np.testing.assert_array_equal(model.affine_, GRID_AFFINE)
    torch.testing.assert_close(model.network_.unmask.flip_index, torch.from_numpy(mirror_index(model.mask_, GRID_AFFINE)))
    # A checkpoint of an earlier version also stored the plain grid's scatter positions: they
    # are ignored (this layout's come from the saved mask), and the model predicts the same.
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["members"][0]
    mask = state["inputs"]["mask"].numpy()
    state["state_dict"] |= {"unmask.index": torch.from_numpy(np.flatnonzero(mask)),
                            "unmask.flip_index": torch.from_numpy(mirror_index(mask, GRID_AFFINE))}
    torch.save(state, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    torch.testing.assert_close(old.network_.unmask.index, model.network_.unmask.index)
    X, _ = load_inputs(study["inputs"], pred["participant_id"].tolist(), "volumes")
    np.testing.assert_array_equal(old.predict(X), model.predict(X))


def test_shared_affine_is_the_volumes_affine_and_rejects_two_grids():
    mask, data = blob_mask(), np.zeros((2, int(blob_mask().sum())), dtype=np.float16)
    a = storage.Volumes("sub-a", data, mask, GRID_AFFINE)
    b = storage.Volumes("sub-b", data, mask, GRID_AFFINE + 1e-5)  # header rounding: one grid
    np.testing.assert_array_equal(shared_affine([a, b, np.zeros((2, *mask.shape))]), GRID_AFFINE)
    assert shared_affine([np.zeros((2, *mask.shape))]) is None
    shifted = GRID_AFFINE.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(ValueError, match=r"same grid, but the affine of sub-c .* differs from sub-a's"):
        shared_affine([a, storage.Volumes("sub-c", data, mask, shifted)])


def test_cli_missing_input_names_the_participant(tmp_path, capsys):
    study = write_study(tmp_path, n=6, n_folds=2)
    assert _cli(study, tmp_path / "out", inputs=study["inputs"][1:]) == 1
    assert "ERROR brainage.train: no series file for cohort participant(s) sub-00" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputDataError, match=r"participant\(s\) sub-00 among the 6 input files"):
        train_model("dummy", 0, study["cohort"], study["splits"], study["inputs"][1:], {}, 1, 1, tmp_path / "o")
    many = write_study(tmp_path / "many", n=14, n_folds=2)
    with pytest.raises(InputDataError, match=r"participant\(s\) sub-02, .*, sub-11 and 2 more among the 2 input"):
        train_model("dummy", 0, many["cohort"], many["splits"], many["inputs"][:2], {}, 1, 1, tmp_path / "o")


def test_cli_unknown_model_and_bad_params(tmp_path, capsys):
    study = write_study(tmp_path, n=6, n_folds=2)
    assert _cli(study, tmp_path / "out", model="dummy", params={"kind": "tangent"}) == 1
    assert "'dummy': unknown parameter(s) kind; allowed: none" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown model 'lasso'"):
        train_model("lasso", 0, study["cohort"], study["splits"], study["inputs"], {}, 1, 1, tmp_path / "o")


# --- held-out (external) test set -------------------------------------------------------

HELD_OUT = ["sub-02", "sub-05", "sub-09"]


def _hold_out(study, held=HELD_OUT):
    """Mark ``held`` as the held-out set in the study's splits.tsv (fold -1); refold the rest 0..2."""
    cv = [pid for pid in study["ids"][: len(study["folds"])] if pid not in held]
    folds = {pid: i % 3 for i, pid in enumerate(cv)} | {pid: -1 for pid in held}
    ids = study["ids"][: len(study["folds"])]
    storage.write_tsv(study["splits"], pd.DataFrame({
        "participant_id": ids, "fold": [folds[p] for p in ids], "set": ["test" if p in held else "cv" for p in ids],
    }))
    return folds


def test_held_out_subjects_are_predicted_by_every_fold_and_never_trained_on(tmp_path):
    study = write_study(tmp_path, n=12, n_folds=3)
    folds = _hold_out(study)
    age = dict(zip(study["ids"], study["ages"]))
    for fold in range(3):
        out = tmp_path / f"fold-{fold}"
        assert _cli(study, out, fold=fold) == 0
        pred = storage.read_table(out / "predictions.parquet")
        held = pred[pred["set"] == "test"]
        assert sorted(held["participant_id"]) == HELD_OUT and (held["split"] == "test").all()
        assert (held["fold"] == fold).all()
        # The dummy's members predict mean ages of this fold's training subjects (cv subjects of the
        # other folds): held-out subjects never enter them.
        np.testing.assert_allclose(held["predicted_age"], _dummy_ensemble_mean(study, fold))
        np.testing.assert_allclose(held["age"], [age[p] for p in held["participant_id"]])
        cv_test = pred[(pred["set"] == "cv") & (pred["split"] == "test")]
        assert sorted(cv_test["participant_id"]) == sorted(p for p, f in folds.items() if f == fold)
        assert not set(HELD_OUT) & set(pred.loc[pred["split"] == "inner", "participant_id"])
        card = storage.read_json(out / "card.json")
        assert (card["n_train"], card["n_test"], card["n_heldout"]) == (6, 3, 3)


def test_held_out_subjects_do_not_change_the_fitted_model(tmp_path):
    # connectome_ridge chooses its penalty by inner CV: with the held-out subjects in the cohort
    # (marked test) or removed from it, every cross-validation prediction must be identical.
    study = write_study(tmp_path / "a", n=12, n_folds=3)
    _hold_out(study)
    assert _cli(study, tmp_path / "with", model="connectome_ridge", fold=0) == 0
    cohort = storage.read_table(study["cohort"])
    storage.write_table(tmp_path / "a" / "cv_only.parquet", cohort[~cohort["participant_id"].isin(HELD_OUT)],
                        kind="cohort")
    cv_only = {**study, "cohort": tmp_path / "a" / "cv_only.parquet"}
    assert _cli(cv_only, tmp_path / "without", model="connectome_ridge", fold=0) == 0
    with_held = storage.read_table(tmp_path / "with" / "predictions.parquet")
    without = storage.read_table(tmp_path / "without" / "predictions.parquet")
    pd.testing.assert_frame_equal(with_held[with_held["set"] == "cv"].reset_index(drop=True), without)
    held = with_held[with_held["set"] == "test"]
    assert sorted(held["participant_id"]) == HELD_OUT and held["predicted_age"].nunique() == 3


def test_read_design_checks_sets(tmp_path):
    study = write_study(tmp_path, n=6, n_folds=3)
    _hold_out(study, held=["sub-01"])
    design = read_design(study["cohort"], study["splits"], 0)
    assert design.loc[design["participant_id"] == "sub-01", ["fold", "set", "test"]].values.tolist() == [[-1, "test", False]]
    splits = pd.read_csv(study["splits"], sep="\t")
    storage.write_tsv(tmp_path / "set.tsv", splits.assign(set=["cv", "test", "cv", "cv", "cv", "external"]))
    with pytest.raises(InputDataError, match=r"set\.tsv: set values \['external'\], expected only \['cv', 'test'\]"):
        read_design(study["cohort"], tmp_path / "set.tsv", 0)
    storage.write_tsv(tmp_path / "fold.tsv", splits.assign(fold=[0, 1, 2, 0, 1, 2]))
    with pytest.raises(InputDataError, match=r"fold\.tsv: fold -1 must mark exactly the held-out .* not so for sub-01"):
        read_design(study["cohort"], tmp_path / "fold.tsv", 0)
    storage.write_tsv(tmp_path / "few.tsv", splits.assign(fold=[0, -1, -1, -1, -1, 1],
                                                          set=["cv", "test", "test", "test", "test", "cv"]))
    with pytest.raises(InputDataError, match=r"fold 0 has 1 test and 1 training cohort subjects.*present: \[0, 1\]"):
        read_design(study["cohort"], tmp_path / "few.tsv", 0)
