"""Columns of the workflow's TSV tables (manifest, exclusions) and of the cohort table: one definition each."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

# The participants manifest (results/participants.tsv and each source's manifest): these columns
# first, in this order, then any extra columns of the source.
MANIFEST_COLUMNS = ("participant_id", "dataset", "site", "age", "sex")
# A downloaded INDI dataset's manifest: the manifest columns plus the diagnosis and the
# dataset's own subject id.
INDI_MANIFEST_COLUMNS = (*MANIFEST_COLUMNS, "diagnosis", "source_id")
# Every exclusions table: one row per excluded subject, the stage that excluded it and why.
EXCLUSION_COLUMNS = ("participant_id", "stage", "reason")
# The analysed cohort (results/dataset/cohort.parquet): manifest columns plus extraction QC.
COHORT_COLUMNS = (*MANIFEST_COLUMNS, "n_timepoints", "n_frames_kept", "mean_fd")


def exclusions_frame(rows: Iterable = ()) -> pd.DataFrame:
    """An exclusions table of ``rows``, with the :data:`EXCLUSION_COLUMNS` even when empty.

    Parameters
    ----------
    rows : iterable of (participant_id, stage, reason)

    Returns
    -------
    DataFrame
        Columns ``participant_id``, ``stage``, ``reason``.
    """
    return pd.DataFrame(list(rows), columns=list(EXCLUSION_COLUMNS))
