"""Real ROI series as volumes: paint each region's series on its atlas voxels, block-average to the CNN grid."""

from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np
from nilearn.image import load_img
from scipy import sparse

from brainage.errors import InputDataError
from brainage.extract.volumes import block_operator, block_ratio, scale_frames

logger = logging.getLogger(__name__)


def load_labels(label_img: str | os.PathLike | nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D integer label image (0 = background, regions 1..n_regions).

    Parameters
    ----------
    label_img : path or nibabel image

    Returns
    -------
    labels : ndarray, shape (x, y, z), int64
    affine : ndarray, shape (4, 4), float64

    Raises
    ------
    InputDataError
        If the image is not 3D or holds negative or non-integer values.
    """
    img = load_img(label_img)
    name = _name(label_img)
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise InputDataError(f"{name}: expected a 3D label image, found shape {data.shape}")
    labels = np.rint(data).astype(np.int64)
    if np.any(labels != data) or labels.min() < 0:
        raise InputDataError(f"{name}: expected non-negative integer labels, found values "
                             f"{data.min():g}..{data.max():g} that are not all whole numbers >= 0")
    return labels, np.asarray(img.affine, dtype=float)


def _name(label_img) -> str:
    """How error messages name the label image: its path, or "label image" for an in-memory one."""
    return os.fspath(label_img) if isinstance(label_img, (str, os.PathLike)) else "label image"


def projection_operator(
    label_img: str | os.PathLike | nib.Nifti1Image, voxel_size: float, n_regions: int | None = None
) -> tuple[sparse.csr_array, np.ndarray, np.ndarray]:
    """Coarse voxels as weighted sums of region series: block averaging applied to the one-hot labels.

    Painting region ``r``'s series on every voxel labelled ``r`` and then averaging coarse
    blocks over their labelled voxels is linear in the series, so it collapses to one
    ``(n_coarse_voxels, n_regions)`` matrix: ``W = B.T @ L`` with ``B`` the block-averaging
    operator (fine voxels x coarse voxels) and ``L`` the one-hot label matrix (fine voxels x
    regions). The fine 4D array is never built. ``B`` is extraction's
    :func:`~brainage.extract.volumes.block_operator` with the labelled voxels as the brain
    mask: a coarse voxel is in the mask when at least half its block is labelled, and its value
    is the mean over those labelled voxels only.

    Parameters
    ----------
    label_img : path or nibabel image
        3D labels: 0 background, region ``r`` (1-based) -> series column ``r - 1``.
    voxel_size : float
        Coarse voxel size (mm), as ``extract.volume_voxel_size``; not finer than the labels.
    n_regions : int, optional
        Number of series columns; default the largest label. Labels absent from the image
        give all-zero columns of ``W``.

    Returns
    -------
    weights : scipy.sparse.csr_array, shape (n_voxels, n_regions), float64
        Rows: in-mask coarse voxels in C order of the coarse grid (as ``coarse[coarse_mask]``);
        each row sums to 1.
    coarse_mask : ndarray, shape (ceil(x/r), ceil(y/r), ceil(z/r)), bool
    affine : ndarray, shape (4, 4)
        Affine of the coarse grid (:func:`~brainage.extract.volumes.coarse_affine`).

    Raises
    ------
    InputDataError
        If the image has labels above ``n_regions`` or no labelled voxel.
    ConfigError
        If ``voxel_size`` is finer than the label image's voxels.
    """
    labels, affine = load_labels(label_img)
    top = int(labels.max())
    n_regions = top if n_regions is None else int(n_regions)
    if top == 0 or top > n_regions:
        raise InputDataError(f"{_name(label_img)}: expected labels 1..{n_regions}, found largest label {top}")
    ratio = block_ratio(affine, voxel_size)
    # Extraction's own block operator, with the labelled voxels as the brain: the projected
    # volumes are what extraction would make of the painted frames.
    blocks, mask, coarse = block_operator(labels > 0, affine, ratio)
    flat = labels.ravel(order="F")  # the operator's rows are the fine grid in NIfTI order
    labelled = np.flatnonzero(flat)
    onehot = sparse.csr_array((np.ones(labelled.size), (labelled, flat[labelled] - 1)), shape=(flat.size, n_regions))
    weights = sparse.csr_array(blocks.T @ onehot)
    logger.info("projection at %g mm: coarse grid %s, %d in-mask voxels, %d regions",
                voxel_size, mask.shape, weights.shape[0], n_regions)
    return weights, mask, coarse


def project_series(weights: sparse.csr_array, series: np.ndarray) -> np.ndarray:
    """Coarse frames from region series: ``series @ weights.T``.

    Parameters
    ----------
    weights : scipy.sparse.csr_array, shape (n_voxels, n_regions)
        From :func:`projection_operator`.
    series : ndarray, shape (n_timepoints, n_regions)

    Returns
    -------
    ndarray, shape (n_timepoints, n_voxels), float32

    Raises
    ------
    InputDataError
        If ``series`` is not 2D with ``n_regions`` columns, or holds NaN/inf.
    """
    series = np.asarray(series)
    if series.ndim != 2 or series.shape[1] != weights.shape[1]:
        raise InputDataError(f"series shape {series.shape} does not match the projection's "
                             f"{weights.shape[1]} regions: expected (n_timepoints, {weights.shape[1]})")
    if not np.all(np.isfinite(series)):
        raise InputDataError(f"series holds non-finite values (NaN/inf) in regions "
                             f"{np.flatnonzero(~np.isfinite(series).all(axis=0)).tolist()}")
    # (n_voxels, R) @ (R, T) -> (n_voxels, T): the sparse matrix on the left keeps it a sparse product.
    return np.ascontiguousarray((weights @ series.T.astype(np.float64)).T, dtype=np.float32)


def constant_regions(series: np.ndarray) -> np.ndarray:
    """Indices (0-based columns) of regions whose series is constant over time.

    Parameters
    ----------
    series : ndarray, shape (n_timepoints, n_regions)

    Returns
    -------
    ndarray of int64, shape (n_constant,)
    """
    series = np.asarray(series)
    return np.flatnonzero(np.all(series == series[:1], axis=0))


def projected_frames(weights: sparse.csr_array, series: np.ndarray, scaling: str) -> np.ndarray:
    """Project and scale one subject's series as extraction scales its volumes.

    Constant regions project to a constant, which both scalings map to 0.

    Parameters
    ----------
    weights : scipy.sparse.csr_array, shape (n_voxels, n_regions)
    series : ndarray, shape (n_timepoints, n_regions)
    scaling : {"global", "voxel"}
        ``extract.volume_scaling`` (:func:`~brainage.extract.volumes.scale_frames`).

    Returns
    -------
    ndarray, shape (n_timepoints, n_voxels), float32
    """
    # No temporal filtering happens in scaling, so the repetition time (not in the PCP ROI
    # files, and site dependent) is not needed.
    return scale_frames(project_series(weights, series), scaling, None)
