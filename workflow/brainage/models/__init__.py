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
    # Correlation structure of whole runs read by a network (brainage.models.connectivity).
    "roi_conn": ("brainage.models.roi_conn", "RoiConn", "series", True),
    "cnn_rnn": ("brainage.models.cnn_rnn", "CnnRnn", "volumes", True),
    # The CNN-RNN that reads connectivity: residual 3D CNN, atlas-started soft parcellation, reader.
    "cnn_conn": ("brainage.models.cnn_conn", "CnnConn", "volumes", True),
    # Reads the base models' cross-fitted predictions of the same outer fold (their outputs).
    "stack": ("brainage.models.stack", "Stack", "predictions", False),
}


def resolve(name: str, models: dict, variants: dict) -> tuple[str, dict]:
    """The registered model behind a name of ``train.models`` and its full parameters.

    A registered name takes ``models.<name>``. A variant (``variants.<name>``: a registered
    ``model`` under a name of one's own) takes ``models.<model>`` with the variant's keys laid
    over it, so a variant states only what differs (e.g. ``{model: connectome_ridge, kind:
    tangent}``).

    Parameters
    ----------
    name : str
        A name listed in ``train.models``.
    models, variants : dict
        The ``models`` and ``variants`` config sections.

    Returns
    -------
    (str, dict)
        The registered model name and the parameters (without the variant's ``model`` key).

    Raises
    ------
    ValueError
        ``name`` is neither registered nor a variant; a variant names an unregistered model;
        a variant shadows a registered name.
    """
    if name in variants:
        if name in _REGISTRY:
            raise ValueError(f"variants.{name}: {name!r} is a registered model; give the variant another name")
        spec = dict(variants[name])
        base = spec.pop("model", None)
        if base not in _REGISTRY:
            raise ValueError(
                f"variants.{name}: model {base!r} is not a registered model; valid models: {', '.join(list_models())}"
            )
        return base, {**models.get(base, {}), **spec}
    _entry(name)
    return name, dict(models.get(name, {}))


def stack_bases(params: dict, bases: dict[str, str]) -> list[str]:
    """The base models of a stack: its ``models``, or else every other listed model but the dummy.

    Parameters
    ----------
    params : dict
        The stack's resolved parameters (``models``: a list, empty for the default).
    bases : dict
        Every name of ``train.models``, in order, mapped to its registered model (:func:`resolve`).

    Returns
    -------
    list of str
        Names of ``train.models``; the default leaves out the dummy and every stack.
    """
    return [str(m) for m in params.get("models") or [n for n, b in bases.items() if b not in ("dummy", "stack")]]


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
    """What the model registered under ``name`` reads (imports nothing).

    ``"series"`` (ROI series), ``"volumes"`` (downsampled 4D volumes) or ``"predictions"`` (the
    base models' predictions of the same outer fold: the stack).

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


# Models whose training job is handed the first atlas's folder (their class's ``reads_atlas``; tested).
_READS_ATLAS = {"cnn_conn"}


def reads_atlas(name: str) -> bool:
    """Whether the model registered under ``name`` starts from an atlas folder (imports nothing).

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    _entry(name)
    return name in _READS_ATLAS


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
        The model's parameters, exactly the keys of ``models.<name>`` in the config; for a
        variant, :func:`resolve`'s parameters plus ``model``: the registered model to build.
    seed : int
        Seed for everything random inside the model (weight init, windows, inner CV).

    Returns
    -------
    model
        Has ``input_kind``, ``fit(X, y, X_valid=None, y_valid=None)`` and ``predict(X)``.
    """
    base = params.get("model", name)  # a variant (resolve) names its registered model
    config = make_config(base, {k: v for k, v in params.items() if k != "model"})
    logger.debug("building %s (%s) with %s (seed %d)", name, base, config, seed)
    return model_class(base)(config=config, seed=int(seed))


__all__ = [
    "TorchAgeModel", "get_model", "input_kind", "is_torch", "list_models", "make_config", "model_class", "resolve",
    "stack_bases",
]
