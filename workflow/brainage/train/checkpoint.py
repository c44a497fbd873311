"""Torch checkpoints: the fitted network's weights with its config, loadable with weights_only=True."""

from __future__ import annotations

import os

import torch

from brainage.models import get_model
from brainage.storage import atomic_path, read_torch


def save_checkpoint(path: str | os.PathLike, estimator, card: dict | None = None) -> None:
    """Write a fitted torch model (state_dict, config, target scaling) atomically.

    Parameters
    ----------
    path : path
        Usually ``.../checkpoint.pt``.
    estimator : brainage.models._torch.TorchAgeModel
        A fitted torch model.
    card : dict, optional
        The model card (JSON-compatible values only), stored beside the weights.
    """
    state = estimator.checkpoint_state()
    if card is not None:
        state["card"] = card
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, device: str | None = None):
    """Rebuild the fitted model saved by :func:`save_checkpoint`.

    Only tensors and plain containers are unpickled (``weights_only=True``), so a checkpoint
    from elsewhere cannot run code.

    Parameters
    ----------
    device : str, optional
        Where to put the network; default "cuda" when available, else "cpu".

    Returns
    -------
    model
        Ready for ``predict``.
    """
    state = read_torch(path)
    estimator = get_model(state["model"], state["config"], state["seed"])
    estimator.device = device
    return estimator.load_checkpoint_state(state)
