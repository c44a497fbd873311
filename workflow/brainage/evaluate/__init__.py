"""Evaluation: pooled test predictions of every model, age-bias correction, metrics per set."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import pandas as pd

from brainage.errors import ConfigError, InputDataError
from brainage.evaluate.bias import UNCORRECTED, fit_bias
from brainage.evaluate.checks import check_coverage, check_heldout, check_leakage
from brainage.evaluate.heldout import heldout_predictions
from brainage.evaluate.metrics import metrics_table
from brainage import storage
from brainage.splits import SETS
from brainage.storage import read_table, write_table, write_tsv

log = logging.getLogger(__name__)

__all__ = ["check_coverage", "correct_bias", "evaluate", "read_predictions"]

PREDICTION_COLUMNS = ("participant_id", "model", "fold", "split", "set", "age", "predicted_age")
SPLITS = ("test", "inner")
OUTPUT_COLUMNS = ("participant_id", "model", "set", "fold", "age", "predicted_age", "predicted_age_corrected")


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` config section (defaults live in config.schema.yaml, not here)."""

    bias_correction: bool
    bootstrap_resamples: int

    @classmethod
    def from_dict(cls, params: dict) -> EvaluateParams:
        """Build from the config section; error on missing or unknown keys, or a negative count."""
        keys = ["bias_correction", "bootstrap_resamples"]
        if set(params) != set(keys):
            raise ConfigError(f"evaluate params: expected keys {keys}, found {sorted(params)}")
        resamples = params["bootstrap_resamples"]
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
            raise ConfigError(f"evaluate.bootstrap_resamples: expected a whole number >= 0, found {resamples!r}")
        return cls(bias_correction=bool(params["bias_correction"]), bootstrap_resamples=resamples)


def read_predictions(paths: list) -> pd.DataFrame:
    """Concatenate prediction tables (kind ``predictions``) and check their columns, splits and sets.

    Returns
    -------
    DataFrame
        Columns ``PREDICTION_COLUMNS``, rows of all files in the order given.

    Raises
    ------
    InputDataError
        A file lacks columns, has a split other than ``test`` / ``inner`` or a set other
        than ``cv`` / ``test``, or has held-out (set ``test``) subjects in ``inner`` rows.
    """
    tables = []
    for path in paths:
        table = read_table(path, kind="predictions")
        storage.require_columns(table, path, PREDICTION_COLUMNS, "predictions table")
        for column, allowed in (("split", SPLITS), ("set", SETS)):
            bad = sorted(set(table[column].astype(str)) - set(allowed))
            if bad:
                raise InputDataError(f"{path}: {column} values {bad}, expected only {list(allowed)}")
        # Inner rows feed the bias correction: a held-out subject there would leak its age.
        leaked = sorted(set(table.loc[(table["set"] == "test") & (table["split"] == "inner"), "participant_id"]))
        if leaked:
            raise InputDataError(f"{path}: held-out (set 'test') subjects in 'inner' rows: {leaked[:10]}")
        tables.append(table[list(PREDICTION_COLUMNS)])
    if not tables:
        raise ValueError("no prediction files given")
    frame = pd.concat(tables, ignore_index=True)
    return frame.astype({"fold": "int64", "age": "float64", "predicted_age": "float64"})


def correct_bias(predictions: pd.DataFrame, bias_correction: bool) -> tuple[pd.DataFrame, list[dict]]:
    """Add ``predicted_age_corrected`` to the test rows, fitted per model and fold on inner rows.

    Parameters
    ----------
    predictions : DataFrame
        Columns ``PREDICTION_COLUMNS``, cross-validation rows only (set ``cv``).
    bias_correction : bool
        False: corrected = predicted.

    Returns
    -------
    test : DataFrame
        Test rows, columns ``OUTPUT_COLUMNS``.
    fits : list of dict
        One per model and fold: model, set ("cv"), fold and the :class:`BiasFit` fields.
    """
    parts, fits = [], []
    for (model, fold), group in predictions.groupby(["model", "fold"], sort=False):
        test = group[group["split"] == "test"].copy()
        fit = UNCORRECTED
        if bias_correction:
            inner = group[group["split"] == "inner"]
            label = f"model {model!r} fold {fold}"
            check_leakage(inner, test, label)
            fit = fit_bias(inner["age"].to_numpy(), inner["predicted_age"].to_numpy(), label)
        test["predicted_age_corrected"] = fit.correct(test["predicted_age"].to_numpy())
        parts.append(test[list(OUTPUT_COLUMNS)])
        fits.append({"model": model, "set": "cv", "fold": int(fold), **asdict(fit)})
    return pd.concat(parts, ignore_index=True), fits


