"""cnn_conn: the CNN-RNN that reads connectivity (a residual 3D CNN per frame, a soft parcellation
started from the atlas, a GRU, log-correlation pooling, a ridge head).

The hybrid keeps the shape the project promises, a 3D CNN on every frame, a recurrent layer over
the frames and a head, and gives it what age in resting-state fMRI needs (issue 16: the frame-wise
cnn_rnn stays near the dummy on real ABIDE signal): regional signals and their correlation over
the whole run. Per frame, a residual 3D CNN ``x + f(x)`` (``f``'s last layer starts at zero, so
at the start the frame passes unchanged) feeds a soft parcellation ``u = x P``, a learned
voxels x regions matrix that starts as the atlas's region means on the volume grid (what
extraction computes for the ROI series, :func:`brainage.extract.regions.region_operator`) and
is trained as ``P = P_atlas + D`` with weight decay pulling ``D`` back to the atlas. The regional
signals of the whole run go to the :class:`~brainage.models.connectivity.ConnectivityReader`:
a GRU correction, the shrunk log-correlation, a ridge head fitted in closed form. At the start
the model is therefore a ridge on the log-correlation of the atlas regions measured on the
volumes; ``epochs: 0`` keeps that start.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import nibabel as nib
import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from brainage.errors import ConfigError
from brainage.extract.regions import load_atlas_dir, region_operator
from brainage.models.cnn_rnn import Unmask, VolumeInputs
from brainage.models.connectivity import ConnectivityAgeModel, ConnectivityConfig, ConnectivityReader, frame_mask

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CnnConnConfig(ConnectivityConfig):
    """Parameters of ``cnn_conn`` and their defaults (config/config.yaml lists the same values).

    Attributes
    ----------
    channels : tuple of int
        Hidden channels of the residual 3D CNN's k3 convolutions, which run at the volume
        grid's resolution (one ReLU after each); empty: no CNN (the parcellation reads the
        frames as they are).
    hidden, window, epochs, shrinkage, frame_dropout, alphas, batch_size, lr, weight_decay, dropout, patience, target
        See :class:`~brainage.models.connectivity.ConnectivityConfig`.
    """

    channels: tuple[int, ...] = (4,)
    _model_name = "cnn_conn"

    def __post_init__(self):
        super().__post_init__()
        if any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ConfigError(f"cnn_conn: channels must be a list of integers >= 1 (empty: no CNN), got {self.channels!r}")


class ResidualCNN(nn.Module):
    """``x + f(x)`` on every frame's grid: k3 convolutions with ReLUs, the last one zero at the start.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
        The grid voxels the frames carry (outside: zero in, dropped out).
    channels : sequence of int
        Hidden channels of the convolutions before the last (1-channel) one.
    """

    def __init__(self, mask: np.ndarray, channels: tuple[int, ...]):
        super().__init__()
        self.unmask = Unmask(mask, space_to_depth=False)
        layers, c_in = [], 1
        for c_out in channels:
            layers += [nn.Conv3d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]
            c_in = c_out
        last = nn.Conv3d(c_in, 1, kernel_size=3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.f = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map frames ``(N, V)`` of in-mask voxels to ``(N, V)``, float32."""
        out = self.f(self.unmask(x))  # (N, 1, X, Y, Z)
        return x + out.reshape(x.shape[0], -1)[:, self.unmask.index].float()


