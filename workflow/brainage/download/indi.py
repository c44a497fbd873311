"""INDI bucket layouts, the user's subject selection, and the keys to fetch for each subject."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainage.download.phenotypes import (
    ABIDE_MASK,
    ABIDE_PHENOTYPE,
    ABIDE_QC_COLUMNS,
    DATASETS,
    MANIFEST_COLUMNS,
    STAGE,
    normalise_phenotypes,
    validate_entry,
)
from brainage.errors import ConfigError
from brainage.storage import exclusions_frame, require_columns

log = logging.getLogger(__name__)

# The download stage's one entry point (normalise_phenotypes and validate_entry re-exported).
__all__ = ["DATASETS", "MANIFEST_COLUMNS", "LAYOUTS", "dataset_prefix", "is_pcp_series", "is_raw_bids", "normalise_phenotypes",
           "phenotype_keys", "select", "subject_keys", "validate_entry"]
KEY_COLUMNS = ("participant_id", "kind", "key")


@dataclass(frozen=True)
class Layout:
    """Where a dataset lives in the bucket.

    prefix : bucket prefix of the dataset (no trailing slash).
    per_site : each ``<prefix>/<site>/`` is its own BIDS dataset (participants.tsv per site).
    """

    prefix: str
    per_site: bool = False


LAYOUTS = {
    # ABIDE I Preprocessed Connectomes Project. Keys as built by nilearn.datasets.fetch_abide_pcp
    # (nilearn 0.13.1, nilearn/datasets/func.py): <prefix>/Phenotypic_V1_0b_preprocessed1.csv and
    # <prefix>/Outputs/<pipeline>/<strategy>/<derivative>/<FILE_ID>_<derivative><.1D|.nii.gz>;
    # rows with FILE_ID "no_filename" have no files.
    "abide_pcp": Layout("data/Projects/ABIDE_Initiative"),
    # ADHD-200, one BIDS dataset per site: <site>/participants.tsv (latin-1; ids unpadded, e.g.
    # 26001; columns gender, age, dx; -999 = missing; some test subjects listed twice),
    # <site>/sub-<7 digits>/ses-<n>/anat/*_run-1_T1w.nii.gz, site-level T1w.json and
    # dataset_description.json. Sources: github.com/MedARC-AI/brainmarks-smri
    # scripts/adhd200/{README.md,build_tables.py,manifest.sha256} (S3 listing of 2026-10-01). Func
    # names and the site-level bold sidecar: github.com/FCP-INDI/cpac tests/test_remapping.py
    # (KKI/sub-2014113/ses-1/func/sub-2014113_ses-1_task-rest_acq-2_run-1_bold.nii.gz,
    # KKI/task-rest_acq-2_bold.json).
    "adhd200": Layout("data/Projects/ADHD200/RawDataBIDS", per_site=True),
    # Enhanced NKI-Rockland Sample: sub-A<8 digits>/ses-<visit, e.g. BAS1>/{anat,func}/ with a JSON
    # sidecar beside each image; rest runs task-rest_acq-645 / acq-1400 / acq-CAP. Sources: INDI's
    # downloader (github.com/FCP-INDI/rocklandsample download_rockland_raw_bids.py: SERIES_MAP,
    # root participants.tsv with participant_id without "sub-", age, sex MALE/FEMALE, handedness,
    # sub-*/sub-*_sessions.tsv with session_id), its _ver2 using RawDataBIDSLatest, and public
    # scripts fetching .../RawDataBIDSLatest/sub-A00039636/ses-BAS1/anat/sub-A00039636_ses-BAS1_T1w.json.
    # NOT confirmed: that RawDataBIDSLatest keeps the root participants.tsv and its columns (the
    # downloader above reads the older RawDataBIDS); normalisation also accepts a session_id column
    # and sub-*_sessions.tsv ages.
    "nki_rs": Layout("data/Projects/RocklandSample/RawDataBIDSLatest"),
    # CoRR, one BIDS dataset per site: <site>/sub-<7 digits>/ses-<n>/anat/*_run-1_T1w.nii.gz,
    # func/*_task-rest_run-<n>_bold.nii.gz, <site>/sub-*/sub-*_sessions.tsv, site-level T1w.json.
    # Sources: github.com/preprocessed-connectomes-project/quality-assessment-protocol
    # qap/test_script_utils.py and qap/test_bids_utils.py (BMB_1 listing) and a public BNU_1
    # download script selecting <site>/participants.tsv and sub-*_sessions.tsv. NOT confirmed:
    # the columns of those tables (age is read from participants.tsv or sessions.tsv: age,
    # age_at_scan; sex M/F/male/female, numeric codes are not guessed).
    "corr": Layout("data/Projects/CORR/RawDataBIDS", per_site=True),
}

_IMAGE = re.compile(r"\.nii(\.gz)?$")


def is_raw_bids(entry: dict) -> bool:
    """True for datasets stored as raw BIDS (preprocessed by fMRIPrep later), False for ABIDE PCP."""
    validate_entry(entry)
    return entry["name"] != "abide_pcp"


def is_pcp_series(entry: dict) -> bool:
    """True for ABIDE PCP ROI series (``rois_*``): converted as distributed, never extracted."""
    validate_entry(entry)
    return entry["name"] == "abide_pcp" and entry["derivative"] != "func_preproc"


def dataset_prefix(entry: dict) -> str:
    """Bucket prefix (no trailing slash) that the dataset's files live under.

    For ``abide_pcp`` every key is computed from the phenotype file: there is no need to list
    this (very large) prefix.
    """
    validate_entry(entry)
    return LAYOUTS[entry["name"]].prefix


def _relative(key: str, prefix: str) -> str | None:
    return key[len(prefix) + 1 :] if key.startswith(prefix + "/") else None


def phenotype_keys(entry: dict, listing: list[str]) -> list[str]:
    """Keys of the phenotype files to download, sorted.

    Parameters
    ----------
    entry : dict
        One item of the config list ``datasets``.
    listing : list of str
        Every key under :func:`dataset_prefix` (may be empty for ``abide_pcp``).

    Returns
    -------
    list of str
        ``abide_pcp``: the PCP phenotype CSV. Raw BIDS: each BIDS root's ``participants.tsv``
        (one per site for adhd200 and corr) and every ``sub-*/sub-*_sessions.tsv``.

    Raises
    ------
    ConfigError
        If the listing holds no participants.tsv where the layout expects one.
    """
    layout = LAYOUTS[entry["name"]]
    validate_entry(entry)
    if entry["name"] == "abide_pcp":
        return [f"{layout.prefix}/{ABIDE_PHENOTYPE}"]
    depth = 2 if layout.per_site else 1  # <site>/participants.tsv or participants.tsv
    sessions = re.compile(r"(^|/)sub-([A-Za-z0-9]+)/sub-\2_sessions\.tsv$")
    keys = []
    for key in listing:
        rel = _relative(key, layout.prefix)
        if rel is None:
            continue
        parts = rel.split("/")
        if (len(parts) == depth and parts[-1] == "participants.tsv") or (
            len(parts) == depth + 1 and sessions.search(rel)
        ):
            keys.append(key)
    if not any(k.endswith("/participants.tsv") for k in keys):
        where = f"{layout.prefix}/<site>/" if layout.per_site else f"{layout.prefix}/"
        raise ConfigError(
            f"datasets[{entry['name']}]: no participants.tsv under {where} among {len(listing)} listed keys"
        )
    return sorted(keys)


def select(entry: dict, manifest: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the user's filters: sites, age_min/age_max, qc_pass (abide_pcp), max_subjects, exclude.

    Parameters
    ----------
    entry : dict
        One item of the config list ``datasets``.
    manifest : DataFrame
        The dataset's normalised manifest (:func:`brainage.download.phenotypes.normalise_phenotypes`).
    seed : int
        The config seed; the ``max_subjects`` sample is drawn with ``numpy.random.default_rng(seed)``
        from the rows sorted by participant_id, so it does not depend on the input order.

    Returns
    -------
    selected : DataFrame
        The kept rows, sorted by participant_id.
    exclusions : DataFrame
        Subjects excluded by name (``exclude``, with the user's reason) and QC failures (reason
        naming the rater columns and values), stage ``download``; the site, age and sample filters
        are the user's choice, logged as counts, not exclusions.

    Raises
    ------
    ConfigError
        Unknown site names (the message lists the available ones), ``qc_pass`` on a dataset
        without PCP QC, no participant left after the site and age filters, or an ``exclude``
        id that is not in the phenotype table.
    """
    validate_entry(entry)
    name = entry["name"]
    require_columns(manifest, f"{name} manifest", MANIFEST_COLUMNS, "manifest")
    if entry["qc_pass"] and name != "abide_pcp":
        raise ConfigError(f"datasets[{name}].qc_pass: only abide_pcp has PCP QC ratings; set it to false")
    kept = manifest.sort_values("participant_id", kind="stable").reset_index(drop=True)
    if entry["sites"]:
        kept = _filter_sites(kept, entry["sites"], name)
    if entry["age_min"] is not None:
        kept = _log_filter(kept, kept["age"] >= entry["age_min"], name, f"age >= {entry['age_min']}")
    if entry["age_max"] is not None:
        kept = _log_filter(kept, kept["age"] <= entry["age_max"], name, f"age <= {entry['age_max']}")
    if kept.empty:
        raise ConfigError(f"datasets[{name}]: no participant left after the site and age filters")
    exclusions = exclusions_frame()
    if entry["qc_pass"]:
        kept, exclusions = _qc(kept)
    if entry["max_subjects"] is not None and entry["max_subjects"] < len(kept):
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(kept), size=entry["max_subjects"], replace=False))
        log.info("%s: max_subjects %d: sampled %d of %d (seed %d)", name, entry["max_subjects"],
                 len(pick), len(kept), seed)
        kept = kept.iloc[pick]
    # Last, so that excluding a subject leaves the others (and the max_subjects sample) unchanged.
    kept, by_config = _exclude(kept, manifest, entry.get("exclude", {}), name)
    return kept.reset_index(drop=True), pd.concat([by_config, exclusions], ignore_index=True)


