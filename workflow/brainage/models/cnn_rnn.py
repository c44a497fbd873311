"""cnn_rnn: a 3D CNN encodes every downsampled frame, a GRU/LSTM reads the frames, a head predicts age."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from brainage.errors import ConfigError
from brainage.models._torch import TorchAgeModel, TorchConfig

# Training-time jitter. Inputs are z-scored per voxel, so 0.1 is 10 % of a voxel's standard
# deviation: a small per-window gain (scanner/site intensity differences) and voxel noise.
SCALE_JITTER = 0.1
NOISE_STD = 0.1
# Spatial summary kept next to the global average: mean of each octant of the feature map.
_SUMMARY_GRID = 2
_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclasses.dataclass(frozen=True)
class CnnRnnConfig(TorchConfig):
    """Parameters of ``cnn_rnn`` (defaults: config/config.schema.yaml).

    Attributes
    ----------
    channels : tuple of int
        Output channels of each 3D conv block; each block halves the grid.
    rnn : {"gru", "lstm"}
        Recurrent layer over the frame embeddings.
    flip : bool
        Random left-right (x axis) flips during training.
    """

    channels: tuple[int, ...] = (8, 16)
    rnn: str = "gru"
    flip: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ConfigError(f"cnn_rnn: channels must be a non-empty list of integers >= 1, got {self.channels!r}")
        if self.rnn not in _RNNS:
            raise ConfigError(f"cnn_rnn: rnn {self.rnn!r} is not one of {', '.join(_RNNS)}")


class FrameEncoder(nn.Module):
    """Per block: Conv3d(k3, stride 2) + BatchNorm3d + ReLU; then global mean + 2x2x2 summary.

    The stride-2 convolution is the downsampling (all-convolutional net, Springenberg et al.
    2015, arXiv:1412.6806): on CPU it is ~8x faster than a full-resolution convolution
    followed by pooling, which is what keeps a fold within the demo's time budget.

    Parameters
    ----------
    channels : sequence of int

    Attributes
    ----------
    out_features : int
        Embedding size E = C_last * (1 + 2**3).
    """

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        blocks, c_in = [], 1
        for c_out in channels:
            blocks += [nn.Conv3d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.BatchNorm3d(c_out), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.summary = nn.AdaptiveAvgPool3d(_SUMMARY_GRID)
        self.out_features = c_in * (1 + _SUMMARY_GRID**3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map frames ``(N, 1, X, Y, Z)`` to embeddings ``(N, E)``."""
        f = self.features(x)  # (N, 1, X, Y, Z) -> (N, C, X', Y', Z')
        pooled = f.mean(dim=(2, 3, 4))  # (N, C)
        local = self.summary(f).flatten(1)  # (N, C, 2, 2, 2) -> (N, 8C)
        return torch.cat([pooled, local], dim=1)  # (N, E)


class CnnRnnNet(nn.Module):
    """FrameEncoder shared across frames -> GRU/LSTM over frames -> dropout -> Linear.

    Parameters
    ----------
    channels : sequence of int
    hidden : int
    rnn : {"gru", "lstm"}
    dropout : float
    """

    def __init__(self, channels: tuple[int, ...], hidden: int, rnn: str, dropout: float):
        super().__init__()
        self.encoder = FrameEncoder(channels)
        self.rnn = _RNNS[rnn](self.encoder.out_features, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``(B, T, X, Y, Z)`` (float32) to z-scored ages ``(B,)``."""
        b, t = x.shape[:2]
        # All frames of all windows through the CNN in one call.
        frames = x.reshape(b * t, 1, *x.shape[2:])  # (B, T, X, Y, Z) -> (B*T, 1, X, Y, Z)
        e = self.encoder(frames).reshape(b, t, -1)  # (B*T, E) -> (B, T, E)
        out, _ = self.rnn(e)  # (B, T, E) -> (B, T, H)
        return self.head(self.dropout(out[:, -1])).squeeze(-1)  # (B, H) -> (B,)


def augment_volumes(
    batch: torch.Tensor,
    generator: torch.Generator,
    *,
    flip: bool,
    scale_std: float = SCALE_JITTER,
    noise_std: float = NOISE_STD,
) -> torch.Tensor:
    """Randomly flip left-right, scale and add in-brain noise to a batch of windows.

    Parameters
    ----------
    batch : Tensor, shape (B, T, X, Y, Z), float32, CPU
        x is the left-right axis (true for MNI-space grids with a diagonal affine, as
        fMRIPrep writes them).
    generator : torch.Generator
    flip : bool
        Flip each window with probability 1/2 (brain age is ~symmetric; doubles the data).
    scale_std, noise_std : float
        Per-window gain N(1, scale_std); voxel noise N(0, noise_std) inside the brain only
        (voxels outside the mask stay exactly zero).

    Returns
    -------
    Tensor, same shape
    """
    b = batch.shape[0]
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5
        batch = torch.where(flipped[:, None, None, None, None], batch.flip(2), batch)
    if scale_std:
        batch = batch * (1.0 + scale_std * torch.randn(b, 1, 1, 1, 1, generator=generator))
    if noise_std:
        batch = batch + noise_std * torch.randn(batch.shape, generator=generator) * (batch != 0)
    return batch


class CnnRnn(TorchAgeModel):
    """Brain age from downsampled fMRI frames: 3D CNN per frame, recurrent layer over frames.

    Trained on random ``window``-frame stretches with flips and jitter; a subject's prediction
    is the mean over non-overlapping windows tiling its whole run.
    """

    name = "cnn_rnn"
    input_kind = "volumes"
    Config = CnnRnnConfig

    def __init__(self, config: CnnRnnConfig = CnnRnnConfig(), seed: int = 0, device: str | None = None):
        super().__init__(config, seed, device)

    def build_network(self, sample_shape: tuple[int, ...]) -> CnnRnnNet:
        """Return the network (any ``(x, y, z)`` grid: the summaries are adaptive)."""
        c = self.config
        return CnnRnnNet(tuple(c.channels), c.hidden, c.rnn, c.dropout)

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flips (when ``flip``) and intensity/noise jitter; see :func:`augment_volumes`."""
        return augment_volumes(batch, generator, flip=self.config.flip)
