"""BIDS-Derivatives file names of the exported series, from the BOLD names they record, as XCP-D names its own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from brainage.participants.discover import parse_entities

#: Entities a series keeps from its BOLD (pybids name -> key), in XCP-D's order
#: (``xcp_d/data/xcp_d_bids_config.json``). ``space-`` follows them; ``res-``, ``den-`` and ``desc-``
#: name the BOLD image, not the run, and XCP-D drops them from its time series and matrices.
RUN_ENTITIES = (
    ("session", "ses"),
    ("task", "task"),
    ("acquisition", "acq"),
    ("ceagent", "ce"),
    ("direction", "dir"),
    ("reconstruction", "rec"),
    ("run", "run"),
)
#: Dropped from the name of runs joined in time, as XCP-D does when it concatenates runs
#: (``_combine_name`` in ``xcp_d/workflows/bold/concatenation.py``); entities whose values differ
#: between the runs are dropped too.
JOINED_DROPPED = ("direction", "run")
#: The key naming the atlas. ``seg-``, as XCP-D 0.7 to 0.14 (2024-03 to 2026-02) name their outputs
#: and the scripts that read them expect; XCP-D 26.0 (2026-03) renamed it ``atlas-`` (BIDS atlas
#: entity, BEP038). One constant, so following XCP-D there is a one-word change.
SEG_KEY = "seg"


def series_entities(participant_id: str, bold: str | Sequence[str] | None, *, task: str, space: str) -> dict:
    """The entities of one subject's exported files: ``sub``, the run's entities, ``space``.

    Parameters
    ----------
    participant_id : str
        ``sub-<label>`` (the label names the files, whatever the BOLD is called).
    bold : str, sequence of str or None
        The BOLD file name the series was extracted from (``metadata["sources"]["bold"]``), the
        names of the runs joined in time, or None (ROI series given ready-made, e.g. ABIDE PCP).
    task, space : str
        ``inputs.task`` and ``inputs.space``: used for a BOLD without BIDS entities (ABIDE PCP's
        ``Caltech_0051456_func_preproc.nii.gz``) or without ``space-``.

    Returns
    -------
    dict of str to str
        Short keys in file-name order, e.g. ``{"sub": "01", "ses": "2", "task": "rest", "run": "1",
        "space": "MNI152NLin2009cAsym"}``.
    """
    names = [bold] if isinstance(bold, str) else list(bold or [])
    parsed = [parse_entities(name) for name in names]
    entities = {"sub": participant_id.removeprefix("sub-")}
    if not parsed or any("task" not in p for p in parsed):
        return entities | {"task": task, "space": space}
    for name, key in RUN_ENTITIES:
        values = {str(p[name]) for p in parsed if name in p}
        joined_out = len(parsed) > 1 and name in JOINED_DROPPED
        if len(values) == 1 and all(name in p for p in parsed) and not joined_out:
            entities[key] = values.pop()
    spaces = {str(p.get("space", space)) for p in parsed}
    return entities | {"space": spaces.pop() if len(spaces) == 1 else space}


def derivative_path(entities: dict, atlas: str, stat: str, suffix: str, extension: str) -> PurePosixPath:
    """Where one exported file lies in the derivatives folder, as XCP-D places and names it.

    Returns
    -------
    PurePosixPath
        ``sub-<label>/[ses-<label>/]func/<entities>_seg-<atlas>_stat-<stat>_<suffix><extension>``,
        e.g. ``sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_seg-kmeans100_stat-mean_timeseries.tsv``.
    """
    folder = PurePosixPath(f"sub-{entities['sub']}")
    if "ses" in entities:
        folder /= f"ses-{entities['ses']}"
    parts = [f"{key}-{value}" for key, value in entities.items()] + [f"{SEG_KEY}-{atlas}", f"stat-{stat}"]
    return folder / "func" / ("_".join(parts) + f"_{suffix}{extension}")


def atlas_path(atlas: str, space: str | None, suffix: str, extension: str) -> PurePosixPath:
    """``atlases/atlas-<id>/atlas-<id>[_space-<space>]_<suffix><extension>`` (XCP-D's atlas layout)."""
    parts = [f"atlas-{atlas}"] + ([f"space-{space}"] if space else [])
    return PurePosixPath("atlases", f"atlas-{atlas}", "_".join(parts) + f"_{suffix}{extension}")
