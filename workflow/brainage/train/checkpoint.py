"""Torch checkpoints: the fitted networks' weights with their config, loadable with weights_only=True."""

from __future__ import annotations

import os

import numpy as np
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
    _write(path, estimator.checkpoint_state(), card)


class Ensemble:
    """The K members (inner fits) of one outer fold; predicts their mean, as the fold's test predictions.

    Attributes
    ----------
    members : list
        Fitted torch models, in inner-fold order.
    """

    def __init__(self, members: list):
        self.members = list(members)

    def predict(self, X) -> np.ndarray:
        """Mean of the members' predicted ages (years), shape (n_subjects,), float64."""
        return np.mean([m.predict(X) for m in self.members], axis=0)


def save_ensemble(path: str | os.PathLike, members: list, card: dict | None = None) -> None:
    """Write a fold's members (fitted torch models) in one file, atomically (:func:`load_checkpoint`)."""
    _write(path, {"members": [m.checkpoint_state() for m in members]}, card)


def _write(path: str | os.PathLike, state: dict, card: dict | None) -> None:
    if card is not None:
        state["card"] = card
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, device: str | None = None):
    """Rebuild the fitted model saved by :func:`save_checkpoint`, or the members of :func:`save_ensemble`.

    Only tensors and plain containers are unpickled (``weights_only=True``), so a checkpoint
    from elsewhere cannot run code.

    Parameters
    ----------
    device : str, optional
        Where to put the network; default "cuda" when available, else "cpu".

    Returns
    -------
    model or Ensemble
        Ready for ``predict`` (an :class:`Ensemble` of the members for a fold's checkpoint.pt).
    """
    state = read_torch(path)
    if "members" in state:
        return Ensemble([model_from_state(member, device) for member in state["members"]])
    return model_from_state(state, device)


def model_from_state(state: dict, device: str | None = None):
    """Rebuild one fitted torch model from a state already read (:func:`save_checkpoint`'s content)."""
    estimator = get_model(state["model"], state["config"], state["seed"])
    estimator.device = device
    return estimator.load_checkpoint_state(state)
