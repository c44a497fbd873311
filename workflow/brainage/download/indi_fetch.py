"""Fetch one INDI dataset: phenotypes, the selected subjects' files, one manifest and its exclusions."""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

import pandas as pd

from brainage import storage
from brainage._version import source_version
from brainage.download import indi, phenotypes
from brainage.download.s3 import Bucket, FetchResult, ObjectInfo, S3Config, local_path
from brainage.errors import DownloadError, InputDataError

log = logging.getLogger(__name__)

# The same exclusion table and stage name as the phenotype step's.
STAGE = phenotypes.STAGE
FILE_COLUMNS = ["participant_id", "kind", "key", "path", "size", "md5", "status"]


def fetch_dataset(
    entry: dict,
    indi_params: dict,
    seed: int,
    out_dir: str | os.PathLike,
    manifest_out: str | os.PathLike,
    files_out: str | os.PathLike,
    exclusions_out: str | os.PathLike,
    *,
    progress: bool = True,
) -> None:
    """Download one dataset entry of ``datasets:`` and describe what arrived.

    Phenotype files are fetched and normalised, the user's filters select subjects, then every
    selected subject's files are fetched in parallel, verified and written atomically under
    ``out_dir`` at their bucket key (below the dataset's prefix). Files already present and
    verified are not fetched again, so a rerun resumes. A raw BIDS root that the bucket holds no
    ``dataset_description.json`` for gets a minimal one (fMRIPrep needs it), not listed in ``files_out``.

    Parameters
    ----------
    entry : dict
        One item of the config list ``datasets`` (schema defaults filled in).
    indi_params : dict
        The ``indi`` config section (bucket, endpoint_url, anonymous, retries ...).
    seed : int
        The config seed (``max_subjects`` sampling).
    out_dir : path-like
        Dataset folder, e.g. ``resources/indi/abide_pcp``.
    manifest_out : path-like
        TSV of the subjects whose files all arrived: ``indi.MANIFEST_COLUMNS`` first.
    files_out : path-like
        TSV with one row per fetched file: participant_id, kind, key, path, size, md5, status.
    exclusions_out : path-like
        TSV (participant_id, stage, reason) of subjects without usable data: no files in the
        archive, failed QC, a 403/404 or an unsafe key.

    Raises
    ------
    DownloadError
        The endpoint cannot be used at all, or a phenotype file is missing.
    InputDataError
        A phenotype file cannot be read; or no subject is left.
    """
    out_dir = Path(out_dir)
    bucket = Bucket(S3Config.from_params(indi_params))
    prefix = indi.dataset_prefix(entry)
    # Raw BIDS datasets are listed once (phenotypes per site, files per subject); ABIDE PCP keys are
    # computed from the phenotype, and its derivative folders are listed later for sizes and ETags.
    listing = bucket.list(prefix) if indi.is_raw_bids(entry) else []
    infos = {obj.key: obj for obj in listing}

    phenotypes = _fetch_phenotypes(bucket, entry, [o.key for o in listing], infos, out_dir, prefix)
    manifest, excluded = indi.normalise_phenotypes(entry, phenotypes)
    selected, qc_excluded = indi.select(entry, manifest, seed)
    files, unlisted = indi.subject_keys(entry, selected, [o.key for o in listing])
    if not infos:
        infos = _list_folders(bucket, files["key"])
    files, unsafe = _local_paths(files, out_dir, prefix)
    # Shared files (a site's sidecars, dataset_description.json) appear once per subject: fetch once.
    unique = files.drop_duplicates("key")
    fetched = bucket.fetch_many(
        [(key, Path(path), infos.get(key)) for key, path in zip(unique["key"], unique["path"])],
        progress=progress,
        desc=entry["name"],
    )
    by_key = {result.key: result for result in fetched}
    files, failed = _record_results(files, [by_key[key] for key in files["key"]])

    exclusions = pd.concat([excluded, qc_excluded, unlisted, unsafe, failed], ignore_index=True)
    keep = selected[
        selected["participant_id"].isin(files["participant_id"])
        & ~selected["participant_id"].isin(exclusions["participant_id"])
    ]
    if keep.empty:
        raise InputDataError(
            f"{entry['name']}: no subject has usable data at {bucket.config.endpoint_url}"
            f" (bucket {bucket.config.bucket}, prefix {prefix}); {len(exclusions)} exclusions logged"
        )
    files = files[files["participant_id"].isin(keep["participant_id"])]
    if indi.is_raw_bids(entry):
        _describe_bids_roots(entry["name"], files, out_dir, prefix)
    storage.write_tsv(manifest_out, keep.reset_index(drop=True))
    storage.write_tsv(files_out, files.reset_index(drop=True))
    storage.write_tsv(exclusions_out, exclusions[list(storage.EXCLUSION_COLUMNS)].reset_index(drop=True))
    log.info("%s: %d subjects with all files, %d excluded", entry["name"], len(keep), len(exclusions))