def _exclude(kept: pd.DataFrame, manifest: pd.DataFrame, exclude: dict[str, str], name: str):
    """Drop the subjects the user excluded by name (``datasets[].exclude``), recording each reason."""
    wanted = {f"sub-{pid.removeprefix('sub-')}": reason for pid, reason in exclude.items()}
    unknown = sorted(set(wanted) - set(manifest["participant_id"]))
    if unknown:
        raise ConfigError(f"datasets[{name}].exclude: {unknown} not in the dataset's phenotype table")
    drop = kept["participant_id"].isin(list(wanted))
    rows = [(pid, STAGE, f"excluded in the config (datasets[{name}].exclude): {wanted[pid]}")
            for pid in kept.loc[drop, "participant_id"]]
    if rows:
        log.info("%s: exclude: %d subjects excluded by the config", name, len(rows))
    return kept[~drop.to_numpy()], exclusions_frame(rows)


def _filter_sites(table: pd.DataFrame, sites: list[str], name: str) -> pd.DataFrame:
    available = sorted(set(table["site"].dropna()))
    unknown = sorted(set(sites) - set(available))
    if unknown:
        raise ConfigError(f"datasets[{name}].sites: unknown sites {unknown}; available: {available}")
    return _log_filter(table, table["site"].isin(sites), name, f"sites {sites}")


