"""Atlases for ROI series, offline: k-means parcels of the MNI152 brain mask, or a user's label image."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError

from brainage.errors import ConfigError, InputDataError
from brainage.storage import atomic_path, write_tsv

logger = logging.getLogger(__name__)

ATLAS_NAMES = ("kmeans", "file")
#: Voxels k-means is fitted on (all voxels are then assigned to the nearest centre): fitting
#: on the full 2 mm mask (~235,000 voxels) takes seconds longer for the same parcels.
KMEANS_SAMPLE = 30_000


def build_atlas(params: dict, seed: int, out: str | Path, labels_out: str | Path) -> None:
    """Write the atlas chosen by the ``atlas`` config section.

    Parameters
    ----------
    params : dict
        The ``atlas`` config section: ``name`` (``"kmeans"`` or ``"file"``), ``n_regions``
        (for kmeans), ``path`` (label image, for file).
    seed : int
        Seed of the k-means initialisation.
    out : str or Path
        Label image to write (NIfTI, int16 or int32, 0 = background).
    labels_out : str or Path
        Label table to write (TSV: ``index``, ``name``).

    Raises
    ------
    ConfigError
        If ``name`` is unknown, a needed key is missing, or ``name`` is ``"file"`` and
        ``path`` is null.
    """
    name = _param(params, "name")
    if name == "kmeans":
        build_kmeans_atlas(_param(params, "n_regions"), seed, Path(out), Path(labels_out))
    elif name == "file":
        path = _param(params, "path")
        if path is None:
            raise ConfigError("atlas.path is null, but atlas.name 'file' needs the path of a label image")
        prepare_file_atlas(Path(path), Path(out), Path(labels_out))
    else:
        raise ConfigError(f"atlas.name must be one of {', '.join(ATLAS_NAMES)}; found {name!r}")


def build_kmeans_atlas(n_regions: int, seed: int, out: Path, labels_out: Path) -> None:
    """Parcellate nilearn's MNI152 2 mm brain mask into spatially compact k-means parcels.

    k-means on voxel coordinates (mm) gives near-convex parcels of similar volume, a
    reproducible stand-in for a published atlas where none can be downloaded (parcels
    cut the mask into compact pieces, as the random-parcellation baselines of Craddock
    et al. 2012, Hum Brain Mapp 33:1914). Parcels are numbered 1..n_regions in the
    lexicographic order of their centroids' (x, y, z), so the labels do not depend on
    k-means' internal order.

    Parameters
    ----------
    n_regions : int
        Number of parcels, >= 2.
    seed : int
        k-means seed (voxel subsample and initialisation).
    out : Path
        Label image to write (int16, 0 = background, 2 mm MNI152 grid).
    labels_out : Path
        TSV with ``index`` (1..n_regions) and ``name`` (``roi_001``...).
    """
    from nilearn.datasets import load_mni152_brain_mask
    from sklearn.cluster import KMeans

    if isinstance(n_regions, bool) or not isinstance(n_regions, int) or n_regions < 2:
        raise ConfigError(f"atlas.n_regions must be an integer >= 2, found {n_regions!r}")
    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) > 0
    ijk = np.argwhere(mask)
    if n_regions > len(ijk):
        raise ConfigError(f"atlas.n_regions ({n_regions}) exceeds the {len(ijk)} voxels of the brain mask")
    coords = nib.affines.apply_affine(mask_img.affine, ijk)
    rng = np.random.default_rng(seed)
    sample = coords[rng.choice(len(coords), size=min(KMEANS_SAMPLE, len(coords)), replace=False)]
    kmeans = KMeans(n_clusters=n_regions, n_init=1, random_state=seed).fit(sample)
    order = np.lexsort(kmeans.cluster_centers_.T[::-1])  # by x, then y, then z
    rank = np.empty(n_regions, dtype=np.int64)
    rank[order] = np.arange(1, n_regions + 1)
    labels = np.zeros(mask.shape, dtype=np.int16 if n_regions <= np.iinfo(np.int16).max else np.int32)
    labels[mask] = rank[kmeans.predict(coords)]
    img = nib.Nifti1Image(labels, mask_img.affine)
    img.header["descrip"] = f"brainage kmeans atlas n={n_regions} seed={seed}".encode()[:79]
    _save(img, out)
    present = np.unique(labels[mask])
    write_tsv(labels_out, _label_table(present, width=max(3, len(str(n_regions)))))
    logger.info("kmeans atlas: %d parcels of the MNI152 2 mm mask written to %s", len(present), out)


def prepare_file_atlas(path: Path, out: Path, labels_out: Path) -> None:
    """Check a user label image, copy it to ``out`` and write its label table.

    Parameters
    ----------
    path : Path
        Label image: 3D (a trailing axis of length 1 is dropped), integer values,
        0 = background, at least 2 distinct positive labels.
    out : Path
        Copy of the image (same voxels, affine and header; stored as an integer type).
    labels_out : Path
        TSV with ``index`` (each label value) and ``name`` (``roi_`` + the value zero-padded
        to 3 digits: the PCP CC200 atlas gives ``roi_001`` .. ``roi_200``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    InputDataError
        If the image cannot be read, is not 3D, has non-integer or negative values or fewer
        than 2 labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"atlas label image {path} not found (atlas.path)")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as err:
        raise InputDataError(f"{path}: cannot be read as a NIfTI label image ({err})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(f"{path}: expected a 3D label image, found shape {data.shape}")
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise InputDataError(f"{path}: expected integer label values, found non-integer values")
    if data.min() < 0:
        raise InputDataError(f"{path}: expected labels >= 0 (0 = background), found {data.min()}")
    present = np.unique(data[data > 0]).astype(np.int64)
    if present.size < 2:
        raise InputDataError(f"{path}: expected at least 2 non-zero labels, found {present.size}")
    dtype = np.int16 if present.max() <= np.iinfo(np.int16).max else np.int32
    copy = nib.Nifti1Image(data.astype(dtype), img.affine, img.header)
    copy.set_data_dtype(dtype)
    _save(copy, out)
    write_tsv(labels_out, _label_table(present, width=3))
    logger.info("atlas %s: %d labels copied to %s", path, present.size, out)


def _label_table(values: np.ndarray, width: int) -> pd.DataFrame:
    return pd.DataFrame({"index": values.astype(np.int64), "name": [f"roi_{v:0{width}d}" for v in values]})


def _save(img: nib.Nifti1Image, out: Path) -> None:
    with atomic_path(out) as tmp:
        nib.save(img, tmp)


def _param(params: dict, key: str):
    if key not in params:
        raise ConfigError(f"atlas parameters lack atlas.{key}")
    return params[key]
