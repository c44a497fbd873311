"""roi_conn: the connectivity reader on ROI series (a learned mix of the regions, a GRU, log-correlation, a head)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from brainage.models.connectivity import ConnectivityAgeModel, ConnectivityConfig, ConnectivityReader, frame_mask


@dataclasses.dataclass(frozen=True)
class RoiConnConfig(ConnectivityConfig):
    """Parameters of ``roi_conn`` and their defaults (config/config.yaml lists the same values).

    All are :class:`~brainage.models.connectivity.ConnectivityConfig`'s.
    """

    _model_name = "roi_conn"


class RoiConnNet(nn.Module):
    """Linear mix of the regions (identity at start) -> :class:`ConnectivityReader`.

    Parameters
    ----------
    n_regions, hidden : int
    shrinkage, dropout : float
    """

    def __init__(self, n_regions: int, hidden: int, shrinkage: float, dropout: float):
        super().__init__()
        self.mix = nn.Linear(n_regions, n_regions, bias=False)
        nn.init.eye_(self.mix.weight)  # at start the reader sees the atlas regions themselves
        self.reader = ConnectivityReader(n_regions, hidden, shrinkage, dropout)

    def signals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed regional signals ``(B, T, R)`` and the frame mask ``(B, T)`` of runs ``(B, T, R)``."""
        return self.mix(x), frame_mask(x)

    # Training calls forward(x, targets): ConnectivityReader's in-batch leave-one-out ridge.
    reads_targets = True

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Map runs ``(B, T, R)`` (zero frames: padding or dropped) to z-scored ages ``(B,)``."""
        return self.reader(*self.signals(x), targets)


class RoiConn(ConnectivityAgeModel):
    """Brain age from the correlation structure of ROI series, read by a network that can learn it.

    The network starts as a ridge on log-correlation features of the atlas regions, fitted on
    the training subjects, and is then trained end to end (:class:`ConnectivityAgeModel`).
    """

    name = "roi_conn"
    input_kind = "series"
    Config = RoiConnConfig

    def __init__(self, config: RoiConnConfig = RoiConnConfig(), seed: int = 0, device: str | None = None):
        super().__init__(config, seed, device)

    def build_network(self, sample_shape: tuple[int, ...]) -> RoiConnNet:
        """Return the network for frames of shape ``(n_regions,)``."""
        (n_regions,) = sample_shape
        c = self.config
        return RoiConnNet(n_regions, c.hidden, c.shrinkage, c.dropout)
