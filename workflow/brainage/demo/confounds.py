"""fMRIPrep-format confounds (TSV columns and JSON metadata) computed from a generated demo run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainage.demo.grid import DemoGrid

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: fMRIPrep's settings: Power FD head radius, CompCor variance criterion, DCT high-pass
#: period, tCompCor share of highest-variance voxels, motion-outlier thresholds
#: (fMRIPrep docs, "Confounds estimated from BOLD").
FD_RADIUS_MM = 50.0
RMSD_RADIUS_MM = 80.0
COMPCOR_VARIANCE = 0.5
HIGH_PASS_PERIOD_S = 128.0
TCOMPCOR_FRACTION = 0.02
OUTLIER_FD_MM, OUTLIER_STD_DVARS = 0.5, 1.5
#: Tissue-fraction thresholds of the WM and CSF masks (the "eroded" masks of fMRIPrep).
WM_THRESHOLD, CSF_THRESHOLD = 0.8, 0.5


def framewise_displacement(motion: np.ndarray, radius: float = FD_RADIUS_MM) -> np.ndarray:
    """Power framewise displacement (Power et al. 2012, NeuroImage 59:2142).

    Parameters
    ----------
    motion : ndarray, shape (n_timepoints, 6)
        Translations (mm) then rotations (rad).
    radius : float
        Head radius (mm) turning rotations into arc lengths.

    Returns
    -------
    ndarray of float64, shape (n_timepoints,)
        ``sum |d trans| + radius * sum |d rot|`` (mm); NaN in the first frame.
    """
    step = np.abs(np.diff(motion, axis=0))
    fd = step[:, :3].sum(axis=1) + radius * step[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def rms_displacement(motion: np.ndarray, radius: float = RMSD_RADIUS_MM) -> np.ndarray:
    """Relative RMS displacement between frames over a sphere (Jenkinson 1999; MCFLIRT's ``rmsrel``).

    For a small relative rotation ``w`` and translation ``t`` the mean squared displacement
    over a sphere of ``radius`` about the centre is ``|t|^2 + radius^2 / 5 |w|^2``.

    Returns
    -------
    ndarray of float64, shape (n_timepoints,)
        RMS displacement (mm); NaN in the first frame.
    """
    step = np.diff(motion, axis=0)
    rms = np.sqrt((step[:, :3] ** 2).sum(axis=1) + radius**2 / 5.0 * (step[:, 3:] ** 2).sum(axis=1))
    return np.concatenate([[np.nan], rms])


def dvars(bold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and standardised DVARS as nipype's ``compute_dvars`` (used by fMRIPrep) defines them.

    Vectorised re-implementation (nipype needs nitime and loops over voxels): intensities are
    scaled to a median of 1000; DVARS is the RMS over voxels of the frame-to-frame difference;
    the standardised DVARS divides it by its expected value under stationarity,
    ``mean_v sqrt(2 (1 - ar1_v)) * robust_sd_v`` (Nichols 2013, "Notes on creating a
    standardized version of DVARS").

    Parameters
    ----------
    bold : ndarray, shape (n_timepoints, n_voxels)
        In-mask BOLD intensities.

    Returns
    -------
    dvars, std_dvars : ndarray of float64, shape (n_timepoints,)
        NaN in the first frame.
    """
    # float32 as nipype reads the image; (n_voxels, n_timepoints) rows for the per-voxel stats.
    data = np.ascontiguousarray(bold.T, dtype=np.float32)
    data *= 1000.0 / np.median(data)
    # FSL's robust SD with "lower" percentile interpolation, as nipype does.
    q75, q25 = np.percentile(data, [75, 25], axis=1, method="lower")
    robust_sd = (q75 - q25) / 1.349
    centred = data - data.mean(axis=1, keepdims=True)
    # Yule-Walker lag-1 autocorrelation (biased autocovariance, as nitime's AR_est_YW).
    ar1 = np.einsum("vt,vt->v", centred[:, 1:], centred[:, :-1]) / np.einsum("vt,vt->v", centred, centred)
    expected = (np.sqrt(2.0 * (1.0 - ar1)) * robust_sd).mean(dtype=np.float64)
    diff = np.diff(data, axis=1)
    raw = np.sqrt(np.einsum("vt,vt->t", diff, diff, dtype=np.float64) / data.shape[0])
    nan = np.array([np.nan])
    return np.concatenate([nan, raw]), np.concatenate([nan, raw / expected])


def expand(df: pd.DataFrame) -> pd.DataFrame:
    """Add fMRIPrep's ``_derivative1``, ``_power2`` and ``_derivative1_power2`` columns.

    The backward difference leaves the first row of each derivative NaN (``n/a``).
    """
    columns = {}
    for name, values in df.items():
        derivative = values.diff()
        columns.update(
            {
                name: values,
                f"{name}_derivative1": derivative,
                f"{name}_power2": values**2,
                f"{name}_derivative1_power2": derivative**2,
            }
        )
    return pd.DataFrame(columns)


def cosine_basis(n_timepoints: int, tr: float, period_cut: float = HIGH_PASS_PERIOD_S) -> np.ndarray:
    """DCT-II high-pass basis, as nipype's ``_cosine_drift`` builds fMRIPrep's ``cosineXX``.

    Returns
    -------
    ndarray of float64, shape (n_timepoints, n_cosines)
        ``sqrt(2 / n) cos(pi k (t + 0.5) / n)`` for ``k = 1 .. floor(2 n tr / period_cut) - 1``
        (no constant column; zero columns for short runs).
    """
    order = max(int(np.floor(2.0 * n_timepoints * tr / period_cut)), 1)
    t = np.arange(n_timepoints)[:, None] + 0.5
    k = np.arange(1, order)[None, :]
    return np.sqrt(2.0 / n_timepoints) * np.cos(np.pi / n_timepoints * t * k)


def _residuals(data: np.ndarray, regressors: np.ndarray) -> np.ndarray:
    # Least-squares residuals of every column of ``data`` (n_timepoints, n) on ``regressors``,
    # by projection on an orthonormal basis: lstsq with thousands of right-hand sides is slow.
    basis, _ = np.linalg.qr(regressors)
    return data - basis @ (basis.T @ data)


def compcor(
    bold: np.ndarray, masks: dict[str, np.ndarray], tr: float, n_dummy: int
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """CompCor components as fMRIPrep computes them with nipype's ``compute_noise_components``.

    Non-steady-state frames are left out (and get zeros), the DCT high-pass basis (128 s) and
    the mean are regressed out, each voxel is variance-normalised, and the components that
    explain 50 % of the variance are kept (Behzadi et al. 2007, NeuroImage 37:90). Re-implemented
    because nipype's full SVD of the (n_timepoints, n_voxels) matrix costs ~100x the
    eigendecomposition of its (n_timepoints, n_timepoints) Gram matrix used here.

    Parameters
    ----------
    bold : ndarray, shape (n_timepoints, n_voxels)
    masks : dict of str to ndarray of bool, shape (n_voxels,)
        Mask name to voxels, decomposed separately in order.
    tr : float
        Repetition time (s).
    n_dummy : int
        Leading frames to leave out.

    Returns
    -------
    components : ndarray of float64, shape (n_timepoints, n_components)
        Retained components of every mask, in mask order (unit norm over the kept frames).
    cosine : ndarray of float64, shape (n_timepoints, n_cosines)
        The DCT basis regressed before the decomposition.
    metadata : list of dict
        Per retained component: ``Mask``, ``SingularValue``, ``VarianceExplained``,
        ``CumulativeVarianceExplained``.
    """
    n_kept = bold.shape[0] - n_dummy
    cosine = cosine_basis(n_kept, tr)
    regressors = np.column_stack([cosine, np.ones(n_kept)])
    columns, metadata = [], []
    for name, mask in masks.items():
        data = _residuals(bold[n_dummy:, mask].astype(np.float64), regressors)
        sd = data.std(axis=0)
        data /= np.where(sd > 0, sd, 1.0)
        eigval, eigvec = np.linalg.eigh(data @ data.T)
        order = np.argsort(eigval)[::-1]
        singular = np.sqrt(np.clip(eigval[order], 0.0, None))
        explained = singular**2 / np.sum(singular**2)
        cumulative = np.cumsum(explained)
        n_keep = int(np.searchsorted(cumulative, COMPCOR_VARIANCE) + 1)
        columns.append(eigvec[:, order[:n_keep]])
        metadata += [
            {
                "Mask": name,
                "SingularValue": float(singular[i]),
                "VarianceExplained": float(explained[i]),
                "CumulativeVarianceExplained": float(cumulative[i]),
            }
            for i in range(n_keep)
        ]
    pad = np.zeros((n_dummy, 1))
    components = np.hstack(columns)
    return (
        np.vstack([pad * np.ones((1, components.shape[1])), components]),
        np.vstack([pad * np.ones((1, cosine.shape[1])), cosine]),
        metadata,
    )


def tcompcor_mask(bold: np.ndarray, n_dummy: int) -> np.ndarray:
    """Voxels with the top 2 % temporal SD after quadratic detrending (nipype's TCompCor).

    Returns
    -------
    ndarray of bool, shape (n_voxels,)
    """
    n_kept = bold.shape[0] - n_dummy
    t = np.linspace(-1.0, 1.0, n_kept)
    detrended = _residuals(bold[n_dummy:].astype(np.float64), np.column_stack([np.ones(n_kept), t, t**2]))
    tstd = detrended.std(axis=0)
    return tstd >= np.percentile(tstd, round(100.0 * (1.0 - TCOMPCOR_FRACTION)))


def confounds_table(
    grid: DemoGrid, bold: np.ndarray, motion: np.ndarray, tr: float, n_dummy: int
) -> tuple[pd.DataFrame, dict]:
    """The ``desc-confounds_timeseries`` table and its JSON metadata, as fMRIPrep writes them.

    Parameters
    ----------
    grid : DemoGrid
    bold : ndarray, shape (n_timepoints, n_voxels)
        In-mask BOLD intensities.
    motion : ndarray, shape (n_timepoints, 6)
        Translations (mm) then rotations (rad).
    tr : float
        Repetition time (s).
    n_dummy : int
        Leading non-steady-state frames.

    Returns
    -------
    table : pandas.DataFrame, shape (n_timepoints, n_confounds)
    metadata : dict
        Column name to metadata (``Method``, and for CompCor ``Mask``, ``SingularValue``,
        ``VarianceExplained``, ``CumulativeVarianceExplained``, ``Retained``).
    """
    wm, csf = grid.wm >= WM_THRESHOLD, grid.csf >= CSF_THRESHOLD
    high_var = tcompcor_mask(bold, n_dummy)
    means = pd.DataFrame(
        {"global_signal": bold.mean(axis=1), "csf": bold[:, csf].mean(axis=1), "white_matter": bold[:, wm].mean(axis=1)}
    )
    dv, std_dv = dvars(bold)
    fd = framewise_displacement(motion)
    blocks = [
        expand(means.astype(np.float64)),
        pd.DataFrame({"csf_wm": bold[:, csf | wm].mean(axis=1), "tcompcor": bold[:, high_var].mean(axis=1)}),
        pd.DataFrame(
            {"std_dvars": std_dv, "dvars": dv, "framewise_displacement": fd, "rmsd": rms_displacement(motion)}
        ),
    ]
    metadata = {name: {"Method": "Mean"} for name in ("global_signal", "csf", "white_matter", "csf_wm", "tcompcor")}
    t_comp, cosine, t_meta = compcor(bold, {"tcompcor": high_var}, tr, n_dummy)
    a_comp, _, a_meta = compcor(bold, {"CSF": csf, "WM": wm, "combined": csf | wm}, tr, n_dummy)
    prefixes = ["t"] * len(t_meta) + [{"CSF": "c", "WM": "w", "combined": "a"}[m["Mask"]] for m in a_meta]
    components, counts = {}, dict.fromkeys("tcwa", 0)
    for prefix, values, meta in zip(prefixes, np.hstack([t_comp, a_comp]).T, t_meta + a_meta):
        name = f"{prefix}_comp_cor_{counts[prefix]:02d}"
        counts[prefix] += 1
        components[name] = values
        entry = {"Method": "tCompCor" if prefix == "t" else "aCompCor", **meta, "Retained": True}
        if prefix == "t":
            entry.pop("Mask")
        metadata[name] = entry
    blocks.append(pd.DataFrame(components))
    blocks.append(pd.DataFrame(cosine, columns=[f"cosine{i:02d}" for i in range(cosine.shape[1])]))
    blocks.append(_one_hot(np.arange(n_dummy), len(bold), "non_steady_state_outlier"))
    blocks.append(expand(pd.DataFrame(motion, columns=list(MOTION_COLUMNS))))
    outliers = np.flatnonzero((fd > OUTLIER_FD_MM) | (std_dv > OUTLIER_STD_DVARS))
    blocks.append(_one_hot(outliers, len(bold), "motion_outlier"))
    return pd.concat(blocks, axis=1), metadata


def _one_hot(frames: np.ndarray, n_timepoints: int, prefix: str) -> pd.DataFrame:
    # fMRIPrep's spike regressors: one column per flagged frame, 1.0 in that frame.
    eye = np.eye(n_timepoints)[:, frames]
    return pd.DataFrame(eye, columns=[f"{prefix}{i:02d}" for i in range(len(frames))])
