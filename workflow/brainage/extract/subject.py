"""One subject: denoise the BOLD once, write ROI series, downsampled volumes and a QC record."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainage import storage
from brainage.errors import InputDataError
from brainage.extract import clean, confounds, inputs, volumes
from brainage.extract.params import ExtractParams
from brainage.preprocess.qc import motion_metrics

logger = logging.getLogger(__name__)


@dataclass
class _Result:
    """What one subject's extraction produced (before writing)."""

    series: np.ndarray  # (n_frames_kept, n_regions)
    frames: np.ndarray  # (n_frames_kept, n_coarse_voxels)
    coarse_mask: np.ndarray  # (x', y', z') bool
    coarse_affine: np.ndarray  # (4, 4)
    provenance: dict = field(default_factory=dict)


def extract_subject(
    participant_id: str,
    bold: str | os.PathLike,
    mask: str | os.PathLike,
    atlas: str | os.PathLike,
    atlas_labels: str | os.PathLike,
    params: dict,
    series_out: str | os.PathLike,
    volumes_out: str | os.PathLike,
    qc_out: str | os.PathLike,
    *,
    confounds: str | os.PathLike | None = None,
    denoised: bool = False,
) -> dict:
    """Denoise one subject's BOLD and write its ROI series, volumes and QC record.

    The BOLD is read once; ROI series and volumes come from the same cleaned voxel matrix.
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
    atlas : path
        Integer label image, any grid in the same space (resampled nearest-neighbour).
    atlas_labels : path
        TSV with columns ``index`` (label value) and ``name`` (output column name).
    params : dict
        The ``extract`` config section (see ``config/config.yaml``).
    series_out, volumes_out, qc_out : path
        Parquet ROI series, Parquet volumes, QC JSON.
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
        For a bad atlas or label table (not a per-subject problem, so it is not caught).
    ValueError
        If ``confounds`` is not the file nilearn reads for ``bold``, or ``denoised`` is
        set while a confounds file is given or lies beside ``bold`` (wrong wiring).
    """
    if denoised and confounds is not None:
        raise ValueError(f"confounds {confounds} given for an already denoised BOLD {bold}; "
                         "pass one or the other")
    cfg = ExtractParams.from_dict(params)
    labels = inputs.read_atlas_labels(atlas_labels)
    atlas_img = inputs.load_atlas(atlas)
    sources = {"bold": Path(bold).name, "mask": Path(mask).name, "atlas": Path(atlas).name,
               "atlas_labels": Path(atlas_labels).name}
    qc = _qc_record(participant_id, bold, cfg, labels, denoised)
    names = labels["name"].tolist()
    try:
        result = _extract(bold, mask, confounds, denoised, atlas_img, labels, cfg, qc, sources)
    except InputDataError as err:
        logger.error("%s excluded: %s", participant_id, err)
        qc.update(status="excluded", reason=str(err))
        provenance = {"params": cfg.to_dict(), "sources": sources, "status": "excluded",
                      "reason": str(err)}
        storage.write_timeseries(series_out, np.zeros((0, len(names))), names,
                                 participant_id=participant_id, provenance=provenance)
        storage.write_volumes(volumes_out, np.zeros((0, 0)), np.zeros((1, 1, 1), bool), np.eye(4),
                              participant_id=participant_id, provenance=provenance)
    else:
        logger.info("%s: %d of %d frames kept, %d regions, volumes %s (%d voxels)", participant_id,
                    qc["n_frames_kept"], qc["n_timepoints"], qc["n_regions"], qc["volume_shape"],
                    qc["n_volume_voxels"])
        storage.write_timeseries(series_out, result.series, names,
                                 participant_id=participant_id, provenance=result.provenance)
        storage.write_volumes(volumes_out, result.frames, result.coarse_mask, result.coarse_affine,
                              participant_id=participant_id, provenance=result.provenance)
    storage.write_json(qc_out, qc)
    return qc


def _qc_record(
    participant_id: str, bold: str | os.PathLike, cfg: ExtractParams, labels: pd.DataFrame,
    denoised: bool,
) -> dict:
    # Filled step by step, so an excluded subject keeps what was known before the failure.
    # "strategy" lists what is applied: nothing for an already denoised BOLD.
    return {
        "participant_id": participant_id, "stage": "extract", "status": "included", "reason": None,
        "n_timepoints": None, "n_frames_kept": None, "mean_fd": None, "max_fd": None, "fd": None,
        "mean_std_dvars": None, "mean_dvars": None, "tr": None,
        "tr_source": None, "n_regions": len(labels), "missing_regions": [], "volume_shape": None,
        "n_volume_voxels": None, "strategy": [] if denoised else list(cfg.strategy),
        "confounds": "none" if denoised else None, "bold": Path(bold).name,
    }


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


