"""The demo's voxel grid: nilearn's MNI152 brain mask and tissue maps at the demo voxel size, and the network nodes."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

#: Resolution (mm) of the nilearn MNI152 templates the grid is built from. nilearn ships them
#: at 1 mm and resamples on request; averaging 1 mm blocks is exact for every demo voxel
#: size (3 mm included) and skips that resampling.
TEMPLATE_VOXEL_SIZE = 1

#: Networks whose nodes share a latent signal. Node coordinates (MNI, mm) are canonical
#: hubs of the default mode, somatomotor and salience networks (Power et al. 2011, Neuron
#: 72:665; Seeley et al. 2007, J Neurosci 27:2349).
NETWORKS: tuple[str, ...] = ("default", "somatomotor", "salience")

#: (name, network index, (x, y, z) in MNI mm).
NODES: tuple[tuple[str, int, tuple[float, float, float]], ...] = (
    ("pcc", 0, (0.0, -52.0, 28.0)),
    ("mpfc", 0, (0.0, 50.0, 4.0)),
    ("l_angular", 0, (-46.0, -66.0, 32.0)),
    ("r_angular", 0, (46.0, -66.0, 32.0)),
    ("l_m1", 1, (-38.0, -24.0, 56.0)),
    ("r_m1", 1, (38.0, -24.0, 56.0)),
    ("sma", 1, (0.0, -6.0, 56.0)),
    ("l_insula", 2, (-36.0, 16.0, 2.0)),
    ("r_insula", 2, (36.0, 16.0, 2.0)),
    ("dacc", 2, (0.0, 24.0, 32.0)),
)

#: Radius (mm) of every node sphere. Spheres this large cover ~30 % of the brain, so that a
#: ~100-parcel atlas has dozens of parcels inside nodes; where two spheres overlap (centres
#: are >= 38 mm apart) a voxel belongs to the nearer centre.
NODE_RADIUS_MM = 25.0
#: Background neural signal: Gaussian blobs (SD in mm) centred on a lattice (spacing in mm),
#: a smooth field whose parcels carry signals of their own, as cortex outside any planted
#: network does.
BLOB_SPACING_MM, BLOB_SD_MM = 20.0, 10.0

#: Networks whose nodes carry the local-coherence age effect (effect 2); the other
#: network's nodes keep a fixed local coherence and serve as a control.
LOCAL_EFFECT_NETWORKS: tuple[int, ...] = (0, 1)


@dataclass(frozen=True)
class DemoGrid:
    """The demo voxel grid; voxel-wise arrays hold the in-mask voxels in C order of ``mask``.

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI (mm) affine: the template affine scaled to the demo voxel size.
    mask : ndarray of bool, shape (x, y, z)
        Brain mask (template brain mask averaged to the grid, fraction >= 0.5).
    coords : ndarray of float64, shape (n_voxels, 3)
        MNI coordinates (mm) of the in-mask voxel centres.
    gm, wm, csf : ndarray of float32, shape (n_voxels,)
        Tissue fractions in [0, 1] (CSF is the rest of the brain mask).
    node : ndarray of int16, shape (n_voxels,)
        Index into :data:`NODES` of the nearest node whose sphere holds the voxel, -1 outside
        every node.
    edge : ndarray of float32, shape (n_voxels,)
        ``exp(-d / 8 mm)`` with ``d`` the distance to the mask border: 1 at the border.
    blobs : scipy.sparse.csr_matrix of float32, shape (n_voxels, n_blobs)
        Spatial basis of the background field (Gaussian blobs cut at 3 SD); rows have unit norm.
    """

    affine: np.ndarray
    mask: np.ndarray
    coords: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    node: np.ndarray
    edge: np.ndarray
    blobs: sparse.csr_matrix

    @property
    def voxel_size(self) -> float:
        """Voxel edge length (mm)."""
        return float(abs(self.affine[0, 0]))

    @property
    def n_voxels(self) -> int:
        """Number of in-mask voxels."""
        return int(self.coords.shape[0])

    def to_volume(self, values: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Scatter in-mask values ``(..., n_voxels)`` onto the grid ``(x, y, z, ...)``, zero outside.

        The result is Fortran-ordered, the NIfTI on-disk order, so that writing it needs no copy.
        """
        values = np.asarray(values)
        out = np.zeros(self.mask.shape + values.shape[:-1], dtype=dtype, order="F")
        out[self.mask] = np.moveaxis(values, -1, 0)
        return out


