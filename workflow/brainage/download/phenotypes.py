"""INDI dataset entries and phenotype files -> one normalised manifest per dataset."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.errors import ConfigError, InputDataError
from brainage.participants import age_problem
from brainage.storage import EXCLUSION_COLUMNS, exclusions_frame, require_columns
from brainage.storage import INDI_MANIFEST_COLUMNS as MANIFEST_COLUMNS

log = logging.getLogger(__name__)

DATASETS = ("abide_pcp", "adhd200", "nki_rs", "corr")
STAGE = "download"
ENTRY_KEYS = ("name", "pipeline", "strategy", "derivative", "sites", "age_min", "age_max",
              "max_subjects", "qc_pass", "task", "sessions")
ABIDE_PHENOTYPE = "Phenotypic_V1_0b_preprocessed1.csv"
ABIDE_PIPELINES = ("cpac", "ccs", "dparsf", "niak")
ABIDE_STRATEGIES = ("filt_global", "filt_noglobal", "nofilt_global", "nofilt_noglobal")
# PCP derivatives that are time series brainage can use: ROI series (.1D) and preprocessed volumes.
# nilearn's fetch_abide_pcp also lists alff, falff, reho, vmhc, degree_*, eigenvector_*, lfcd,
# dual_regression and func_mean: single maps, no time axis.
ABIDE_DERIVATIVES = ("func_preproc", "rois_aal", "rois_cc200", "rois_cc400", "rois_dosenbach160",
                     "rois_ez", "rois_ho", "rois_tt")
ABIDE_MASK = "func_mask"  # PCP brain mask of func_preproc (a derivative in nilearn's list)


@dataclass(frozen=True)
class _Format:
    """How a raw BIDS dataset writes its phenotype tables (sources: see indi.LAYOUTS)."""

    id_width: int | None = None  # numeric ids are zero-padded to this width in folder names
    na_values: tuple[str, ...] = ()  # extra missing-value codes
    site: str | None = None  # single-site dataset label; None = the folder holding participants.tsv


_FORMATS = {
    # ADHD-200: ids unpadded (26001 -> sub-0026001), -999 = missing (brainmarks-smri build_tables.py).
    "adhd200": _Format(id_width=7, na_values=("-999",)),
    "nki_rs": _Format(site="NKI"),
    "corr": _Format(id_width=7),  # folders sub-0003001 (7 digits); table ids assumed the same or unpadded
}


# PCP functional QC: rater 1's rating and the functional ratings of raters 2 and 3 (the columns of
# the PCP quality-assessment-protocol poster_data/abide_func.csv that the phenotype file also has).
# nilearn's fetch_abide_pcp(quality_checked=True) also checks the anatomical raters and accepts
# "maybe" from rater 2; we require "OK" from every functional rater, as the config documents.
ABIDE_QC_COLUMNS = ("qc_rater_1", "qc_func_rater_2", "qc_func_rater_3")
_ABIDE_REQUIRED = ("SUB_ID", "FILE_ID", "SITE_ID", "AGE_AT_SCAN", "SEX", "DX_GROUP")
_ABIDE_EXTRA = ("func_mean_fd", *ABIDE_QC_COLUMNS)
# ABIDE codes (ABIDE phenotypic key; nilearn fetch_abide_pcp docs): SEX 1 = male, 2 = female;
# DX_GROUP 1 = autism, 2 = typical development.
_ABIDE_SEX = {"1": "M", "2": "F"}
_ABIDE_DX = {"1": "ASD", "2": "TD"}
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}  # numeric codes differ by dataset: not guessed
_AGE_COLUMNS = ("age", "age_at_scan")
_SEX_COLUMNS = ("sex", "gender")  # ADHD-200 participants.tsv: gender Male/Female
# ADHD-200 dx: names in participants.tsv, codes in the competition CSVs (ADHD-200_PhenotypicKey.pdf:
# 0 = typically developing, 1-3 = ADHD subtypes).
_ADHD_TD = {"typically developing children", "typically developing", "tdc", "0"}
_ADHD = re.compile(r"^(adhd.*|[123])$")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def validate_entry(entry: dict) -> None:
    """Check the ``datasets`` entry values the download stage depends on; ``ConfigError`` names the key."""
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise ConfigError(f"datasets entry {entry.get('name')!r} lacks keys {missing} (the schema fills them)")
    name = entry["name"]
    if name not in DATASETS:
        raise ConfigError(f"datasets: name {name!r} is not one of {list(DATASETS)}")
    if name == "abide_pcp":
        for key, allowed in (("pipeline", ABIDE_PIPELINES), ("strategy", ABIDE_STRATEGIES),
                             ("derivative", ABIDE_DERIVATIVES)):
            if entry[key] not in allowed:
                raise ConfigError(f"datasets[{name}].{key}: {entry[key]!r} is not one of {list(allowed)}")
    for label in (entry["task"], *(str(s).removeprefix("ses-") for s in entry["sessions"])):
        if not _LABEL.match(str(label)):
            raise ConfigError(f"datasets[{name}]: {label!r} is not a BIDS label (letters and digits)")
    if entry["max_subjects"] is not None and entry["max_subjects"] < 1:
        raise ConfigError(f"datasets[{name}].max_subjects: {entry['max_subjects']} is below 1 (null keeps all)")
    low, high = entry["age_min"], entry["age_max"]
    if low is not None and high is not None and low > high:
        raise ConfigError(f"datasets[{name}]: age_min {low} is greater than age_max {high}")


def read_phenotype(path: Path, sep: str, na_values: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a phenotype table as text; UTF-8, else latin-1 (the ADHD-200 files are latin-1)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise InputDataError(f"{path}: cannot read phenotype file ({err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                            na_values=["", "n/a", "NA", *na_values])
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise InputDataError(f"{path}: unreadable phenotype table ({err})") from err
    table.columns = [str(c).strip() for c in table.columns]
    return table


def normalise_phenotypes(entry: dict, files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise a dataset's phenotype file(s) into a manifest and its exclusions.

    Parameters
    ----------
    entry : dict
        One item of the config list ``datasets``.
    files : dict of str to Path
        Bucket key -> local path of each file from :func:`brainage.download.indi.phenotype_keys`.
        Raw BIDS: the age is the first selected session's (``entry["sessions"]`` in the user's
        order, else sessions sorted by label) from ``session_id``/``sub-*_sessions.tsv`` ages, else
        the participant's age in participants.tsv.

    Returns
    -------
    manifest : DataFrame
        MANIFEST_COLUMNS first: participant_id (``sub-<label>``; ABIDE: 7-digit SUB_ID), dataset,
        site, age (float, years), sex (M / F / NA), diagnosis (ABIDE ASD/TD, ADHD-200 ADHD/TD,
        else NA), source_id (the dataset's own id: ABIDE FILE_ID, else the id as written). Extra
        columns: ABIDE func_mean_fd and the functional QC ratings; raw BIDS ``session`` (the
        session whose age is given, NA when the age is the participant's). Sorted by participant_id.
    exclusions : DataFrame
        participant_id, stage (``download``), reason: rows without usable data (ABIDE FILE_ID
        no_filename; missing, non-numeric or out-of-range age; conflicting duplicate rows).

    Raises
    ------
    InputDataError
        File-level problems: unreadable file, missing required column, invalid or duplicated ids.
    """
    validate_entry(entry)
    if entry["name"] == "abide_pcp":
        manifest, exclusions = _abide(files)
    else:
        manifest, exclusions = _bids(entry, files)
    log.info("%s: %d participants usable, %d excluded", entry["name"], len(manifest), len(exclusions))
    return manifest.sort_values("participant_id", ignore_index=True), exclusions.reset_index(drop=True)