def _frames(bold, confounds_file, n_timepoints: int, cfg: ExtractParams, participant_id: str):
    """Confound regressors, sample mask and kept frames; all frames without a confounds file."""
    if confounds_file is not None:
        conf, sample_mask = confounds.select_confounds(bold, confounds_file, cfg)
        return conf, sample_mask, confounds.frames_kept(n_timepoints, sample_mask, cfg, confounds_file)
    logger.info("%s: confound regression and scrubbing skipped: the input is already denoised (no "
                "confounds file, no motion parameters); detrend=%s, band-pass %s-%s Hz, standardize=%s",
                participant_id, cfg.detrend, cfg.high_pass, cfg.low_pass, cfg.standardize)
    if n_timepoints < cfg.min_frames:
        raise InputDataError(f"{bold}: {n_timepoints} frames (no censoring: already denoised), "
                             f"need {cfg.min_frames} (extract.min_frames)")
    return None, None, np.arange(n_timepoints)


def _extract(bold, mask, confounds_arg, denoised, atlas_img, labels, cfg, qc, sources) -> _Result:
    """Run every step for one subject, filling ``qc`` and ``sources`` as it goes."""
    tr, qc["tr_source"] = inputs.repetition_time(bold)
    qc["tr"] = tr
    confounds_file = _confounds_file(bold, confounds_arg, denoised)
    if confounds_file is not None:
        sources["confounds"] = qc["confounds"] = confounds_file.name
        qc.update(motion_metrics(confounds_file))
    bold_img, data = inputs.load_bold(bold)
    qc["n_timepoints"] = data.shape[3]
    factor = volumes.block_factor(bold_img.header.get_zooms()[:3], cfg.volume_voxel_size)
    mask_img, brain = inputs.load_mask(mask, bold_img)
    voxels = inputs.masked_voxels(data, brain, bold)
    del data  # the in-mask matrix is all we need; free the full grid early
    conf, sample_mask, kept = _frames(bold, confounds_file, voxels.shape[0], cfg, qc["participant_id"])
    qc["n_frames_kept"] = int(kept.size)
    cleaned = clean.clean_voxels(voxels, conf, sample_mask, tr, cfg)

    voxel_labels = inputs.atlas_on_grid(atlas_img, mask_img)[brain]
    series = _region_series(cleaned, voxels, kept, voxel_labels, labels, cfg, tr, qc)
    frames, coarse_mask, coarse_affine = volumes.block_average(cleaned, brain, bold_img.affine, factor)
    qc["volume_shape"] = list(coarse_mask.shape)
    qc["n_volume_voxels"] = int(coarse_mask.sum())
    provenance = {
        "params": cfg.to_dict(), "sources": sources, "tr": tr, "tr_source": qc["tr_source"],
        "confounds": qc["confounds"], "frames": kept.tolist(),
        "n_timepoints": qc["n_timepoints"], "missing_regions": qc["missing_regions"],
        "volume_voxel_size": cfg.volume_voxel_size, "status": "included",
    }
    return _Result(series.astype(np.float32), volumes.scale_frames(frames, cfg.volume_scaling, tr), coarse_mask,
                   coarse_affine, provenance)


def _region_series(cleaned, voxels, kept, voxel_labels, labels, cfg, tr, qc) -> np.ndarray:
    """ROI means of the cleaned voxels, standardised; records regions without voxels."""
    label_values = labels["index"].to_numpy()
    series, present = clean.region_series(cleaned, voxel_labels, label_values)
    missing = labels.loc[~present, "name"].tolist()
    if missing:
        logger.warning("%d of %d regions have no voxel in the brain mask (all-zero columns): %s",
                       len(missing), len(labels), missing)
    qc["missing_regions"] = missing
    raw_means = None
    if cfg.nilearn_standardize == "psc":
        raw = voxels[kept].mean(axis=0, keepdims=True)  # (1, n_voxels)
        raw_means, _ = clean.region_series(raw, voxel_labels, label_values)
    return clean.standardize_series(series, cfg.nilearn_standardize, tr, raw_means)

