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
from threadpoolctl import threadpool_limits

from brainage import storage
from brainage._codehash import code_hash
from brainage.errors import ConfigError, InputDataError
from brainage.models import TorchAgeModel, get_model
from brainage.splits import HELD_OUT_FOLD, SETS, make_folds
from brainage.train.checkpoint import model_from_state, save_checkpoint, save_ensemble
from brainage.train.stacking import load_base_predictions
from brainage.torchloop.data import load_inputs
from brainage.torchloop.loop import describe_device, set_determinism, software_versions

logger = logging.getLogger(__name__)

# Share of the training subjects a torch fit holds out for early stopping (each inner fit draws
# its own, from the subjects that fit may see).
EARLY_STOPPING_FRACTION = 0.2
# The torch models' per-epoch training state of inner fit k in the fold's folder: a killed job
# resumes from it; deleted once the fold's outputs are written.
RESUME_NAME = "resume-inner{k}.pt"
# A torch model's finished inner fits (each member's checkpoint), kept so that a killed job does
# not redo them; deleted with the per-epoch state once checkpoint.pt holds every member.
INNER_DONE = "inner-{k}.pt"
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
        global numpy/torch state), ``split`` (the torch models' early-stopping splits) and
        ``inner`` (the inner folds: derived from the seed and fold only, so every model of a
        fold has the same inner folds, which the stack relies on), all plain ints.
    """
    entropy = [int(seed), int(fold), zlib.crc32(model.encode())]
    model_seed, split_seed = (int(s) for s in np.random.SeedSequence(entropy).generate_state(2))
    inner_seed = int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])
    return {"config_seed": int(seed), "entropy": entropy, "model": model_seed, "split": split_seed, "inner": inner_seed}


def read_design(cohort: str | os.PathLike, splits: str | os.PathLike, fold: int) -> pd.DataFrame:
    """Join the cohort with the folds table: participant_id, age, site, fold, set, test, train (bool).

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
    if "site" not in people.columns:
        people["site"] = "n/a"
    # A missing site is its own "n/a" site (as in the folds table).
    people = people[["participant_id", "age", "site"]].astype({"participant_id": str})
    people["site"] = people["site"].fillna("n/a").astype(str)
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


def inner_folds(ages: np.ndarray, sites: np.ndarray, n_folds: int, group_by_site: bool, seed: int) -> np.ndarray:
    """The inner folds of an outer fold's training subjects, built like the outer folds.

    Age-stratified, or grouped by site when the outer folds are (``dataset.group_by_site``), so
    the inner predictions meet unseen sites as the outer test fold does (:func:`make_folds`).
    Every model of an outer fold gets the same inner folds (same ``seed``).

    Returns
    -------
    ndarray of int, shape (n_subjects,)
        Inner fold per training subject, ``0 .. min(n_folds, n_subjects) - 1``.
    """
    n_folds = min(int(n_folds), len(ages))
    if group_by_site and len(set(sites)) < n_folds:
        raise ConfigError(
            f"train.inner_folds={n_folds}: inner folds grouped by site need at least {n_folds} sites "
            f"among an outer fold's training subjects, found {len(set(sites))}; lower train.inner_folds"
        )
    return make_folds(ages, sites, n_folds, group_by_site, seed)


def fit_once(estimator, X: list, y: np.ndarray, sites: np.ndarray, split_seed) -> None:
    """Fit ``estimator`` on these subjects only: a torch model early-stops on its own share of them."""
    if isinstance(estimator, TorchAgeModel):
        valid = inner_split(y, EARLY_STOPPING_FRACTION, np.random.default_rng(split_seed))
        keep, stop = np.flatnonzero(~valid), np.flatnonzero(valid)
        estimator.fit([X[i] for i in keep], y[keep], [X[i] for i in stop], y[stop])
    elif getattr(estimator, "uses_sites", False):
        estimator.fit(X, y, sites=sites)
    else:
        estimator.fit(X, y)


def predict(estimator, X: list, sites: np.ndarray) -> np.ndarray:
    """Predicted ages (years) of ``X``; the site-aware models also get the subjects' sites."""
    if not len(X):
        return np.empty(0)
    if getattr(estimator, "uses_sites", False):
        return np.asarray(estimator.predict(X, sites=sites), dtype=np.float64)
    return np.asarray(estimator.predict(X), dtype=np.float64)


def cross_fit(build, X: list, y: np.ndarray, sites: np.ndarray, folds: np.ndarray, split_seed: int,
              store=None) -> tuple[np.ndarray, list]:
    """Fit one model per inner fold on the other inner folds; predict the subjects it left out.

    Parameters
    ----------
    build : callable
        ``build(k)`` returns a fresh, unfitted model for inner fit ``k``.
    X, y, sites :
        The outer fold's training subjects.
    folds : ndarray of int
        :func:`inner_folds`.
    split_seed : int
        Seeds each fit's early-stopping split (torch models), with ``k``.
    store : _InnerStore, optional
        Keeps finished inner fits of a torch model so that a resumed job skips them.

    Returns
    -------
    predicted : ndarray, shape (n_subjects,), float64
        Each subject's cross-fitted prediction (by the member that did not see it).
    members : list
        The K fitted models, in inner-fold order.
    """
    predicted, members = np.full(len(y), np.nan), []
    n_fits = len(np.unique(folds))
    for k in range(n_fits):
        out = folds == k
        model = store.load(k) if store is not None else None
        if model is None:
            model = build(k)
            fit_once(model, [X[i] for i in np.flatnonzero(~out)], y[~out], sites[~out], [split_seed, k])
            if store is not None:
                store.save(k, model)
        predicted[out] = predict(model, [X[i] for i in np.flatnonzero(out)], sites[out])
        members.append(model)
        logger.info("inner fit %d of %d: %d subjects predicted", k + 1, n_fits, int(out.sum()))
    return predicted, members


def ensemble_predict(members: list, X: list, sites: np.ndarray) -> np.ndarray:
    """The mean of the members' predictions: how a fold's test and held-out subjects are predicted."""
    if not len(X):
        return np.empty(0)
    return np.mean([predict(m, X, sites) for m in members], axis=0)


class _InnerStore:
    # A torch model's finished inner fits (member checkpoints) in the fold's folder, valid for the
    # same run only (fingerprint: model, parameters, seeds, subjects, inner folds, code, fit).

    def __init__(self, out_dir: Path, fingerprint: dict, write: bool):
        self.out_dir, self.fingerprint, self.write = out_dir, fingerprint, write

    def path(self, k) -> Path:
        return self.out_dir / INNER_DONE.format(k=int(k))

    def _fingerprint(self, k) -> dict:
        # As stored in a kept member's card (plain JSON values).
        return json.loads(json.dumps(_fit_fingerprint(self.fingerprint, k)))

    def load(self, k):
        path = self.path(k)
        if not path.exists():
            return None
        saved = storage.read_torch(path)
        card = saved.get("card", {}) if isinstance(saved, dict) else {}
        if card.get("fingerprint") != self._fingerprint(k):
            logger.warning("%s: inner fit of another run (fingerprint differs); fitting it again", path)
            return None
        logger.info("inner fit %d: reusing %s", int(k) + 1, path)
        member = model_from_state(saved)
        member.fit_info_ = card.get("fit_info", {})
        return member

    def save(self, k, member) -> None:
        if self.write:
            card = {"fingerprint": self._fingerprint(k), "fit_info": json.loads(json.dumps(member.fit_info_))}
            save_checkpoint(self.path(k), member, card)

    def clear(self, n_folds: int) -> None:
        for k in range(n_folds):
            self.path(k).unlink(missing_ok=True)
            (self.out_dir / RESUME_NAME.format(k=k)).unlink(missing_ok=True)


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
    n_inner: int = 5,
    group_by_site: bool = False,
    atlas: str | os.PathLike | None = None,
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
        Series or volume files of any subjects (matched on their participant_id metadata); for
        the stack, the base models' predictions.parquet of this fold.
    params : dict
        ``models.<model>`` of the config.
    seed : int
        The config seed; this fold's seeds derive from it (:func:`derive_seeds`).
    threads : int
        CPU threads for torch and the BLAS/OpenMP pools.
    out_dir : path
        Receives predictions.parquet (participant_id, model, fold, split, set, age,
        predicted_age: the fold's test subjects, its held-out subjects, both as split "test",
        and its inner predictions), card.json and, for torch models, checkpoint.pt (the K
        members' networks).
    init_encoder : path, optional
        The fold's pretrained frame encoder (``python -m brainage.pretrain encoder``) that
        cnn_rnn starts from; required exactly when ``params["pretrain"]`` is true. It must have
        been pretrained on this fold's training subjects only; its file and sha256 go into the
        card (``init_encoder``) and the predictions' provenance.
    n_inner : int
        ``train.inner_folds``: the inner K-fold of the training subjects. K models ("members")
        are each fitted on all inner folds but one (torch models early-stop on a share of
        those) and predict the one left out: every training subject's cross-fitted ("inner")
        prediction, on which the age-bias line and the stack are fitted. The fold's test and
        held-out subjects are predicted by the members' mean, so the line and the stack meet
        predictions of the same models they were fitted on (a model refitted on all training
        subjects would regress less to the mean than its inner predictions show).
    group_by_site : bool
        ``dataset.group_by_site``: inner folds grouped by site, as the outer folds are.
    atlas : path, optional
        An atlas folder (``resources/atlases/<id>``) for models that start from one
        (``reads_atlas``: cnn_conn); required exactly for those. Its sha256 goes into the card
        (``atlas``) and the resume fingerprint.

    Returns
    -------
    dict
        The model card.
    """
    seeds = derive_seeds(seed, fold, model)
    estimator = get_model(model, params, seeds["model"])
    design = read_design(cohort, splits, fold)
    if estimator.input_kind == "predictions":
        X, sources = load_base_predictions(inputs, design, fold, estimator.config.models)
    else:
        X, sources = load_inputs(inputs, design["participant_id"].tolist(), estimator.input_kind)
    set_determinism(seeds["model"], threads)
    # Held-out subjects are outside train and inner: model selection never sees them.
    train = np.flatnonzero(design["train"].to_numpy())
    test = np.flatnonzero(design["test"].to_numpy())
    heldout = np.flatnonzero((design["set"] != "cv").to_numpy())
    ages = design["age"].to_numpy(dtype=np.float64)
    sites = design["site"].to_numpy(dtype=object)
    out_dir = Path(out_dir)
    is_torch = isinstance(estimator, TorchAgeModel)
    folds = inner_folds(ages[train], sites[train], n_inner, group_by_site, seeds["inner"])
    fingerprint = _fingerprint(model, fold, params, seeds, design, train, n_inner) if is_torch else None
    encoder = _encoder_source(estimator, model, init_encoder, fold, design["participant_id"].to_numpy()[train])
    if encoder is not None:
        fingerprint["init_encoder"] = encoder["sha256"]  # resume only from the same start
    atlas_source = _atlas_source(estimator, model, atlas)
    if atlas_source is not None:
        fingerprint["atlas"] = atlas_source["sha256"]

    def build(k: int):
        # A fresh model for inner fit k.
        fresh = get_model(model, params, seeds["model"])
        if is_torch:
            _prepare_torch(fresh, threads, out_dir, fingerprint, k)
        if encoder is not None:
            fresh.init_encoder = encoder["file"]
        if atlas_source is not None:
            fresh.atlas = atlas_source["dir"]
        return fresh

    store = _InnerStore(out_dir, fingerprint, write=_rank() == 0) if is_torch else None
    start = time.perf_counter()
    with threadpool_limits(limits=threads):
        inner_pred, members = cross_fit(build, [X[i] for i in train], ages[train], sites[train], folds, seeds["split"], store)
        test_pred = ensemble_predict(members, [X[i] for i in test], sites[test])
        predict_info = _predict_info(members)
        heldout_pred = ensemble_predict(members, [X[i] for i in heldout], sites[heldout])
    seconds = time.perf_counter() - start
    predictions = _predictions_table(
        design, model, fold, np.concatenate([test, heldout]), np.concatenate([test_pred, heldout_pred]),
        train, inner_pred,
    )
    card = _card(members, model, fold, seeds, seconds, predictions, len(train))
    card["inner_folds"] = {"n_folds": len(members), "grouped_by_site": bool(group_by_site)}
    card["predict_info"] = predict_info
    card["init_encoder"] = encoder
    card["atlas"] = atlas_source
    card["distributed"], rank = _distributed(members[-1]) if is_torch else (None, 0)
    if rank != 0:
        return card  # process 0 writes the fold's outputs
    provenance = {"params": card["params"], "seeds": seeds, "sources": sources, "init_encoder": encoder}
    storage.write_table(out_dir / "predictions.parquet", predictions, kind="predictions", provenance=provenance)
    if is_torch:
        save_ensemble(out_dir / "checkpoint.pt", members, card)
    storage.write_json(out_dir / "card.json", card)
    # The finished members are saved: the per-epoch states and inner fits have served their purpose.
    if store is not None:
        store.clear(len(members))
    logger.info("%s fold %d: inner MAE %.2f y, %.1f s", model, fold, card["inner_mae"], seconds)
    return card


def _encoder_source(estimator, model, path, fold, train_ids) -> dict | None:
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
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": os.fspath(path), "sha256": digest, "fold": card.get("fold")}


def _atlas_source(estimator, model, path) -> dict | None:
    # The atlas folder a model starts from: given exactly when the model reads one.
    wanted = bool(getattr(estimator, "reads_atlas", False))
    if wanted != (path is not None):
        raise ConfigError(f"{model}: an atlas folder must be given exactly to models that start from one "
                          f"({'it does' if wanted else 'it does not'}; atlas is {path})")
    if path is None:
        return None
    # sha256 over the folder's files (relative names and bytes, in sorted order).
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    return {"dir": os.fspath(path), "sha256": digest.hexdigest()}


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


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _fingerprint(model, fold, params, seeds, design, train, n_inner) -> dict:
    # A resumed run must be the same run: same model, parameters, seeds, subjects, inner folds and code.
    return {
        "model": model, "fold": int(fold), "params": json.loads(json.dumps(params)), "seeds": seeds,
        "train": design["participant_id"].to_numpy()[train].astype(str).tolist(),
        "inner_folds": int(n_inner), "code": code_hash(CODE_ENTRY),
    }


def _prepare_torch(estimator, threads, out_dir: Path, fingerprint: dict, k: int) -> None:
    # Loader workers only pay on a GPU, where the CPU is otherwise idle; on the CPU the
    # threads go to the arithmetic. Workers never change the result (the windows are drawn
    # in the main process). Each inner fit has its own per-epoch state.
    estimator.workers = max(0, int(threads) - 1) if torch.cuda.is_available() else 0
    estimator.resume = out_dir / RESUME_NAME.format(k=k)
    estimator.fingerprint = _fit_fingerprint(fingerprint, k)


def _fit_fingerprint(fingerprint: dict, k: int) -> dict:
    # The run's fingerprint for inner fit k: its per-epoch state and its kept member carry it.
    return {**fingerprint, "fit": f"inner {k}"}


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


def _predict_info(members: list) -> dict:
    # What the members reported about their last prediction (ComBat: test sites left unharmonised).
    infos = [dict(getattr(m, "predict_info_", {})) for m in members]
    return infos[0] if all(i == infos[0] for i in infos) else {"members": infos}


def _card(members, model, fold, seeds, seconds, predictions, n_train) -> dict:
    inner = predictions[predictions["split"] == "inner"]
    infos = [dict(getattr(m, "fit_info_", {})) for m in members]
    first = members[0]
    device = getattr(first, "device_", torch.device("cpu"))
    return {
        "model": model,
        "fold": int(fold),
        "input_kind": first.input_kind,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(first.config).items()},
        "seeds": seeds,
        "versions": dict(software_versions(), sklearn=sklearn.__version__, nilearn=nilearn.__version__),
        "code": code_hash(CODE_ENTRY),
        "device": describe_device(device),
        "n_train": int(n_train),
        "n_inner": int(len(inner)),
        "n_test": int(((predictions["split"] == "test") & (predictions["set"] == "cv")).sum()),
        "n_heldout": int((predictions["set"] == "test").sum()),
        "train_seconds": round(float(seconds), 3),
        # Per member (inner fit), in inner-fold order.
        "epochs_run": [info.pop("epochs_run", None) for info in infos],
        "best_epoch": [info.pop("best_epoch", None) for info in infos],
        "inner_mae": float(np.mean(np.abs(inner["predicted_age"] - inner["age"]))),
        "fit_info": infos,
    }
