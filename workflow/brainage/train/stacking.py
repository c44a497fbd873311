"""The stack's inputs: the base models' predictions of one outer fold, one vector per subject."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from brainage import storage
from brainage.errors import InputDataError


def load_base_predictions(
    paths: Sequence[str | os.PathLike], design: pd.DataFrame, fold: int, models: Sequence[str]
) -> tuple[list[np.ndarray], list[str]]:
    """Per subject of ``design``, the base models' predicted ages, in the order of ``models``.

    A training subject gets each base model's cross-fitted (``inner``) prediction: made by a
    model that never saw it. A test or held-out subject gets the base model's ``test``
    prediction: the mean of the same models. The stack is fitted on the first and applied to
    the second, exactly as the base models' age-bias lines are.

    Parameters
    ----------
    paths : sequence of path
        predictions.parquet of each base model for outer fold ``fold`` (any order).
    design : DataFrame
        :func:`brainage.train.fit.read_design` of the fold (participant_id, train, ...).
    models : sequence of str
        The base models, in the order of the stack's weights.

    Returns
    -------
    arrays : list of ndarray, shape (n_models,), float64
        One per row of ``design``.
    sources : list of str
        The files read, in the order of ``models`` (provenance).

    Raises
    ------
    InputDataError
        A file of another fold, a base model without a file or with two, or a subject without
        its prediction (the message names the file and the subjects).
    """
    by_model: dict[str, tuple[str, pd.DataFrame]] = {}
    for path in paths:
        table = storage.read_table(path, kind="predictions")
        storage.require_columns(table, path, ("participant_id", "model", "fold", "split", "predicted_age"), "predictions table")
        names, folds = set(table["model"].astype(str)), set(table["fold"].astype(int))
        if len(names) != 1 or folds != {int(fold)}:
            raise InputDataError(f"{path}: expected one model's predictions of fold {fold}, found models {sorted(names)}, folds {sorted(folds)}")
        name = names.pop()
        if name in by_model:
            raise InputDataError(f"{path}: a second predictions file of base model {name!r} ({by_model[name][0]})")
        by_model[name] = (os.fspath(path), table)
    missing = [m for m in models if m not in by_model]
    if missing:
        raise InputDataError(f"stack: no predictions file of base model(s) {', '.join(missing)} for fold {fold}")
    wanted = np.where(design["train"].to_numpy(), "inner", "test")
    columns = []
    for model in models:
        path, table = by_model[model]
        lookup = table.set_index(["participant_id", "split"])["predicted_age"]
        keys = pd.MultiIndex.from_arrays([design["participant_id"].astype(str), wanted])
        values = lookup.reindex(keys).to_numpy(dtype=np.float64)
        absent = design["participant_id"].to_numpy()[np.isnan(values)]
        if len(absent):
            raise InputDataError(f"{path}: no prediction of subject(s) {', '.join(map(str, absent[:10]))} for the stack")
        columns.append(values)
    matrix = np.column_stack(columns)
    return list(matrix), [by_model[m][0] for m in models]