def _describe_bids_roots(dataset: str, files: pd.DataFrame, out_dir: Path, prefix: str) -> None:
    """Write a minimal dataset_description.json into each fetched BIDS root that has none.

    fMRIPrep (pybids' BIDSLayout) refuses a BIDS root without one, and some INDI roots lack it.
    A subject's BIDS root is the folder that holds its ``sub-<label>/`` folder. The file written is
    not added to the file table, which lists what came from the bucket.
    """
    images = files[files["kind"].isin(["anat", "bold"])]
    roots = {key[: key.index(f"/{pid}/")] for pid, key in zip(images["participant_id"], images["key"])}
    for root in sorted(roots):
        path = local_path(out_dir, f"{root}/dataset_description.json", prefix)
        if path.is_file():
            continue
        storage.write_json(path, {
            "Name": f"{dataset} {PurePosixPath(root).name} (INDI raw BIDS)",
            "BIDSVersion": "1.8.0",
            "DatasetType": "raw",
            "GeneratedBy": [{
                "Name": "brainage",
                "Version": source_version(),
                "Description": "written by brainage: the INDI bucket has no dataset_description.json at this BIDS root",
            }],
        })
        log.info("%s: no dataset_description.json in the bucket at %s/; wrote a minimal one to %s",
                 dataset, root, path)


def _fetch_phenotypes(
    bucket: Bucket, entry: dict, keys: list[str], infos: dict, out_dir: Path, prefix: str
) -> dict[str, Path]:
    """Download the phenotype file(s); a missing one stops the dataset (nothing can be selected)."""
    wanted = indi.phenotype_keys(entry, keys)
    items = [(key, local_path(out_dir, key, prefix), infos.get(key)) for key in wanted]
    results = bucket.fetch_many(items, progress=False, desc=f"{entry['name']} phenotypes")
    for result in results:
        if result.status not in ("fetched", "present"):
            raise DownloadError(f"{entry['name']}: phenotype file unavailable: {result.reason}")
    return {result.key: result.path for result in results}


def _list_folders(bucket: Bucket, keys: pd.Series) -> dict[str, ObjectInfo]:
    """Sizes and ETags of the planned keys, from one listing of each folder they live in."""
    folders = sorted({str(PurePosixPath(key).parent) + "/" for key in keys})
    infos = {}
    for folder in folders:
        infos.update({obj.key: obj for obj in bucket.list(folder)})
    return infos


def _local_paths(files: pd.DataFrame, out_dir: Path, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each key's local path; a subject with a key that is unsafe as a path is excluded."""
    paths, unsafe = [], []
    for participant_id, key in zip(files["participant_id"], files["key"]):
        try:
            paths.append(str(local_path(out_dir, key, prefix)))
        except InputDataError as err:
            log.error("excluding %s: %s", participant_id, err)
            paths.append(None)
            unsafe.append((participant_id, STAGE, str(err)))
    files = files.assign(path=paths)
    return files[files["path"].notna()], storage.exclusions_frame(unsafe)


def _record_results(files: pd.DataFrame, results: list[FetchResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add size, md5 and status to the file table; subjects with a missing/forbidden file are excluded."""
    files = files.assign(
        size=[r.size for r in results],
        md5=[r.md5 for r in results],
        status=[r.status for r in results],
    )
    bad = [
        (pid, STAGE, result.reason)
        for pid, result in zip(files["participant_id"], results)
        if result.status not in ("fetched", "present")
    ]
    failed = storage.exclusions_frame(bad).drop_duplicates("participant_id")
    for pid, _, reason in failed.itertuples(index=False):
        log.error("excluding %s: %s", pid, reason)
    return files[FILE_COLUMNS], failed
