"""Shared torch training loop: AdamW, MSE on z-scored age, early stopping, per-epoch checkpoints."""

from __future__ import annotations

import ast
import dataclasses
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from brainage._version import source_version
from brainage.errors import InputDataError
from brainage.storage import atomic_path, read_torch
from brainage.torchloop.batches import epoch_batches
from brainage.torchloop.data import WindowDataset, pad_left, window_starts

logger = logging.getLogger(__name__)

# Values of ``compile``: off, on (torch.compile's "default" mode), or a torch.compile mode.
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune")


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """Optimisation and execution settings (mostly the model's config fields of the same names).

    Attributes
    ----------
    epochs : int
        Maximum number of passes over the training subjects.
    batch_size : int
        Subjects (one window each) per optimisation step.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay (Loshchilov & Hutter 2019).
    patience : int
        Stop after this many epochs without a lower validation MAE.
    bf16 : bool
        bfloat16 autocast on CUDA (matrix units at full rate, float32 weights and optimiser);
        ignored on CPU, where float32 is faster for these shapes.
    compile : bool or str
        ``torch.compile`` the frame encoder for training (first epoch pays the compilation); a
        string is the compile mode ("reduce-overhead": CUDA graphs, fewer kernel launches per step).
    workers : int
        Loader worker processes cutting windows ahead of the step (0: in the main process).
    placement : {"auto", "device", "loader"}
        "device" uploads every training frame to the device once and cuts windows there;
        "loader" cuts them on the CPU (workers, pinned memory); "auto" takes "device" on CUDA
        when the frames fill at most a quarter of the free GPU memory. Same batches either way.
    validate_start : bool
        Also score the network before the first epoch (recorded as epoch 0): for a network set
        up from the data before training (a closed-form head), which training must then beat.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    bf16: bool = True
    compile: bool | str = False
    workers: int = 0
    placement: str = "auto"
    validate_start: bool = False


@dataclasses.dataclass
class History:
    """What happened during training (goes into the model card).

    Attributes
    ----------
    train_loss : list of float
        Mean MSE (z-scored age) per epoch.
    valid_mae : list of float
        Validation MAE (years) per epoch; empty without a validation set. With
        ``validate_start`` the first value is the untrained network's.
    best_epoch : int or None
        1-based epoch whose weights were kept (None without validation: the last epoch's; 0:
        the starting weights, with ``validate_start``).
    epochs_run : int
    epoch_seconds, data_wait_seconds : list of float
        Wall time per epoch, and the part of it spent waiting for the loader's next batch.
    resumed_from : int or None
        The epoch whose checkpoint this run continued from.
    windows : list of int
        Training windows this process stepped on, per epoch (with several processes, its
        share of each epoch).
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    valid_mae: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    epochs_run: int = 0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    data_wait_seconds: list[float] = dataclasses.field(default_factory=list)
    resumed_from: int | None = None
    windows: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _State:
    # Everything that changes from epoch to epoch; saved whole after each epoch.
    history: History
    best_state: dict | None = None
    best_mae: float = math.inf
    stale: int = 0


def set_determinism(seed: int, threads: int) -> None:
    """Seed numpy's and torch's global states; deterministic kernels on CPU, cuDNN autotuning on GPU.

    Parameters
    ----------
    seed : int
        A derived seed (``brainage.train.fit.derive_seeds``).
    threads : int
        torch CPU threads.
    """
    torch.set_num_threads(int(threads))
    np.random.seed(seed % 2**32)  # libraries that draw from the global numpy state
    torch.manual_seed(seed)
    # On a GPU, let cuDNN time its convolution algorithms once per shape and keep the fastest
    # (results there are not bitwise reproducible anyway).
    torch.backends.cudnn.benchmark = torch.cuda.is_available()
    if not torch.cuda.is_available():
        # Deterministic kernels on CPU; warn_only because a few ops have no deterministic form.
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Filling every new tensor with NaN only helps to catch reads of uninitialised memory
        # (our ops have none) and costs ~15 % of a cnn_rnn step on CPU.
        torch.utils.deterministic.fill_uninitialized_memory = False


def software_versions() -> dict[str, str]:
    """Versions of brainage, torch, numpy and Python, for model cards (plain strings).

    str(): ``torch.__version__`` is a TorchVersion, which ``weights_only`` loading refuses.
    """
    return {"brainage": source_version(), "torch": str(torch.__version__), "numpy": np.__version__,
            "python": platform.python_version()}


def describe_device(device: torch.device) -> str:
    """The device for a model card: "cpu", or e.g. "cuda (NVIDIA H100 80GB HBM3)"."""
    return str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"