def evaluate(
    prediction_files: list,
    params: dict,
    predictions_out: str | os.PathLike,
    metrics_out: str | os.PathLike,
    seed: int = 0,
) -> None:
    """Pool every model's out-of-sample predictions, correct the age bias, write metrics.

    Cross-validation (set ``cv``): each subject's out-of-fold prediction, bias-corrected per
    model and fold with a line fitted on that fold's inner rows. Held-out test set (set
    ``test``, when the folds table held subjects out): the mean of the K fold models'
    predictions, bias-corrected with a line fitted on the model's pooled out-of-fold
    cross-validation predictions (:func:`heldout.heldout_predictions`).

    Parameters
    ----------
    prediction_files : list of path-like
        Prediction tables (kind ``predictions``): participant_id, model, fold, split
        (``test``, or ``inner`` for out-of-sample predictions of the fold's training
        subjects), set (``cv``, or ``test`` for held-out subjects, always split ``test``),
        age, predicted_age (years).
    params : dict
        The ``evaluate`` config section: ``bias_correction`` (bool), ``bootstrap_resamples``
        (int: resamples of the subjects for the 95 % intervals in metrics.tsv; 0: none).
    predictions_out : path-like
        predictions.parquet (kind ``evaluated_predictions``): one row per model and
        subject, cross-validation rows first, columns ``OUTPUT_COLUMNS`` (held-out rows have
        fold -1); bias fits per model, set and fold in its provenance.
    metrics_out : path-like
        metrics.tsv: one row per model and set, the ``cv`` rows first; within a set the
        dummy first, the others in order of first appearance in ``prediction_files`` (see
        :func:`metrics.metrics_table`), with bootstrap intervals of MAE, r and R² and
        paired intervals of the MAE difference to the dummy and to the connectome ridge.
    seed : int
        The workflow seed: the bootstrap resamples are drawn from it (reproducible intervals).

    Raises
    ------
    ValueError
        A model misses or duplicates test subjects (or held-out subjects in one of its
        folds); a subject is both inner and test in one fold, or held out and in
        cross-validation; a bias line cannot be fitted.
    """
    config = EvaluateParams.from_dict(params)
    predictions = read_predictions(prediction_files)
    models = list(pd.unique(predictions["model"]))
    cv = predictions[predictions["set"] == "cv"]
    check_coverage(cv[cv["split"] == "test"], models)
    check_heldout(predictions, models)
    test, fits = correct_bias(cv, config.bias_correction)
    heldout, heldout_fits = heldout_predictions(predictions, models, config.bias_correction)
    if not heldout.empty:
        test = pd.concat([test, heldout[list(OUTPUT_COLUMNS)]], ignore_index=True)
    fits += heldout_fits
    metrics = metrics_table(test, models, n_resamples=config.bootstrap_resamples, seed=seed)
    provenance = {
        "params": asdict(config),
        "seed": seed,
        "bias_fits": fits,
        "sources": [str(p) for p in prediction_files],
    }
    write_table(predictions_out, test, kind="evaluated_predictions", provenance=provenance)
    write_tsv(metrics_out, metrics)
    for row in metrics.itertuples():
        log.info(
            "%s (%s): n=%d MAE %.2f y, r %.2f, MAE corrected %.2f y",
            row.model, row.set, row.n, row.mae, row.r, row.mae_corrected,
        )
