"""Downsampled volumes for the CNN: block averaging of the BOLD grid as one sparse matrix, and scaling."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from brainage.errors import ConfigError
from brainage.extract.clean import standardize_series

# A coarse voxel is in the brain when at least half of its block is (padding counts as outside).
MIN_BLOCK_COVERAGE = 0.5


def block_ratio(affine: np.ndarray, volume_voxel_size: float) -> np.ndarray:
    """Coarse voxels per axis, in BOLD voxels: ``volume_voxel_size`` / the BOLD voxel size.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        BOLD affine (its column norms are the voxel sizes in mm).
    volume_voxel_size : float
        Target voxel size (mm), ``extract.volume_voxel_size``.

    Returns
    -------
    ndarray of float64, shape (3,)
        Whole numbers where the grid allows (e.g. 2 mm -> 4 mm: 2); otherwise fractional
        (3 mm -> 4 mm: 1.333).

    Raises
    ------
    ConfigError
        If the target is finer than the BOLD voxels (no upsampling).
    """
    sizes = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    ratio = volume_voxel_size / sizes
    ratio = np.where(np.isclose(ratio, np.round(ratio), atol=1e-3), np.round(ratio), ratio)  # header rounding
    if np.any(ratio < 1):
        raise ConfigError(
            f"extract.volume_voxel_size={volume_voxel_size} mm is finer than the BOLD voxels "
            f"{tuple(round(float(v), 3) for v in sizes)} mm; the volumes are downsampled, never upsampled"
        )
    return ratio


def coarse_affine(affine: np.ndarray, ratio: float | np.ndarray) -> np.ndarray:
    """Affine of the coarse grid: voxels ``ratio`` times larger, centred on their blocks.

    Coarse voxel 0 covers fine voxel coordinates ``-0.5 .. ratio - 0.5``, so its centre sits at
    fine voxel coordinate ``(ratio - 1) / 2`` (for whole ratios: between fine voxels 0 and
    ``ratio - 1``).
    """
    ratio = np.broadcast_to(np.asarray(ratio, dtype=float), (3,))
    out = np.array(affine, dtype=float)
    out[:3, 3] = affine[:3, :3] @ ((ratio - 1) / 2) + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * ratio
    return out


def block_operator(brain: np.ndarray, affine: np.ndarray, ratio: float | np.ndarray) -> tuple[sparse.csc_array, np.ndarray, np.ndarray]:
    """Averaging over coarse blocks of the in-mask voxels, as a matrix (a box-kernel resampling).

    Each fine voxel belongs to the coarse voxel that contains its centre. Where the grid allows
    (whole ratios) the blocks are ``ratio``-sided cubes, padded (conceptually, outside the brain)
    to a multiple of ``ratio``; otherwise blocks hold ``floor`` or ``ceil(ratio)`` fine voxels per
    axis. A block enters the coarse mask when its in-mask voxels number at least
    ``MIN_BLOCK_COVERAGE`` of its size (``prod(ratio)`` for whole ratios, its own count of
    fine voxels otherwise); its value is the mean over those voxels only. On
    4D data this is a fraction of the cost of ``resample_img``, and it is linear, so it commutes
    with cleaning.

    Parameters
    ----------
    brain : ndarray, shape (x, y, z), bool
    affine : ndarray, shape (4, 4)
    ratio : float or ndarray, shape (3,)
        From :func:`block_ratio`.

    Returns
    -------
    weights : scipy.sparse.csc_array, shape (x * y * z, n_coarse_voxels)
        Rows: the fine grid in NIfTI (Fortran) order; columns: the in-mask coarse voxels in C
        order of the coarse grid (as ``coarse[coarse_mask]``).
    coarse_mask : ndarray, shape (ceil(x/r), ceil(y/r), ceil(z/r)), bool
    affine : ndarray, shape (4, 4)
    """
    ratio = np.broadcast_to(np.asarray(ratio, dtype=float), (3,))
    shape = tuple(int(np.ceil(n / r - 1e-9)) for n, r in zip(brain.shape, ratio, strict=True))
    ijk = np.nonzero(brain)
    block = np.ravel_multi_index(tuple(np.floor((i + 0.5) / r).astype(np.int64) for i, r in zip(ijk, ratio, strict=True)),
                                 shape)
    counts = np.bincount(block, minlength=int(np.prod(shape)))
    # counts > 0: a fractional ratio can leave an edge block with no fine voxel at all.
    keep = (counts > 0) & (counts >= MIN_BLOCK_COVERAGE * _block_sizes(brain.shape, ratio, shape) - 1e-9)
    column = np.where(keep, np.cumsum(keep) - 1, -1)[block]
    member = column >= 0
    rows = np.ravel_multi_index(ijk, brain.shape, order="F")[member]
    weights = sparse.csc_array((1.0 / counts[block[member]], (rows, column[member])),
                               shape=(brain.size, int(keep.sum())))
    return weights, keep.reshape(shape), coarse_affine(affine, ratio)


def _block_sizes(fine: tuple[int, ...], ratio: np.ndarray, coarse: tuple[int, ...]) -> np.ndarray:
    # Fine grid voxels per coarse block, C order. A whole ratio counts the padding past the grid
    # edge as outside the brain (every block is a full cube); a fractional ratio gives blocks of
    # floor or ceil(ratio) voxels per axis, and a block is judged against its own size: with
    # prod(ratio) instead, 3 -> 4 mm blocks of a single 3 mm voxel (8 of 27) could never pass.
    sizes = []
    for n, r, m in zip(fine, ratio, coarse, strict=True):
        if abs(r - round(r)) < 1e-9:
            sizes.append(np.full(m, round(r)))
        else:
            sizes.append(np.bincount(np.floor((np.arange(n) + 0.5) / r).astype(np.int64), minlength=m))
    return np.einsum("i,j,k->ijk", *sizes).ravel()


def scale_frames(frames: np.ndarray, scaling: str, t_r: float) -> np.ndarray:
    """Put every subject's frames on one scale (``extract.volume_scaling``).

    ``"global"`` removes each voxel's temporal mean and divides by ONE standard deviation pooled
    over all voxels and frames: subject and site intensity scales go, while the spatial pattern of
    fluctuation amplitude (ALFF-like, which changes with age; Garrett et al. 2010, J Neurosci
    30:4914) stays for the CNN to read. ``"voxel"`` z-scores each voxel over time (sample SD;
    constant voxels become 0), keeping only the temporal pattern.

    Parameters
    ----------
    frames : ndarray, shape (n_timepoints, n_coarse_voxels)
    scaling : {"global", "voxel"}

    Returns
    -------
    ndarray, shape (n_timepoints, n_coarse_voxels), float32
    """
    if scaling == "voxel":
        return standardize_series(frames, "zscore_sample", t_r).astype(np.float32)
    if scaling != "global":
        raise ConfigError(f"extract.volume_scaling must be 'global' or 'voxel', found {scaling!r}")
    centred = frames - frames.mean(axis=0, keepdims=True)
    sd = centred.std(ddof=1) if centred.size > 1 else 0.0
    return (centred / sd if sd > 0 else centred).astype(np.float32)
