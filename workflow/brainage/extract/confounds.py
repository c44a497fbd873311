"""Confound selection and censoring with nilearn's fMRIPrep interface (motion QC: brainage.preprocess.qc)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from nilearn.interfaces.fmriprep import load_confounds

from brainage.errors import InputDataError
from brainage.extract.params import ExtractParams

logger = logging.getLogger(__name__)

# Columns nilearn's scrub reads by name (it raises a bare KeyError when they are absent).
_SCRUB_COLUMNS = ("framewise_displacement", "std_dvars")


def select_confounds(
    bold: str | os.PathLike, confounds_file: str | os.PathLike, params: ExtractParams
) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """Select the confound regressors and the frames to keep with nilearn ``load_confounds``.

    Parameters
    ----------
    bold : path
        Preprocessed BOLD (fMRIPrep name); nilearn finds the confounds file from it.
    confounds_file : path
        That confounds file (already located), named in error messages.
    params : ExtractParams
        ``strategy``, ``motion``, ``wm_csf``, ``scrub_min_segment``, ``fd_threshold``,
        ``std_dvars_threshold`` are passed through.

    Returns
    -------
    confounds : DataFrame, shape (n_timepoints, n_confounds), or None
        Demeaned regressors (None for an empty strategy).
    sample_mask : ndarray of int, shape (n_frames_kept,), or None
        Indices of the frames kept (None: all frames). Non-steady-state volumes flagged by
        fMRIPrep are always dropped; with "scrub", frames over the FD / std DVARS
        thresholds and segments shorter than ``scrub_min_segment`` are dropped too
        (Power et al. 2014, NeuroImage 84:320).

    Raises
    ------
    InputDataError
        If the confounds file lacks columns the strategy needs, or nilearn rejects it.
    """
    if "scrub" in params.strategy:
        header = pd.read_csv(confounds_file, sep="\t", nrows=0).columns
        absent = [c for c in _SCRUB_COLUMNS if c not in header]
        if absent:
            raise InputDataError(
                f"{confounds_file}: missing columns {absent} needed by extract.strategy 'scrub'"
            )
    try:
        confounds, sample_mask = load_confounds(
            str(bold),
            strategy=list(params.strategy),
            motion=params.motion,
            wm_csf=params.wm_csf,
            scrub=params.scrub_min_segment,
            fd_threshold=params.fd_threshold,
            std_dvars_threshold=params.std_dvars_threshold,
            demean=True,
        )
    except (ValueError, KeyError) as err:
        # nilearn reports wholly missing groups as ValueError; a group with only some of its
        # columns (e.g. csf without white_matter) escapes as a pandas KeyError.
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise InputDataError(
            f"{confounds_file}: cannot select confounds for extract.strategy "
            f"{list(params.strategy)} (motion={params.motion}, wm_csf={params.wm_csf}): {reason}"
        ) from err
    return confounds, sample_mask


def frames_kept(
    n_timepoints: int,
    sample_mask: np.ndarray | None,
    params: ExtractParams,
    confounds_file: str | os.PathLike,
) -> np.ndarray:
    """Return the indices of the frames kept and check there are enough.

    Returns
    -------
    ndarray of int64, shape (n_frames_kept,)

    Raises
    ------
    InputDataError
        If fewer than ``params.min_frames`` frames are left.
    """
    kept = np.arange(n_timepoints) if sample_mask is None else np.asarray(sample_mask, dtype=np.int64)
    if kept.size < params.min_frames:
        if "scrub" in params.strategy:
            rule = (
                f"FD > {params.fd_threshold} mm, std DVARS > {params.std_dvars_threshold}, "
                f"segments < {params.scrub_min_segment} frames, non-steady-state volumes"
            )
        else:
            rule = "non-steady-state volumes"
        raise InputDataError(
            f"{confounds_file}: {kept.size} of {n_timepoints} frames left after censoring "
            f"({rule}), need {params.min_frames} (extract.min_frames)"
        )
    return kept
