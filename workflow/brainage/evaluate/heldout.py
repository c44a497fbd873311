"""Held-out test set: the fold models' mean prediction, bias-corrected from cross-validation data only."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from brainage.evaluate.bias import UNCORRECTED, fit_bias
from brainage.splits import HELD_OUT_FOLD


def heldout_predictions(
    predictions: pd.DataFrame, models: list[str], bias_correction: bool
) -> tuple[pd.DataFrame, list[dict]]:
    """Average each model's fold predictions of every held-out subject; correct their age bias.

    The K fold models of a model form an ensemble: a held-out subject's predicted age is the
    mean of their K predictions (each model saw a different (K-1)/K of the cross-validation
    subjects and none of the held-out ones). The age-bias line is fitted on the model's
    pooled out-of-fold predictions of the cross-validation subjects (rows ``set`` "cv",
    ``split`` "test"), the training side of the held-out split, and never on held-out
    subjects, whose ages therefore cannot move it (Beheshti et al. 2019; de Lange & Cole
    2020: fit the correction on training data, apply it to the test data).

    Parameters
    ----------
    predictions : DataFrame
        All rows: participant_id, model, fold, split, set, age, predicted_age (years).
        Coverage is checked beforehand (:func:`brainage.evaluate.checks.check_heldout`).
    models : list of str
    bias_correction : bool
        False: corrected = predicted.

    Returns
    -------
    heldout : DataFrame
        One row per model and held-out subject (first-appearance order): participant_id,
        model, set ("test"), fold (-1: all folds), age, predicted_age (the fold mean),
        predicted_age_corrected. Empty when nothing is held out.
    fits : list of dict
        One per model: model, set ("test"), fold (-1) and the :class:`BiasFit` fields.
    """
    parts, fits = [], []
    for model in models:
        rows = predictions[predictions["model"] == model]
        held = rows[rows["set"] == "test"]
        if held.empty:
            continue
        mean = held.groupby("participant_id", sort=False).agg(
            age=("age", "first"), predicted_age=("predicted_age", "mean")
        ).reset_index()
        fit = UNCORRECTED
        if bias_correction:
            oof = rows[(rows["set"] == "cv") & (rows["split"] == "test")]
            label = f"model {model!r} held-out set (line fitted on its cross-validated predictions)"
            fit = fit_bias(oof["age"].to_numpy(), oof["predicted_age"].to_numpy(), label)
        mean["predicted_age_corrected"] = fit.correct(mean["predicted_age"].to_numpy())
        parts.append(mean.assign(model=model, set="test", fold=HELD_OUT_FOLD))
        fits.append({"model": model, "set": "test", "fold": HELD_OUT_FOLD, **asdict(fit)})
    if not parts:
        return pd.DataFrame(), []
    return pd.concat(parts, ignore_index=True), fits