class Parcellation(nn.Module):
    """Soft parcellation ``u = x (P_start + D)``: voxels to regional signals, ``D`` zero at the start.

    ``P_start`` is a buffer (saved with the weights), so weight decay on ``D`` pulls the learned
    parcellation back to the atlas, not to zero.
    """

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.register_buffer("start", start)
        self.delta = nn.Parameter(torch.zeros_like(start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., V)`` to ``(..., K)`` in float32."""
        with torch.autocast(x.device.type, enabled=False):
            return x.float() @ (self.start + self.delta)


class CnnConnNet(nn.Module):
    """ResidualCNN per frame -> Parcellation -> :class:`ConnectivityReader` over the whole run.

    The CNN reads whole runs of a whole batch, ``B x T`` frames at the grid's full resolution:
    at 4 mm, 32 runs of 200 frames hold 6,400 grids of 141,600 voxels per channel, several GB per
    activation. So the frames pass the CNN and the parcellation ``frames_per_chunk`` at a time,
    and in training each chunk's activations are recomputed in the backward pass instead of kept
    (activation checkpointing): memory grows with the chunk, not with ``B x T``, for about a
    third more CNN compute. The result is the same function, to float rounding.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    parcels : ndarray, shape (V, K)
        The parcellation's start (in-mask voxels in C order x regions).
    channels : sequence of int
        The residual CNN's hidden channels; empty: no CNN.
    hidden : int
    shrinkage, dropout : float
    """

    # Training calls forward(x, targets): the reader's in-batch leave-one-out ridge.
    reads_targets = True
    # Frames per pass of the CNN (at 4 mm and channels [4]: about 1.5 GB of float32 activations).
    frames_per_chunk = 256

    def __init__(self, mask: np.ndarray, parcels: np.ndarray, channels: tuple[int, ...], hidden: int,
                 shrinkage: float, dropout: float):
        super().__init__()
        self.cnn = ResidualCNN(mask, tuple(channels)) if channels else None
        self.parcellation = Parcellation(torch.as_tensor(parcels, dtype=torch.float32))
        self.reader = ConnectivityReader(parcels.shape[1], hidden, shrinkage, dropout)

    def signals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The regional signals ``(B, T, K)`` and the frame mask ``(B, T)`` of runs ``(B, T, V)``."""
        mask = frame_mask(x).float()  # before the CNN, whose bias makes zero frames non-zero
        if self.cnn is None:
            return self.parcellation(x), mask
        b, t, v = x.shape
        chunks = x.reshape(b * t, v).split(self.frames_per_chunk)
        if torch.is_grad_enabled():
            u = [checkpoint(self._regional, c, use_reentrant=False) for c in chunks]
        else:
            u = [self._regional(c) for c in chunks]
        return torch.cat(u).reshape(b, t, -1), mask

    def _regional(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, V)`` through the CNN and the parcellation: ``(N, K)``."""
        return self.parcellation(self.cnn(frames.float()))

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Map runs ``(B, T, V)`` (zero frames: padding or dropped) to z-scored ages ``(B,)``."""
        return self.reader(*self.signals(x), targets)


def atlas_parcels(atlas_dir: str | os.PathLike, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The atlas's region operator on the volume grid, restricted to the in-mask voxels.

    Parameters
    ----------
    atlas_dir : path
        An atlas folder (``resources/atlases/<id>``, :func:`brainage.extract.regions.load_atlas_dir`).
    mask : ndarray of bool, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
        The grid's voxel-to-world affine.

    Returns
    -------
    ndarray, shape (V, K), float32
        ``frames @ parcels`` gives the region means (labels, spheres) or least-squares map
        signals (maps) that extraction computes on this grid; a region with no voxel here has a
        zero column (logged).
    """
    atlas = load_atlas_dir(atlas_dir)
    mask = np.asarray(mask, dtype=bool)
    operator = region_operator(atlas, nib.Nifti1Image(mask.astype(np.uint8), np.asarray(affine, dtype=float)), mask)
    rows = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")  # C order of the in-mask voxels
    parcels = operator.weights.tocsr()[rows].toarray().astype(np.float32)
    empty = np.flatnonzero(~parcels.any(axis=0))
    if empty.size:
        names = [operator.names[i] for i in empty[:10]]
        logger.warning("cnn_conn: %d of %d regions of atlas %s have no voxel in the volumes' mask (%s%s); their "
                       "signals start at zero", empty.size, parcels.shape[1], atlas.id, ", ".join(names),
                       ", ..." if empty.size > 10 else "")
    return parcels


class CnnConn(VolumeInputs, ConnectivityAgeModel):
    """Brain age from fMRI volumes through a CNN-RNN that reads the connectivity of learned regions.

    ``atlas`` (an atlas folder; the workflow passes the first atlas of the config) places the
    parcellation's start on the training mask's grid; the start is saved with the weights, so
    a fitted model needs no atlas to predict.
    """

    name = "cnn_conn"
    input_kind = "volumes"
    Config = CnnConnConfig
    # The training job hands the model the atlas folder (train_model(atlas=...)).
    reads_atlas = True

    def __init__(self, config: CnnConnConfig = CnnConnConfig(), seed: int = 0, device: str | None = None):
        super().__init__(config, seed, device)
        self.atlas = None

    def _inputs(self, X, fitting: bool) -> list[np.ndarray]:
        frames = super()._inputs(X, fitting)
        if fitting:
            self.n_regions_ = None  # build_network places the atlas on the new mask
        return frames

    def input_state(self) -> dict:
        """The training mask and affine, and the number of regions (the start itself is a weight buffer)."""
        return {**super().input_state(), "n_regions": int(self.n_regions_)}

    def load_input_state(self, state: dict) -> None:
        """Restore mask, affine and the number of regions."""
        super().load_input_state(state)
        self.n_regions_ = int(state["n_regions"])

    def build_network(self, sample_shape: tuple[int, ...]) -> CnnConnNet:
        """Return the network on the training mask's grid, the parcellation started from the atlas.

        Fitting places the atlas on the training mask (:func:`atlas_parcels`); a loaded
        checkpoint's state dict holds the start instead.
        """
        if self.n_regions_ is None:
            if self.atlas is None:
                raise ConfigError("cnn_conn: no atlas given; the parcellation starts from the config's first atlas "
                                  "(train_model(atlas=...), python -m brainage.train model --atlas DIR)")
            if self.affine_ is None:
                raise ValueError("cnn_conn: the inputs carry no affine (bare grids), so the atlas cannot be placed "
                                 "on them; give brainage.storage.Volumes")
            parcels = atlas_parcels(self.atlas, self.mask_, self.affine_)
            self.n_regions_ = parcels.shape[1]
        else:
            parcels = np.zeros((int(self.mask_.sum()), self.n_regions_), dtype=np.float32)
        c = self.config
        return CnnConnNet(self.mask_, parcels, tuple(c.channels), c.hidden, c.shrinkage, c.dropout)
