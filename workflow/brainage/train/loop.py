"""Shared torch training loop: AdamW, MSE on z-scored age, early stopping on inner validation MAE."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from brainage.train.data import sliding_windows

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """Optimisation settings (the model's config fields of the same names).

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
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int


@dataclasses.dataclass
class History:
    """What happened during training (goes into the model card).

    Attributes
    ----------
    train_loss : list of float
        Mean MSE (z-scored age) per epoch.
    valid_mae : list of float
        Validation MAE (years) per epoch; empty without a validation set.
    best_epoch : int or None
        1-based epoch whose weights were kept (None without validation: the last epoch's).
    epochs_run : int
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    valid_mae: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    epochs_run: int = 0


def train_network(
    net: nn.Module,
    dataset: Dataset,
    settings: LoopSettings,
    *,
    generator: torch.Generator,
    device: torch.device,
    validate: Callable[[nn.Module], float] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> History:
    """Train ``net`` in place; with ``validate``, stop early and restore the best weights.

    Parameters
    ----------
    net : torch.nn.Module
        Maps a batch of windows to z-scored ages ``(B,)``; already on ``device``.
    dataset : torch Dataset
        Yields ``(window, target)`` pairs (float32 tensors).
    settings : LoopSettings
    generator : torch.Generator (CPU)
        Shuffles the subjects and drives ``augment``: one seeded source of randomness.
    device : torch.device
    validate : callable, optional
        ``validate(net) -> MAE in years`` on the inner validation subjects.
    augment : callable, optional
        ``augment(batch, generator) -> batch`` applied to CPU batches before the step.

    Returns
    -------
    History
    """
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator)
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history, best_state, best_mae, stale = History(), None, math.inf, 0
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        history.train_loss.append(_train_epoch(net, loader, optimiser, augment, generator, device))
        history.epochs_run = epoch
        mae = float(validate(net)) if validate is not None else math.nan
        logger.info(
            "epoch %d/%d: train loss %.4f, inner MAE %.2f y (%.1f s)",
            epoch, settings.epochs, history.train_loss[-1], mae, time.perf_counter() - start,
        )
        if validate is None:
            continue
        history.valid_mae.append(mae)
        if mae < best_mae:
            best_mae, best_state, stale, history.best_epoch = mae, _copy_state(net), 0, epoch
        else:
            stale += 1
            if stale >= settings.patience:
                logger.info("early stop after epoch %d: best inner MAE %.2f y at epoch %d", epoch, best_mae, history.best_epoch)
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return history


def _train_epoch(net, loader, optimiser, augment, generator, device) -> float:
    net.train()
    total, count = 0.0, 0
    for x, y in loader:
        if augment is not None:
            x = augment(x, generator)
        x, y = x.to(device), y.to(device)
        optimiser.zero_grad(set_to_none=True)
        loss = F.mse_loss(net(x), y)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
    return total / count


def _copy_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@torch.no_grad()
def predict_network(
    net: nn.Module, arrays: list[np.ndarray], window: int, batch_size: int, device: torch.device
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

    Returns
    -------
    ndarray, shape (n_subjects,), float64
        The network's output scale (z-scored age).
    """
    was_training = net.training
    net.eval()
    out = np.empty(len(arrays), dtype=np.float64)
    for i, array in enumerate(arrays):
        windows = torch.from_numpy(sliding_windows(array, window))  # (n_windows, window, ...)
        preds = [net(chunk.to(device)) for chunk in torch.split(windows, batch_size)]
        out[i] = float(torch.cat(preds).mean())
    net.train(was_training)
    return out
