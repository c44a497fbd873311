"""Downsampled volumes for the CNN: block averaging of the cleaned in-mask voxels."""

from __future__ import annotations

import numpy as np

from brainage.errors import ConfigError
from brainage.extract.clean import group_means, standardize_series

# A coarse voxel is in the brain when at least half of its block is (padding counts as outside).
MIN_BLOCK_COVERAGE = 0.5


def block_factor(voxel_size: tuple[float, ...], volume_voxel_size: int) -> int:
    """Integer downsampling factor from the BOLD voxel size to ``volume_voxel_size``.

    Parameters
    ----------
    voxel_size : tuple of float, length 3
        BOLD voxel size (mm), from the NIfTI header.
    volume_voxel_size : int
        Target voxel size (mm), ``extract.volume_voxel_size``.

    Raises
    ------
    ConfigError
        If the BOLD voxels are not isotropic or the target is not a whole multiple of them.
    """
    sizes = np.asarray(voxel_size, dtype=float)
    factor = volume_voxel_size / sizes[0]
    if not np.allclose(sizes, sizes[0], atol=1e-3) or abs(factor - round(factor)) > 1e-3 or round(factor) < 1:
        allowed = ", ".join(f"{k * sizes[0]:g}" for k in range(1, 5))
        raise ConfigError(
            f"extract.volume_voxel_size={volume_voxel_size} mm must be a whole multiple of the "
            f"isotropic BOLD voxel size; found BOLD voxel size {tuple(float(s) for s in sizes)} mm, "
            f"allowed values: {allowed}, ..."
        )
    return int(round(factor))


def coarse_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of the block grid: voxels ``factor`` times larger, centred on their blocks.

    Coarse voxel 0 covers fine voxels ``0 .. factor-1``, so its centre sits at fine voxel
    coordinate ``(factor - 1) / 2``.
    """
    out = np.array(affine, dtype=float)
    out[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2) + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * factor
    return out


def block_average(
    cleaned: np.ndarray, brain: np.ndarray, affine: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the in-mask voxels over ``factor``-sided cubic blocks.

    The grid is padded (conceptually, outside the brain) to a multiple of ``factor``. A
    block enters the coarse mask when at least ``MIN_BLOCK_COVERAGE`` of its
    ``factor**3`` voxels are in ``brain``; its value is the mean over those voxels only.
    This is the same as resampling with a box kernel, at a fraction of the cost of
    ``resample_img`` on 4D data.

    Parameters
    ----------
    cleaned : ndarray, shape (n_timepoints, n_voxels)
        In-mask voxels, C order of the grid (as ``data[brain]``).
    brain : ndarray, shape (x, y, z), bool
    affine : ndarray, shape (4, 4)
    factor : int

    Returns
    -------
    frames : ndarray, shape (n_timepoints, n_coarse_voxels), float64
        In-mask coarse voxels, C order of the coarse grid.
    coarse_mask : ndarray, shape (ceil(x/f), ceil(y/f), ceil(z/f)), bool
    affine : ndarray, shape (4, 4)
    """
    shape = tuple(-(-n // factor) for n in brain.shape)
    block = np.ravel_multi_index(tuple(ijk // factor for ijk in np.nonzero(brain)), shape)
    counts = np.bincount(block, minlength=int(np.prod(shape)))
    keep = counts >= MIN_BLOCK_COVERAGE * factor**3
    column = np.where(keep, np.cumsum(keep) - 1, -1)
    frames, _ = group_means(cleaned, column[block], int(keep.sum()))
    return frames, keep.reshape(shape), coarse_affine(affine, factor)


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
