"""Synthetic ABIDE PCP ``func_preproc`` / ``func_mask`` volumes with a planted age effect (test support).

Layout, as the INDI bucket stores it (``bucket_root`` stands for ``s3://fcp-indi``)::

    data/Projects/ABIDE_Initiative/Outputs/<pipeline>/<strategy>/func_preproc/<FILE_ID>_func_preproc.nii.gz
    data/Projects/ABIDE_Initiative/Outputs/<pipeline>/<strategy>/func_mask/<FILE_ID>_func_mask.nii.gz

Grid: a 15 x 14 x 12 crop of the PCP 3 mm MNI152 grid (61 x 73 x 61, the lattice of the PCP
atlases in shared/data/abide_pcp_atlases), x in [-21, 21], y in [-39, 0], z in [0, 33] mm, with an
ellipsoid brain mask (1,528 voxels); each BOLD file is ~210 kB at 60 frames.

Signal model (already "denoised": no motion, no drift, no confounds), ``a`` the age scaled to
[0, 1] over :data:`AGE_RANGE`, every draw from ``numpy.random.default_rng([seed, crc32(file_id)])``:

* left (x < 0) and right (x > 0) hemisphere signals ``s_h = sqrt(c) g + sqrt(1 - c) u_h`` with
  ``g, u_L, u_R`` band-limited (0.01-0.1 Hz) and exactly uncorrelated in the sample, so the
  interhemispheric correlation is ``c = 0.1 + 0.8 a`` (rises with age); midline voxels (x = 0)
  carry only their own signal;
* a voxel's neural signal is ``sqrt(0.6) s_h + sqrt(0.4) e_v`` (``e_v`` its own band-limited
  signal), times an amplitude of :data:`AMPLITUDE` % in the posterior part (y < -16.5 mm)
  and ``AMPLITUDE * (1 + 0.8 (0.5 - a))`` % in the anterior part (fluctuation amplitude falls
  with age; Garrett et al. 2010, J Neurosci 30:4914);
* white noise (SD :data:`NOISE_SD` %), intensity ``1000 * site_scale * (1 + signal / 100)``
  (C-PAC's 4D global mean normalisation to 1000; a per-site scale in [0.9, 1.1]), zero outside
  the mask, values rounded to 1/16 so that gzip can compress them.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.demo.signals import NEURAL_BAND_HZ, band_limited

PCP_ROOT = Path("data/Projects/ABIDE_Initiative/Outputs")
#: The PCP 3 mm MNI152 grid (61 x 73 x 61; voxel (0, 0, 0) at (90, -126, -72) mm, x flipped).
PCP_AFFINE = np.array([[-3.0, 0, 0, 90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]])
#: Start index and shape of the crop inside the PCP grid.
CROP_START, CROP_SHAPE = (23, 29, 24), (15, 14, 12)
TR = 2.0
AGE_RANGE = (6.0, 64.0)  # ABIDE I ages (years)
AMPLITUDE, NOISE_SD, LOCAL_SHARE = 2.0, 0.3, 0.6
#: Voxels with y above this (mm) form the anterior half, whose amplitude carries the age effect.
ANTERIOR_Y_MM = -16.5  # on a 6 mm block boundary of the crop
#: Intensity step: float32 values with few mantissa bits compress ~2x.
QUANTUM = 1.0 / 16.0


def pcp_paths(
    bucket_root: Path, file_id: str, pipeline: str = "cpac", strategy: str = "filt_global"
) -> tuple[Path, Path]:
    """``(func_preproc, func_mask)`` paths of one PCP subject under ``bucket_root``."""
    base = Path(bucket_root) / PCP_ROOT / pipeline / strategy
    return (base / "func_preproc" / f"{file_id}_func_preproc.nii.gz",
            base / "func_mask" / f"{file_id}_func_mask.nii.gz")


def crop_affine() -> np.ndarray:
    """Affine of the crop: the PCP affine moved to :data:`CROP_START`."""
    affine = PCP_AFFINE.copy()
    affine[:3, 3] = PCP_AFFINE[:3, :3] @ np.array(CROP_START, float) + PCP_AFFINE[:3, 3]
    return affine


def voxel_coords() -> np.ndarray:
    """MNI coordinates (mm) of every crop voxel, shape (x, y, z, 3)."""
    ijk = np.indices(CROP_SHAPE).reshape(3, -1)
    xyz = nib.affines.apply_affine(crop_affine(), ijk.T)
    return xyz.reshape(CROP_SHAPE + (3,))


def brain_mask() -> np.ndarray:
    """Ellipsoid brain mask on the crop, shape (15, 14, 12), bool."""
    xyz = voxel_coords()
    centre = xyz.reshape(-1, 3).mean(axis=0)
    radii = np.array(CROP_SHAPE) * 3.0 / 2.0 + 1.0
    return (((xyz - centre) / radii) ** 2).sum(axis=-1) <= 1.0


def scaled_age(age: float) -> float:
    """Age scaled to [0, 1] over :data:`AGE_RANGE` (clipped)."""
    return float(np.clip((age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0]), 0.0, 1.0))


def interhemispheric_coupling(age: float) -> float:
    """Planted correlation of the left and right hemisphere signals at ``age``."""
    return 0.1 + 0.8 * scaled_age(age)


def anterior_gain(age: float) -> float:
    """Planted anterior / posterior fluctuation amplitude ratio at ``age``."""
    return 1.0 + 0.8 * (0.5 - scaled_age(age))


def _site_scale(site: str) -> float:
    return 0.9 + 0.2 * (zlib.crc32(site.encode()) % 1000) / 999.0


def simulate(age: float, site: str, rng: np.random.Generator, n_timepoints: int) -> np.ndarray:
    """One subject's BOLD on the crop, shape (15, 14, 12, n_timepoints), float32, zero outside the mask."""
    xyz, brain = voxel_coords(), brain_mask()
    x, y = xyz[..., 0][brain], xyz[..., 1][brain]
    c = interhemispheric_coupling(age)
    g, u_left, u_right = band_limited(rng, 3, n_timepoints, TR, NEURAL_BAND_HZ, orthogonal=True)
    hemi = {-1: np.sqrt(c) * g + np.sqrt(1 - c) * u_left, 1: np.sqrt(c) * g + np.sqrt(1 - c) * u_right}
    own = band_limited(rng, int(brain.sum()), n_timepoints, TR, NEURAL_BAND_HZ)  # (n_voxels, T)
    neural = own.copy()
    for side, signal in hemi.items():
        voxels = np.sign(np.round(x)) == side
        neural[voxels] = np.sqrt(LOCAL_SHARE) * signal + np.sqrt(1 - LOCAL_SHARE) * own[voxels]
    amplitude = np.where(y > ANTERIOR_Y_MM, AMPLITUDE * anterior_gain(age), AMPLITUDE)
    percent = neural * amplitude[:, None] + rng.normal(0.0, NOISE_SD, neural.shape)
    values = 1000.0 * _site_scale(site) * (1.0 + percent / 100.0)
    data = np.zeros(CROP_SHAPE + (n_timepoints,), dtype=np.float32)
    data[brain] = np.round(values / QUANTUM) * QUANTUM
    return data


