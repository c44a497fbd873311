"""The atlases as BIDS files: label images as ``dseg``, probabilistic maps as ``probseg``, sphere centres as a table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from brainage import storage
from brainage.extract.regions import Atlas, load_atlas_dir
from brainage.export.names import atlas_path
from brainage.storage.bids import copy_file

#: The BIDS suffix of each kind of atlas. Spheres have no image: their ``_dseg.tsv`` holds the
#: names (the time-series columns) and, as extra columns, each centre and the radius.
SUFFIX = {"labels": "dseg", "maps": "probseg", "spheres": "dseg"}
KIND_TEXT = {"labels": "a label image, one integer per region",
             "maps": "probabilistic maps, one volume per region (volume = index)",
             "spheres": "spheres around coordinates (no image; centres in mm in the region table)"}


class ExportedAtlas(NamedTuple):
    """What :func:`export_atlas` wrote, as paths relative to the derivatives folder.

    Attributes
    ----------
    id : str
        The atlas id (``atlas-<id>``, ``seg-<id>``).
    files : list of PurePosixPath
        Every file written.
    node_files : list of PurePosixPath
        The image (labels, maps) and the region table: what a matrix sidecar's ``NodeFiles`` name.
    """

    id: str
    files: list
    node_files: list


def export_atlas(folder: str | os.PathLike, out_dir: str | os.PathLike) -> ExportedAtlas:
    """Write one atlas folder (``resources/atlases/<id>``) into ``<out_dir>/atlases/atlas-<id>/``.

    Files, as XCP-D lays out its atlases: ``atlas-<id>_space-<space>_dseg.nii.gz`` (label image,
    copied byte for byte) or ``_probseg.nii.gz`` (4D maps), the region table
    ``atlas-<id>_dseg.tsv`` / ``_probseg.tsv`` (``index``, ``name``: the label value or map volume,
    and the name that heads the time-series column; spheres add ``x``, ``y``, ``z`` in mm and
    ``radius_mm``), and ``atlas-<id>_description.json`` (kind, space, citation, source, spec).
    ``space-`` is left out when the atlas records no space.

    Raises
    ------
    InputDataError
        The folder is missing a file or holds a malformed one (see ``load_atlas_dir``).
    """
    folder, out_dir = Path(folder), Path(out_dir)
    atlas = load_atlas_dir(folder)
    meta = storage.read_json(folder / "atlas.json")
    suffix = SUFFIX[atlas.kind]
    table = atlas_path(atlas.id, None, suffix, ".tsv")
    storage.write_tsv(out_dir / table, region_table(atlas))
    nodes = [table]
    if atlas.image is not None:
        image = atlas_path(atlas.id, atlas.space, suffix, ".nii.gz")
        copy_file(folder / (meta.get("image") or "atlas.nii.gz"), out_dir / image)
        nodes.insert(0, image)
    description = atlas_path(atlas.id, None, "description", ".json")
    storage.write_json(out_dir / description, atlas_description(atlas, meta))
    return ExportedAtlas(atlas.id, [*nodes, description], nodes)


def region_table(atlas: Atlas) -> pd.DataFrame:
    """``index`` and ``name`` of every region (BIDS ``dseg.tsv`` columns); spheres add centre and radius.

    Returns
    -------
    DataFrame
        One row per region in atlas order: ``index`` (int), ``name`` (str), and for spheres ``x``,
        ``y``, ``z`` (mm, in the atlas's space) and ``radius_mm``.
    """
    table = atlas.labels[["index", "name"]].copy()
    if atlas.kind == "spheres":
        table[["x", "y", "z"]] = atlas.labels[["x", "y", "z"]].to_numpy()
        table["radius_mm"] = atlas.radius_mm
    return table


def atlas_description(atlas: Atlas, meta: dict) -> dict:
    """``atlas-<id>_description.json``: what the atlas is, its space and where it comes from."""
    description = {
        "Name": atlas.id,
        "Description": f"{meta.get('name', atlas.id)} atlas: {KIND_TEXT[atlas.kind]}; {len(atlas.labels)} regions",
        "SpatialReference": atlas.space,
        "ReferencesAndLinks": [text for text in (meta.get("citation"), meta.get("source")) if text],
        "BrainageSpec": meta.get("spec"),
    }
    if atlas.kind == "spheres":
        description["RadiusMillimeters"] = atlas.radius_mm
    return description
