"""Fit one model on one outer fold: seeds, inner split, predictions table, model card, checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import nilearn
import numpy as np
import pandas as pd
import sklearn
import torch
import torch.distributed as dist
from sklearn.model_selection import KFold, cross_val_predict
from threadpoolctl import threadpool_limits

from brainage import storage
from brainage._codehash import code_hash
from brainage.errors import ConfigError, InputDataError
from brainage.models import TorchAgeModel, get_model
from brainage.splits import HELD_OUT_FOLD, SETS
from brainage.train.checkpoint import save_checkpoint
from brainage.torchloop.data import load_inputs
from brainage.torchloop.loop import describe_device, set_determinism, software_versions

logger = logging.getLogger(__name__)

# Share of the training subjects held out as the torch models' inner validation split
# (early stopping, and the "inner" predictions used for the age-bias correction).
INNER_FRACTION = 0.2
# Folds of the inner cross-validation of the scikit-learn models ("inner" predictions).
INNER_FOLDS = 5
# The torch models' per-epoch training state in the fold's folder: a killed job resumes from
# it; deleted once the fold's outputs are written.
RESUME_NAME = "resume.pt"
# What a training job runs (``python -m brainage.train``): the hash of every package file it
# imports is the code version in the per-epoch fingerprint and the model card (the same hash as
# the rule's ``params.code``).
CODE_ENTRY = "brainage.train.__main__"


def derive_seeds(seed: int, fold: int, model: str) -> dict:
    """Derive this fold's and model's seeds from the one config seed, deterministically.

    Returns
    -------
    dict
        ``config_seed``, ``entropy`` (the SeedSequence input), ``model`` (weights, windows,
        global numpy/torch state) and ``split`` (inner split / inner CV), all plain ints.
    """
    entropy = [int(seed), int(fold), zlib.crc32(model.encode())]
    model_seed, split_seed = (int(s) for s in np.random.SeedSequence(entropy).generate_state(2))
    return {"config_seed": int(seed), "entropy": entropy, "model": model_seed, "split": split_seed}


def read_design(cohort: str | os.PathLike, splits: str | os.PathLike, fold: int) -> pd.DataFrame:
    """Join the cohort with the folds table: participant_id, age, fold, set, test, train (bool).

    ``test`` marks the cross-validation subjects of fold ``fold``; ``train`` the others (what
    the fold's models and its encoder pretraining may see); held-out subjects (``set``
    "test", fold -1) are in neither. A splits table without
    a ``set`` column (written before held-out sets existed) puts everyone in "cv".

    Raises
    ------
    InputDataError
        Missing columns, a missing or non-finite age, a cohort subject absent from the
        splits, a ``set`` other than cv / test or a fold that does not match it, a fold with
        no test or fewer than two training subjects.
    """
    people = storage.read_table(cohort, kind="cohort")
    folds = storage.read_tsv(splits, dtype={"participant_id": str})
    for path, table, needed in ((cohort, people, {"participant_id", "age"}), (splits, folds, {"participant_id", "fold"})):
        if not needed <= set(table.columns):
            raise InputDataError(f"{path}: needs columns {sorted(needed)}, found {list(table.columns)}")
    people = people[["participant_id", "age"]].astype({"participant_id": str})
    if not np.all(np.isfinite(people["age"].to_numpy(dtype=float))):
        raise InputDataError(f"{cohort}: every cohort subject needs a finite age")
    if "set" not in folds.columns:
        folds["set"] = "cv"
    design = people.merge(folds[["participant_id", "fold", "set"]], on="participant_id", how="left")
    missing = design.loc[design["fold"].isna(), "participant_id"].tolist()
    if missing:
        raise InputDataError(f"{splits}: no fold for cohort participant(s) {', '.join(missing)}")
    design["fold"] = design["fold"].astype(int)
    _check_sets(design, splits)
    cv = design["set"] == "cv"
    design["test"] = (design["fold"] == int(fold)) & cv
    design["train"] = cv & ~design["test"]
    n_test, n_train = int(design["test"].sum()), int(design["train"].sum())
    if n_test < 1 or n_train < 2:
        present = sorted(int(f) for f in design.loc[cv, "fold"].unique())
        raise InputDataError(
            f"{splits}: fold {fold} has {n_test} test and {n_train} training cohort subjects; "
            f"need at least 1 and 2 (folds present: {present})"
        )
    return design.reset_index(drop=True)


def _check_sets(design: pd.DataFrame, splits: str | os.PathLike) -> None:
    # A held-out subject with a cross-validation fold would be trained on in the other folds.
    bad = sorted(set(design["set"].astype(str)) - set(SETS))
    if bad:
        raise InputDataError(f"{splits}: set values {bad}, expected only {list(SETS)}")
    wrong = design.loc[(design["set"] == "test") != (design["fold"] == HELD_OUT_FOLD), "participant_id"].tolist()
    if wrong:
        raise InputDataError(
            f"{splits}: fold {HELD_OUT_FOLD} must mark exactly the held-out ('test' set) subjects; "
            f"not so for {', '.join(wrong[:10])}"
        )


def inner_split(ages: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Pick an age-stratified validation subset: one random subject per block of similar ages.

    Subjects are sorted by age and cut into ``round(fraction * n)`` consecutive blocks of
    near-equal size; one subject per block is drawn. Unlike quantile-bin stratification this
    works for any n >= 2 (no bin can end up with a single member).

    Returns
    -------
    ndarray of bool, shape (n_subjects,)
        True for validation subjects (at least one; at least one stays for training).
    """
    if len(ages) < 2:
        raise ValueError(f"an inner split needs at least 2 subjects, got {len(ages)}")
    order = np.argsort(ages, kind="stable")
    n_blocks = min(max(1, round(fraction * len(ages))), len(ages) - 1)
    valid = np.zeros(len(ages), dtype=bool)
    for block in np.array_split(order, n_blocks):
        valid[block[rng.integers(len(block))]] = True
    return valid


