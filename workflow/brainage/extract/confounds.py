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
        Its preset (``denoise``, or ``custom``) and the censoring keys, as
        :attr:`ExtractParams.confounds` turns them into nilearn's arguments.

    Returns
    -------
    confounds : DataFrame, shape (n_timepoints, n_confounds), or None
        Demeaned regressors (None for an empty strategy).
    sample_mask : ndarray of int, shape (n_frames_kept,), or None
        Indices of the frames kept (None: all frames). Non-steady-state volumes flagged by
        fMRIPrep are always dropped; with ``scrub``, frames over the FD / std DVARS
        thresholds and segments shorter than ``scrub_min_segment`` are dropped too
        (Power et al. 2014, NeuroImage 84:320).

    Raises
    ------
    InputDataError
        If the confounds file lacks columns the strategy needs, or nilearn rejects it.
    """
    args = params.confounds
    if "scrub" in args["strategy"]:
        header = pd.read_csv(confounds_file, sep="\t", nrows=0).columns
        absent = [c for c in _SCRUB_COLUMNS if c not in header]
        if absent:
            raise InputDataError(
                f"{confounds_file}: missing columns {absent} needed by extract.scrub (censoring)"
            )
    try:
        confounds, sample_mask = load_confounds(str(bold), demean=True, **args)
    except (ValueError, KeyError) as err:
        # nilearn reports wholly missing groups as ValueError; a group with only some of its
        # columns (e.g. csf without white_matter) escapes as a pandas KeyError.
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise InputDataError(
            f"{confounds_file}: cannot select the confounds of extract.denoise {params.denoise!r} "
            f"({_describe(args)}): {reason}"
        ) from err
    return confounds, sample_mask


def frames_kept(
    n_timepoints: int,
    sample_mask: np.ndarray | None,
    params: ExtractParams,
    confounds_file: str | os.PathLike,
    t_r: float,
) -> np.ndarray:
    """Return the indices of the frames kept and check that enough clean data is left.

    Parameters
    ----------
    n_timepoints : int
    sample_mask : ndarray of int, or None
        From :func:`select_confounds` (None: all frames).
    params : ExtractParams
        ``min_frames`` and ``min_seconds`` (scan time left = frames kept x TR).
    confounds_file : path
        Named in the error.
    t_r : float
        Repetition time (s).

    Returns
    -------
    ndarray of int64, shape (n_frames_kept,)

    Raises
    ------
    InputDataError
        If fewer than ``params.min_frames`` frames or ``params.min_seconds`` seconds are left.
    """
    kept = np.arange(n_timepoints) if sample_mask is None else np.asarray(sample_mask, dtype=np.int64)
    seconds = kept.size * t_r
    if kept.size < params.min_frames or seconds < params.min_seconds:
        raise InputDataError(
            f"{confounds_file}: {kept.size} of {n_timepoints} frames left after censoring "
            f"({censoring_rule(params)}) = {seconds:g} s of clean data at TR {t_r:g} s; need "
            f"{params.min_frames} frames (extract.min_frames) and {params.min_seconds:g} s "
            "(extract.min_seconds)"
        )
    return kept


def censoring_rule(params: ExtractParams) -> str:
    """What censoring removes, in words (for messages)."""
    if not params.scrub:
        return "non-steady-state volumes"
    args = params.confounds
    return (f"FD > {args['fd_threshold']:g} mm, std DVARS > {args['std_dvars_threshold']:g}, "
            f"segments < {params.scrub_min_segment} frames, non-steady-state volumes")


def _describe(args: dict) -> str:
    """The regressor groups and their options, e.g. ``motion=full, wm_csf=basic, high_pass``."""
    parts = []
    for group in args["strategy"]:
        if group == "compcor":
            parts.append(f"compcor={args['compcor']} n={args['n_compcor']}")
        elif group in ("motion", "wm_csf", "global_signal"):
            parts.append(f"{group}={args[group]}")
        elif group != "scrub":
            parts.append(group)
    return ", ".join(parts) or "no regressors"
