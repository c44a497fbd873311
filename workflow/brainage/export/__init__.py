"""Outputs other tools can read: ROI series and correlation matrices as BIDS derivatives, volumes as NIfTI.

:func:`export_derivatives` (rule ``export_derivatives``, ``python -m brainage.export derivatives``)
writes ``results/derivatives/brainage``: per subject and atlas the ROI series and their Pearson
correlation matrix as XCP-D names and formats them (``_stat-mean_timeseries.tsv``,
``_stat-pearsoncorrelation_relmat.tsv``, JSON sidecars), the atlases as BIDS ``dseg``/``probseg``
files, the cohort as ``participants.tsv`` and a ``dataset_description.json``.
:func:`export_volumes` (``python -m brainage.export volumes``) turns one subject's volumes Parquet
into a 4D NIfTI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np

from brainage import storage
from brainage._version import source_version
from brainage.errors import ConfigError, InputDataError
from brainage.export.atlases import export_atlas
from brainage.export.names import derivative_path, series_entities
from brainage.storage.bids import write_nifti, write_relmat_tsv, write_timeseries_tsv

logger = logging.getLogger(__name__)

BIDS_VERSION = "1.9.0"
NAME = "brainage: denoised ROI time series and correlation matrices"
# Sidecar fields of a Pearson correlation matrix, as XCP-D writes them (BEP017).
RELMAT_FIELDS = {"RelationshipMeasure": "Pearson correlation coefficient", "Weighted": True, "Directed": False,
                 "ValidDiagonal": False, "StorageFormat": "Full"}
PARTICIPANT_FIELDS = {
    "participant_id": {"Description": "Participant identifier, as in the source dataset."},
    "dataset": {"Description": "Dataset the participant comes from."},
    "site": {"Description": "Acquisition site."},
    "age": {"Description": "Age at the scan analysed.", "Units": "year"},
    "sex": {"Description": "Sex, as in the source dataset."},
    "n_timepoints": {"Description": "Number of BOLD volumes before censoring (all joined runs)."},
    "n_frames_kept": {"Description": "Number of volumes kept after censoring: the rows of each time series."},
    "mean_fd": {"Description": "Mean framewise displacement (Power et al. 2012); n/a if unknown.", "Units": "mm"},
}


def export_derivatives(
    series: Sequence[str | os.PathLike],
    atlases: Sequence[str | os.PathLike],
    cohort: str | os.PathLike,
    config: dict,
    out_dir: str | os.PathLike,
) -> dict:
    """Write the cohort's ROI series, correlation matrices and atlases as a BIDS-Derivatives dataset.

    Parameters
    ----------
    series : sequence of path-like
        ROI-series Parquet files (``brainage.storage.write_timeseries``) of every subject and atlas,
        in any order; subjects outside the cohort are skipped.
    atlases : sequence of path-like
        Atlas folders (``resources/atlases/<id>``); none for ready-made ROI series (ABIDE PCP).
    cohort : path-like
        ``results/dataset/cohort.parquet``: the subjects to export (the analysed ones).
    config : dict
        The resolved workflow config: ``inputs.task`` and ``inputs.space`` name series without a
        BIDS BOLD name, ``inputs.source`` (with ``inputs.derivatives`` or ``inputs.bids_dir``,
        ``indi.bucket``, ``datasets``) gives ``SourceDatasets``, and its hash is recorded as ``GeneratedBy[0].ConfigHash``.
    out_dir : path-like
        The derivatives folder, e.g. ``results/derivatives/brainage`` (every file written atomically).

    Returns
    -------
    dict
        ``subjects`` (int, exported), ``skipped`` (int, series of subjects outside the cohort),
        ``files`` (list of str, paths relative to ``out_dir``).

    Raises
    ------
    ConfigError
        ``config`` lacks a key this needs.
    InputDataError
        A file is missing or malformed; two series of one subject and atlas; a cohort subject has
        no series, or a series without frames.
    """
    out_dir = Path(out_dir)
    task, space = _setting(config, "inputs", "task"), _setting(config, "inputs", "space")
    table = storage.read_table(cohort, kind="cohort")
    storage.require_columns(table, cohort, storage.COHORT_COLUMNS, "cohort table")
    wanted = set(table["participant_id"])
    storage.write_json(out_dir / "dataset_description.json", dataset_description(config))
    files = [PurePosixPath("dataset_description.json")]
    node_files = {}
    for folder in atlases:
        exported = export_atlas(folder, out_dir)
        node_files[exported.id] = exported.node_files
        files += exported.files
    done: dict[tuple[str, str], str] = {}
    skipped = 0
    for path in series:
        record = storage.read_timeseries(path)
        if record.participant_id not in wanted:
            skipped += 1
            continue
        atlas = _atlas_id(record, path)
        _check_once(done, record.participant_id, atlas, path)
        files += export_series(record, path, out_dir, task=task, space=space, node_files=node_files.get(atlas, []))
    _check_complete(wanted, {pid for pid, _ in done}, cohort)
    storage.write_tsv(out_dir / "participants.tsv", table[list(storage.COHORT_COLUMNS)])
    storage.write_json(out_dir / "participants.json", PARTICIPANT_FIELDS)
    files += [PurePosixPath("participants.tsv"), PurePosixPath("participants.json")]
    logger.info("%s: %d subjects, %d atlases, %d files; %d series of subjects outside the cohort skipped",
                out_dir, len(wanted), len({atlas for _, atlas in done}), len(files), skipped)
    return {"subjects": len(wanted), "skipped": skipped, "files": [str(f) for f in files]}


def export_series(record: storage.TimeSeries, path: str | os.PathLike, out_dir: Path, *, task: str, space: str,
                  node_files: Sequence[PurePosixPath] = ()) -> list[PurePosixPath]:
    """Write one subject's series of one atlas as a time-series TSV and its correlation matrix, each with a sidecar.

    Parameters
    ----------
    record : TimeSeries
        Read from ``path`` (``brainage.storage.read_timeseries``); its metadata names the BOLD
        (``sources.bold``), the kept frames, the repetition time and the atlas.
    path : path-like
        The Parquet file (named in messages).
    out_dir : Path
        The derivatives folder.
    task, space : str
        ``inputs.task`` and ``inputs.space``, for series without a BIDS BOLD name.
    node_files : sequence of PurePosixPath
        The atlas files in the derivatives folder (the matrix sidecar's ``NodeFiles``).

    Returns
    -------
    list of PurePosixPath
        The four files written, relative to ``out_dir``.

    Raises
    ------
    InputDataError
        The series has no frames (its subject was excluded at extraction).
    """
    meta = record.metadata
    if record.data.shape[0] == 0 or meta.get("status") == "excluded":
        raise InputDataError(f"{path}: {record.participant_id} is in the cohort but its series has no frames "
                             f"(excluded at extraction: {meta.get('reason')}); rebuild the cohort")
    atlas = _atlas_id(record, path)
    bold = meta.get("sources", {}).get("bold")
    entities = series_entities(record.participant_id, bold, task=task, space=space)
    tsv = derivative_path(entities, atlas, "mean", "timeseries", ".tsv")
    relmat = derivative_path(entities, atlas, "pearsoncorrelation", "relmat", ".tsv")
    write_timeseries_tsv(out_dir / tsv, record.data, record.labels)
    storage.write_json(out_dir / tsv.with_suffix(".json"), timeseries_sidecar(record, atlas))
    write_relmat_tsv(out_dir / relmat, pearson_correlation(record.data), record.labels)
    storage.write_json(out_dir / relmat.with_suffix(".json"), relmat_sidecar(tsv, node_files))
    return [tsv, tsv.with_suffix(".json"), relmat, relmat.with_suffix(".json")]


def pearson_correlation(data: np.ndarray) -> np.ndarray:
    """Pearson correlation between the regions over the frames (``numpy.corrcoef``).

    Parameters
    ----------
    data : ndarray, shape (n_timepoints, n_regions)

    Returns
    -------
    ndarray, shape (n_regions, n_regions), float32
        Exactly symmetric; NaN in the row and column of a region constant over the frames (no
        correlation is defined), as pandas' ``DataFrame.corr`` (XCP-D's) gives.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.atleast_2d(np.corrcoef(np.asarray(data, dtype=np.float64), rowvar=False))
    return ((r + r.T) / 2).astype(np.float32)


