"""Common estimator wrapper of the torch models: target scaling, fit/predict, checkpoint state."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import nn

from brainage.errors import ConfigError
from brainage.models._inputs import TARGETS, check_ages, check_arrays
from brainage.torchloop.data import WindowDataset
from brainage.torchloop.loop import COMPILE_MODES, LoopSettings, predict_network, train_network

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TorchConfig:
    """Parameters shared by the torch models (``torch_common`` in the config schema).

    The defaults here and in each model's subclass are the only ones: the schema declares
    types and ranges, config/config.yaml lists the same values (tested). ``hidden``,
    ``window``, ``epochs``, ``batch_size`` and ``patience`` differ between the models, so
    each subclass sets them.

    Attributes
    ----------
    hidden : int
        Hidden size of the recurrent layer.
    window : int
        Frames per temporal window (random in training, tiling the run at test time).
    epochs, batch_size, lr, weight_decay, patience
        See :class:`brainage.torchloop.loop.LoopSettings`.
    dropout : float
        Dropout probability before the linear head.
    target : {"age", "log_age"}
        What the network is trained on (z-scored): age in years, or log(age), with predictions
        mapped back by exp (suits wide, right-skewed age ranges such as ABIDE's 6-58 y).
    bf16 : bool
        bfloat16 autocast on CUDA GPUs (CPU runs float32).
    compile : bool or {"default", "reduce-overhead", "max-autotune"}
        ``torch.compile`` the network for training (true: mode "default").
    """

    hidden: int
    window: int
    epochs: int
    batch_size: int
    lr: float = 0.001
    weight_decay: float = 0.0001
    dropout: float = 0.2
    patience: int
    target: str = "age"
    bf16: bool = True
    compile: bool | str = False
    # 0 for models whose network is fitted in closed form before training (no training then).
    _min_epochs = 1

    def __post_init__(self):
        minimum = {"hidden": 1, "window": 2, "epochs": self._min_epochs, "batch_size": 1, "patience": 1}
        for key, low in minimum.items():
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{type(self).__name__}: {key} must be an integer >= {low}, got {value!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"{type(self).__name__}: target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"{type(self).__name__}: compile must be true, false or one of "
                              f"{', '.join(m for m in COMPILE_MODES if isinstance(m, str))}, got {self.compile!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.dropout <= 0.9):
            raise ConfigError(
                f"{type(self).__name__}: need lr > 0, weight_decay >= 0 and 0 <= dropout <= 0.9, got "
                f"lr={self.lr}, weight_decay={self.weight_decay}, dropout={self.dropout}"
            )


class TorchAgeModel:
    """Base of the torch models: a network from ``build_network``, trained by the shared loop.

    The target is z-scored with the training subjects' mean and standard deviation (so the
    MSE and the learning rate do not depend on the age range); predictions are mapped back
    to years.

    Parameters
    ----------
    config : dataclass
        The subclass's ``Config`` (epochs, batch_size, lr, weight_decay, patience, window, ...).
    seed : int
        Seeds weight initialisation, dropout, window starts, shuffling and augmentation.
    device : str, optional
        torch device; default "cuda" when available, else "cpu".
    workers : int
        Loader worker processes (does not change the result).
    resume : path, optional
        Per-epoch checkpoint of the training loop: written after each epoch, resumed from
        when it exists (see :func:`brainage.torchloop.loop.train_network`).
    fingerprint : dict, optional
        Identifies the run in ``resume`` (model, parameters, seed, subjects).
    """

    name = "torch"
    input_kind = "series"
    Config = None
    # Whether early stopping also scores the network before the first epoch (a model whose
    # :meth:`prepare` gives it a fitted start keeps that start unless training beats it).
    validate_start = False

    def __init__(self, config, seed: int = 0, device: str | None = None):
        self.config = config
        self.seed = int(seed)
        self.device = device
        self.workers = 0
        self.resume = None
        self.fingerprint = None

    def build_network(self, sample_shape: tuple[int, ...]) -> nn.Module:
        """Return the untrained network for one subject's frame shape (subclasses)."""
        raise NotImplementedError

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training-time augmentation of a batch on the device beyond random windows (none by default)."""
        return batch

    def frames_per_pass(self, lengths: list[int]) -> int:
        """Frames per window, given the training runs' lengths (``window`` by default)."""
        return self.config.window

    def prepare(self, net: nn.Module, arrays: list, targets: np.ndarray) -> dict:
        """Fit the parts of the network set in closed form from the training data (none by default).

        Called before the first step, before every validation and after training (on the
        weights kept), with the training arrays and z-scored targets. Returns what the model
        card should record (plain values; the call after training's).
        """
        return {}

    def _to_target(self, ages: np.ndarray) -> np.ndarray:
        return np.log(ages) if self.config.target == "log_age" else ages

    def _from_target(self, values: np.ndarray) -> np.ndarray:
        return np.exp(values) if self.config.target == "log_age" else values

    def loop_settings(self) -> LoopSettings:
        """The optimisation settings taken from the config."""
        c = self.config
        return LoopSettings(
            c.epochs, c.batch_size, c.lr, c.weight_decay, c.patience,
            bf16=c.bf16, compile=c.compile, workers=int(self.workers), validate_start=self.validate_start,
        )

    def _inputs(self, X, fitting: bool) -> list[np.ndarray]:
        """Per-subject arrays as the network reads them; fitting fixes ``input_shape_``.

        Series: float32 ``(n_timepoints, n_regions)`` with the same regions for everyone.
        """
        expected = None if fitting else self.input_shape_
        arrays = check_arrays(X, self.input_kind, self.name)
        shapes = sorted({a.shape[1:] for a in arrays})
        if len(shapes) > 1 or (expected is not None and shapes[0] != tuple(expected)):
            raise ValueError(
                f"{self.name}: every subject needs frames of shape {expected or shapes[0]}, found {shapes}"
            )
        if fitting:
            self.input_shape_ = tuple(int(n) for n in shapes[0])
        return arrays

    def input_state(self) -> dict:
        """What besides the weights rebuilds the network (subclasses; tensors and plain values)."""
        return {}

    def load_input_state(self, state: dict) -> None:
        """Restore what :meth:`input_state` saved (subclasses)."""

    def fit(self, X, y, X_valid=None, y_valid=None):
        """Train on ``X`` and ages ``y`` (years); early-stop on ``X_valid``/``y_valid`` if given.

        Parameters
        ----------
        X : list of ndarray
            Per-subject (n_timepoints, n_regions) or (n_timepoints, x, y, z) arrays.
        y : array-like, shape (n_subjects,)
            Ages in years.
        X_valid, y_valid : optional
            Inner validation subjects: early stopping and restoring the best weights.
            Without them all ``epochs`` run and the last weights are kept.
        """
        arrays = self._inputs(X, fitting=True)
        ages = check_ages(y, len(arrays), self.name, self.config.target)
        self.device_ = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        target = self._to_target(ages)
        self.target_mean_ = float(target.mean())
        self.target_std_ = float(target.std()) or 1.0  # identical ages: keep the scale at 1
        self.window_ = int(self.frames_per_pass([len(a) for a in arrays]))
        torch.manual_seed(self.seed)  # weight initialisation and dropout
        self.network_ = self.build_network(self.input_shape_).to(self.device_)
        z_targets = (target - self.target_mean_) / self.target_std_
        self.prepare(self.network_, arrays, z_targets)
        dataset = WindowDataset(arrays, z_targets, self.window_)
        validate = None
        if X_valid is not None:
            valid = self._inputs(X_valid, fitting=False)
            valid_ages = check_ages(y_valid, len(valid), self.name)

            def validate(net: nn.Module) -> float:
                self.prepare(net, arrays, z_targets)
                return float(np.mean(np.abs(self._predict_years(net, valid) - valid_ages)))

        self.history_ = train_network(
            self.network_, dataset, self.loop_settings(),
            rng=np.random.default_rng(self.seed),
            generator=torch.Generator(device=self.device_).manual_seed(self.seed),
            device=self.device_, validate=validate, augment=self.augment,
            checkpoint=self.resume, fingerprint=self.fingerprint,
        )
        prepared = self.prepare(self.network_, arrays, z_targets)
        self.fit_info_ = {**dataclasses.asdict(self.history_), **prepared}
        return self

    def _predict_years(self, net: nn.Module, arrays: list[np.ndarray]) -> np.ndarray:
        z = predict_network(net, arrays, self.window_, self.config.batch_size, self.device_, self.config.bf16)
        return self._from_target(z * self.target_std_ + self.target_mean_)

    def predict(self, X) -> np.ndarray:
        """Return predicted ages (years), shape (n_subjects,), float64 (mean over windows)."""
        return self._predict_years(self.network_, self._inputs(X, fitting=False))

    def checkpoint_state(self) -> dict:
        """Everything needed to rebuild the fitted model; loads with ``weights_only=True``."""
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()}
        return {
            "model": self.name,
            "config": config,
            "seed": self.seed,
            "input_shape": list(self.input_shape_),
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
            "window": self.window_,
            "inputs": self.input_state(),
            "state_dict": {k: v.detach().cpu() for k, v in self.network_.state_dict().items()},
        }

    def load_checkpoint_state(self, state: dict):
        """Restore a model saved by :meth:`checkpoint_state` (built with the same config)."""
        self.input_shape_ = tuple(state["input_shape"])
        self.target_mean_ = float(state["target_mean"])
        self.target_std_ = float(state["target_std"])
        self.window_ = int(state.get("window", self.config.window))  # checkpoints before "window": config's
        self.load_input_state(state.get("inputs", {}))
        self.device_ = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network_ = self.build_network(self.input_shape_)
        self.network_.load_state_dict(state["state_dict"])
        self.network_.to(self.device_)
        return self
