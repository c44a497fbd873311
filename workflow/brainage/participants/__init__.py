"""Participants manifest: read a BIDS participants.tsv, normalise it, exclude unusable rows."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainage import storage
from brainage.errors import ConfigError, InputDataError
from brainage.participants.discover import RawRun, Run, Selection, find_raw_runs, find_runs
from brainage.participants.inputs import input_problems
from brainage.storage import MANIFEST_COLUMNS, write_tsv

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("participant_id", "age", "sex", "site")
STAGE = "participants"
AGE_RANGE = (0.0, 120.0)  # years; outside it the value is a coding error, not a person

# BIDS labels are alphanumeric; anything else would break file names and Snakemake wildcards.
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
# BIDS participants.tsv uses "M"/"F"; spelled-out and lower-case variants are common in the wild.
# Numeric codes (1/2) are not guessed: their meaning differs between datasets.
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def _labels(ids: pd.Series, path: Path) -> list[str]:
    """BIDS labels (no ``sub-``) of a participant_id column; error on empty, invalid or duplicated ids."""
    labels = []
    for row, value in enumerate(ids, start=1):
        if not isinstance(value, str):
            raise InputDataError(f"{path}: row {row} has no participant_id")
        label = value.strip().removeprefix("sub-")
        if not _LABEL.match(label):
            raise InputDataError(
                f"{path}: participant_id {value!r} in row {row} is not a BIDS label "
                "(expected 'sub-' followed by letters and digits only)"
            )
        labels.append(label)
    duplicated = sorted(set(pd.Series(labels)[pd.Series(labels).duplicated()]))
    if duplicated:
        listed = ", ".join("sub-" + x for x in duplicated)
        raise InputDataError(f"{path}: duplicated participant_id: {listed}")
    return labels


def read_participant_ids(path: str | os.PathLike) -> list[str]:
    """Return the participant labels of a participants table, without ``sub-``.

    Cheap (pandas only): Snakemake calls it while building the DAG.

    Parameters
    ----------
    path : path-like
        BIDS participants.tsv; ids may be written with or without the ``sub-`` prefix.

    Returns
    -------
    list of str
        Labels in file order, e.g. ``["0050003", "0050004"]``.

    Raises
    ------
    InputDataError
        If the file is missing, has no ``participant_id`` column, or an id is empty,
        not a BIDS label or duplicated.
    """
    path = Path(path)
    table = storage.read_tsv(path, dtype=str)
    if "participant_id" not in table.columns:
        raise InputDataError(
            f"{path}: no participant_id column (found columns: {', '.join(map(str, table.columns))})"
        )
    return _labels(table["participant_id"], path)


def _normalise_sex(values: pd.Series, path: Path) -> pd.Series:
    """Map sex codes to M / F / n/a (missing); unknown codes become n/a with a warning."""
    lowered = values.str.strip().str.lower()
    sex = lowered.map(_SEX)
    unknown = sorted(set(values[lowered.notna() & sex.isna()]))
    if unknown:
        log.warning("%s: sex values %s are not M/F/male/female; written as n/a", path, unknown)
    return sex


def age_problem(raw: object, age: float, where: str) -> str | None:
    """Reason to exclude a row because of its age, or None when the age is usable.

    ``raw`` is the age as written (str, or not a str when missing), ``age`` its float value
    (NaN when not a number) and ``where`` names the row, e.g. ``"participants.tsv row 6"``.
    """
    if not isinstance(raw, str):
        return f"no age in {where}"
    if np.isnan(age):
        return f"age {raw!r} is not a number in {where}"
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return f"age {raw} is outside [{AGE_RANGE[0]:g}, {AGE_RANGE[1]:g}] years in {where}"
    return None


def _check_columns(table: pd.DataFrame, path: Path) -> None:
    storage.require_columns(table, path, REQUIRED_COLUMNS, "participants table")
    if table.empty:
        raise InputDataError(f"{path}: no participants (the table has a header but no rows)")


def subject_files(labels: Sequence[str], derivatives: str | os.PathLike,
                  selection: Selection) -> tuple[dict[str, list[Run]], dict[str, str]]:
    """The runs each subject uses, and why the others cannot be used.

    The one rule the workflow (which subjects to extract, from which files) and the
    participants stage (who is excluded, and why) share: :func:`find_runs` picks the runs, then
    every file of them must exist and be the subject's own (:func:`input_problems`).

    Returns
    -------
    runs : dict
        ``{label: [Run, ...]}`` of the usable subjects.
    problems : dict
        ``{label: reason}`` of the others.
    """
    return _usable(*find_runs(derivatives, labels, selection))


def raw_subject_files(labels: Sequence[str], bids_dir: str | os.PathLike,
                      selection: Selection) -> tuple[dict[str, list[RawRun]], dict[str, str]]:
    """A local raw BIDS dataset's runs to preprocess, and why the other subjects cannot be used.

    The rule the workflow (which subjects fMRIPrep runs for) and the participants stage share:
    :func:`find_raw_runs` picks the run (a BOLD of the task and a T1w image), then the BOLD must
    be the subject's own (:func:`input_problems`; the derivatives are checked after fMRIPrep).
    """
    return _usable(*find_raw_runs(bids_dir, labels, selection))


def _usable(runs: dict[str, list], problems: dict[str, str]) -> tuple[dict[str, list], dict[str, str]]:
    """The found runs whose files pass :func:`input_problems` (every BOLD first, then the
    companions), and the problems of discovery and of those checks together."""
    files = {label: [r.bold for r in chosen] + [f for r in chosen for f in r.companions]
             for label, chosen in runs.items()}
    problems = {**problems, **input_problems(files)}
    return {label: chosen for label, chosen in runs.items() if label not in problems}, problems


def build_manifest(
    participants: str | os.PathLike,
    dataset: str,
    derivatives: str | os.PathLike,
    selection: Selection,
    out: str | os.PathLike,
    exclusions_out: str | os.PathLike,
    *,
    exclude: Mapping[str, str] | None = None,
    raw: bool = False,
) -> None:
    """Write the participants manifest and the participants-stage exclusions.

    Parameters
    ----------
    participants : path-like
        BIDS participants.tsv (tab-separated, ``n/a`` = missing) with participant_id, age
        (years), sex, site and any other columns (kept, after the manifest columns).
    dataset : str
        Dataset name written into every row (e.g. ``abide``).
    derivatives : path-like
        The fMRIPrep derivatives folder; each subject's runs are found there as
        :func:`brainage.participants.discover.find_runs` finds them for the workflow.
    selection : Selection
        Task, space, res, session, runs and BIDS filter (the ``inputs`` config).
    out : path-like
        Manifest TSV: participant_id (``sub-<label>``), dataset, site, age (float, years),
        sex (M / F / n/a), then the extra columns.
    exclusions_out : path-like
        TSV of excluded subjects: participant_id, stage (``participants``), reason.
    exclude : mapping of str to str, optional
        Subjects the user leaves out (``inputs.exclude``), participant id (with or without
        ``sub-``) -> reason; each is recorded with that reason and its files are not checked.
    raw : bool
        ``derivatives`` is a raw BIDS dataset that fMRIPrep preprocesses in this workflow
        (``inputs.source: bids``): its runs are found as :func:`raw_subject_files` finds them.

    A subject without a usable run, lacking one of its run's files (sidecar, mask, confounds),
    or whose files are another subject's (:func:`brainage.participants.inputs.input_problems`)
    is excluded with the reason.

    Raises
    ------
    InputDataError
        File-level problems: missing file or required columns, empty table, invalid or
        duplicated ids, or every subject excluded. Row-level problems (missing, non-numeric
        or out-of-range age; no run, a missing input file, or another subject's) exclude that
        subject only.
    ConfigError
        If ``exclude`` names a subject that is not in the table.
    """
    path = Path(participants)
    table = storage.read_tsv(path, dtype=str)
    _check_columns(table, path)
    labels = _labels(table["participant_id"], path)
    by_user = {pid.removeprefix("sub-"): reason for pid, reason in (exclude or {}).items()}
    unknown = sorted(f"sub-{x}" for x in set(by_user) - set(labels))
    if unknown:
        raise ConfigError(f"inputs.exclude: {', '.join(unknown)} not in {path}")
    find = raw_subject_files if raw else subject_files
    runs, file_problems = find([x for x in labels if x not in by_user], derivatives, selection)
    sessions = {label: chosen[0].entity.get("session") for label, chosen in runs.items()}
    raw_ages, wheres = table["age"].tolist(), [f"{path} row {row}" for row in range(1, len(table) + 1)]
    for i, label in enumerate(labels):
        found = session_age([path.parent, Path(derivatives)], label, sessions.get(label))
        if found is not None:
            raw_ages[i], wheres[i] = found
    ages = pd.to_numeric(pd.Series(raw_ages, dtype=object), errors="coerce").astype(float)
    reasons = []
    for label, raw, age, where in zip(labels, raw_ages, ages, wheres):
        if label in by_user:
            reasons.append(f"excluded in the config (inputs.exclude): {by_user[label]}")
            log.info("excluding sub-%s: %s", label, reasons[-1])
            continue
        reason = age_problem(raw, age, where)
        if reason is None:
            reason = file_problems.get(label)
        if reason is not None:
            log.warning("excluding sub-%s: %s", label, reason)
        reasons.append(reason)
    keep = np.array([r is None for r in reasons])
    if not keep.any():
        raise InputDataError(f"{path}: all {len(table)} participants were excluded (reasons logged above)")

    manifest = _manifest(table, labels, ages, dataset, path)
    if any(sessions.values()) and "session" not in manifest.columns:
        manifest["session"] = [sessions.get(label) or "n/a" for label in labels]
    excluded = [(f"sub-{x}", STAGE, r) for x, r in zip(labels, reasons) if r is not None]
    exclusions = storage.exclusions_frame(excluded)
    write_tsv(out, manifest[keep].reset_index(drop=True))
    write_tsv(exclusions_out, exclusions)
    log.info("%s: %d participants kept, %d excluded", path, int(keep.sum()), int((~keep).sum()))


def session_age(roots: Sequence[Path], label: str, session: str | None) -> tuple[str, str] | None:
    """The age of ``sub-<label>`` at ``session`` from a BIDS ``sub-<label>/sub-<label>_sessions.tsv``.

    Longitudinal datasets (NKI-RS, CoRR) record the age per session there; it wins over
    participants.tsv's age. The first of ``roots`` (the raw dataset holding participants.tsv,
    then the derivatives) that has the file is read.

    Returns
    -------
    (raw age, where) or None
        The age as written (checked like participants.tsv's) and "<file> row <n>"; None without a
        session, a sessions file, an ``age`` column or a row for the session.
    """
    if session is None:
        return None
    for root in roots:
        path = Path(root, f"sub-{label}", f"sub-{label}_sessions.tsv")
        if not path.is_file():
            continue
        table = storage.read_tsv(path, dtype=str)
        storage.require_columns(table, path, ["session_id"], "sessions table")
        if "age" not in table.columns:
            return None
        rows = [i for i, s in enumerate(table["session_id"].fillna("")) if s.strip().removeprefix("ses-") == session]
        if not rows:
            log.warning("%s: no row for session ses-%s; the age of participants.tsv is used", path, session)
            return None
        return table["age"].iloc[rows[0]], f"{path} row {rows[0] + 1}"
    return None


def _manifest(
    table: pd.DataFrame, labels: list[str], ages: pd.Series, dataset: str, path: Path
) -> pd.DataFrame:
    """The manifest columns in their fixed order, then the table's other columns."""
    if "dataset" in table.columns:
        log.warning("%s: its 'dataset' column is replaced by the dataset name %r", path, dataset)
    extra = [c for c in table.columns if c not in MANIFEST_COLUMNS]
    manifest = pd.DataFrame(
        {
            "participant_id": [f"sub-{x}" for x in labels],
            "dataset": dataset,
            "site": table["site"].str.strip(),
            "age": ages,
            "sex": _normalise_sex(table["sex"], path),
        }
    )
    return pd.concat([manifest, table[extra]], axis=1)