def timeseries_sidecar(record: storage.TimeSeries, atlas: str) -> dict:
    """The JSON sidecar of an exported time series: repetition time, kept frames, sources, what it holds."""
    meta = record.metadata
    sources = meta.get("sources", {})
    names = sources.get("bold") or sources.get("rois") or []
    names = [names] if isinstance(names, str) else list(names)
    frames = meta.get("frames", list(range(record.data.shape[0])))
    text = (f"Mean denoised BOLD signal of each region of atlas {atlas} (one column per region, named as in the "
            f"atlas table), one row per frame kept after censoring; KeptFrames gives each row's 0-based volume "
            f"number in the source BOLD.")
    sidecar = {"Description": text, "Atlas": atlas, "Sources": names, "KeptFrames": [int(f) for f in frames],
               "NumberOfVolumes": meta.get("n_timepoints", len(frames)), "ExtractionParameters": meta.get("params")}
    if meta.get("tr") is not None:
        sidecar["RepetitionTime"] = float(meta["tr"])
    else:
        sidecar["Description"] += " The repetition time was not recorded with these ready-made ROI series."
    if len(names) > 1:
        sidecar["Runs"] = meta.get("runs", [{"bold": name} for name in names])
        sidecar["Description"] += (f" {len(names)} runs were denoised one by one and joined in time, so the name "
                                   "has no run- entity (as XCP-D names concatenated runs) and KeptFrames count "
                                   "through the runs in the order of Runs.")
    if meta.get("preprocessing"):
        sidecar["Preprocessing"] = meta["preprocessing"]
    return sidecar


