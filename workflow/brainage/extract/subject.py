"""One subject: reduce the BOLD once to every atlas's regions and the coarse volumes, denoise, write, record QC."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from brainage import storage
from brainage.errors import InputDataError
from brainage.extract import clean, confounds, inputs, nifti, regions, volumes
from brainage.extract.params import ExtractParams
from brainage.preprocess.qc import motion_metrics
from brainage.templates import bold_space, other_template

logger = logging.getLogger(__name__)


@dataclass
class _Result:
    """What one subject's extraction produced (before writing)."""

    series: list[np.ndarray]  # per atlas: (n_frames_kept, n_regions)
    frames: np.ndarray  # (n_frames_kept, n_coarse_voxels)
    coarse_mask: np.ndarray  # (x', y', z') bool
    coarse_affine: np.ndarray  # (4, 4)
    provenance: list[dict] = field(default_factory=list)  # per atlas (volumes use the first)


PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


def extract_subject(
    participant_id: str,
    bold: PathOrPaths,
    mask: PathOrPaths,
    atlases: Sequence[str | os.PathLike],
    params: dict,
    series_out: Sequence[str | os.PathLike],
    volumes_out: str | os.PathLike,
    qc_out: str | os.PathLike,
    *,
    confounds: PathOrPaths | None = None,
    denoised: bool = False,
) -> dict:
    """Denoise one subject's BOLD and write its ROI series (one file per atlas), volumes and QC record.

    Several runs (``bold``, ``mask`` and ``confounds`` given as lists, one per run, in order;
    ``inputs.runs: all``) are each denoised on their own (their confounds, censoring, filter
    and standardisation), on the runs' common brain mask (the intersection of their masks, so
    the regions and coarse voxels are the same for every run), then joined in time. They must
    share the grid and the repetition time; a problem with any run excludes the subject,
    naming that run's file.

    The BOLD is decoded once, streamed frame by frame through one sparse matrix that holds
    every atlas's regions and the coarse volume blocks; only those few thousand signals are
    then cleaned (every cleaning step is linear, so this equals cleaning each voxel first).
    Bad subject data (``InputDataError``) does not raise: the subject is recorded as
    excluded in the QC record, with well-formed empty outputs, so the workflow continues.

    Two kinds of input: fMRIPrep derivatives (confounds regressed and frames censored as
    ``params`` say) and already denoised images such as ABIDE PCP ``func_preproc``
    (``denoised=True``: no confounds table, so no confound regression and no censoring;
    detrending, band-pass and standardisation still follow ``params``).

    Parameters
    ----------
    participant_id : str
        e.g. ``sub-001``.
    bold : path
        ``*_desc-preproc_bold.nii.gz`` (fMRIPrep name; its ``.json`` sidecar and the
        ``*_desc-confounds_timeseries.tsv`` lie beside it), or with ``denoised=True`` e.g.
        ``<FILE_ID>_func_preproc.nii.gz``. The repetition time comes from the ``.json`` sidecar
        when there is one, else from the NIfTI header.
    mask : path
        ``*_desc-brain_mask.nii.gz`` (or PCP ``*_func_mask.nii.gz``) on the BOLD grid.
    atlases : sequence of path
        Atlas folders written by ``python -m brainage.download atlas`` (``atlas.json``,
        ``labels.tsv``, image): label images, probabilistic maps or sphere coordinates, in
        the same space as the BOLD, on any grid.
    params : dict
        The ``extract`` config section (see ``config/config.yaml``).
    series_out : sequence of path
        One ROI-series Parquet per atlas, in the order of ``atlases``.
    volumes_out, qc_out : path
        Parquet volumes, QC JSON.
    confounds : path, optional
        The confounds TSV the caller tracks; checked to be the one nilearn reads. None: the
        one nilearn finds beside ``bold`` (unless ``denoised``).
    denoised : bool
        The BOLD is already denoised and has no confounds table: skip confound regression
        and censoring; the QC record says ``"confounds": "none"`` and FD is null.

    Returns
    -------
    dict
        The QC record written to ``qc_out``.

    Raises
    ------
    ConfigError
        For bad ``params`` (e.g. ``volume_voxel_size`` not a multiple of the BOLD voxels).
    InputDataError
        For a bad atlas folder (not a per-subject problem, so it is not caught).
    ValueError
        If ``atlases`` and ``series_out`` differ in length, ``confounds`` is not the file
        nilearn reads for ``bold``, or ``denoised`` is set while a confounds file is given or
        lies beside ``bold`` (wrong wiring).
    """
    bolds, masks, confounds_files = _paths(bold), _paths(mask), _paths(confounds)
    if denoised and confounds_files:
        raise ValueError(f"confounds {confounds} given for an already denoised BOLD {bold}; "
                         "pass one or the other")
    if not bolds or len(masks) != len(bolds) or len(confounds_files) not in (0, len(bolds)):
        raise ValueError(f"{len(bolds)} BOLD runs, {len(masks)} masks and {len(confounds_files)} confounds "
                         "tables: give one mask (and one confounds table, or none) per run, in the same order")
    if len(atlases) != len(series_out) or not atlases:
        raise ValueError(f"{len(atlases)} atlases for {len(series_out)} series outputs; give one "
                         "--series-out per --atlas, in the same order")
    cfg = ExtractParams.from_dict(params)
    loaded = [regions.load_atlas_dir(path) for path in atlases]
    runs = list(zip(bolds, masks, confounds_files or [None] * len(bolds), strict=True))
    sources = {"bold": _names(bolds), "mask": _names(masks)}
    qc = _qc_record(participant_id, bolds, cfg, loaded, denoised)
    _note_spaces(loaded, bolds[0], qc)
    try:
        result = _extract(runs, denoised, loaded, cfg, qc, sources)
    except InputDataError as err:
        logger.error("%s excluded: %s", participant_id, err)
        qc.update(status="excluded", reason=str(err))
        provenance = {"params": cfg.to_dict(), "sources": sources, "status": "excluded", "reason": str(err)}
        for atlas, out in zip(loaded, series_out, strict=True):
            names = atlas.labels["name"].tolist()
            storage.write_timeseries(out, np.zeros((0, len(names))), names, participant_id=participant_id,
                                     provenance=provenance | {"atlas": atlas.id})
        storage.write_volumes(volumes_out, np.zeros((0, 0)), np.zeros((1, 1, 1), bool), np.eye(4),
                              participant_id=participant_id, provenance=provenance)
    else:
        logger.info("%s: %d of %d frames kept (%.0f s), atlases %s, volumes %s (%d voxels)", participant_id,
                    qc["n_frames_kept"], qc["n_timepoints"], qc["seconds_kept"],
                    ", ".join(f"{a.id} ({len(a.labels)} regions)" for a in loaded),
                    qc["volume_shape"], qc["n_volume_voxels"])
        for atlas, series, out, prov in zip(loaded, result.series, series_out, result.provenance, strict=True):
            storage.write_timeseries(out, series, atlas.labels["name"].tolist(),
                                     participant_id=participant_id, provenance=prov)
        storage.write_volumes(volumes_out, result.frames, result.coarse_mask, result.coarse_affine,
                              participant_id=participant_id, provenance=result.provenance[0])
    storage.write_json(qc_out, qc)
    return qc


