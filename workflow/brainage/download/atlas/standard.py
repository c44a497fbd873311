"""The one on-disk form of a built atlas (atlas.json, labels.tsv, atlas.nii.gz), checked and written atomically."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.errors import InputDataError
from brainage.storage import write_json, write_tsv

logger = logging.getLogger(__name__)

KINDS = ("labels", "maps", "spheres")
IMAGE = "atlas.nii.gz"


@dataclass(frozen=True)
class BuiltAtlas:
    """An atlas in memory, in the standard form, before it is written.

    Attributes
    ----------
    kind : {"labels", "maps", "spheres"}
    labels : DataFrame
        ``index`` (int), ``name`` (str, unique), optionally ``network``; ``x``, ``y``, ``z``
        (mm) for spheres. For labels, ``index`` is the value in the image; for maps and
        spheres it is 1..n (map volume / coordinate order).
    image : Nifti1Image or None
        Labels: 3D integers, 0 = background; maps: 4D, shape (x, y, z, n_regions); spheres: None.
    space : str
        Template space of the image or coordinates (e.g. ``MNI152NLin6Asym``).
    source : str
        URL it was downloaded from, ``nilearn <version> shipped data`` or ``generated``.
    citation : str
        The paper, one line.
    radius_mm : float or None
        Sphere radius (spheres only).
    allow_overlap : bool
        Whether spheres may share voxels (spheres only; False otherwise).
    """

    kind: str
    labels: pd.DataFrame
    image: nib.Nifti1Image | None
    space: str
    source: str
    citation: str
    radius_mm: float | None = None
    allow_overlap: bool = False


def label_names(values: np.ndarray) -> list[str]:
    """``roi_`` + each label value zero-padded to 3 digits (PCP CC200: ``roi_001`` .. ``roi_200``)."""
    return [f"roi_{int(v):03d}" for v in values]


def unique_names(names: list[str], index: list[int], what: str) -> list[str]:
    """The names, with ``_<index>`` appended to each one that occurs more than once.

    Names become Parquet column names, which must be unique; an atlas whose own names
    repeat (e.g. the same region name in two networks) keeps them readable this way.
    """
    counts = Counter(names)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:
        logger.warning("%s: region names %s occur more than once; each gets its index appended", what, repeated)
    return [f"{name}_{i}" if counts[name] > 1 else name for name, i in zip(names, index)]


def label_image(data: np.ndarray, like: nib.Nifti1Image, descrip: str = "") -> nib.Nifti1Image:
    """A 3D label image of ``data`` with ``like``'s affine and header, stored as int16 (int32 if needed)."""
    dtype = np.int16 if data.max() <= np.iinfo(np.int16).max else np.int32
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), like.affine, like.header)
    img.set_data_dtype(dtype)
    if descrip:
        img.header["descrip"] = descrip.encode()[:79]
    return img


def check_built(atlas: BuiltAtlas, what: str) -> None:
    """Check the contract that extraction relies on; ``InputDataError`` names ``what`` and the problem.

    Labels: 3D integer image whose non-zero values are exactly ``labels.index``; maps: 4D with
    one volume per row, ``index`` = 1..n; spheres: no image, ``index`` = 1..n and x, y, z.
    Names unique and non-empty everywhere.
    """
    table = atlas.labels
    names = table["name"].astype(str)
    if names.duplicated().any() or (names == "").any():
        raise InputDataError(f"{what}: region names must be unique and non-empty, found "
                             f"{sorted(names[names.duplicated() | (names == '')].unique())}")
    index = table["index"].to_numpy()
    if atlas.kind == "labels":
        data = np.asanyarray(atlas.image.dataobj)
        present = np.unique(data[data != 0])
        if data.ndim != 3 or not np.array_equal(present, np.sort(index)):
            missing = sorted(set(index.tolist()) - set(present.tolist()))
            extra = sorted(set(present.tolist()) - set(index.tolist()))
            raise InputDataError(f"{what}: the label image (shape {data.shape}) and the label table disagree: "
                                 f"labels without voxels {missing[:10]}, values without a row {extra[:10]}")
        return
    if not np.array_equal(index, np.arange(1, len(table) + 1)):
        raise InputDataError(f"{what}: {atlas.kind} atlases number their regions 1..{len(table)}, found {index[:5]}...")
    if atlas.kind == "maps" and (atlas.image.ndim != 4 or atlas.image.shape[3] != len(table)):
        raise InputDataError(f"{what}: expected 4D maps with {len(table)} volumes, found shape {atlas.image.shape}")
    if atlas.kind == "spheres" and (atlas.image is not None or not {"x", "y", "z"} <= set(table.columns)):
        raise InputDataError(f"{what}: sphere atlases have x, y, z columns and no image")


def write_atlas_dir(atlas: BuiltAtlas, spec: dict, out_dir: Path) -> None:
    """Write ``atlas`` into ``out_dir`` at once: built in a temporary folder beside it, then renamed.

    A reader (or Snakemake) never sees a half-built folder; a failure leaves no ``out_dir``
    (and a previous one untouched).

    Parameters
    ----------
    atlas : BuiltAtlas
    spec : dict
        The completed spec (with ``id``), recorded in ``atlas.json``.
    out_dir : Path
        ``atlas.json``, ``labels.tsv`` and, for labels and maps, ``atlas.nii.gz``.
    """
    out_dir = Path(out_dir)
    check_built(atlas, f"atlas {spec['id']!r} ({spec['name']})")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", suffix=f"-{out_dir.name}", dir=out_dir.parent))
    try:
        _write_contents(atlas, spec, tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("atlas %s (%s, %s): %d regions written to %s", spec["id"], spec["name"], atlas.kind,
                len(atlas.labels), out_dir)


def _write_contents(atlas: BuiltAtlas, spec: dict, folder: Path) -> None:
    if atlas.image is not None:
        nib.save(atlas.image, folder / IMAGE)
    write_tsv(folder / "labels.tsv", atlas.labels)
    write_json(folder / "atlas.json", {
        "id": spec["id"], "name": spec["name"], "kind": atlas.kind,
        "image": IMAGE if atlas.image is not None else None,
        "radius_mm": atlas.radius_mm, "allow_overlap": atlas.allow_overlap, "space": atlas.space,
        "source": atlas.source, "citation": atlas.citation, "spec": spec,
    })


def _replace_dir(new: Path, target: Path) -> None:
    # os.replace cannot rename onto a non-empty folder: move the old one aside first.
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=".old-", suffix=f"-{target.name}", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
