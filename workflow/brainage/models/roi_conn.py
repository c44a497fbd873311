"""roi_conn: the connectivity reader on ROI series (a learned mix of the regions, a GRU, log-correlation, a head)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from brainage.errors import ConfigError
from brainage.models._torch import TorchAgeModel, TorchConfig
from brainage.models.connectivity import ConnectivityReader, fit_head, frame_mask


@dataclasses.dataclass(frozen=True)
class RoiConnConfig(TorchConfig):
    """Parameters of ``roi_conn`` and their defaults (config/config.yaml lists the same values).

    Attributes
    ----------
    hidden : int
        Units of the GRU that corrects the regional signals (:class:`ConnectivityReader`).
    window : int
        Most frames read in one pass: training and test read whole runs up to this length (the
        longest training run, if shorter); longer runs are read in windows whose predictions
        are averaged.
    shrinkage : float
        Weight of the identity in the shrunk correlation matrix, in (0, 1].
    frame_dropout : float
        Probability that a training frame is left out of a pass (augmentation), in [0, 0.9].
    alphas : tuple of float
        Ridge penalties for the head's closed-form start (chosen by leave-one-out).
    epochs : int
        Maximum epochs; 0 keeps the start (a ridge on the log-correlation of the atlas regions):
        the ablation that shows what training adds.
    batch_size, lr, weight_decay, dropout, patience, target
        See :class:`~brainage.models._torch.TorchConfig`.
    """

    hidden: int = 32
    window: int = 1200
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.001
    weight_decay: float = 0.0001
    dropout: float = 0.0
    patience: int = 8
    shrinkage: float = 0.75
    frame_dropout: float = 0.1
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
    _min_epochs = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.shrinkage <= 1:
            raise ConfigError(f"roi_conn: shrinkage must be in (0, 1], got {self.shrinkage!r}")
        if not 0 <= self.frame_dropout <= 0.9:
            raise ConfigError(f"roi_conn: frame_dropout must be in [0, 0.9], got {self.frame_dropout!r}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ConfigError(f"roi_conn: alphas must be a non-empty list of positive numbers, got {self.alphas}")


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


class RoiConn(TorchAgeModel):
    """Brain age from the correlation structure of ROI series, read by a network that can learn it.

    The network starts as a ridge on log-correlation features, fitted on the training subjects
    (:func:`~brainage.models.connectivity.fit_head`), and is then trained end to end; early
    stopping scores the start too, so the inner validation subjects decide whether training
    improved on it.
    """

    name = "roi_conn"
    input_kind = "series"
    Config = RoiConnConfig
    validate_start = True

    def __init__(self, config: RoiConnConfig = RoiConnConfig(), seed: int = 0, device: str | None = None):
        super().__init__(config, seed, device)

    def build_network(self, sample_shape: tuple[int, ...]) -> RoiConnNet:
        """Return the network for frames of shape ``(n_regions,)``."""
        (n_regions,) = sample_shape
        c = self.config
        return RoiConnNet(n_regions, c.hidden, c.shrinkage, c.dropout)

    def frames_per_pass(self, lengths: list[int]) -> int:
        """Whole training runs, up to ``window`` frames."""
        return min(self.config.window, max(lengths))

    def prepare(self, net: RoiConnNet, arrays: list[np.ndarray], targets: np.ndarray) -> dict:
        """Fit the head as a ridge on the training subjects' features (each run read whole, in eval mode)."""
        was_training = net.training
        net.eval()
        with torch.no_grad():
            features = torch.cat([
                net.reader.features(*net.signals(torch.from_numpy(a).to(self.device_).unsqueeze(0)))
                for a in arrays
            ])
        net.train(was_training)
        return {"head_alpha": fit_head(net.reader, features, targets, self.config.alphas)}

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Drop each frame with probability ``frame_dropout`` (a dropped frame is zeroed: masked out)."""
        if self.config.frame_dropout == 0:
            return batch
        keep = torch.rand(batch.shape[:2], generator=generator, device=batch.device) >= self.config.frame_dropout
        return batch * keep.unsqueeze(-1).to(batch.dtype)