def _save(data: np.ndarray, path: Path, zooms: tuple[float, ...]) -> None:
    img = nib.Nifti1Image(data, crop_affine())
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(crop_affine(), code=4)  # NIFTI_XFORM_MNI_152
    img.set_qform(crop_affine(), code=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def write_pcp_func(
    bucket_root: Path,
    subjects: pd.DataFrame,
    seed: int,
    *,
    n_timepoints: int = 60,
    pipeline: str = "cpac",
    strategy: str = "filt_global",
) -> None:
    """Write PCP ``func_preproc`` (float32, TR in pixdim[4], seconds) and ``func_mask`` (uint8) files.

    Parameters
    ----------
    bucket_root : Path
        Folder standing for the bucket root (``data/Projects/...`` is created under it).
    subjects : DataFrame
        Columns ``file_id`` (e.g. ``Pitt_0050003``), ``age`` (years), ``site``.
    seed : int
        Each subject's data is a function of ``(seed, file_id, age, site, n_timepoints)`` only.
    n_timepoints : int
        Frames per run (TR :data:`TR` s).
    pipeline, strategy : str
        PCP folder names (e.g. ``cpac``, ``filt_global``).
    """
    brain = brain_mask().astype(np.uint8)
    for row in subjects.itertuples(index=False):
        rng = np.random.default_rng([seed, zlib.crc32(str(row.file_id).encode())])
        func, mask = pcp_paths(bucket_root, row.file_id, pipeline, strategy)
        _save(simulate(float(row.age), str(row.site), rng, n_timepoints), func, (3.0, 3.0, 3.0, TR))
        _save(brain, mask, (3.0, 3.0, 3.0))
