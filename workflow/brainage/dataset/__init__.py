"""Cohort and folds: manifest subjects that passed extraction QC, one fold table for every model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainage.errors import ConfigError, InputDataError
from brainage.preprocess.qc import motion_exclusions
from brainage.splits import held_out, make_splits
from brainage import storage
from brainage.storage import EXCLUSION_COLUMNS, MANIFEST_COLUMNS, read_json, write_table, write_tsv

log = logging.getLogger(__name__)

QC_KEYS = ("participant_id", "stage", "status", "reason", "n_frames_kept", "n_timepoints", "mean_fd")
QC_STATUSES = ("included", "excluded")
STAGE = "dataset"


@dataclass(frozen=True)
class DatasetParams:
    """The ``dataset`` config section (defaults live in config.schema.yaml, not here)."""

    n_folds: int
    group_by_site: bool
    test_sites: tuple[str, ...]
    test_datasets: tuple[str, ...]

    @classmethod
    def from_dict(cls, params: dict) -> DatasetParams:
        """Build from the config section; error on missing or unknown keys, or names not in a list."""
        expected = {"n_folds", "group_by_site", "test_sites", "test_datasets"}
        missing, unknown = expected - params.keys(), params.keys() - expected
        if missing or unknown:
            raise ConfigError(
                f"dataset params: expected keys {sorted(expected)}, missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        for key in ("test_sites", "test_datasets"):
            # A bare string would otherwise be split into its letters.
            if not isinstance(params[key], list):
                raise ConfigError(f"dataset.{key}: expected a list of names, found {params[key]!r}")
        return cls(
            n_folds=int(params["n_folds"]),
            group_by_site=bool(params["group_by_site"]),
            test_sites=tuple(str(s) for s in params["test_sites"]),
            test_datasets=tuple(str(d) for d in params["test_datasets"]),
        )

    def as_dict(self) -> dict:
        """The section as plain JSON values (for provenance)."""
        return {"n_folds": self.n_folds, "group_by_site": self.group_by_site,
                "test_sites": list(self.test_sites), "test_datasets": list(self.test_datasets)}


def read_qc(path: str | os.PathLike) -> dict:
    """Read one subject's extraction QC record and check its keys and status.

    Returns
    -------
    dict
        The record, ``participant_id`` normalised to ``sub-<label>``.

    Raises
    ------
    InputDataError
        If keys are missing or ``status`` is not ``included`` / ``excluded``.
    """
    record = read_json(path)
    missing = [k for k in QC_KEYS if k not in record]
    if missing:
        raise InputDataError(f"{path}: QC record lacks keys {missing} (expected {list(QC_KEYS)})")
    if record["status"] not in QC_STATUSES:
        raise InputDataError(f"{path}: QC status {record['status']!r}, expected one of {list(QC_STATUSES)}")
    record["participant_id"] = "sub-" + str(record["participant_id"]).removeprefix("sub-")
    return record


def _read_qc_files(qc_files: list, manifest_ids: set[str]) -> dict[str, dict]:
    """QC records by participant_id; records of subjects outside the manifest are skipped."""
    records: dict[str, dict] = {}
    sources: dict[str, str] = {}
    for path in qc_files:
        record = read_qc(path)
        pid = record["participant_id"]
        if pid in records:
            raise InputDataError(f"{path}: second QC record for {pid} (first in {sources[pid]})")
        if pid not in manifest_ids:
            log.info("%s: %s is not in the manifest (excluded earlier); QC record ignored", path, pid)
            continue
        records[pid], sources[pid] = record, str(path)
    return records


def _read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    manifest = storage.read_tsv(path, dtype=str)
    storage.require_columns(manifest, path, MANIFEST_COLUMNS, "manifest")
    ages = pd.to_numeric(manifest["age"], errors="coerce").astype(float)
    if ages.isna().any():
        bad = manifest.loc[ages.isna(), "participant_id"].tolist()
        raise InputDataError(f"{path}: manifest ages missing or not numbers for {bad}")
    manifest["age"] = ages
    return manifest


def _read_exclusions(path: str | os.PathLike) -> pd.DataFrame:
    exclusions = storage.read_tsv(path, dtype=str)
    storage.require_columns(exclusions, path, EXCLUSION_COLUMNS, "exclusions table")
    return exclusions[list(EXCLUSION_COLUMNS)]


def _apply_qc(manifest: pd.DataFrame, records: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the manifest into the cohort (QC included) and new exclusion rows."""
    excluded, keep = [], []
    for pid in manifest["participant_id"]:
        record = records.get(pid)
        if record is None:
            excluded.append((pid, STAGE, "no extraction output"))
        elif record["status"] == "excluded":
            excluded.append((pid, record["stage"], record["reason"]))
        keep.append(record is not None and record["status"] == "included")
    for pid, stage, reason in excluded:
        log.warning("excluding %s (%s): %s", pid, stage, reason)
    cohort = manifest.loc[keep, list(MANIFEST_COLUMNS)].reset_index(drop=True)
    for key in ("n_timepoints", "n_frames_kept", "mean_fd"):
        cohort[key] = [records[pid][key] for pid in cohort["participant_id"]]
    cohort = cohort.astype({"n_timepoints": "int64", "n_frames_kept": "int64", "mean_fd": "float64"})
    return cohort, storage.exclusions_frame(excluded)