def _note_spaces(atlases: list[regions.Atlas], bold, qc: dict) -> None:
    """Record each atlas's template space; warn when it is another template than the BOLD's (no
    transform between templates is applied: the atlas is placed on the BOLD grid by its affine)."""
    space = bold_space(bold)
    for atlas in atlases:
        qc["atlases"][atlas.id]["space"] = atlas.space
        if other_template(atlas.space, space):
            logger.warning("atlas %s is defined in %s, the BOLD %s in %s: the atlas is placed on the BOLD grid "
                           "by its affine, with no transform between the two templates", atlas.id, atlas.space,
                           Path(bold).name, space)


def _paths(value: PathOrPaths | None) -> list:
    """One path or a sequence of paths (one per run) as a list; None as an empty list."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _names(paths: Sequence) -> str | list[str]:
    """File names for the QC record and provenance: one name for one run, a list for several."""
    names = [Path(p).name for p in paths]
    return names[0] if len(names) == 1 else names


def _qc_record(participant_id: str, bolds: list, cfg: ExtractParams, atlases: list[regions.Atlas], denoised: bool) -> dict:
    # Filled step by step, so an excluded subject keeps what was known before the failure.
    # "strategy" lists what is applied: nothing for an already denoised BOLD.
    strategy = [] if denoised else list(cfg.confounds["strategy"])
    return {
        "participant_id": participant_id, "stage": "extract", "status": "included", "reason": None,
        "n_timepoints": None, "n_frames_kept": None, "seconds_kept": None, "mean_fd": None,
        "max_fd": None, "fd": None, "mean_std_dvars": None, "mean_dvars": None, "fd_dvars_r": None,
        "fd_dvars_r_clean": None, "tr": None, "tr_source": None,
        "denoise": None if denoised else cfg.denoise, "strategy": strategy,
        "n_regions": len(atlases[0].labels), "missing_regions": [],
        "atlases": {a.id: {"kind": a.kind, "n_regions": len(a.labels), "lost_regions": []} for a in atlases},
        "volume_shape": None, "n_volume_voxels": None,
        "confounds": "none" if denoised else None, "bold": Path(bolds[0]).name,
    } | ({"runs": [{"bold": Path(b).name} for b in bolds]} if len(bolds) > 1 else {})


def _confounds_file(bold, confounds_arg, denoised: bool) -> Path | None:
    """The confounds TSV to use (None for an already denoised BOLD), checked against nilearn's pick."""
    if not denoised:
        return (inputs.find_confounds_file(bold) if confounds_arg is None
                else inputs.check_confounds_file(bold, confounds_arg))
    try:
        found = inputs.find_confounds_file(bold)
    except InputDataError:
        return None  # none (or an ambiguous pair) beside it: nothing was forgotten
    # An fMRIPrep BOLD called without its confounds would silently skip denoising.
    raise ValueError(f"{bold} is treated as already denoised (no confounds given), but the fMRIPrep "
                     f"confounds file {found.name} lies beside it; pass it with --confounds")


