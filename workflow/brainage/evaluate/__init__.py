"""Evaluation: pooled test predictions of every model, age-bias correction, metrics table."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import pandas as pd

from brainage.errors import ConfigError, InputDataError
from brainage.evaluate.bias import BiasFit, fit_bias
from brainage.evaluate.metrics import metrics_table
from brainage import storage
from brainage.storage import read_table, write_table, write_tsv

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("participant_id", "model", "fold", "split", "age", "predicted_age")
SPLITS = ("test", "inner")
OUTPUT_COLUMNS = ("participant_id", "model", "fold", "age", "predicted_age", "predicted_age_corrected")
_MAX_LISTED = 10  # subjects named in an error message before "..."


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` config section (defaults live in config.schema.yaml, not here)."""

    bias_correction: bool

    @classmethod
    def from_dict(cls, params: dict) -> EvaluateParams:
        """Build from the config section; error on missing or unknown keys."""
        if set(params) != {"bias_correction"}:
            raise ConfigError(f"evaluate params: expected keys ['bias_correction'], found {sorted(params)}")
        return cls(bias_correction=bool(params["bias_correction"]))


def read_predictions(paths: list) -> pd.DataFrame:
    """Concatenate prediction tables (kind ``predictions``) and check their columns and splits.

    Returns
    -------
    DataFrame
        Columns ``PREDICTION_COLUMNS``, rows of all files in the order given.

    Raises
    ------
    InputDataError
        A file lacks columns or has a split other than ``test`` / ``inner``.
    """
    tables = []
    for path in paths:
        table = read_table(path, kind="predictions")
        storage.require_columns(table, path, PREDICTION_COLUMNS, "predictions table")
        bad = sorted(set(table["split"]) - set(SPLITS))
        if bad:
            raise InputDataError(f"{path}: split values {bad}, expected only {list(SPLITS)}")
        tables.append(table[list(PREDICTION_COLUMNS)])
    if not tables:
        raise ValueError("no prediction files given")
    frame = pd.concat(tables, ignore_index=True)
    return frame.astype({"fold": "int64", "age": "float64", "predicted_age": "float64"})


def _listed(ids: list) -> str:
    shown = ", ".join(map(str, ids[:_MAX_LISTED]))
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > _MAX_LISTED else "")


def check_coverage(test: pd.DataFrame, models: list[str]) -> None:
    """Every model must predict every subject exactly once in its test rows.

    Raises
    ------
    ValueError
        Naming the model and its duplicated or missing subjects.
    """
    everyone = set(test["participant_id"])
    for model in models:
        ids = test.loc[test["model"] == model, "participant_id"]
        duplicated = sorted(set(ids[ids.duplicated()]))
        if duplicated:
            raise ValueError(f"model {model!r}: subjects in more than one test row: {_listed(duplicated)}")
        missing = sorted(everyone - set(ids))
        if missing:
            raise ValueError(f"model {model!r}: no test prediction for subjects {_listed(missing)}")


def _check_leakage(inner: pd.DataFrame, test: pd.DataFrame, label: str) -> None:
    # A test subject among the rows the correction is fitted on would leak its age into it.
    both = sorted(set(inner["participant_id"]) & set(test["participant_id"]))
    if both:
        raise ValueError(f"{label}: subjects both in 'inner' and 'test' rows: {_listed(both)}")


def correct_bias(predictions: pd.DataFrame, bias_correction: bool) -> tuple[pd.DataFrame, list[dict]]:
    """Add ``predicted_age_corrected`` to the test rows, fitted per model and fold on inner rows.

    Parameters
    ----------
    predictions : DataFrame
        Columns ``PREDICTION_COLUMNS``.
    bias_correction : bool
        False: corrected = predicted.

    Returns
    -------
    test : DataFrame
        Test rows, columns ``OUTPUT_COLUMNS``.
    fits : list of dict
        One per model and fold: model, fold and the :class:`BiasFit` fields.
    """
    parts, fits = [], []
    for (model, fold), group in predictions.groupby(["model", "fold"], sort=False):
        test = group[group["split"] == "test"].copy()
        fit = BiasFit(slope=1.0, intercept=0.0, applied=False, n=0)
        if bias_correction:
            inner = group[group["split"] == "inner"]
            label = f"model {model!r} fold {fold}"
            _check_leakage(inner, test, label)
            fit = fit_bias(inner["age"].to_numpy(), inner["predicted_age"].to_numpy(), label)
        test["predicted_age_corrected"] = fit.correct(test["predicted_age"].to_numpy())
        parts.append(test[list(OUTPUT_COLUMNS)])
        fits.append({"model": model, "fold": int(fold), **asdict(fit)})
    return pd.concat(parts, ignore_index=True), fits


def evaluate(
    prediction_files: list,
    params: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
) -> None:
    """Pool every model's out-of-sample predictions, correct the age bias, write metrics.

    Parameters
    ----------
    prediction_files : list of path-like
        Prediction tables (kind ``predictions``): participant_id, model, fold, split
        (``test``, or ``inner`` for out-of-sample predictions of the fold's training
        subjects), age, predicted_age (years).
    params : dict
        The ``evaluate`` config section: ``bias_correction`` (bool).
    predictions_out : path-like
        predictions.parquet (kind ``evaluated_predictions``): test rows only, columns
        ``OUTPUT_COLUMNS``; bias fits per model and fold in its provenance.
    metrics_out : path-like
        metrics.tsv: one row per model, dummy first, the others in order of first
        appearance in ``prediction_files`` (see :func:`metrics.metrics_table`).

    Raises
    ------
    ValueError
        A model misses or duplicates test subjects; a subject is both inner and test in
        one fold; a fold's inner rows cannot be fitted.
    """
    config = EvaluateParams.from_dict(params)
    predictions = read_predictions(prediction_files)
    models = list(pd.unique(predictions["model"]))
    check_coverage(predictions[predictions["split"] == "test"], models)
    test, fits = correct_bias(predictions, config.bias_correction)
    metrics = metrics_table(test, models)
    provenance = {
        "params": asdict(config),
        "bias_fits": fits,
        "sources": [str(p) for p in prediction_files],
    }
    write_table(predictions_out, test, kind="evaluated_predictions", provenance=provenance)
    write_tsv(metrics_out, metrics)
    for row in metrics.itertuples():
        log.info(
            "%s: n=%d MAE %.2f y, r %.2f, MAE corrected %.2f y", row.model, row.n, row.mae, row.r, row.mae_corrected
        )
