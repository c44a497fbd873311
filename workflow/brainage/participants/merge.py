"""Merge per-dataset manifests and exclusions into one participants manifest."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from brainage.errors import InputDataError
from brainage.storage import (
    EXCLUSION_COLUMNS,
    INDI_MANIFEST_COLUMNS,
    exclusions_frame,
    read_tsv,
    require_columns,
    write_tsv,
)

log = logging.getLogger(__name__)


def merge_manifests(
    manifests: list[str | os.PathLike],
    exclusions: list[str | os.PathLike],
    out: str | os.PathLike,
    exclusions_out: str | os.PathLike,
) -> None:
    """Concatenate per-dataset manifests and exclusions (TSV) into one of each.

    Values are copied as text, so nothing is re-rounded or re-coded.

    Parameters
    ----------
    manifests : list of path-like
        Per-dataset manifests: INDI_MANIFEST_COLUMNS (participant_id, dataset, site, age, sex,
        diagnosis, source_id) first, then any extra columns.
    exclusions : list of path-like
        Per-dataset exclusions: participant_id, stage, reason.
    out : path-like
        Merged manifest: INDI_MANIFEST_COLUMNS first, then the extra columns in order of first
        appearance; a column a dataset lacks is ``n/a`` in its rows.
    exclusions_out : path-like
        Merged exclusions, in input order.

    Raises
    ------
    InputDataError
        A file lacks the required columns, a participant_id appears twice (the message names
        it and both datasets), or the merged manifest has no participant.
    """
    tables = []
    for path in manifests:
        table = read_tsv(path, dtype=str)
        require_columns(table, path, INDI_MANIFEST_COLUMNS, "manifest")
        tables.append(table)
    _check_unique(tables, manifests)
    extra = list(dict.fromkeys(c for t in tables for c in t.columns if c not in INDI_MANIFEST_COLUMNS))
    columns = [*INDI_MANIFEST_COLUMNS, *extra]
    merged = pd.concat([t.reindex(columns=columns) for t in tables], ignore_index=True)
    if merged.empty:
        raise InputDataError(f"no participant in any manifest: {[str(p) for p in manifests]}")
    dropped = []
    for path in exclusions:
        table = read_tsv(path, dtype=str)
        require_columns(table, path, EXCLUSION_COLUMNS, "exclusions table")
        dropped.append(table[list(EXCLUSION_COLUMNS)])
    excluded = pd.concat(dropped, ignore_index=True) if dropped else exclusions_frame()
    write_tsv(out, merged)
    write_tsv(exclusions_out, excluded)
    log.info("merged %d manifests: %d participants, %d exclusions", len(tables), len(merged), len(excluded))


def _check_unique(tables: list[pd.DataFrame], paths: list) -> None:
    """Each participant_id once over all manifests; the error names the id and both datasets."""
    seen: dict[str, str] = {}
    for table, path in zip(tables, paths):
        for pid, dataset in zip(table["participant_id"], table["dataset"]):
            where = f"{dataset} ({Path(path)})"
            if pid in seen:
                raise InputDataError(
                    f"participant_id {pid} is in two datasets: {seen[pid]} and {where}; "
                    "ids must be unique across datasets"
                )
            seen[pid] = where