def _log_filter(table: pd.DataFrame, mask: pd.Series, name: str, what: str) -> pd.DataFrame:
    log.info("%s: %s: kept %d of %d", name, what, int(mask.sum()), len(table))
    return table[mask.to_numpy()]


def _qc(kept: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep subjects every PCP functional rater rated OK; the others are exclusions."""
    require_columns(kept, "abide_pcp manifest", ABIDE_QC_COLUMNS, "manifest (PCP QC ratings)")
    reasons = []
    for _, row in kept[list(ABIDE_QC_COLUMNS)].iterrows():
        failed = [f"{c}={(row[c] if isinstance(row[c], str) else 'missing')!r}" for c in ABIDE_QC_COLUMNS
                  if row[c] != "OK"]
        reasons.append(f"PCP functional QC not passed: {', '.join(failed)}" if failed else None)
    passed = np.array([r is None for r in reasons])
    log.info("abide_pcp: qc_pass: kept %d of %d", int(passed.sum()), len(kept))
    excluded = [(pid, STAGE, r) for pid, r in zip(kept["participant_id"], reasons) if r is not None]
    return kept[passed], exclusions_frame(excluded)


def subject_keys(entry: dict, selected: pd.DataFrame, listing: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Files to fetch for the selected subjects, and the subjects that have none usable.

    Parameters
    ----------
    entry : dict
        One item of the config list ``datasets``.
    selected : DataFrame
        Selected manifest rows (participant_id, site, source_id; raw BIDS: optional ``session``,
        the session whose age the manifest holds, which restricts the files to that session).
    listing : list of str
        Every key under :func:`dataset_prefix`; ignored (may be empty) for ``abide_pcp``.

    Returns
    -------
    keys : DataFrame
        One row per file: participant_id, kind, key. ``abide_pcp``: kind ``series`` (rois_*) or
        ``bold`` + ``mask`` (func_preproc). Raw BIDS: ``anat`` (T1w), ``bold`` (task runs),
        ``sidecar`` (their JSON sidecars, inherited ones at the site/dataset root included) and
        ``description`` (the BIDS root's dataset_description.json). Shared keys (root sidecars)
        repeat once per subject.
    exclusions : DataFrame
        participant_id, stage (``download``), reason: raw BIDS subjects with no BOLD run of the
        task or no T1w in the listing (never listed in ``keys``).
    """
    validate_entry(entry)
    if entry["name"] == "abide_pcp":
        return _abide_keys(entry, selected), exclusions_frame()
    return _bids_keys(entry, selected, listing)


def _abide_keys(entry: dict, selected: pd.DataFrame) -> pd.DataFrame:
    """Computed PCP keys: <prefix>/Outputs/<pipeline>/<strategy>/<derivative>/<FILE_ID>_<derivative><ext>."""
    base = f"{LAYOUTS['abide_pcp'].prefix}/Outputs/{entry['pipeline']}/{entry['strategy']}"
    derivative = entry["derivative"]
    if derivative.startswith("rois_"):
        kinds = [("series", derivative, ".1D")]
    else:
        kinds = [("bold", derivative, ".nii.gz"), ("mask", ABIDE_MASK, ".nii.gz")]
    rows = []
    for pid, file_id in zip(selected["participant_id"], selected["source_id"]):
        if not isinstance(file_id, str) or file_id == "no_filename":
            raise ConfigError(f"abide_pcp: {pid} has no FILE_ID (found {file_id!r}); it has no PCP files")
        rows += [(pid, kind, f"{base}/{deriv}/{file_id}_{deriv}{ext}") for kind, deriv, ext in kinds]
    return pd.DataFrame(rows, columns=list(KEY_COLUMNS))


def _entities(name: str) -> tuple[dict[str, str], str]:
    """BIDS entities and suffix of a file name: 'sub-1_task-rest_bold.nii.gz' -> ({sub: 1, task: rest}, bold)."""
    parts = name.split(".")[0].split("_")
    return dict(p.split("-", 1) for p in parts[:-1] if "-" in p), parts[-1]


@dataclass(frozen=True)
class _File:
    key: str
    root: str  # BIDS root of the file (prefix or prefix/site)
    label: str
    session: str | None
    datatype: str
    name: str


def _parse_listing(layout: Layout, listing: list[str]) -> tuple[dict[str, list[_File]], dict[str, list[str]]]:
    """Subject files (anat/func) by label, and every JSON key by folder."""
    site = r"(?P<site>[^/]+)/" if layout.per_site else r"(?P<site>)"
    pattern = re.compile(
        rf"^{site}sub-(?P<label>[A-Za-z0-9]+)/(?:ses-(?P<session>[A-Za-z0-9]+)/)?"
        r"(?P<datatype>anat|func)/(?P<name>[^/]+)$"
    )
    files: dict[str, list[_File]] = {}
    jsons: dict[str, list[str]] = {}
    for key in listing:
        rel = _relative(key, layout.prefix)
        if rel is None:
            continue
        if key.endswith(".json"):
            jsons.setdefault(key.rsplit("/", 1)[0], []).append(key)
        match = pattern.match(rel)
        if match:
            root = layout.prefix + (f"/{match['site']}" if layout.per_site else "")
            item = _File(key, root, match["label"], match["session"], match["datatype"], match["name"])
            files.setdefault(match["label"], []).append(item)
    return files, jsons


def _sidecars(image: _File, jsons: dict[str, list[str]]) -> list[str]:
    """JSON sidecars that apply to ``image`` under the BIDS inheritance principle."""
    entities, suffix = _entities(image.name)
    folder, found = image.key.rsplit("/", 1)[0], []
    while folder.startswith(image.root):
        for key in jsons.get(folder, []):
            ents, suf = _entities(key.rsplit("/", 1)[1])
            if suf == suffix and all(entities.get(k) == v for k, v in ents.items()):
                found.append(key)
        folder = folder.rsplit("/", 1)[0] if folder != image.root else ""
    return found


def _wanted(item: _File, task: str) -> str | None:
    """Kind of a subject file, or None: T1w images and BOLD runs of ``task``."""
    entities, suffix = _entities(item.name)
    if not _IMAGE.search(item.name):
        return None
    if item.datatype == "anat" and suffix == "T1w":
        return "anat"
    if item.datatype == "func" and suffix == "bold" and entities.get("task") == task:
        return "bold"
    return None


def _bids_keys(entry: dict, selected: pd.DataFrame, listing: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    layout = LAYOUTS[entry["name"]]
    files, jsons = _parse_listing(layout, listing)
    user_sessions = [s.removeprefix("ses-") for s in entry["sessions"]]
    has_session = "session" in selected.columns
    rows, excluded = [], []
    for i, pid in enumerate(selected["participant_id"]):
        label = pid.removeprefix("sub-")
        site = selected["site"].iloc[i]
        own = [f for f in files.get(label, []) if not layout.per_site or f.root.endswith(f"/{site}")]
        chosen = selected["session"].iloc[i] if has_session else None
        sessions = [chosen] if isinstance(chosen, str) else user_sessions
        in_sessions = [f for f in own if not sessions or f.session is None or f.session in sessions]
        kinds = {f.key: _wanted(f, entry["task"]) for f in own}
        bold = [f for f in in_sessions if kinds[f.key] == "bold"]
        # fMRIPrep uses any session's T1w, so fall back to the other sessions when needed.
        anat = [f for f in in_sessions if kinds[f.key] == "anat"] or [f for f in own if kinds[f.key] == "anat"]
        where = f"{own[0].root if own else layout.prefix}/sub-{label}/"
        reason = _missing(bold, anat, entry["task"], sessions, where)
        if reason:
            log.warning("excluding %s: %s", pid, reason)
            excluded.append((pid, STAGE, reason))
            continue
        for image in anat + bold:
            rows.append((pid, kinds[image.key], image.key))
            rows += [(pid, "sidecar", key) for key in _sidecars(image, jsons)]
        description = f"{anat[0].root}/dataset_description.json"
        if description in jsons.get(anat[0].root, []):
            rows.append((pid, "description", description))
    keys = pd.DataFrame(rows, columns=list(KEY_COLUMNS)).drop_duplicates(ignore_index=True)
    log.info("%s: %d files for %d subjects; %d subjects without usable images",
             entry["name"], len(keys), keys["participant_id"].nunique(), len(excluded))
    return keys, exclusions_frame(excluded)


def _missing(bold: list, anat: list, task: str, sessions: list[str], where: str) -> str | None:
    scope = f" in sessions {sessions}" if sessions else ""
    if not bold:
        return f"no BOLD run of task-{task}{scope} under {where} in the bucket listing"
    if not anat:
        return f"no T1w image under {where} in the bucket listing (fMRIPrep needs one)"
    return None