def _fit_torch(estimator: TorchAgeModel, X: list, y: np.ndarray, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Inner predictions: the validation subjects, predicted by the restored best weights. They
    # chose the stopping epoch, so they are mildly optimistic; the subjects never trained on.
    valid = inner_split(y, INNER_FRACTION, np.random.default_rng(split_seed))
    train_idx, valid_idx = np.flatnonzero(~valid), np.flatnonzero(valid)
    estimator.fit([X[i] for i in train_idx], y[train_idx], [X[i] for i in valid_idx], y[valid_idx])
    return valid_idx, estimator.predict([X[i] for i in valid_idx])


def _fit_sklearn(estimator, X: list, y: np.ndarray, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Inner predictions: K-fold out-of-sample predictions of every training subject; then the
    # model is refitted on all training subjects for the outer test fold.
    cv = KFold(n_splits=min(INNER_FOLDS, len(y)), shuffle=True, random_state=split_seed)
    inner = cross_val_predict(estimator, X, y, cv=cv)
    estimator.fit(X, y)
    return np.arange(len(y)), np.asarray(inner, dtype=np.float64)


def train_model(
    model: str,
    fold: int,
    cohort: str | os.PathLike,
    splits: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    params: dict,
    seed: int,
    threads: int,
    out_dir: str | os.PathLike,
    init_encoder: str | os.PathLike | None = None,
) -> dict:
    """Train ``model`` on the training folds of outer fold ``fold``; write its artifacts.

    Parameters
    ----------
    model : str
        Registered model name.
    fold : int
        Outer test fold (a value of the ``fold`` column of ``splits``).
    cohort : path
        ``cohort.parquet`` (table kind "cohort"); only these subjects are used.
    splits : path
        ``splits.tsv``: participant_id, fold, set ("cv", or "test" for held-out subjects:
        never trained on, predicted by every fold's model).
    inputs : sequence of path
        Series or volume files of any subjects (matched on their participant_id metadata).
    params : dict
        ``models.<model>`` of the config.
    seed : int
        The config seed; this fold's seeds derive from it (:func:`derive_seeds`).
    threads : int
        CPU threads for torch and the BLAS/OpenMP pools.
    out_dir : path
        Receives predictions.parquet (participant_id, model, fold, split, set, age,
        predicted_age: the fold's test subjects, its held-out subjects, both as split "test",
        and its inner predictions), card.json and, for torch models, checkpoint.pt.
    init_encoder : path, optional
        The fold's pretrained frame encoder (``python -m brainage.pretrain encoder``) that
        cnn_rnn starts from; required exactly when ``params["pretrain"]`` is true. It must have
        been pretrained on this fold's training subjects only; its file and sha256 go into the
        card (``init_encoder``) and the predictions' provenance.

    Returns
    -------
    dict
        The model card.
    """
    seeds = derive_seeds(seed, fold, model)
    estimator = get_model(model, params, seeds["model"])
    design = read_design(cohort, splits, fold)
    X, sources = load_inputs(inputs, design["participant_id"].tolist(), estimator.input_kind)
    set_determinism(seeds["model"], threads)
    # Held-out subjects are outside train and inner: model selection never sees them.
    train = np.flatnonzero(design["train"].to_numpy())
    test = np.flatnonzero(design["test"].to_numpy())
    heldout = np.flatnonzero((design["set"] != "cv").to_numpy())
    ages = design["age"].to_numpy(dtype=np.float64)
    out_dir = Path(out_dir)
    is_torch = isinstance(estimator, TorchAgeModel)
    if is_torch:
        _prepare_torch(estimator, threads, out_dir / RESUME_NAME, model, fold, params, seeds, design, train)
    encoder = _init_encoder(estimator, model, init_encoder, fold, design["participant_id"].to_numpy()[train])
    if encoder is not None:
        estimator.fingerprint["init_encoder"] = encoder["sha256"]  # resume only from the same start
    fit = _fit_torch if is_torch else _fit_sklearn
    start = time.perf_counter()
    with threadpool_limits(limits=threads):
        inner_local, inner_pred = fit(estimator, [X[i] for i in train], ages[train], seeds["split"])
        test_pred = estimator.predict([X[i] for i in test])
        heldout_pred = estimator.predict([X[i] for i in heldout]) if len(heldout) else np.empty(0)
    seconds = time.perf_counter() - start
    inner = train[inner_local]
    predictions = _predictions_table(
        design, model, fold, np.concatenate([test, heldout]), np.concatenate([test_pred, heldout_pred]),
        inner, inner_pred,
    )
    card = _card(estimator, model, fold, seeds, seconds, predictions, len(train))
    card["init_encoder"] = encoder
    card["distributed"], rank = _distributed(estimator) if is_torch else (None, 0)
    if rank != 0:
        return card  # process 0 writes the fold's outputs
    provenance = {"params": card["params"], "seeds": seeds, "sources": sources, "init_encoder": encoder}
    storage.write_table(out_dir / "predictions.parquet", predictions, kind="predictions", provenance=provenance)
    if is_torch:
        save_checkpoint(out_dir / "checkpoint.pt", estimator, card)
    storage.write_json(out_dir / "card.json", card)
    # The finished model is saved: the per-epoch state has served its purpose.
    (out_dir / RESUME_NAME).unlink(missing_ok=True)
    logger.info("%s fold %d: inner MAE %.2f y, %.1f s", model, fold, card["inner_mae"], seconds)
    return card


def _init_encoder(estimator, model, path, fold, train_ids) -> dict | None:
    # The pretrained frame encoder to start from: given exactly when the model's ``pretrain``
    # is true, and pretrained on none but this fold's training subjects (no test leakage).
    wanted = bool(getattr(estimator.config, "pretrain", False))
    if wanted != (path is not None):
        raise ConfigError(
            f"{model}: init_encoder must be given exactly when models.{model}.pretrain is true; "
            f"pretrain is {str(wanted).lower()}, init_encoder is {path}"
        )
    if path is None:
        return None
    state = storage.read_torch(path)
    card = state.get("card", {}) if isinstance(state, dict) else {}
    if "subjects" not in card:
        raise InputDataError(f"{path}: not a pretrained encoder file (no card listing its subjects)")
    outside = sorted(set(card["subjects"]) - set(map(str, train_ids)))
    if outside:
        raise InputDataError(
            f"{path}: encoder pretrained on subject(s) outside fold {fold}'s training set: {', '.join(outside[:10])}"
        )
    estimator.init_encoder = os.fspath(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": os.fspath(path), "sha256": digest, "fold": card.get("fold")}


def _distributed(estimator) -> tuple[dict | None, int]:
    # With several processes (torchrun): the process count, the backend, and each process's
    # weights checksum and number of training windows (in sync: equal checksums; shares of the
    # data: windows summing to one pass per epoch). (None, 0) for a single process.
    if not (dist.is_available() and dist.is_initialized()):
        return None, 0
    weights = estimator.network_.state_dict().values()
    mine = {
        "weights_checksum": float(sum(float(v.double().sum()) for v in weights if v.is_floating_point())),
        "windows": int(sum(estimator.history_.windows)),
    }
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    return {"world_size": dist.get_world_size(), "backend": dist.get_backend(), "ranks": ranks}, dist.get_rank()


def _prepare_torch(estimator, threads, resume, model, fold, params, seeds, design, train) -> None:
    # Loader workers only pay on a GPU, where the CPU is otherwise idle; on the CPU the
    # threads go to the arithmetic. Workers never change the result (the windows are drawn
    # in the main process).
    estimator.workers = max(0, int(threads) - 1) if torch.cuda.is_available() else 0
    estimator.resume = resume
    # A resumed run must be the same run: same model, parameters, seeds, subjects and code.
    estimator.fingerprint = {
        "model": model, "fold": int(fold), "params": json.loads(json.dumps(params)), "seeds": seeds,
        "train": design["participant_id"].to_numpy()[train].astype(str).tolist(),
        "code": code_hash(CODE_ENTRY),
    }


def _predictions_table(design, model, fold, test, test_pred, inner, inner_pred) -> pd.DataFrame:
    # test: the fold's test subjects then the held-out ones (both out of sample: split "test").
    rows = np.concatenate([test, inner])
    return pd.DataFrame(
        {
            "participant_id": design["participant_id"].to_numpy()[rows].astype(str),
            "model": model,
            "fold": np.full(len(rows), int(fold), dtype=np.int64),
            "split": ["test"] * len(test) + ["inner"] * len(inner),
            "set": design["set"].to_numpy()[rows].astype(str),
            "age": design["age"].to_numpy(dtype=np.float64)[rows],
            "predicted_age": np.concatenate([test_pred, inner_pred]).astype(np.float64),
        }
    )


def _card(estimator, model, fold, seeds, seconds, predictions, n_train) -> dict:
    inner = predictions[predictions["split"] == "inner"]
    info = dict(getattr(estimator, "fit_info_", {}))
    device = getattr(estimator, "device_", torch.device("cpu"))
    return {
        "model": model,
        "fold": int(fold),
        "input_kind": estimator.input_kind,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(estimator.config).items()},
        "seeds": seeds,
        "versions": dict(software_versions(), sklearn=sklearn.__version__, nilearn=nilearn.__version__),
        "code": code_hash(CODE_ENTRY),
        "device": describe_device(device),
        "n_train": int(n_train),
        "n_inner": int(len(inner)),
        "n_test": int(((predictions["split"] == "test") & (predictions["set"] == "cv")).sum()),
        "n_heldout": int((predictions["set"] == "test").sum()),
        "train_seconds": round(float(seconds), 3),
        "epochs_run": info.pop("epochs_run", None),
        "best_epoch": info.pop("best_epoch", None),
        "inner_mae": float(np.mean(np.abs(inner["predicted_age"] - inner["age"]))),
        "fit_info": info,
    }
