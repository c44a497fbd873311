"""Model registry: every age model by name, built from its config sub-tree and one seed."""

from __future__ import annotations

import dataclasses
import importlib
import logging

logger = logging.getLogger(__name__)

# One entry per key of ``models:`` in config/config.yaml (and its schema): the module and class,
# what the model reads ("series" or "volumes"; equal to the class's ``input_kind``, tested), and
# whether it is a torch model (trained by the shared loop: GPUs, several processes; tested).
# Every class has a frozen ``Config`` dataclass that owns the parameters' defaults (the schema has
# types and ranges only; config.yaml lists the same values, tested), ``fit(X, y,
# X_valid=None, y_valid=None)`` and ``predict(X)``. The classes are imported on first use:
# building the DAG needs only the input kinds, and importing torch and scikit-learn costs ~4 s.
_REGISTRY = {
    "dummy": ("brainage.models.baselines", "DummyAge", "series", False),
    "connectome_ridge": ("brainage.models.baselines", "ConnectomeRidge", "series", False),
    "roi_gru": ("brainage.models.roi_gru", "RoiGru", "series", True),
    "cnn_rnn": ("brainage.models.cnn_rnn", "CnnRnn", "volumes", True),
}


def list_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    return sorted(_REGISTRY)


def model_class(name: str) -> type:
    """Return the class registered under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    module, cls = _entry(name)[:2]
    return getattr(importlib.import_module(module), cls)


def input_kind(name: str) -> str:
    """What the model registered under ``name`` reads: ``"series"`` or ``"volumes"`` (imports nothing).

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    return _entry(name)[2]


def is_torch(name: str) -> bool:
    """Whether the model registered under ``name`` is a torch model (imports nothing).

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    return _entry(name)[3]


def _entry(name: str) -> tuple[str, str, str, bool]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from None


def __getattr__(name: str):
    # ``from brainage.models import TorchAgeModel`` without importing torch with the registry.
    if name == "TorchAgeModel":
        from brainage.models._torch import TorchAgeModel

        return TorchAgeModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_config(name: str, params: dict):
    """Turn a model's parameter dict (its config sub-tree) into its frozen ``Config``.

    Missing keys take the ``Config`` dataclass defaults; lists become tuples (so the config is hashable
    and cannot change after the model is built).

    Raises
    ------
    ValueError
        For an unknown model name, an unknown parameter (the message names it and the
        allowed ones) or a value outside its allowed set.
    """
    config_cls = model_class(name).Config
    allowed = sorted(f.name for f in dataclasses.fields(config_cls))
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) if allowed else 'none'}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return config_cls(**values)


def get_model(name: str, params: dict, seed: int):
    """Build an unfitted model.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    params : dict
        The model's parameters, exactly the keys of ``models.<name>`` in the config.
    seed : int
        Seed for everything random inside the model (weight init, windows, inner CV).

    Returns
    -------
    model
        Has ``input_kind``, ``fit(X, y, X_valid=None, y_valid=None)`` and ``predict(X)``.
    """
    config = make_config(name, params)
    logger.debug("building %s with %s (seed %d)", name, config, seed)
    return model_class(name)(config=config, seed=int(seed))


__all__ = ["TorchAgeModel", "get_model", "input_kind", "is_torch", "list_models", "make_config", "model_class"]