def _motion_qc(cohort: pd.DataFrame, records: dict[str, dict], qc_params: dict) -> pd.DataFrame:
    """Motion exclusions among the cohort (extraction-included) subjects, logged as one count line."""
    included = {pid: records[pid] for pid in cohort["participant_id"]}
    motion = motion_exclusions(included, qc_params)
    unchecked = sum(record["mean_fd"] is None for record in included.values())
    log.info("motion QC: %d of %d subjects excluded (%s); %d without motion metrics not checked",
             len(motion), len(included), ", ".join(f"{k}={v}" for k, v in qc_params.items()), unchecked)
    return motion


def build_cohort(
    manifest: str | os.PathLike,
    participant_exclusions: str | os.PathLike,
    qc_files: list,
    params: dict,
    seed: int,
    cohort_out: str | os.PathLike,
    splits_out: str | os.PathLike,
    exclusions_out: str | os.PathLike,
    *,
    qc_params: dict,
) -> None:
    """Write the cohort table, its folds and every exclusion so far.

    Parameters
    ----------
    manifest : path-like
        Participants manifest (``brainage.participants.build_manifest``).
    participant_exclusions : path-like
        Exclusions TSV of the participants stage.
    qc_files : list of path-like
        Extraction QC JSON records (participant_id, stage, status, reason, n_frames_kept,
        n_timepoints, mean_fd, ...), one per subject.
    params : dict
        The ``dataset`` config section: ``n_folds`` (int), ``group_by_site`` (bool),
        ``test_sites``, ``test_datasets`` (lists of str: subjects of these sites or datasets
        form the held-out test set, outside the folds).
    qc_params : dict
        The ``qc`` config section: motion thresholds applied to the extraction QC records of
        the subjects extraction included (:func:`brainage.preprocess.qc.motion_exclusions`);
        subjects over one move to the exclusions with stage "qc". Records without motion
        metrics (no confounds table, e.g. ABIDE PCP) are not checked.
    seed : int
        The config seed; folds are shuffled with it.
    cohort_out : path-like
        cohort.parquet (kind ``cohort``): participant_id, dataset, site, age (years), sex,
        n_timepoints, n_frames_kept, mean_fd (mm); manifest order.
    splits_out : path-like
        splits.tsv: participant_id, fold (``0 .. n_folds - 1``; -1 for held-out subjects),
        set (``cv`` or ``test``).
    exclusions_out : path-like
        exclusions.tsv: participant_id, stage, reason for every subject not in the cohort.

    Raises
    ------
    InputDataError
        Malformed manifest, exclusions table or QC record; two QC records for one subject.
    ConfigError
        A site or dataset in ``test_sites`` / ``test_datasets`` has no cohort subject; a
        malformed ``qc_params`` (missing or unknown key, a value not a number or null).
    ValueError
        Every subject held out; too few cross-validation subjects (or sites) for ``n_folds``
        (see :func:`brainage.splits.make_splits`).
    """
    config = DatasetParams.from_dict(params)
    table = _read_manifest(manifest)
    records = _read_qc_files(qc_files, set(table["participant_id"]))
    cohort, qc_exclusions = _apply_qc(table, records)
    motion = _motion_qc(cohort, records, qc_params)
    cohort = cohort[~cohort["participant_id"].isin(motion["participant_id"])].reset_index(drop=True)
    exclusions = pd.concat([_read_exclusions(participant_exclusions), qc_exclusions, motion], ignore_index=True)
    # A site left empty would become NaN; as its own "n/a" group it stays visible in grouped CV.
    sites = cohort["site"].fillna("n/a").to_numpy()
    test = held_out(sites, cohort["dataset"].fillna("n/a").to_numpy(), list(config.test_sites),
                    list(config.test_datasets))
    folds = make_splits(cohort["age"].to_numpy(), sites, test, config.n_folds, config.group_by_site, seed)
    provenance = {
        "params": config.as_dict(),
        "qc_params": dict(qc_params),
        "seed": seed,
        "n_subjects": len(cohort),
        "n_test": int(test.sum()),
        "n_excluded": len(exclusions),
        "sources": {"manifest": str(manifest), "participant_exclusions": str(participant_exclusions),
                    "qc_files": [str(p) for p in qc_files]},
    }
    write_table(cohort_out, cohort, kind="cohort", provenance=provenance)
    sets = np.where(test, "test", "cv")
    write_tsv(splits_out, pd.DataFrame({"participant_id": cohort["participant_id"], "fold": folds, "set": sets}))
    write_tsv(exclusions_out, exclusions)
    log.info("cohort: %d subjects, %d in %d folds and %d held out; %d excluded", len(cohort),
             int((~test).sum()), config.n_folds, int(test.sum()), len(exclusions))
