"""Atlases on the BOLD grid as linear operators: label means, map least squares, sphere means; region coverage."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.image import resample_to_img
from scipy import sparse

from brainage.errors import InputDataError
from brainage.extract.inputs import atlas_on_grid, load_atlas, read_atlas_labels

logger = logging.getLogger(__name__)

KINDS = ("labels", "maps", "spheres")


@dataclass(frozen=True)
class Atlas:
    """One built atlas folder (``resources/atlases/<id>``, written by ``brainage.download.atlas``).

    Attributes
    ----------
    id : str
        Short name used in file names (``atlas-<id>``).
    kind : {"labels", "maps", "spheres"}
    labels : DataFrame
        ``index`` and ``name`` (+ ``x``, ``y``, ``z`` in mm for spheres), one row per region.
    image : Nifti1Image or None
        3D integer labels or 4D maps (volume ``index - 1``); None for spheres.
    radius_mm : float or None
        Sphere radius.
    path : Path
        The folder (named in messages).
    space : str or None
        The template space its ``atlas.json`` records (e.g. ``MNI152NLin6Asym``), None if none.
    """

    id: str
    kind: str
    labels: pd.DataFrame
    image: nib.Nifti1Image | None
    radius_mm: float | None
    path: Path
    space: str | None = None


@dataclass(frozen=True)
class RegionOperator:
    """One atlas as a matrix on the flattened BOLD grid.

    Attributes
    ----------
    weights : scipy.sparse.csc_array, shape (n_grid_voxels, n_regions)
        Rows are the voxels of the 3D grid in NIfTI (Fortran) order; ``frame @ weights`` gives
        the regions' signals of one frame. Only in-mask voxels have weights.
    coverage : ndarray, shape (n_regions,), float64
        Share of each region's volume (in the atlas's own grid) that lies inside the brain mask
        on the BOLD grid (capped at 1: resampling can grow a region a little).
    on_grid : ndarray of bool, shape (n_regions,)
        False for a region that vanished when resampled to the BOLD grid.
    """

    atlas: Atlas
    weights: sparse.csc_array
    coverage: np.ndarray
    on_grid: np.ndarray

    @property
    def names(self) -> list[str]:
        return self.atlas.labels["name"].tolist()


def load_atlas_dir(path: str | os.PathLike) -> Atlas:
    """Read an atlas folder: ``atlas.json``, ``labels.tsv`` and, for labels and maps, the image.

    Raises
    ------
    InputDataError
        If a file is missing or malformed (the file and the problem are named). Not a
        per-subject problem: the caller lets it stop the job.
    """
    path = Path(path)
    meta_path = path / "atlas.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputDataError(f"{meta_path}: cannot read the atlas description ({err})") from err
    kind = meta.get("kind")
    if kind not in KINDS:
        raise InputDataError(f"{meta_path}: 'kind' must be one of {', '.join(KINDS)}, found {kind!r}")
    labels_path = path / "labels.tsv"
    labels = read_atlas_labels(labels_path)
    if kind == "spheres":
        coords = pd.read_csv(labels_path, sep="\t")
        if not {"x", "y", "z"} <= set(coords.columns) or coords[["x", "y", "z"]].isna().any().any():
            raise InputDataError(f"{labels_path}: sphere atlases need numeric x, y, z columns (mm)")
        labels = labels.assign(**{c: coords[c].to_numpy(float) for c in "xyz"})
        radius = meta.get("radius_mm")
        if not isinstance(radius, int | float) or radius <= 0:
            raise InputDataError(f"{meta_path}: sphere atlases need a positive 'radius_mm', found {radius!r}")
        return Atlas(meta.get("id", path.name), kind, labels, None, float(radius), path, meta.get("space"))
    image_path = path / (meta.get("image") or "atlas.nii.gz")
    try:
        image = load_atlas(image_path) if kind == "labels" else nib.load(image_path)
    except (OSError, nib.filebasedimages.ImageFileError) as err:
        raise InputDataError(f"{image_path}: cannot read the atlas image ({err})") from err
    if kind == "maps" and (len(image.shape) != 4 or image.shape[3] < labels["index"].max()):
        raise InputDataError(f"{image_path}: expected 4D maps with at least {labels['index'].max()} volumes "
                             f"(one per labels.tsv row), found shape {tuple(image.shape)}")
    return Atlas(meta.get("id", path.name), kind, labels, image, None, path, meta.get("space"))


def region_operator(atlas: Atlas, grid: nib.Nifti1Image, brain: np.ndarray) -> RegionOperator:
    """Resample ``atlas`` once to the BOLD grid and build its operator and coverage.

    Parameters
    ----------
    atlas : Atlas
    grid : Nifti1Image
        Any image on the BOLD grid (its shape[:3] and affine are used), e.g. the brain mask.
    brain : ndarray, shape (x, y, z), bool
        The brain mask on that grid.

    Returns
    -------
    RegionOperator
        Labels: each region is the mean of its in-mask voxels after nearest-neighbour
        resampling (what ``NiftiLabelsMasker`` computes). Maps: the least-squares fit of the
        in-mask maps, resampled with continuous interpolation, to each frame (what
        ``NiftiMapsMasker`` computes). Spheres: the mean of the in-mask voxels whose centre
        lies within ``radius_mm`` of the seed, plus the voxel nearest the seed (what
        ``NiftiSpheresMasker`` computes).
    """
    build = {"labels": _labels_operator, "maps": _maps_operator, "spheres": _spheres_operator}[atlas.kind]
    weights, coverage, on_grid = build(atlas, grid, brain)
    return RegionOperator(atlas, sparse.csc_array(weights), np.minimum(coverage, 1.0), on_grid > 0)


def _voxel_volume(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3])))


def _fortran_rows(brain: np.ndarray) -> np.ndarray:
    """Flat Fortran-order grid index of every in-mask voxel, in C order of ``brain`` (as ``data[brain]``)."""
    return np.ravel_multi_index(np.nonzero(brain), brain.shape, order="F")


def _labels_operator(atlas: Atlas, grid: nib.Nifti1Image, brain: np.ndarray):
    values = atlas.labels["index"].to_numpy()
    native = np.asanyarray(atlas.image.dataobj).astype(np.int64)
    on_grid = atlas_on_grid(atlas.image, grid)
    lookup = np.full(max(int(native.max()), int(on_grid.max()), int(values.max())) + 1, -1)
    lookup[values] = np.arange(values.size)
    unlisted = np.setdiff1d(np.unique(native), np.append(values, 0))
    if unlisted.size:
        logger.warning("atlas %s: labels %s are not in %s; their voxels are ignored", atlas.id,
                       unlisted.tolist(), atlas.path / "labels.tsv")
    column = lookup[on_grid[brain]]
    member = column >= 0
    counts = np.bincount(column[member], minlength=values.size)
    weights = sparse.coo_array(
        (1.0 / counts[column[member]], (_fortran_rows(brain)[member], column[member])),
        shape=(brain.size, values.size))
    volume = _label_counts(lookup, native, values.size) * _voxel_volume(atlas.image.affine)
    grid_volume = _label_counts(lookup, on_grid, values.size) * _voxel_volume(grid.affine)
    return weights, _share(counts * _voxel_volume(grid.affine), volume), _share(grid_volume, volume)


def _label_counts(lookup: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    column = lookup[labels[labels > 0]]
    return np.bincount(column[column >= 0], minlength=n)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros(len(whole)), where=whole > 0)


def _maps_operator(atlas: Atlas, grid: nib.Nifti1Image, brain: np.ndarray):
    order = atlas.labels["index"].to_numpy() - 1
    native = np.abs(np.asanyarray(atlas.image.dataobj, dtype=np.float64)[..., order])
    on_grid = np.asarray(resample_to_img(atlas.image, grid, interpolation="continuous",
                                         force_resample=True, copy_header=True).dataobj)[..., order]
    maps = np.asarray(on_grid[brain], dtype=np.float64)  # (n_voxels, n_maps)
    # NiftiMapsMasker solves maps @ signals = data by least squares: signals = pinv(maps) @ data.
    weights = sparse.coo_array(np.linalg.pinv(maps).T)
    rows = _fortran_rows(brain)
    weights = sparse.coo_array((weights.data, (rows[weights.row], weights.col)), shape=(brain.size, order.size))
    grid_volume = _voxel_volume(grid.affine)
    total = native.reshape(-1, order.size).sum(axis=0) * _voxel_volume(atlas.image.affine)
    inside = np.abs(maps).sum(axis=0) * grid_volume
    everywhere = np.abs(on_grid).reshape(-1, order.size).sum(axis=0) * grid_volume
    return weights, _share(inside, total), _share(everywhere, total)


def _spheres_operator(atlas: Atlas, grid: nib.Nifti1Image, brain: np.ndarray):
    seeds = atlas.labels[["x", "y", "z"]].to_numpy(float)
    centres = nib.affines.apply_affine(np.linalg.inv(grid.affine), seeds)
    reach = atlas.radius_mm / np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0)) + 1  # voxels per axis
    rows, cols = [], []
    coverage, on_grid = np.zeros(len(seeds)), np.zeros(len(seeds))
    for k, centre in enumerate(centres):
        # The box around the seed is not clipped to the grid: coverage counts the part of the
        # sphere beyond the field of view as lost.
        lo, hi = np.floor(centre - reach).astype(int), np.ceil(centre + reach).astype(int)
        box = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
        box = box.reshape(-1, 3)
        near = np.linalg.norm(nib.affines.apply_affine(grid.affine, box) - seeds[k], axis=1) <= atlas.radius_mm
        # The voxel nearest the seed always belongs to it (as in nilearn), so no sphere is empty
        # on a grid coarser than its radius.
        near |= np.all(box == np.rint(centre), axis=1)
        voxels = box[near]
        valid = np.all((voxels >= 0) & (voxels < brain.shape), axis=1)
        inside = voxels[valid][brain[tuple(voxels[valid].T)]]
        on_grid[k] = float(valid.any())
        coverage[k] = len(inside) / len(voxels)
        rows.append(np.ravel_multi_index(tuple(inside.T), brain.shape, order="F"))
        cols.append(np.full(len(inside), k))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    sizes = np.bincount(cols, minlength=len(seeds))
    weights = sparse.coo_array((1.0 / sizes[cols], (rows, cols)), shape=(brain.size, len(seeds)))
    return weights, coverage, on_grid


def lost_regions(operator: RegionOperator, min_coverage: float) -> pd.DataFrame:
    """Regions whose coverage is below ``min_coverage``.

    Returns
    -------
    DataFrame
        ``name``, ``index``, ``coverage``, ``on_grid``: the regions lost, in atlas order.
    """
    lost = operator.coverage < min_coverage
    return pd.DataFrame({"name": np.asarray(operator.names)[lost],
                         "index": operator.atlas.labels["index"].to_numpy()[lost],
                         "coverage": operator.coverage[lost], "on_grid": operator.on_grid[lost]})


def describe_lost(lost: pd.DataFrame, grid_mm: float, limit: int = 20) -> str:
    """The lost regions in words, grouped by why, e.g. ``partly outside the brain mask: roi_007 (31%)``.

    Parameters
    ----------
    lost : DataFrame
        From :func:`lost_regions`.
    grid_mm : float
        BOLD voxel size, named for regions that are not on the grid.
    limit : int
        Regions named per group; the rest are counted.
    """
    parts = []
    off = lost[~lost["on_grid"]]
    if len(off):
        parts.append(f"not on the {grid_mm:g} mm BOLD grid (outside its field of view, or smaller than its "
                     f"voxels): {_listed(off['name'].tolist(), limit)}")
    low = lost[lost["on_grid"]]
    if len(low):
        named = [f"{name} ({100 * cover:.0f}%)" for name, cover in zip(low["name"], low["coverage"], strict=True)]
        parts.append(f"partly outside the brain mask: {_listed(named, limit)}")
    return "; ".join(parts)


def _listed(items: list[str], limit: int) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
