"""Atlases built without a download: k-means parcels, a user's label image, Power and Dosenbach spheres."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError

from brainage.download.atlas.standard import BuiltAtlas, label_image, label_names
from brainage.errors import ConfigError, InputDataError
from brainage.storage import read_tsv

logger = logging.getLogger(__name__)

#: Voxels k-means is fitted on (all voxels are then assigned to the nearest centre): fitting
#: on the full 2 mm mask (~235,000 voxels) takes seconds longer for the same parcels.
KMEANS_SAMPLE = 30_000


def build_kmeans(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """Parcellate nilearn's MNI152 2 mm brain mask into ``n_regions`` spatially compact k-means parcels.

    k-means on voxel coordinates (mm) gives near-convex parcels of similar volume, a
    reproducible stand-in for a published atlas where none can be downloaded (parcels cut the
    mask into compact pieces, as the random-parcellation baselines of Craddock et al. 2012,
    Hum Brain Mapp 33:1914). Parcels are numbered 1..n_regions in the lexicographic order of
    their centres' (x, y, z), so the labels do not depend on k-means' internal order.

    Parameters
    ----------
    spec : dict
        ``n_regions`` (int >= 2).
    seed : int
        k-means seed (voxel subsample and initialisation).
    data_dir, urls
        Unused (nothing is downloaded).

    Returns
    -------
    BuiltAtlas
        Kind labels: int16 image on nilearn's 2 mm MNI152 grid, shape (99, 117, 95); names
        ``roi_001``...
    """
    from nilearn.datasets import load_mni152_brain_mask
    from sklearn.cluster import KMeans

    n_regions = spec["n_regions"]
    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) > 0
    ijk = np.argwhere(mask)
    if n_regions > len(ijk):
        raise ConfigError(f"atlas 'kmeans': n_regions ({n_regions}) exceeds the {len(ijk)} voxels of the brain mask")
    coords = nib.affines.apply_affine(mask_img.affine, ijk)
    rng = np.random.default_rng(seed)
    sample = coords[rng.choice(len(coords), size=min(KMEANS_SAMPLE, len(coords)), replace=False)]
    kmeans = KMeans(n_clusters=n_regions, n_init=1, random_state=seed).fit(sample)
    order = np.lexsort(kmeans.cluster_centers_.T[::-1])  # by x, then y, then z
    rank = np.empty(n_regions, dtype=np.int64)
    rank[order] = np.arange(1, n_regions + 1)
    labels = np.zeros(mask.shape, dtype=np.int64)
    labels[mask] = rank[kmeans.predict(coords)]
    present = np.unique(labels[mask])
    width = max(3, len(str(n_regions)))
    table = pd.DataFrame({"index": present, "name": [f"roi_{v:0{width}d}" for v in present]})
    return BuiltAtlas(
        kind="labels", labels=table,
        image=label_image(labels, mask_img, f"brainage kmeans atlas n={n_regions} seed={seed}"),
        # nilearn's template is the ICBM 2009a nonlinear symmetric MNI152 (its mni_icbm152_*_sym_09a files).
        space="MNI152NLin2009aSym", source="generated",
        citation="k-means parcels of the MNI152 brain mask (brainage); cf. Craddock et al. 2012, "
                 "Hum Brain Mapp 33:1914-1928")


def read_label_image(path: Path, what: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Read a 3D integer label image (a trailing axis of length 1 is dropped).

    Returns
    -------
    img : Nifti1Image
        The file as loaded (its affine and header).
    data : ndarray, shape (x, y, z), int64
        Labels, 0 = background.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (``what`` names the config key).
    InputDataError
        If it cannot be read, is not 3D, has non-integer or negative values or < 2 labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"atlas label image {path} not found ({what})")
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
    data = data.astype(np.int64)
    if np.unique(data[data > 0]).size < 2:
        raise InputDataError(f"{path}: expected at least 2 non-zero labels, found {np.unique(data[data > 0]).size}")
    return img, data


def build_file(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """A user's label image, checked, with its own label table or ``roi_<value>`` names.

    Parameters
    ----------
    spec : dict
        ``path`` (label image: integers, 0 = background) and ``labels`` (None, or a TSV with
        ``index`` and ``name``, optionally ``network``, covering every label of the image;
        rows of labels the image lacks are dropped with a warning).
    seed, data_dir, urls
        Unused.

    Returns
    -------
    BuiltAtlas
        Kind labels, the image's voxels and affine; names from the TSV, else ``roi_`` + the
        value zero-padded to 3 digits (the PCP CC200 atlas gives ``roi_001`` .. ``roi_200``).
    """
    path = Path(spec["path"])
    img, data = read_label_image(path, "atlases[].path")
    present = np.unique(data[data > 0])
    if spec["labels"] is None:
        table = pd.DataFrame({"index": present, "name": label_names(present)})
    else:
        table = _label_table(Path(spec["labels"]), present, path)
    logger.info("atlas file %s: %d labels", path, present.size)
    return BuiltAtlas(kind="labels", labels=table, image=label_image(data, img), space="unknown (user image)",
                      source=str(path.resolve()), citation="user label image " + path.name)


def _label_table(path: Path, present: np.ndarray, image: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"atlas label table {path} not found (atlases[].labels)")
    table = read_tsv(path, dtype={"name": str, "network": str})
    if not {"index", "name"} <= set(table.columns) or table["index"].isna().any():
        raise InputDataError(f"{path}: expected columns index (integers) and name, found {list(table.columns)}")
    table = table[[c for c in ("index", "name", "network") if c in table.columns]]
    table = table.astype({"index": np.int64})
    unnamed = sorted(set(present.tolist()) - set(table["index"].tolist()))
    if unnamed:
        raise InputDataError(f"{path}: no row for labels {unnamed[:10]} of {image} ({len(unnamed)} in all)")
    absent = ~table["index"].isin(present)
    if absent.any():
        logger.warning("%s: labels %s have no voxel in %s; left out", path, table["index"][absent].tolist()[:10], image)
    return table[~absent].sort_values("index").reset_index(drop=True)


def build_spheres(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """Power 2011 (264) or Dosenbach 2010 (160) MNI coordinates as spheres of ``radius_mm``.

    Coordinates are nilearn's shipped tables, in each paper's ROI-number order (index 1..n).
    ``allow_overlap`` is True only if two centres lie closer than two radii (then spheres can
    share voxels and nilearn's sphere masker must be told so): Power at 5 mm does not (closest
    centres 10.3 mm apart), Dosenbach at 5 mm does (one pair 8.5 mm apart).

    Parameters
    ----------
    spec : dict
        ``name`` (``power`` or ``dosenbach``) and ``radius_mm`` (float > 0).
    seed, data_dir, urls
        Unused.
    """
    import nilearn
    from nilearn import datasets
    from scipy.spatial.distance import pdist, squareform

    if spec["name"] == "power":
        rois = datasets.fetch_coords_power_2011().rois
        table = pd.DataFrame({"index": rois["roi"].to_numpy(np.int64), "name": label_names(rois["roi"])})
        citation = "Power JD et al. 2011, Functional network organization of the human brain, Neuron 72:665-678"
    else:
        # ordered_regions=False: the paper's ROI-number order, not nilearn's by-network order.
        bunch = datasets.fetch_coords_dosenbach_2010(ordered_regions=False)
        rois = bunch.rois
        table = pd.DataFrame({"index": np.arange(1, len(rois) + 1), "name": list(bunch.labels),
                              "network": list(bunch.networks)})
        citation = ("Dosenbach NUF et al. 2010, Prediction of individual brain maturity using fMRI, "
                    "Science 329:1358-1361")
    xyz = rois[["x", "y", "z"]].to_numpy(float)
    table = table.assign(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])
    distances = squareform(pdist(xyz))
    np.fill_diagonal(distances, np.inf)
    i, j = np.unravel_index(np.argmin(distances), distances.shape)
    overlap = bool(distances[i, j] < 2 * spec["radius_mm"])
    if overlap:
        logger.warning("atlas %s: spheres of %.1f mm overlap (closest centres %s and %s, %.1f mm apart); "
                       "shared voxels count in both", spec["id"], spec["radius_mm"], table["name"][i],
                       table["name"][j], distances[i, j])
    return BuiltAtlas(kind="spheres", labels=table, image=None, space="MNI152",
                      source=f"nilearn {nilearn.__version__} shipped data", citation=citation,
                      radius_mm=spec["radius_mm"], allow_overlap=overlap)