def _frames(bold, confounds_file, n_timepoints: int, tr: float, cfg: ExtractParams, participant_id: str):
    """Confound regressors, sample mask and kept frames; all frames without a confounds file."""
    if confounds_file is not None:
        conf, sample_mask = confounds.select_confounds(bold, confounds_file, cfg, n_timepoints)
        return conf, sample_mask, confounds.frames_kept(n_timepoints, sample_mask, cfg, confounds_file, tr)
    logger.info("%s: confound regression and scrubbing skipped: the input is already denoised (no "
                "confounds file, no motion parameters); detrend=%s, band-pass %s-%s Hz, standardize=%s",
                participant_id, cfg.detrend, cfg.high_pass, cfg.low_pass, cfg.standardize)
    if n_timepoints < cfg.min_frames or n_timepoints * tr < cfg.min_seconds:
        raise InputDataError(f"{bold}: {n_timepoints} frames = {n_timepoints * tr:g} s at TR {tr:g} s "
                             f"(no censoring: already denoised); need {cfg.min_frames} frames "
                             f"(extract.min_frames) and {cfg.min_seconds:g} s (extract.min_seconds)")
    return None, None, np.arange(n_timepoints)


def _operators(runs: list[_Run], loaded, cfg: ExtractParams, qc: dict):
    """Every atlas's operator (coverage checked) and the block operator, on the runs' common grid and mask."""
    first = runs[0]
    ratio = volumes.block_ratio(first.img.affine, cfg.volume_voxel_size)
    mask_img, brain = inputs.load_mask(first.mask, first.img)
    for run in runs[1:]:
        if tuple(run.img.shape[:3]) != tuple(first.img.shape[:3]) or not np.allclose(run.img.affine, first.img.affine, atol=1e-3):
            raise InputDataError(f"{run.bold}: grid (shape {tuple(run.img.shape[:3])}) differs from that of "
                                 f"{first.bold} (shape {tuple(first.img.shape[:3])}); runs joined in time must share one grid")
        brain = brain & inputs.load_mask(run.mask, run.img)[1]
    if not brain.any():
        raise InputDataError(f"{', '.join(str(r.mask) for r in runs)}: the runs' brain masks have no voxel in common")
    where = first.mask if len(runs) == 1 else f"the common brain mask of {len(runs)} runs ({first.mask}, ...)"
    operators = [regions.region_operator(atlas, mask_img, brain) for atlas in loaded]
    _check_coverage(operators, cfg, qc, where, float(first.img.header.get_zooms()[0]))
    block = volumes.block_operator(brain, first.img.affine, ratio)
    return operators, block


