"""Fetch the TemplateFlow templates fMRIPrep needs into a TemplateFlow home, once, on a machine with internet."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from brainage import storage
from brainage.download.s3 import Bucket, ObjectInfo, S3Config, local_path
from brainage.errors import ConfigError, DownloadError

log = logging.getLogger(__name__)

COLUMNS = ["template", "key", "path", "size", "md5", "status"]
# TemplateFlow names files tpl-<name>[_cohort-<n>]_res-<nn>_...; some templates zero-pad the
# resolution index (res-01), others do not (res-1). Compared as integers.
_RES = re.compile(r"(?:^|_)res-(\d+)(?:_|\.)")
_OK = ("fetched", "present")


def select_template_keys(keys: list[str], templates: list[str], resolutions: list[int]) -> list[str]:
    """The archive keys of ``templates`` at ``resolutions`` (files without a res entity always).

    Parameters
    ----------
    keys : list of str
        Keys of the TemplateFlow archive, e.g. ``tpl-OASIS30ANTs/tpl-OASIS30ANTs_res-01_T1w.nii.gz``
        (cohort sub-folders included: ``tpl-<name>/cohort-<n>/...``).
    templates : list of str
        Template names without ``tpl-``.
    resolutions : list of int
        Resolution indices to keep (the ``res-`` entity, not millimetres); ``res-01`` and ``res-1``
        are both index 1.

    Returns
    -------
    list of str
        Sorted, without duplicates.
    """
    folders = tuple(f"tpl-{name}/" for name in templates)
    wanted = {int(res) for res in resolutions}
    chosen = set()
    for key in keys:
        if not key.startswith(folders):
            continue
        match = _RES.search(key.rsplit("/", 1)[-1])
        if match is None or int(match.group(1)) in wanted:
            chosen.add(key)
    return sorted(chosen)


def _parse_space(space: str) -> tuple[str, int | None]:
    """Template name and res index of an fMRIPrep space: 'MNI152NLin2009cAsym:res-2' -> (name, 2).

    Other entities (``cohort-1``) are ignored; a non-numeric res (``res-native``) adds no index.
    """
    name, *entities = space.split(":")
    values = dict(entity.partition("-")[::2] for entity in entities)
    res = values.get("res", "")
    return name, int(res) if res.isdigit() else None


def _list_templates(bucket: Bucket, templates: list[str]) -> dict[str, dict[str, ObjectInfo]]:
    """Every archive object of each template, by key; a template without any is a ``ConfigError``."""
    config = bucket.config
    listings = {}
    for name in templates:
        try:
            listing = bucket.list(f"tpl-{name}/")
        except DownloadError as err:
            # Say which archive this was (the INDI bucket is reached the same way).
            raise DownloadError(f"TemplateFlow archive (preprocess.templateflow.bucket / endpoint_url): {err}") from err
        if not listing:
            raise ConfigError(
                f"template {name!r} has no file in bucket {config.bucket!r} at {config.endpoint_url}; "
                "check preprocess.templateflow.templates (and inputs.space) against the TemplateFlow archive"
            )
        listings[name] = {obj.key: obj for obj in listing}
    return listings


def prefetch_templates(params: dict, space: str, home: str | os.PathLike, out: str | os.PathLike, *,
                       progress: bool = True) -> pd.DataFrame:
    """Fetch templates into ``home`` (the TemplateFlow layout is the archive's key layout).

    Parameters
    ----------
    params : dict
        ``templates`` (names), ``resolutions`` (res indices), ``bucket`` and ``endpoint_url`` of the
        archive (the ``preprocess.templateflow`` config section); ``home`` in it is not used.
    space : str
        The output space, e.g. ``MNI152NLin2009cAsym:res-2`` (``inputs.space`` and ``inputs.res``):
        its template is always fetched, at its resolution too.
    home : path
        The TemplateFlow home to fill; a file lands at ``<home>/<key>``. Files already there and
        verified (size, md5) are not fetched again.
    out : path
        TSV written atomically: template, key, path, size (bytes), md5, status (fetched or present).
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    DataFrame
        The table written to ``out``, one row per file, sorted by template then key.

    Raises
    ------
    ConfigError
        A template has no file in the archive (a misspelt name).
    DownloadError
        The archive cannot be reached, or a file could not be fetched (fMRIPrep would fail later).
    """
    space_name, space_res = _parse_space(space)
    templates = sorted({*params["templates"], space_name})
    bucket = Bucket(S3Config(bucket=params["bucket"], endpoint_url=params["endpoint_url"], anonymous=True,
                             section="preprocess.templateflow"))
    listings = _list_templates(bucket, templates)
    plan = []  # (template, key, ObjectInfo)
    for name, listing in listings.items():
        resolutions = [*params["resolutions"], *([space_res] if name == space_name and space_res else [])]
        plan += [(name, key, listing[key]) for key in select_template_keys(list(listing), [name], resolutions)]
    results = bucket.fetch_many([(key, local_path(Path(home), key), info) for _, key, info in plan],
                                progress=progress, desc="templateflow")
    table = pd.DataFrame([(name, r.key, str(r.path), r.size, r.md5, r.status) for (name, *_), r in zip(plan, results)],
                         columns=COLUMNS)
    failed = [f"{r.key} ({r.reason})" for r in results if r.status not in _OK]
    if failed:
        raise DownloadError(f"{len(failed)} TemplateFlow file(s) could not be fetched from bucket {params['bucket']} "
                            f"at {params['endpoint_url']} (fMRIPrep would fail without them): {failed[:10]}")
    storage.write_tsv(out, table)
    log.info("TemplateFlow home %s: %d files of %s, %.1f MB; %d were already present", home, len(table),
             ", ".join(templates), table["size"].sum() / 1e6, int((table["status"] == "present").sum()))
    return table
