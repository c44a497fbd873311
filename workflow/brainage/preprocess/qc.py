"""Motion QC from an fMRIPrep confounds table: metrics per run, and exclusions by the ``qc`` thresholds."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from brainage import storage

log = logging.getLogger(__name__)

STAGE = "qc"
EXCLUSION_COLUMNS = ("participant_id", "stage", "reason")


def _column(table: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in table.columns:
        return None
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)


def _mean(values: np.ndarray | None) -> float | None:
    if values is None or not np.isfinite(values).any():
        return None
    return float(np.nanmean(values))


def motion_metrics(confounds_file: str | os.PathLike) -> dict:
    """Framewise displacement and DVARS summaries of one run.

    fMRIPrep writes n/a for the first frame of ``framewise_displacement``, ``dvars`` and
    ``std_dvars`` (no previous frame); means and maxima are over the frames that have a value,
    as fMRIPrep's own reports compute them. FD is Power et al. 2012 (NeuroImage 59:2142), in mm.

    Parameters
    ----------
    confounds_file : path
        ``*_desc-confounds_timeseries.tsv``.

    Returns
    -------
    dict
        ``fd`` (list of float or None, one per frame), ``mean_fd``, ``max_fd`` (mm),
        ``mean_std_dvars``, ``mean_dvars`` (None when the column is absent or empty).
        Without an FD column every value is None (the table holds no motion estimate).
    """
    table = storage.read_tsv(confounds_file)
    fd = _column(table, "framewise_displacement")
    finite = fd[np.isfinite(fd)] if fd is not None else np.array([])
    return {
        "fd": None if fd is None else [float(v) if np.isfinite(v) else None for v in fd],
        "mean_fd": float(finite.mean()) if finite.size else None,
        "max_fd": float(finite.max()) if finite.size else None,
        "mean_std_dvars": _mean(_column(table, "std_dvars")),
        "mean_dvars": _mean(_column(table, "dvars")),
    }


def _reasons(record: dict, params: dict) -> list[str]:
    """Every threshold a subject's metrics exceed, as readable reasons (">" excludes)."""
    reasons = []
    mean_fd, limit = record.get("mean_fd"), params["max_mean_fd"]
    if mean_fd is not None and limit is not None and mean_fd > limit:
        reasons.append(f"mean FD {mean_fd:.3f} mm > qc.max_mean_fd {limit} mm")
    fd = [v for v in (record.get("fd") or []) if v is not None]
    limit = params["max_high_motion_fraction"]
    if fd and limit is not None:
        fraction = float(np.mean(np.asarray(fd) > params["high_motion_fd"]))
        if fraction > limit:
            reasons.append(f"{100 * fraction:.1f}% of frames with FD > {params['high_motion_fd']} mm "
                           f"> qc.max_high_motion_fraction {limit}")
    dvars, limit = record.get("mean_std_dvars"), params["max_mean_std_dvars"]
    if dvars is not None and limit is not None and dvars > limit:
        reasons.append(f"mean std DVARS {dvars:.3f} > qc.max_mean_std_dvars {limit}")
    return reasons


def motion_exclusions(records: dict[str, dict], params: dict) -> pd.DataFrame:
    """Subjects over a motion threshold.

    Parameters
    ----------
    records : dict
        participant_id -> extraction QC record (``status``, ``mean_fd``, ``fd``, ``mean_std_dvars``).
        Only records with status "included" are checked. Records without motion metrics
        (inputs without a confounds table, e.g. ABIDE PCP, which PCP already denoised) are
        not checked: nothing is known about their motion here.
    params : dict
        The ``qc`` config section: ``max_mean_fd`` (mm), ``high_motion_fd`` (mm),
        ``max_high_motion_fraction`` (0-1), ``max_mean_std_dvars``; null disables a check.

    Returns
    -------
    DataFrame
        participant_id, stage ("qc"), reason (the value, the threshold and its config key; several
        joined with "; ").
    """
    rows = []
    for pid, record in records.items():
        if record.get("status") != "included":
            continue
        reasons = _reasons(record, params)
        if reasons:
            rows.append((pid, STAGE, "; ".join(reasons)))
    if rows:
        log.warning("motion QC excludes %d of %d subjects", len(rows), len(records))
    return pd.DataFrame(rows, columns=list(EXCLUSION_COLUMNS))
