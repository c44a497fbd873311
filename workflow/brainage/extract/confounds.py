"""Confound selection and censoring with nilearn's fMRIPrep interface (motion QC: brainage.preprocess.qc)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn.interfaces.fmriprep import load_confounds

from brainage import storage
from brainage.errors import InputDataError
from brainage.extract.params import ExtractParams

logger = logging.getLogger(__name__)

# Columns nilearn's scrub reads by name (it raises a bare KeyError when they are absent).
_SCRUB_COLUMNS = ("framewise_displacement", "std_dvars")


def select_confounds(
    bold: str | os.PathLike,
    confounds_file: str | os.PathLike,
    params: ExtractParams,
    n_timepoints: int | None = None,
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
    n_timepoints : int, optional
        Frames of the BOLD: the table must have one row per frame.

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
        If the confounds file has another number of rows than ``n_timepoints``, lacks columns
        the strategy needs, holds text or non-finite values (n/a, NaN, inf) in a selected
        regressor beyond the first frame, or nilearn rejects it or its JSON sidecar.
    """
    args = params.confounds
    table = storage.read_tsv(confounds_file)
    if n_timepoints is not None and len(table) != n_timepoints:
        raise InputDataError(
            f"{confounds_file}: expected one row per BOLD frame ({n_timepoints} rows), found {len(table)}"
        )
    if "scrub" in args["strategy"]:
        absent = [c for c in _SCRUB_COLUMNS if c not in table.columns]
        if absent:
            raise InputDataError(
                f"{confounds_file}: missing columns {absent} needed by extract.scrub (censoring)"
            )
    # Selected first without demeaning: nilearn's demeaning (scikit-learn) raises on inf
    # without naming a column, and the check below names every bad cell. Its warnings come
    # once, from the second call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw, _ = _load(bold, confounds_file, params, table, demean=False)
    _check_finite(raw, confounds_file, params)
    return _load(bold, confounds_file, params, table, demean=True)


def _load(bold, confounds_file, params: ExtractParams, table: pd.DataFrame, demean: bool):
    """nilearn ``load_confounds`` with its errors turned into ``InputDataError`` naming the file."""
    args = params.confounds
    try:
        return load_confounds(str(bold), demean=demean, **args)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        # Raised while reading the sidecar (nilearn reads it for every strategy): the table
        # itself was already read as UTF-8 text.
        sidecar = Path(confounds_file).with_suffix(".json")
        raise InputDataError(f"{sidecar}: confounds sidecar is not valid JSON ({err})") from err
    except TypeError as err:
        # Text in a numeric column: nilearn's n/a handling calls np.isnan on it.
        raise InputDataError(f"{confounds_file}: {_text_cells(table)}") from err
    except (ValueError, KeyError) as err:
        # nilearn reports wholly missing groups as ValueError; a group with only some of its
        # columns (e.g. csf without white_matter) escapes as a pandas KeyError.
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise InputDataError(
            f"{confounds_file}: cannot select the confounds of extract.denoise {params.denoise!r} "
            f"({_describe(args)}): {reason}"
        ) from err


def _check_finite(confounds: pd.DataFrame | None, confounds_file, params: ExtractParams) -> None:
    """Every selected regressor must be finite in every frame.

    fMRIPrep writes n/a in the first row of derivative, FD and DVARS columns (no previous
    frame); nilearn fills that row from the second, so any n/a, NaN or inf left is bad data
    that would stop the cleaning (spline fill, regression) with an unnamed error.
    """
    if confounds is None or confounds.empty:
        return
    values = confounds.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    cells = [f"{name} at {_ranges(np.flatnonzero(bad[:, k]))}"
             for k, name in enumerate(confounds.columns) if bad[:, k].any()]
    raise InputDataError(
        f"{confounds_file}: n/a or non-finite values (NaN, inf) in regressors of extract.denoise "
        f"{params.denoise!r}: {'; '.join(cells)} (frames count from 0 = the first data row; only "
        "the first frame of derivative, FD and DVARS columns may be n/a)"
    )


def _text_cells(table: pd.DataFrame) -> str:
    """Where a confounds table holds text instead of numbers (for messages)."""
    cells = []
    for name in table.columns:
        numeric = pd.to_numeric(table[name], errors="coerce")
        rows = np.flatnonzero(table[name].notna().to_numpy() & numeric.isna().to_numpy())
        if rows.size:
            cells.append(f"{name} at {_ranges(rows)} ({table[name].iloc[rows[0]]!r})")
    return ("expected numbers or n/a, found text: " + "; ".join(cells) if cells
            else "expected numbers or n/a in every regressor column")


def _ranges(indices: np.ndarray) -> str:
    """``[3, 4, 5, 9]`` -> ``"frames 3-5, 9"``, ``[4]`` -> ``"frame 4"``; past five runs, "..." and a count."""
    runs, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            runs.append(str(start) if start == i else f"{start}-{i}")
            start = None
    text = ("frame " if len(indices) == 1 else "frames ") + ", ".join(runs[:5])
    return text + (f", ... ({len(indices)} frames)" if len(runs) > 5 else "")


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