def _abide(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if len(files) != 1 or not next(iter(files)).endswith(ABIDE_PHENOTYPE):
        raise InputDataError(f"abide_pcp: expected one {ABIDE_PHENOTYPE}, got {sorted(files)}")
    path = next(iter(files.values()))
    table = read_phenotype(path, ",")
    require_columns(table, path, _ABIDE_REQUIRED, "ABIDE PCP phenotype table")
    sub_id = pd.to_numeric(table["SUB_ID"], errors="coerce")
    bad = [i + 1 for i, v in enumerate(sub_id) if np.isnan(v) or v != int(v)]
    if bad:
        raise InputDataError(f"{path}: SUB_ID is not an integer in rows {bad[:10]}")
    ids = pd.Series([f"sub-{int(v):07d}" for v in sub_id])
    _unique(ids, path)
    ages = pd.to_numeric(table["AGE_AT_SCAN"], errors="coerce").astype(float)
    reasons = []
    for row, (file_id, raw, age) in enumerate(zip(table["FILE_ID"], table["AGE_AT_SCAN"], ages), start=1):
        if file_id == "no_filename" or not isinstance(file_id, str):
            reasons.append(f"no preprocessed data in ABIDE PCP (FILE_ID no_filename) in {path}")
        else:
            reasons.append(age_problem(raw, age, f"{path} row {row}"))
    manifest = pd.DataFrame({
        "participant_id": ids, "dataset": "abide_pcp", "site": table["SITE_ID"].str.strip(), "age": ages,
        "sex": _coded(table["SEX"], _ABIDE_SEX, "SEX", path),
        "diagnosis": _coded(table["DX_GROUP"], _ABIDE_DX, "DX_GROUP", path), "source_id": table["FILE_ID"],
    })
    manifest = pd.concat([manifest, table[[c for c in _ABIDE_EXTRA if c in table.columns]]], axis=1)
    manifest["func_mean_fd"] = pd.to_numeric(manifest.get("func_mean_fd"), errors="coerce")
    return _split(manifest, ids, reasons)


def _coded(values: pd.Series, codes: dict[str, str], column: str, path: Path) -> pd.Series:
    out = values.str.strip().map(codes)
    unknown = sorted(set(values[values.notna() & out.isna()]))
    if unknown:
        log.warning("%s: %s codes %s are not in %s; written as NA", path, column, unknown, sorted(codes))
    return out


def _unique(ids: pd.Series, where: object) -> None:
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise InputDataError(f"{where}: duplicated participant ids {dup[:10]}")


def _split(manifest: pd.DataFrame, ids: pd.Series, reasons: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows with a reason become exclusions; the others stay in the manifest."""
    keep = np.array([r is None for r in reasons], dtype=bool)
    excluded = pd.DataFrame({"participant_id": ids[~keep].to_numpy(), "stage": STAGE,
                             "reason": [r for r in reasons if r is not None]})
    return manifest[keep], excluded[list(EXCLUSION_COLUMNS)]


def _bids(entry: dict, files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """participants.tsv (per site or at the root) + optional sub-*_sessions.tsv -> manifest."""
    layout = _FORMATS[entry["name"]]
    sessions_files = {k: p for k, p in files.items() if k.endswith("_sessions.tsv")}
    people_files = {k: p for k, p in files.items() if k.endswith("/participants.tsv")}
    other = sorted(set(files) - set(sessions_files) - set(people_files))
    if other or not people_files:
        raise InputDataError(f"{entry['name']}: expected participants.tsv and sub-*_sessions.tsv, got {sorted(files)}")
    session_ages = [_read_sessions(k, p, layout) for k, p in sorted(sessions_files.items())]
    need_age = not any(len(t) for t in session_ages)
    read = [_read_people(entry, k, p, layout, need_age) for k, p in sorted(people_files.items())]
    people, per_session = (list(t) for t in zip(*read))
    people = pd.concat(people, ignore_index=True)
    sessions = pd.concat([*session_ages, *per_session], ignore_index=True)
    people, excluded = _deduplicate(people)
    ages, age_session, reasons = _ages(people, sessions, entry["sessions"])
    manifest = people[["participant_id", "site", "sex", "diagnosis", "source_id"]].copy()
    manifest.insert(1, "dataset", entry["name"])
    manifest.insert(3, "age", ages)
    manifest["session"] = age_session
    manifest, more = _split(manifest, people["participant_id"], reasons)
    return manifest, pd.concat([excluded, more], ignore_index=True)


def _label(raw: str, layout: _Format, where: str) -> str:
    label = raw.strip().removeprefix("sub-")
    if layout.id_width and label.isdigit():
        label = label.zfill(layout.id_width)  # folder names are zero-padded, the tables often not
    if not _LABEL.match(label):
        raise InputDataError(f"{where}: participant id {raw!r} is not a BIDS label (letters and digits)")
    return label


def _first_column(table: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in table.columns}
    return next((lowered[n] for n in names if n in lowered), None)


def _read_people(entry: dict, key: str, path: Path, layout: _Format, need_age: bool):
    """One participants.tsv -> (participant rows, per-session age rows when it has session_id)."""
    table = read_phenotype(path, "\t", layout.na_values)
    require_columns(table, path, ["participant_id"], "participants table")
    age_col, sex_col = _first_column(table, _AGE_COLUMNS), _first_column(table, _SEX_COLUMNS)
    if age_col is None and need_age:
        raise InputDataError(f"{path} ({key}): no age column (expected one of {list(_AGE_COLUMNS)}, "
                             f"found {list(table.columns)}) and no sub-*_sessions.tsv gives ages")
    if sex_col is None:
        log.warning("%s: no sex column (expected one of %s); sex written as NA", path, list(_SEX_COLUMNS))
    site = layout.site or Path(key).parent.name
    rows = [f"{path} row {i}" for i in range(1, len(table) + 1)]
    labels = [_label(str(v), layout, w) if isinstance(v, str) else _label("", layout, w)
              for v, w in zip(table["participant_id"], rows)]
    people = pd.DataFrame({
        "participant_id": [f"sub-{x}" for x in labels], "site": site,
        "sex": table[sex_col].str.strip().str.lower().map(_SEX) if sex_col else pd.NA,
        "diagnosis": _adhd_dx(table, path) if entry["name"] == "adhd200" else pd.NA,
        "source_id": table["participant_id"].str.strip(),
        "age_raw": table[age_col] if age_col else pd.NA, "where": rows,
    })
    per_session = pd.DataFrame(columns=["participant_id", "session", "age_raw", "where"])
    ses_col = _first_column(table, ("session_id",))
    if ses_col is not None:  # one row per session: ages are the sessions', not the participant's
        per_session = people[["participant_id", "age_raw", "where"]].assign(
            session=table[ses_col].str.strip().str.removeprefix("ses-"))
        people["age_raw"] = pd.NA
    return people, per_session


def _adhd_dx(table: pd.DataFrame, path: Path) -> pd.Series:
    if "dx" not in table.columns:  # Brown: labels never released (brainmarks-smri README)
        return pd.Series(pd.NA, index=table.index)
    value = table["dx"].str.strip().str.lower()
    out = value.map(lambda v: "TD" if v in _ADHD_TD else "ADHD" if isinstance(v, str) and _ADHD.match(v) else pd.NA)
    unknown = sorted(set(table["dx"][value.notna() & out.isna()]))
    if unknown:
        log.warning("%s: dx values %s are neither ADHD nor typically developing; written as NA", path, unknown)
    return out


def _read_sessions(key: str, path: Path, layout: _Format) -> pd.DataFrame:
    """sub-<label>_sessions.tsv -> participant_id, session, age_raw, where (empty without an age column)."""
    label = _label(Path(key).name.removesuffix("_sessions.tsv"), layout, key)
    table = read_phenotype(path, "\t", layout.na_values)
    require_columns(table, path, ["session_id"], "sessions table")
    age_col = _first_column(table, _AGE_COLUMNS)
    if age_col is None:
        return pd.DataFrame(columns=["participant_id", "session", "age_raw", "where"])
    return pd.DataFrame({"participant_id": f"sub-{label}",
                         "session": table["session_id"].str.strip().str.removeprefix("ses-"),
                         "age_raw": table[age_col], "where": [f"{path} row {i}" for i in range(1, len(table) + 1)]})


def _deduplicate(people: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Identical repeated rows are dropped (ADHD-200 lists some test subjects twice); conflicting ones excluded."""
    compared = ["participant_id", "site", "sex", "diagnosis", "age_raw"]
    groups = people.groupby("participant_id", sort=False)
    rows, excluded = [], []
    for pid, group in groups:
        if len(group[compared].astype(str).drop_duplicates()) == 1:
            rows.append(group.index[0])
        else:
            reason = f"conflicting phenotype rows: {', '.join(group['where'])}"
            log.warning("excluding %s: %s", pid, reason)
            excluded.append((pid, STAGE, reason))
    return people.loc[rows].reset_index(drop=True), exclusions_frame(excluded)


def _ages(people: pd.DataFrame, sessions: pd.DataFrame, wanted: list[str]):
    """Age per participant: the first wanted session with an age (sessions in the user's order, else
    sorted), else the participant-level age. Returns ages (float), sessions (str/NA), reasons."""
    wanted = [s.removeprefix("ses-") for s in wanted]
    by_pid = {pid: g for pid, g in sessions.dropna(subset=["age_raw"]).groupby("participant_id")}
    ages, chosen, reasons = [], [], []
    for pid, raw, where in zip(people["participant_id"], people["age_raw"], people["where"]):
        rows = by_pid.get(pid)
        session = None
        if rows is not None:
            order = wanted or sorted(rows["session"].dropna())
            hit = [s for s in order if s in set(rows["session"])]
            if hit:
                session = hit[0]
                first = rows[rows["session"] == session].iloc[0]
                raw, where = first["age_raw"], first["where"]
        age = pd.to_numeric(pd.Series([raw]), errors="coerce").astype(float).iloc[0]
        ages.append(age)
        chosen.append(session if session is not None else pd.NA)
        reasons.append(age_problem(raw, age, where))
    return ages, chosen, reasons
