"""Consistency checks of the pooled predictions: coverage, duplicates, and no leak between splits or sets."""

from __future__ import annotations

import pandas as pd

_MAX_LISTED = 10  # subjects named in an error message before "..."


def listed(ids: list) -> str:
    """Join identifiers for an error message, the first few only."""
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
            raise ValueError(f"model {model!r}: subjects in more than one test row: {listed(duplicated)}")
        missing = sorted(everyone - set(ids))
        if missing:
            raise ValueError(f"model {model!r}: no test prediction for subjects {listed(missing)}")


def check_leakage(inner: pd.DataFrame, test: pd.DataFrame, label: str) -> None:
    """A test subject among the rows a bias correction is fitted on would leak its age into it.

    Raises
    ------
    ValueError
        Naming the subjects found in both tables.
    """
    both = sorted(set(inner["participant_id"]) & set(test["participant_id"]))
    if both:
        raise ValueError(f"{label}: subjects both in 'inner' and 'test' rows: {listed(both)}")


def check_heldout(predictions: pd.DataFrame, models: list[str]) -> None:
    """Every model's fold models must each predict every held-out subject exactly once.

    Parameters
    ----------
    predictions : DataFrame
        All rows (participant_id, model, fold, split, set, age, predicted_age); held-out rows
        have ``set`` "test".
    models : list of str

    Raises
    ------
    ValueError
        A held-out subject also in a model's cross-validation rows (trained on or used for
        model selection), predicted twice or not at all by one of the model's folds, by a fold
        the model has no cross-validation rows for, or with ages that differ between folds.
    """
    everyone = sorted(set(predictions.loc[predictions["set"] == "test", "participant_id"]))
    for model in models:
        rows = predictions[predictions["model"] == model]
        cv, held = rows[rows["set"] == "cv"], rows[rows["set"] == "test"]
        leaked = sorted(set(held["participant_id"]) & set(cv["participant_id"]))
        if leaked:
            raise ValueError(f"model {model!r}: held-out subjects also in cross-validation rows: {listed(leaked)}")
        folds = sorted(int(f) for f in cv["fold"].unique())
        extra = sorted(int(f) for f in set(held["fold"]) - set(folds))
        if extra:
            raise ValueError(f"model {model!r}: held-out rows of fold(s) {extra}, which has no cross-validation rows")
        counts = held.groupby(["participant_id", "fold"]).size()
        twice = [f"{pid} (fold {fold})" for (pid, fold) in counts.index[counts > 1]]
        if twice:
            raise ValueError(f"model {model!r}: held-out subjects predicted twice by one fold: {listed(twice)}")
        expected = pd.MultiIndex.from_product([everyone, folds], names=["participant_id", "fold"])
        missing = [f"{pid} (fold {fold})" for pid, fold in expected.difference(counts.index)]
        if missing:
            raise ValueError(f"model {model!r}: no held-out prediction for {listed(missing)}")
        ages = held.groupby("participant_id")["age"].nunique()
        if (ages > 1).any():
            differ = list(ages.index[ages > 1])
            raise ValueError(f"model {model!r}: held-out subjects with differing ages: {listed(differ)}")