def _check_coverage(operators, cfg: ExtractParams, qc: dict, mask, grid_mm: float) -> None:
    """Record lost regions per atlas; with ``on_region_loss: exclude`` they exclude the run."""
    problems = []
    for op in operators:
        lost = regions.lost_regions(op, cfg.min_region_coverage)
        qc["atlases"][op.atlas.id].update(
            lost_regions=lost["name"].tolist(), lost_coverage=[round(float(c), 4) for c in lost["coverage"]],
            min_coverage=float(op.coverage.min()))
        if len(lost):
            problems.append(f"atlas {op.atlas.id}: {len(lost)} of {len(op.names)} regions below "
                            f"{cfg.min_region_coverage:g} coverage: {regions.describe_lost(lost, grid_mm)}")
    # Regions without any voxel: all-zero columns, whatever the threshold.
    qc["missing_regions"] = [n for n, c in zip(operators[0].names, operators[0].coverage, strict=True) if c == 0]
    if not problems:
        return
    if cfg.on_region_loss == "exclude":
        raise InputDataError(f"{mask}: regions lost on this brain mask ({'; '.join(problems)}); "
                             "extract.min_region_coverage sets the threshold, extract.on_region_loss: warn "
                             "keeps such runs")
    for problem in problems:
        logger.warning("%s: %s (kept: extract.on_region_loss is warn)", mask, problem)


@dataclass
class _Run:
    """One run's inputs, read up to its header (what QC needs before the data are read)."""

    bold: Path
    mask: Path
    confounds: Path | None
    img: object  # nibabel image (header only)
    record: dict  # the run's QC fields


def _open_run(bold, mask, confounds_arg, denoised: bool, record: dict) -> _Run:
    """TR, confounds table, motion QC and the header of one run, filling ``record`` as it goes."""
    tr, record["tr_source"] = inputs.repetition_time(bold)
    record["tr"] = tr
    confounds_file = _confounds_file(bold, confounds_arg, denoised)
    if confounds_file is not None:
        record["confounds"] = confounds_file.name
        record.update(motion_metrics(confounds_file))
    img = nifti.read_header(bold)
    if len(img.shape) != 4:
        raise InputDataError(f"{bold}: expected a 4D image, found shape {tuple(img.shape)}")
    record["n_timepoints"] = int(img.shape[3])
    return _Run(Path(bold), Path(mask), confounds_file, img, record)


def _joined_motion(records: list[dict]) -> dict:
    """Motion QC of runs joined in time: FD per frame concatenated, its mean and maximum over every
    frame with a value; DVARS means weighted by frames; FD-DVARS r the runs' mean."""
    fd = [v for r in records for v in r["fd"]]
    known = [v for v in fd if v is not None]

    def weighted(key):
        pairs = [(r[key], r["n_timepoints"]) for r in records if r.get(key) is not None]
        return float(np.average([v for v, _ in pairs], weights=[n for _, n in pairs])) if pairs else None

    rs = [r["fd_dvars_r"] for r in records if r.get("fd_dvars_r") is not None]
    return {"fd": fd, "mean_fd": float(np.mean(known)) if known else None, "max_fd": max(known) if known else None,
            "mean_std_dvars": weighted("mean_std_dvars"), "mean_dvars": weighted("mean_dvars"),
            "fd_dvars_r": float(np.mean(rs)) if rs else None}