def downsample(data: np.ndarray, affine: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average an image over blocks of ``factor**3`` voxels (a trailing partial block is dropped).

    Parameters
    ----------
    data : ndarray, shape (x, y, z)
        Image (e.g. a 0/1 mask or a tissue probability map).
    affine : ndarray, shape (4, 4)
        Its affine.
    factor : int
        Block edge (voxels).

    Returns
    -------
    data : ndarray of float32, shape (x // factor, y // factor, z // factor)
        Block means.
    affine : ndarray, shape (4, 4)
        ``affine`` scaled by ``factor``; voxel centres sit at block centres.
    """
    scale = np.diag([factor, factor, factor, 1.0])
    scale[:3, 3] = (factor - 1.0) / 2.0
    shape = tuple(n // factor for n in data.shape)
    cropped = data[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor].astype(np.float32)
    blocks = cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor)
    return blocks.mean(axis=(1, 3, 5)), affine @ scale


@functools.lru_cache(maxsize=4)
def make_grid(voxel_size: int) -> DemoGrid:
    """Build the demo grid from nilearn's shipped MNI152 templates (offline).

    Parameters
    ----------
    voxel_size : int
        Voxel size (mm) of the demo BOLD (``demo.voxel_size``).

    Returns
    -------
    DemoGrid
        The grid; its arrays are read-only (the result is cached).
    """
    from nilearn import datasets

    brain = datasets.load_mni152_brain_mask(resolution=TEMPLATE_VOXEL_SIZE)
    gm_img = datasets.load_mni152_gm_template(resolution=TEMPLATE_VOXEL_SIZE)
    wm_img = datasets.load_mni152_wm_template(resolution=TEMPLATE_VOXEL_SIZE)
    factor = voxel_size // TEMPLATE_VOXEL_SIZE
    brain_frac, affine = downsample(np.asarray(brain.dataobj) > 0, brain.affine, factor)
    gm_frac, _ = downsample(np.asarray(gm_img.dataobj, dtype=np.float32), gm_img.affine, factor)
    wm_frac, _ = downsample(np.asarray(wm_img.dataobj, dtype=np.float32), wm_img.affine, factor)
    mask = brain_frac >= 0.5
    ijk = np.argwhere(mask)
    coords = nib.affines.apply_affine(affine, ijk)
    gm = np.clip(gm_frac[mask], 0.0, 1.0)
    wm = np.clip(wm_frac[mask], 0.0, 1.0 - gm)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    depth = ndimage.distance_transform_edt(mask)[mask] * voxel_size
    edge = np.exp(-(depth - voxel_size) / 8.0).clip(0.0, 1.0)
    grid = DemoGrid(
        affine=affine,
        mask=mask,
        coords=coords,
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf.astype(np.float32),
        node=_node_index(coords),
        edge=edge.astype(np.float32),
        blobs=_blobs(coords),
    )
    for array in (grid.affine, grid.mask, grid.coords, grid.gm, grid.wm, grid.csf, grid.node, grid.edge, grid.blobs.data):
        array.flags.writeable = False
    logger.info("demo grid: %s voxels of %g mm, %d in the brain mask", mask.shape, voxel_size, grid.n_voxels)
    return grid


def _node_index(coords: np.ndarray) -> np.ndarray:
    # Nearest node centre, if within the radius.
    centres = np.array([xyz for _, _, xyz in NODES])
    dist = np.linalg.norm(coords[:, None, :] - centres[None, :, :], axis=-1)  # (n_voxels, n_nodes)
    nearest = dist.argmin(axis=1)
    return np.where(dist.min(axis=1) <= NODE_RADIUS_MM, nearest, -1).astype(np.int16)


def _blobs(coords: np.ndarray) -> sparse.csr_matrix:
    # Lattice centres within one spacing of a brain voxel; Gaussian weights cut at 3 SD, so
    # that each voxel has ~15 blobs (a dense matrix would take GBs at 2 mm).
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    axes = [np.arange(a, b + BLOB_SPACING_MM, BLOB_SPACING_MM) for a, b in zip(lo, hi)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    voxels = cKDTree(coords)
    centres = centres[voxels.query(centres)[0] <= BLOB_SPACING_MM]
    dist = voxels.sparse_distance_matrix(cKDTree(centres), 3.0 * BLOB_SD_MM, output_type="coo_matrix").tocsr()
    weights = dist.copy()
    weights.data = np.exp(-(dist.data**2) / (2.0 * BLOB_SD_MM**2)).astype(np.float32)
    norm = np.sqrt(np.asarray(weights.multiply(weights).sum(axis=1))).ravel()
    return sparse.csr_matrix(sparse.diags(1.0 / norm) @ weights, dtype=np.float32)