def relmat_sidecar(timeseries: PurePosixPath, node_files: Sequence[PurePosixPath]) -> dict:
    """The JSON sidecar of a correlation matrix (XCP-D's fields), its sources as BIDS URIs of this dataset."""
    sidecar = {"Description": "Pearson correlation between the regions' series over the kept frames "
                              "(numpy.corrcoef; n/a for a region constant over them).",
               **RELMAT_FIELDS, "Sources": [f"bids::{timeseries}"]}
    if node_files:
        sidecar["NodeFiles"] = [f"bids::{f}" for f in node_files]
    return sidecar


def config_hash(config: dict) -> str:
    """SHA-256 of the config as JSON with sorted keys (what the rule passes as ``--config``), hexadecimal."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def dataset_description(config: dict) -> dict:
    """The derivatives' ``dataset_description.json`` (BIDS 1.9): name, generator, config hash, sources."""
    description = {
        "Name": NAME,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "brainage", "Version": source_version(), "ConfigHash": config_hash(config),
            "Description": ("ConfigHash: SHA-256, as JSON with sorted keys, of the resolved workflow config's "
                            "sections that shape these data (seed, inputs, demo, datasets, preprocess, atlases, "
                            "extract, qc, dataset; indi.bucket)"),
        }],
    }
    sources = source_datasets(config)
    if sources:
        description["SourceDatasets"] = sources
    return description


def source_datasets(config: dict) -> list[dict]:
    """``SourceDatasets`` where the config names them: your fMRIPrep derivatives or raw BIDS dataset (a
    ``file:`` URL), or the INDI datasets (``s3:``); else none.

    The demo's synthetic inputs are made by the workflow itself: none are listed.
    """
    source = _setting(config, "inputs", "source")
    local = {"fmriprep": "derivatives", "bids": "bids_dir"}
    if source in local:
        return [{"URL": Path(_setting(config, "inputs", local[source])).resolve().as_uri()}]
    if source == "indi":
        from brainage.download.indi import dataset_prefix

        bucket = _setting(config, "indi", "bucket")
        return [{"URL": f"s3://{bucket}/{dataset_prefix(entry)}"} for entry in _setting(config, "datasets")]
    return []


def export_volumes(volumes: str | os.PathLike, out: str | os.PathLike) -> None:
    """Write one subject's downsampled volumes as a 4D NIfTI on their coarse grid.

    Parameters
    ----------
    volumes : path-like
        ``..._volumes.parquet`` (``brainage.storage.write_volumes``).
    out : path-like
        ``.nii.gz`` (or ``.nii``) to write, atomically: shape (x, y, z, n_timepoints), float32, the
        stored affine, 0 outside the coarse mask; one volume per kept frame, the repetition time
        (when recorded) as the fourth voxel size.

    Raises
    ------
    InputDataError
        The file is missing or malformed, or holds no frames (an excluded subject).
    """
    record = storage.read_volumes(volumes)
    if record.data.shape[0] == 0:
        raise InputDataError(f"{volumes}: no frames to export ({record.participant_id} was excluded at "
                             f"extraction: {record.metadata.get('reason')})")
    image = nib.Nifti1Image(np.moveaxis(record.to_grid(np.float32), 0, -1), record.affine)
    image.header.set_xyzt_units("mm", "sec")
    if record.metadata.get("tr") is not None:
        image.header.set_zooms(image.header.get_zooms()[:3] + (float(record.metadata["tr"]),))
    image.header["descrip"] = f"brainage volumes {record.participant_id}, kept frames"[:79].encode()
    write_nifti(out, image)
    logger.info("%s: %d frames on a %s grid written to %s", volumes, record.data.shape[0], record.mask.shape, out)


def _setting(config: dict, *keys: str):
    """``config[keys[0]][keys[1]]...``; ``ConfigError`` naming the dotted key if one is missing."""
    value = config
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise ConfigError(f"config: no {'.'.join(keys[:depth + 1])} (expected the resolved workflow config)")
        value = value[key]
    return value


def _atlas_id(record: storage.TimeSeries, path: str | os.PathLike) -> str:
    """The atlas of a series: recorded by extraction, or the PCP derivative's (``rois_cc200`` -> ``cc200``)."""
    meta = record.metadata
    if meta.get("atlas"):
        return str(meta["atlas"])
    derivative = str(meta.get("derivative") or "")
    if derivative.startswith("rois_"):
        return derivative.removeprefix("rois_")
    raise InputDataError(f"{path}: the series names no atlas (no 'atlas' or PCP 'derivative' in its metadata)")


def _check_once(done: dict, participant_id: str, atlas: str, path: str | os.PathLike) -> None:
    """Record (subject, atlas); two series of one pair would be written to the same names."""
    first = done.setdefault((participant_id, atlas), str(path))
    if first != str(path):
        raise InputDataError(f"{path}: a second series of {participant_id} for atlas {atlas} (first: {first})")


def _check_complete(wanted: set, exported: set, cohort: str | os.PathLike) -> None:
    missing = sorted(wanted - exported)
    if missing:
        raise InputDataError(f"{cohort}: cohort subjects without a series among the inputs: {missing[:10]}"
                             f"{' ...' if len(missing) > 10 else ''}")
