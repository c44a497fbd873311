"""Motion QC from an fMRIPrep confounds table: metrics per run, and exclusions by the ``qc`` thresholds."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from brainage import storage
from brainage.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

STAGE = "qc"
FD_COLUMN = "framewise_displacement"


@dataclass(frozen=True)
class QCParams:
    """The ``qc`` config section (defaults live in config.schema.yaml, not here); None disables a check."""

    max_mean_fd: float | None  # mm
    high_motion_fd: float  # mm
    max_high_motion_fraction: float | None  # 0-1
    max_mean_std_dvars: float | None

    @classmethod
    def from_dict(cls, params: dict) -> QCParams:
        """Build from the config section; error on missing or unknown keys or a value not a number."""
        expected = {f.name for f in fields(cls)}
        missing, unknown = expected - params.keys(), params.keys() - expected
        if missing or unknown:
            raise ConfigError(f"qc params: expected keys {sorted(expected)}, missing {sorted(missing)}, "
                              f"unknown {sorted(unknown)}")
        for key, value in params.items():
            nullable = key != "high_motion_fd"
            # bool is an int subclass: true/false would otherwise pass as 1/0.
            if (value is None and not nullable) or (
                    value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))):
                allowed = "a number or null" if nullable else "a number"
                raise ConfigError(f"qc.{key}: expected {allowed}, found {value!r}")
        return cls(**params)


def _numeric(table: pd.DataFrame, name: str, path: str | os.PathLike) -> np.ndarray | None:
    """One column as float64 with NaN for n/a; None when the column is absent."""
    if name not in table.columns:
        return None
    values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(table[name].notna().to_numpy() & ~np.isfinite(values))
    if bad.size:
        row = bad[0]
        raise InputDataError(f"{path}: column {name!r} line {row + 2} holds {table[name].iloc[row]!r}, "
                             f"expected a finite number or n/a ({bad.size} such cells)")
    return values


def _mean(values: np.ndarray | None) -> float | None:
    if values is None or np.isnan(values).all():
        return None
    return float(np.nanmean(values))


def motion_metrics(confounds_file: str | os.PathLike) -> dict:
    """Framewise displacement and DVARS summaries of one run.

    fMRIPrep writes n/a in the first frame of ``framewise_displacement``, ``dvars`` and
    ``std_dvars`` (no previous frame). Means and the maximum are over the frames that have
    a value, the convention of fMRIPrep's confounds workflow (nipype's
    ``FramewiseDisplacement`` ``fd_average``) and of MRIQC's ``fd_mean``. FD is Power et al.
    2012 (NeuroImage 59:2142), in mm; std DVARS is DVARS over its expected value under
    stationarity (Nichols 2017, arXiv:1704.01469), unitless.

    Parameters
    ----------
    confounds_file : path
        ``*_desc-confounds_timeseries.tsv`` (read with :func:`brainage.storage.read_tsv`).

    Returns
    -------
    dict
        ``fd`` (list of float or None, one per frame: None where n/a), ``mean_fd``,
        ``max_fd`` (mm; None when every frame is n/a), ``mean_std_dvars``, ``mean_dvars``
        (None when the column is absent or all n/a), ``fd_dvars_r`` (Pearson r of FD and
        DVARS; None without DVARS or with under 3 frames that have both).

    Raises
    ------
    InputDataError
        If the file is missing or empty, has no ``framewise_displacement`` column, or one of
        the three columns holds a cell that is neither a finite number nor n/a.
    """
    table = storage.read_tsv(confounds_file)
    fd = _numeric(table, FD_COLUMN, confounds_file)
    if fd is None:
        raise InputDataError(f"{confounds_file}: expected a {FD_COLUMN!r} column (motion QC needs it), "
                             f"found none among its {len(table.columns)} columns")
    known = fd[~np.isnan(fd)]
    dvars = _numeric(table, "dvars", confounds_file)
    return {
        "fd": [None if np.isnan(v) else float(v) for v in fd],
        "mean_fd": float(known.mean()) if known.size else None,
        "max_fd": float(known.max()) if known.size else None,
        "mean_std_dvars": _mean(_numeric(table, "std_dvars", confounds_file)),
        "mean_dvars": _mean(dvars),
        "fd_dvars_r": _correlation(fd, dvars),
    }


def _correlation(fd: np.ndarray, dvars: np.ndarray | None) -> float | None:
    """Pearson r of FD and DVARS over the frames that have both (None: under 3 frames or constant).

    Before denoising, frame-to-frame signal change follows head motion (Power et al. 2012);
    how strongly is a per-run summary of motion artefact.
    """
    if dvars is None:
        return None
    both = ~np.isnan(fd) & ~np.isnan(dvars)
    if both.sum() < 3 or np.ptp(fd[both]) == 0 or np.ptp(dvars[both]) == 0:
        return None
    return float(np.corrcoef(fd[both], dvars[both])[0, 1])


def _high_motion_reason(fd: list | None, qc: QCParams) -> str | None:
    """The reason when too large a fraction of the frames with an FD value exceed ``high_motion_fd``."""
    known = np.array([v for v in (fd or []) if v is not None], dtype=float)
    if qc.max_high_motion_fraction is None or not known.size:
        return None
    n_high = int((known > qc.high_motion_fd).sum())
    fraction = n_high / known.size
    if fraction <= qc.max_high_motion_fraction:
        return None
    return (f"high-motion fraction {fraction:.3f} ({n_high} of {known.size} frames with FD > "
            f"qc.high_motion_fd {qc.high_motion_fd:g} mm) > qc.max_high_motion_fraction "
            f"{qc.max_high_motion_fraction:g}")


def _reasons(record: dict, qc: QCParams) -> list[str]:
    """Every threshold a subject's metrics exceed, as readable reasons (">" excludes; equal is kept)."""
    reasons = []
    mean_fd = record["mean_fd"]
    if qc.max_mean_fd is not None and mean_fd > qc.max_mean_fd:
        reasons.append(f"mean FD {mean_fd:.3f} mm > qc.max_mean_fd {qc.max_mean_fd:g} mm")
    high = _high_motion_reason(record.get("fd"), qc)
    if high:
        reasons.append(high)
    dvars = record.get("mean_std_dvars")
    if qc.max_mean_std_dvars is not None and dvars is not None and dvars > qc.max_mean_std_dvars:
        reasons.append(f"mean std DVARS {dvars:.3f} > qc.max_mean_std_dvars {qc.max_mean_std_dvars:g}")
    return reasons


