"""Read and check one subject's inputs (fMRIPrep or ABIDE PCP) and the atlas (BOLD, TR, mask, labels)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.image import resample_to_img
from nilearn.interfaces.bids import parse_bids_filename

from brainage.errors import InputDataError
from brainage.extract import nifti

logger = logging.getLogger(__name__)

# fMRIPrep renamed the confounds suffix in 20.2 (regressors -> timeseries); nilearn accepts both.
_CONFOUNDS_SUFFIXES = ("timeseries", "regressors")


def sidecar_path(bold: str | os.PathLike) -> Path:
    """Return the JSON sidecar of a NIfTI file (same name, ``.json`` instead of ``.nii[.gz]``)."""
    bold = Path(bold)
    stem = bold.name.removesuffix(".gz").removesuffix(".nii")
    return bold.with_name(stem + ".json")


def read_repetition_time(bold: str | os.PathLike) -> float:
    """Read ``RepetitionTime`` (seconds) from the BOLD's BIDS sidecar.

    Raises
    ------
    InputDataError
        If the sidecar is missing, unreadable, not JSON, or has no positive ``RepetitionTime``.
    """
    sidecar = sidecar_path(bold)
    if not sidecar.is_file():
        raise InputDataError(f"{sidecar}: BOLD sidecar not found (needed for RepetitionTime)")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputDataError(f"{sidecar}: not valid JSON ({err})") from err
    except OSError as err:  # e.g. no read permission
        raise InputDataError(f"{sidecar}: BOLD sidecar cannot be read ({err})") from err
    tr = meta.get("RepetitionTime") if isinstance(meta, dict) else None
    if not isinstance(tr, (int, float)) or isinstance(tr, bool) or tr <= 0:
        raise InputDataError(
            f"{sidecar}: expected a positive number under 'RepetitionTime', found {tr!r}"
        )
    return float(tr)


# NIfTI time units (xyzt_units) -> seconds per unit; spectral units (hz, ppm, rads) are no time.
_SECONDS_PER_UNIT = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def repetition_time(bold: str | os.PathLike) -> tuple[float, str]:
    """Repetition time (s) of the BOLD, from its JSON sidecar if there is one, else its header.

    The sidecar wins when it exists: fMRIPrep writes one, and some fMRIPrep versions wrote a
    wrong header TR (nipreps/fmriprep#3216). ABIDE PCP ``func_preproc`` files have no sidecar,
    so their header is the only source.

    Returns
    -------
    tr : float
        Repetition time (s), positive.
    source : {"sidecar", "header"}
        Where it was read.

    Raises
    ------
    InputDataError
        As :func:`read_repetition_time` for a sidecar, :func:`header_repetition_time` otherwise.
    """
    if sidecar_path(bold).is_file():
        return read_repetition_time(bold), "sidecar"
    return header_repetition_time(bold), "header"


def header_repetition_time(bold: str | os.PathLike) -> float:
    """Read the repetition time from the NIfTI header (``pixdim[4]`` in ``xyzt_units``).

    Milliseconds and microseconds are converted to seconds; an unknown time unit is taken
    as seconds (the NIfTI-1 default reading) with a warning.

    Returns
    -------
    float
        Repetition time (s), positive.

    Raises
    ------
    InputDataError
        If the image has no time axis, a spectral time unit, or a zero / non-finite TR.
    """
    header = nifti.read_header(bold).header
    zooms = header.get_zooms()
    if len(zooms) < 4:
        raise InputDataError(
            f"{bold}: no JSON sidecar and no time axis in the NIfTI header (shape "
            f"{tuple(header.get_data_shape())}), so no repetition time"
        )
    value, unit = float(zooms[3]), header.get_xyzt_units()[1]
    if unit == "unknown":
        logger.warning("%s: NIfTI time unit unknown; taking pixdim[4] = %g as seconds", bold, value)
        unit = "sec"
    if unit not in _SECONDS_PER_UNIT:
        raise InputDataError(
            f"{bold}: expected a time unit (sec, msec, usec) in the NIfTI header xyzt_units, "
            f"found {unit!r}"
        )
    tr = value * _SECONDS_PER_UNIT[unit]
    if not np.isfinite(tr) or tr <= 0:
        raise InputDataError(
            f"{bold}: no JSON sidecar and expected a positive repetition time in the NIfTI "
            f"header (pixdim[4]), found {value:g} {unit}"
        )
    return tr


def load_mask(mask: str | os.PathLike, bold_img: nib.Nifti1Image) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load the brain mask and check it lies on the BOLD grid.

    Returns
    -------
    img : Nifti1Image
    brain : ndarray, shape (x, y, z), bool

    Raises
    ------
    InputDataError
        If the mask is not a readable NIfTI image (missing, empty, truncated, corrupt), is not
        3D on the BOLD grid (same shape and affine) or has no voxel.
    """
    img = nifti.read_header(mask)
    grid = tuple(bold_img.shape[:3])
    if tuple(img.shape) != grid or not np.allclose(img.affine, bold_img.affine, atol=1e-3):
        raise InputDataError(
            f"{mask}: expected a 3D mask on the BOLD grid (shape {grid}, affine "
            f"{np.round(bold_img.affine, 3).tolist()}), found shape {tuple(img.shape)}, "
            f"affine {np.round(img.affine, 3).tolist()}"
        )
    brain = nifti.read_data(mask, img) > 0
    if not brain.any():
        raise InputDataError(f"{mask}: brain mask has no voxel")
    return img, brain


def read_atlas_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read the atlas label table (TSV with columns ``index`` and ``name``).

    Returns
    -------
    DataFrame
        ``index`` (int64, positive label values) and ``name`` (str, unique), in file order.

    Raises
    ------
    InputDataError
        If columns are missing, indices are not unique positive integers or names repeat.
    """
    table = pd.read_csv(path, sep="\t")
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise InputDataError(
            f"{path}: expected columns 'index' and 'name', missing {sorted(missing)} "
            f"(found {list(table.columns)})"
        )
    index = pd.to_numeric(table["index"], errors="coerce")
    valid = index.notna() & (index == index.round()) & (index > 0)
    if not valid.all() or index.duplicated().any() or table["name"].duplicated().any():
        raise InputDataError(
            f"{path}: expected unique positive integer 'index' values and unique 'name's, "
            f"found index {table['index'].tolist()[:10]}..., {int(table['name'].duplicated().sum())} "
            "repeated names"
        )
    return pd.DataFrame({"index": index.astype(np.int64), "name": table["name"].astype(str)})


def load_atlas(path: str | os.PathLike) -> nib.Nifti1Image:
    """Load an integer label image (0 = background).

    Raises
    ------
    InputDataError
        If the image is not 3D or holds non-integer or negative values.
    """
    img = nib.load(path)
    if len(img.shape) != 3:
        raise InputDataError(f"{path}: expected a 3D label image, found shape {tuple(img.shape)}")
    data = np.asarray(img.dataobj)
    if not np.array_equal(data, np.round(data)) or data.min() < 0:
        raise InputDataError(f"{path}: expected non-negative integer labels, found other values")
    return img


def atlas_on_grid(atlas_img: nib.Nifti1Image, target_img: nib.Nifti1Image) -> np.ndarray:
    """Resample the atlas onto the BOLD grid with nearest-neighbour interpolation.

    Nearest-neighbour keeps labels intact (no blending of neighbouring label values), as
    nilearn's ``NiftiLabelsMasker`` does when it resamples labels to the data.

    Returns
    -------
    ndarray, shape (x, y, z), int64
    """
    resampled = resample_to_img(
        atlas_img, target_img, interpolation="nearest", force_resample=True, copy_header=True
    )
    return np.rint(np.asarray(resampled.dataobj)).astype(np.int64)


def find_confounds_file(bold: str | os.PathLike) -> Path:
    """Return the fMRIPrep confounds TSV that nilearn's ``load_confounds`` pairs with ``bold``.

    Same rule as nilearn: in the BOLD's folder, a ``desc-confounds`` file whose other
    entities are a subset of the BOLD's entities.

    Raises
    ------
    InputDataError
        If there is no such file or more than one.
    """
    bold = Path(bold)
    entities = parse_bids_filename(str(bold))["entities"]
    entities["desc"] = "confounds"
    found = []
    for suffix in _CONFOUNDS_SUFFIXES:
        for candidate in bold.parent.glob(f"*desc-confounds_{suffix}.tsv"):
            cand = parse_bids_filename(str(candidate))["entities"]
            if all(entities.get(key) == value for key, value in cand.items()):
                found.append(candidate)
    if len(found) != 1:
        raise InputDataError(
            f"{bold}: expected one fMRIPrep confounds file beside it "
            f"(*_desc-confounds_timeseries.tsv), found {sorted(p.name for p in found)}"
        )
    return found[0]


def check_confounds_file(bold: str | os.PathLike, confounds: str | os.PathLike) -> Path:
    """Check that ``confounds`` is the file nilearn will read for ``bold``.

    Raises
    ------
    InputDataError
        If nilearn would find no confounds file, or several (a data problem).
    ValueError
        If it would read another file than ``confounds`` (the caller wired the wrong file).
    """
    found = find_confounds_file(bold)
    if found.resolve() != Path(confounds).resolve():
        raise ValueError(
            f"--confounds {confounds} is not the file nilearn load_confounds reads for "
            f"{bold} (it reads {found})"
        )
    return found
