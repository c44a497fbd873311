"""roi_gru: temporal 1D convolution across ROI series, then a GRU over time, then a linear head."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from brainage.errors import ConfigError
from brainage.models._torch import TorchAgeModel, TorchConfig

# Temporal kernel of the convolution: 3 frames (~6 s at TR 2 s) mixes regions over a span
# shorter than the haemodynamic response, leaving longer dynamics to the GRU.
_KERNEL = 3


@dataclasses.dataclass(frozen=True)
class RoiGruConfig(TorchConfig):
    """Parameters of ``roi_gru`` and their defaults (config/config.yaml lists the same values).

    Attributes
    ----------
    conv_channels : int
        Output channels of the temporal convolution over the regions.
    hidden, window, epochs, batch_size, patience
        See :class:`~brainage.models._torch.TorchConfig`.
    """

    hidden: int = 64
    window: int = 48
    epochs: int = 80
    batch_size: int = 16
    patience: int = 20
    conv_channels: int = 64

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.conv_channels, int) or self.conv_channels < 1:
            raise ConfigError(f"roi_gru: conv_channels must be an integer >= 1, got {self.conv_channels!r}")


class RoiGruNet(nn.Module):
    """Conv1d(regions -> channels) + BatchNorm1d + ReLU -> GRU -> dropout -> Linear.

    Parameters
    ----------
    n_regions, conv_channels, hidden : int
    dropout : float
    """

    def __init__(self, n_regions: int, conv_channels: int, hidden: int, dropout: float):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_regions, conv_channels, kernel_size=_KERNEL, padding=_KERNEL // 2),
            nn.BatchNorm1d(conv_channels),
            nn.ReLU(),
        )
        self.rnn = nn.GRU(conv_channels, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``(B, T, R)`` (float32) to z-scored ages ``(B,)``."""
        h = self.conv(x.transpose(1, 2))  # (B, T, R) -> (B, R, T) -> (B, C, T)
        out, _ = self.rnn(h.transpose(1, 2))  # (B, T, C) -> (B, T, H)
        return self.head(self.dropout(out[:, -1])).squeeze(-1)  # (B, H) -> (B,)


class RoiGru(TorchAgeModel):
    """Brain age from ROI series with a convolutional-recurrent network.

    Trained on random ``window``-frame stretches; a subject's prediction is the mean over
    non-overlapping windows tiling its whole run (see ``brainage.torchloop.loop.predict_network``).
    """

    name = "roi_gru"
    input_kind = "series"
    Config = RoiGruConfig

    def __init__(self, config: RoiGruConfig = RoiGruConfig(), seed: int = 0, device: str | None = None):
        super().__init__(config, seed, device)

    def build_network(self, sample_shape: tuple[int, ...]) -> RoiGruNet:
        """Return the network for frames of shape ``(n_regions,)``."""
        (n_regions,) = sample_shape
        c = self.config
        return RoiGruNet(n_regions, c.conv_channels, c.hidden, c.dropout)