def _extract(runs, denoised, loaded, cfg, qc, sources) -> _Result:
    """Run every step for one subject's runs, filling ``qc`` and ``sources`` as it goes.

    One run fills the QC record's own fields; several fill ``qc["runs"]`` (one record each) and
    the record's fields summarise them (frames summed, motion joined in time).
    """
    records = qc["runs"] if len(runs) > 1 else [qc]
    opened = [_open_run(bold, mask, conf, denoised, record) for (bold, mask, conf), record in zip(runs, records)]
    tr = opened[0].record["tr"]
    for run in opened[1:]:
        if not np.isclose(run.record["tr"], tr, atol=1e-3):
            raise InputDataError(f"{run.bold}: TR {run.record['tr']:g} s differs from {opened[0].bold.name}'s "
                                 f"{tr:g} s; runs joined in time must share the repetition time")
    if len(opened) > 1:
        qc.update(tr=tr, tr_source=opened[0].record["tr_source"],
                  n_timepoints=sum(r.record["n_timepoints"] for r in opened))
        if not denoised:
            qc["confounds"] = [r.confounds.name for r in opened]
            qc.update(_joined_motion([r.record for r in opened]))
    if not denoised:
        sources["confounds"] = qc["confounds"]
    operators, (block, coarse_mask, coarse_affine) = _operators(opened, loaded, cfg, qc)
    sizes = [op.weights.shape[1] for op in operators]
    bounds = np.cumsum([0, *sizes])
    weights = sparse.hstack([op.weights for op in operators] + [block], format="csc")
    series, frames, kept_all, fd_dvars = [[] for _ in operators], [], [], []
    offset = 0
    for run in opened:
        raw = nifti.reduce_bold(run.bold, weights)
        _check_finite(raw, run.bold, sizes)
        conf, sample_mask, kept = _frames(run.bold, run.confounds, raw.shape[0], tr, cfg, qc["participant_id"])
        run.record["n_frames_kept"] = int(kept.size)
        cleaned = clean.clean_signals(raw, conf, sample_mask, tr, cfg)
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            series[k].append(_standardize(cleaned[:, a:b], raw[kept, a:b], cfg, tr))
        run_frames = cleaned[:, bounds[-1]:]
        run.record["fd_dvars_r_clean"] = _fd_dvars_clean(run_frames, kept, run.record.get("fd"))
        frames.append(volumes.scale_frames(run_frames, cfg.volume_scaling, tr))
        kept_all.append(kept + offset)
        offset += run.record["n_timepoints"]
    kept = np.concatenate(kept_all)
    qc["n_frames_kept"] = int(kept.size)
    qc["seconds_kept"] = float(kept.size * tr)
    if len(opened) > 1:
        known = [r.record["fd_dvars_r_clean"] for r in opened if r.record["fd_dvars_r_clean"] is not None]
        qc["fd_dvars_r_clean"] = float(np.mean(known)) if known else None
    qc["volume_shape"] = list(coarse_mask.shape)
    qc["n_volume_voxels"] = int(coarse_mask.sum())
    common = {
        "params": cfg.to_dict(), "sources": sources, "tr": tr, "tr_source": qc["tr_source"],
        "confounds": qc["confounds"], "frames": kept.tolist(), "n_timepoints": qc["n_timepoints"],
        "volume_voxel_size": cfg.volume_voxel_size, "status": "included",
    }
    if len(opened) > 1:
        # "frames" counts through the runs joined in time; each run's share:
        common["runs"] = [{"bold": r.bold.name, "n_timepoints": r.record["n_timepoints"],
                           "n_frames_kept": r.record["n_frames_kept"]} for r in opened]
    provenance = [common | {"atlas": op.atlas.id, "atlas_kind": op.atlas.kind,
                            "region_coverage": [round(float(c), 4) for c in op.coverage],
                            "lost_regions": qc["atlases"][op.atlas.id]["lost_regions"]}
                  for op in operators]
    return _Result([np.concatenate(parts).astype(np.float32) for parts in series], np.concatenate(frames),
                   coarse_mask, coarse_affine, provenance)


def _check_finite(raw: np.ndarray, bold, sizes: list[int]) -> None:
    """Non-finite voxels inside the mask reach the reduced signals (weights are only in-mask)."""
    bad = ~np.isfinite(raw)
    if bad.any():
        raise InputDataError(f"{bold}: non-finite values (NaN/inf) inside the brain mask, in "
                             f"{int(bad.any(axis=0).sum())} of {raw.shape[1]} region/volume signals and "
                             f"{int(bad.any(axis=1).sum())} of {raw.shape[0]} frames")


def _standardize(series: np.ndarray, raw_kept: np.ndarray, cfg: ExtractParams, tr: float) -> np.ndarray:
    """Standardise one atlas's cleaned series; "psc" needs each signal's raw mean over the kept frames."""
    raw_means = raw_kept.mean(axis=0, keepdims=True) if cfg.nilearn_standardize == "psc" else None
    return clean.standardize_series(series, cfg.nilearn_standardize, tr, raw_means)


def _fd_dvars_clean(frames: np.ndarray, kept: np.ndarray, fd: list | None) -> float | None:
    """Pearson r of FD and the DVARS of the cleaned coarse volumes over consecutive kept frames.

    Near zero when denoising removed the motion-locked signal change (Power et al. 2012;
    Ciric et al. 2017 QC-FC rationale); None without FD or with fewer than 3 pairs.
    """
    if fd is None:
        return None
    pairs = np.flatnonzero(np.diff(kept) == 1) + 1  # rows whose previous row is the previous frame
    fd_values = np.array([fd[kept[i]] if fd[kept[i]] is not None else np.nan for i in pairs], dtype=float)
    dvars = np.sqrt(np.mean(np.diff(frames, axis=0)[pairs - 1] ** 2, axis=1))
    valid = np.isfinite(fd_values)
    if valid.sum() < 3 or np.ptp(fd_values[valid]) == 0 or np.ptp(dvars[valid]) == 0:
        return None
    return float(np.corrcoef(fd_values[valid], dvars[valid])[0, 1])