def motion_exclusions(records: dict[str, dict], params: dict) -> pd.DataFrame:
    """Subjects over a motion threshold.

    Parameters
    ----------
    records : dict
        participant_id -> extraction QC record (``status``, ``mean_fd``, ``fd``,
        ``mean_std_dvars``; see :func:`motion_metrics`). Only records with status
        "included" are checked. Records with ``mean_fd`` None (inputs without a confounds
        table, e.g. ABIDE PCP ``func_preproc``, which PCP already denoised) are not checked:
        nothing is known about their motion here.
    params : dict
        The ``qc`` config section: ``max_mean_fd`` (mm), ``high_motion_fd`` (mm),
        ``max_high_motion_fraction`` (0-1: frames with FD > ``high_motion_fd`` over the
        frames with an FD value), ``max_mean_std_dvars``; null disables a check. A value
        equal to its threshold is kept.

    Returns
    -------
    DataFrame
        participant_id, stage ("qc"), reason (each value, its threshold and config key;
        several joined with "; "); one row per excluded subject, in ``records`` order.

    Raises
    ------
    ConfigError
        If ``params`` lacks a key, has an unknown one, or a value is not a number (or null).
    """
    qc = QCParams.from_dict(params)
    rows = []
    for pid, record in records.items():
        if record.get("status") != "included" or record.get("mean_fd") is None:
            continue
        reasons = _reasons(record, qc)
        if reasons:
            log.warning("excluding %s (qc): %s", pid, "; ".join(reasons))
            rows.append((pid, STAGE, "; ".join(reasons)))
    return storage.exclusions_frame(rows)
