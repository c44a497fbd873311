"""Build one atlas of the registry into its folder (the standard form that extraction reads)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from brainage.download.atlas import downloaded, offline
from brainage.download.atlas.http import check_urls
from brainage.download.atlas.registry import ATLAS_NAMES, validate_spec
from brainage.download.atlas.standard import BuiltAtlas, write_atlas_dir

logger = logging.getLogger(__name__)

#: How each registered atlas is made: builder(spec, *, seed, data_dir, urls) -> BuiltAtlas.
BUILDERS: dict[str, Callable[..., BuiltAtlas]] = {
    "kmeans": offline.build_kmeans,
    "file": offline.build_file,
    "schaefer": downloaded.build_schaefer,
    "harvard_oxford": downloaded.build_harvard_oxford,
    "msdl": downloaded.build_msdl,
    "basc": downloaded.build_basc,
    "pcp": downloaded.build_pcp,
    "power": offline.build_spheres,
    "dosenbach": offline.build_spheres,
}
if tuple(BUILDERS) != ATLAS_NAMES:  # a registry entry without a builder is a programming error
    raise ImportError(f"atlas builders {tuple(BUILDERS)} do not match the registry {ATLAS_NAMES}")


def build_atlas(spec: dict, seed: int, out_dir: Path, *, data_dir: Path, urls: dict | None = None) -> None:
    """Build (fetch, generate or copy) one atlas into ``out_dir``, atomically.

    Parameters
    ----------
    spec : dict
        One ``atlases`` entry (completed by :func:`validate_spec`; checked again here).
    seed : int
        The config seed (k-means parcels).
    out_dir : Path
        Folder to write: ``atlas.json``, ``labels.tsv``, ``atlas.nii.gz`` (labels, maps). Built
        in a temporary folder beside it and renamed: a failure leaves no ``out_dir``.
    data_dir : Path
        nilearn data folder; downloaded files are kept there, so a rebuild needs no network.
    urls : dict, optional
        Mirror base URL by atlas name (``atlas_fetch.urls``), replacing the public base URL.

    Raises
    ------
    ConfigError
        A bad spec or ``urls`` (see :func:`validate_spec`).
    DownloadError
        A download failed (the message names the atlas, the URL and the config keys to change).
    InputDataError, FileNotFoundError
        A user image or table (``file``) is missing or malformed.
    """
    spec = validate_spec(spec)
    urls = check_urls(urls)
    logger.info("building atlas %s: %s", spec["id"], spec)
    built = BUILDERS[spec["name"]](spec, seed=seed, data_dir=Path(data_dir), urls=urls)
    write_atlas_dir(built, spec, Path(out_dir))