def autocast(device: torch.device, bf16: bool):
    """The autocast context of a step: bfloat16 on CUDA when asked, a no-op otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16) and device.type == "cuda")


def train_network(
    net: nn.Module,
    dataset: WindowDataset,
    settings: LoopSettings,
    *,
    rng: np.random.Generator,
    generator: torch.Generator,
    device: torch.device,
    validate: Callable[[nn.Module], float] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    checkpoint: str | os.PathLike | None = None,
    fingerprint: dict | None = None,
) -> History:
    """Train ``net`` in place; with ``validate``, stop early and restore the best weights.

    Parameters
    ----------
    net : torch.nn.Module
        Maps a batch of windows to z-scored ages ``(B,)``; already on ``device``. A network with
        a true ``reads_targets`` attribute is called as ``net(x, y)`` in training (it predicts
        each subject from the others' targets: ``brainage.models.connectivity``).
    dataset : WindowDataset
    settings : LoopSettings
    rng : numpy.random.Generator
        Shuffles the subjects and draws the window starts.
    generator : torch.Generator on ``device``
        Drives ``augment``.
    device : torch.device
    validate : callable, optional
        ``validate(net) -> MAE in years`` on the inner validation subjects.
    augment : callable, optional
        ``augment(batch, generator) -> batch``, applied on the device before the step.
    checkpoint : path, optional
        Written atomically after every epoch (weights, optimiser, random states, history);
        if it exists and its ``fingerprint`` matches, training resumes after its epoch and
        ends as an uninterrupted run would (exactly, in deterministic mode on CPU).
    fingerprint : dict, optional
        What identifies this run (model, parameters, seed, subjects, and the code's hash under
        ``"code"``); a checkpoint with another fingerprint is ignored, with a warning.

    Returns
    -------
    History
    """
    # fused: one kernel for the whole update on CUDA instead of several per parameter.
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=device.type == "cuda"
    )
    state = _State(History())
    first = 1
    if checkpoint is not None and Path(checkpoint).exists():
        saved = _load_epoch_state(checkpoint, fingerprint, net)
        if saved is not None:
            first = _restore(saved, net, optimiser, state, rng, generator, device) + 1
    loader = epoch_batches(dataset, settings.batch_size, settings.workers, settings.placement, rng, device,
                           *_rank_world())
    if settings.compile:
        # The frame encoder only, in place (the weights keep their names): the recurrent
        # layer and the scatter onto the grid would break the graph.
        getattr(net, "encoder", net).compile(mode=None if settings.compile is True else settings.compile)
    rank, world = _rank_world()
    if validate is not None and settings.validate_start and first == 1:
        mae = _validate_on_rank0(validate, net, rank, world)
        logger.info("before training: inner MAE %.2f y", mae)
        _track_best(state, net, mae, 0, settings.patience)
    # Several processes (torchrun): gradients are averaged across them after every backward
    # pass, and batch-norm statistics follow process 0's; each process sees its share of
    # every global batch.
    step_net = DistributedDataParallel(net) if world > 1 else net
    for epoch in range(first, settings.epochs + 1):
        start = time.perf_counter()
        loss, wait, windows = _train_epoch(step_net, loader, optimiser, augment, generator, device, settings.bf16,
                                           bool(getattr(net, "reads_targets", False)))
        if world > 1:
            # Each process's last step updated the batch-norm statistics with its own share:
            # take process 0's, so that every process holds the same model.
            for buffer in net.buffers():
                dist.broadcast(buffer, src=0)
        history = state.history
        history.train_loss.append(loss)
        history.windows.append(windows)
        history.epochs_run = epoch
        mae = _validate_on_rank0(validate, net, rank, world)
        history.epoch_seconds.append(time.perf_counter() - start)
        history.data_wait_seconds.append(wait)
        logger.info(
            "epoch %d/%d: train loss %.4f, inner MAE %.2f y (%.1f s, %.1f s waiting for data)",
            epoch, settings.epochs, loss, mae, history.epoch_seconds[-1], wait,
        )
        stop = validate is not None and _track_best(state, net, mae, epoch, settings.patience)
        if checkpoint is not None and rank == 0:
            _save_epoch_state(checkpoint, epoch, net, optimiser, state, rng, generator, fingerprint)
        if stop:
            logger.info("early stop after epoch %d: best inner MAE %.2f y at epoch %d",
                        epoch, state.best_mae, history.best_epoch)
            break
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    return state.history


def _rank_world() -> tuple[int, int]:
    # (this process, number of processes) of an initialised process group, else (0, 1).
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _validate_on_rank0(validate, net: nn.Module, rank: int, world: int) -> float:
    # Process 0 validates and tells the others (NaN without ``validate``): one decision to stop, for all.
    mae = float(validate(net)) if validate is not None and rank == 0 else math.nan
    return _from_rank0(mae) if world > 1 else mae


def _from_rank0(value: float) -> float:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return float(box[0])


def _track_best(state: _State, net: nn.Module, mae: float, epoch: int, patience: int) -> bool:
    # Record the epoch's validation MAE; return True when training should stop.
    state.history.valid_mae.append(mae)
    if mae < state.best_mae:
        state.best_mae, state.best_state, state.stale = mae, _copy_state(net), 0
        state.history.best_epoch = epoch
        return False
    state.stale += 1
    return state.stale >= patience


def _train_epoch(net, loader, optimiser, augment, generator, device, bf16, with_targets) -> tuple[float, float, int]:
    net.train()
    # The loss is summed on the device: reading it every step would make the CPU wait for the
    # GPU, and the next step's launches could no longer overlap the current step's kernels.
    total, count, wait = torch.zeros((), device=device), 0, 0.0
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        wait += time.perf_counter() - tick
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None:
            x = augment(x, generator)
        optimiser.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            prediction = net(x, y) if with_targets else net(x)
        loss = F.mse_loss(prediction.float(), y)
        loss.backward()
        optimiser.step()
        total += loss.detach() * len(y)
        count += len(y)
    return float(total) / count, wait, count


def _copy_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _save_epoch_state(path, epoch, net, optimiser, state, rng, generator, fingerprint) -> None:
    saved = {
        "fingerprint": fingerprint or {},
        # The epoch's model card: what was trained (the fingerprint: model, parameters, seeds,
        # subjects), with what, and how far it got (``history``).
        "versions": software_versions(),
        "epoch": epoch,
        "net": _copy_state(net),
        "optimiser": optimiser.state_dict(),
        "history": dataclasses.asdict(state.history),
        "best_state": state.best_state,
        "best_mae": state.best_mae,
        "stale": state.stale,
        # numpy's PCG64 state holds 128-bit integers: kept as text, which weights_only loads.
        "rng": repr(rng.bit_generator.state),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    with atomic_path(path) as tmp:
        torch.save(saved, tmp)


def _load_epoch_state(path, fingerprint, net) -> dict | None:
    try:
        saved = read_torch(path)
    except InputDataError as err:  # written atomically, so only damage from outside the workflow
        logger.warning("%s; training from the start", err)
        return None
    before, now = saved.get("fingerprint") or {}, fingerprint or {}
    if before != now:
        if {k: v for k, v in before.items() if k != "code"} == {k: v for k, v in now.items() if k != "code"}:
            logger.warning("%s: checkpoint written by other code (code hash %s, now %s); training from the start",
                           path, before.get("code"), now.get("code"))
        else:
            logger.warning("%s: checkpoint of another run (fingerprint differs); training from the start", path)
        return None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if {k: tuple(v.shape) for k, v in saved["net"].items()} != expected:
        logger.warning("%s: checkpoint of another network version (weights differ); training from the start", path)
        return None
    logger.info("%s: resuming after epoch %d", path, saved["epoch"])
    return saved


def _restore(saved, net, optimiser, state, rng, generator, device) -> int:
    net.load_state_dict(saved["net"])
    optimiser.load_state_dict(saved["optimiser"])
    state.history = History(**saved["history"])
    state.history.resumed_from = saved["epoch"]
    state.best_state = saved["best_state"]
    state.best_mae, state.stale = float(saved["best_mae"]), int(saved["stale"])
    rng.bit_generator.state = ast.literal_eval(saved["rng"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and device.type == "cuda":
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return int(saved["epoch"])


@torch.no_grad()
def predict_network(
    net: nn.Module, arrays: list[np.ndarray], window: int, batch_size: int, device: torch.device, bf16: bool = True
) -> np.ndarray:
    """Predict each subject as the mean over windows covering its whole run.

    The network saw ``window``-frame stretches in training, so at test time it reads
    windows of the same length (same recurrent state statistics) and the predictions of
    all windows of a run are averaged: every frame is used and the average is a small
    test-time ensemble.

    Parameters
    ----------
    arrays : list of ndarray, each (n_timepoints, ...)
    window : int
    batch_size : int
        Windows per forward pass.
    bf16 : bool
        bfloat16 autocast on CUDA (as in training).

    Returns
    -------
    ndarray, shape (n_subjects,), float64
        The network's output scale (z-scored age).
    """
    was_training = net.training
    net.eval()
    means = []
    for array in arrays:
        # One copy of the run to the device; the windows are cut there (the frames they share
        # are not copied again).
        run = torch.from_numpy(pad_left(array, window)).to(device)
        windows = run[torch.from_numpy(window_starts(run.shape[0], window)).to(device)[:, None]
                      + torch.arange(window, device=device)]  # (n_windows, window, ...)
        with autocast(device, bf16):
            preds = torch.cat([net(chunk).float() for chunk in torch.split(windows, batch_size)])
        means.append(preds.mean())
    net.train(was_training)
    return torch.stack(means).double().cpu().numpy() if means else np.empty(0)
