"""Find each subject's preprocessed runs in an fMRIPrep derivatives folder, as fMRIPrep names them.

fMRIPrep (21-25) writes, per run and output space, ``sub-<label>[_ses-<label>]_task-<label>
[_acq-…][_ce-…][_rec-…][_dir-…][_run-<index>][_echo-…][_part-…]_space-<space>[_cohort-…][_res-…]
[_den-…]_desc-preproc_bold.nii.gz`` in ``sub-<label>/[ses-<label>/]func/``, with beside it the
``.json`` sidecar, the ``desc-brain_mask`` of the same space and the run's
``desc-confounds_timeseries.tsv`` (no space entities: one table per run). File names are parsed
with pybids (``bids.layout.parse_file_entities`` with the BIDS and BIDS-Derivatives entity
configs loaded once), not matched against a fixed template, so any session, run, acquisition,
reconstruction or direction entity is understood and ``res-`` is optional.

How each entity is handled (the README has the same table):

=============  ==========================================================================
sub            the participants table's ``participant_id`` (only listed subjects are looked up)
ses            ``inputs.session``: ``first`` (lowest label, numbers compared as numbers) or a label
task           ``inputs.task`` (required)
acq/rec/dir    kept; select with ``inputs.bids_filter``; otherwise they order the runs
run            ``inputs.runs``: ``first``, the lowest run index (no run entity counts as first),
               or ``all`` runs of the session in that order (denoised one by one, then joined)
echo           per-echo outputs (``--me-output-echos``) are skipped; the combined BOLD is used
space          ``inputs.space`` (required)
res/den/cohort ``inputs.res`` when set; when not, a run must have exactly one such variant
desc/suffix    ``desc-preproc_bold.nii.gz``: the BOLD; the companions are named from it
=============  ==========================================================================

Cheap enough for the DAG build (Snakemake calls :func:`find_runs` for every subject).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BOLD_ENDING = "_desc-preproc_bold.nii.gz"
# Entities that name an output space, not a run: the run's confounds table has none of them, and
# two BOLDs of one run that differ only in them are variants of one run in other spaces/grids.
SPACE_ENTITIES = ("space", "cohort", "res", "den")
# The order in which runs of one session are compared (after the run index).
_ORDER = ("acquisition", "ceagent", "reconstruction", "direction", "part")
RUN_CHOICES = ("first", "all")
_SESSION_DIR = re.compile(r"^ses-[A-Za-z0-9]+$")


@functools.cache
def _entities():
    """The BIDS and BIDS-Derivatives entity definitions, loaded once (loading them per file costs 10x)."""
    from bids.layout.models import Config

    entities = {}
    for name in ("bids", "derivatives"):
        entities.update(Config.load(name).entities)
    return tuple(entities.values())


def parse_entities(path: str | os.PathLike) -> dict:
    """The BIDS entities of a file name (pybids), e.g. ``{"subject": "01", "session": "2", "run": 1, ...}``."""
    from bids.layout import parse_file_entities

    return parse_file_entities(str(path), entities=_entities())


@dataclass(frozen=True)
class _Bold:
    """A BOLD file and its parsed BIDS entities.

    Attributes
    ----------
    bold : Path
    entities : tuple of (str, object)
        The BOLD's BIDS entities (pybids names: session, acquisition, run, space, res, ...).
    """

    bold: Path
    entities: tuple = field(compare=False)

    @property
    def entity(self) -> dict:
        return dict(self.entities)

    @property
    def companions(self) -> list[Path]:
        """The files besides the BOLD that must exist before the run is used (none for raw runs:
        fMRIPrep makes them)."""
        return []


class Run(_Bold):
    """One preprocessed run (``*_desc-preproc_bold.nii.gz``): its BOLD and the files named after it."""

    @property
    def stem(self) -> str:
        """The BOLD's name without ``_desc-preproc_bold.nii.gz``."""
        return self.bold.name[: -len(BOLD_ENDING)]

    @property
    def bold_json(self) -> Path:
        return self.bold.with_name(f"{self.stem}_desc-preproc_bold.json")

    @property
    def mask(self) -> Path:
        return self.bold.with_name(f"{self.stem}_desc-brain_mask.nii.gz")

    @property
    def confounds(self) -> Path:
        """The run's confounds table: the BOLD's name without its space entities."""
        parts = [p for p in self.stem.split("_") if p.split("-", 1)[0] not in SPACE_ENTITIES]
        return self.bold.with_name("_".join(parts) + "_desc-confounds_timeseries.tsv")

    @property
    def companions(self) -> list[Path]:
        return [self.bold_json, self.mask, self.confounds]

    @property
    def files(self) -> dict[str, Path]:
        """Every file extraction reads: bold, bold_json, mask, confounds."""
        return {"bold": self.bold, "bold_json": self.bold_json, "mask": self.mask, "confounds": self.confounds}

    @property
    def label(self) -> str:
        """The run's non-space entities as in its file name, e.g. ``ses-1_task-rest_run-2``."""
        return self.confounds.name[len(f"sub-{self.entity['subject']}_"): -len("_desc-confounds_timeseries.tsv")]


@dataclass(frozen=True)
class Selection:
    """Which preprocessed runs to use (the ``inputs`` config keys of the same names)."""

    task: str
    space: str
    res: str | None = None
    session: str = "first"
    runs: str = "first"
    bids_filter: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.runs not in RUN_CHOICES:
            raise ValueError(f"inputs.runs must be one of {', '.join(RUN_CHOICES)}, got {self.runs!r}")

    @classmethod
    def from_config(cls, inputs: Mapping, res: str | None) -> Selection:
        """From the ``inputs`` config section; ``res`` as resolved (the demo's is its voxel size)."""
        return cls(task=str(inputs["task"]), space=str(inputs["space"]), res=None if res is None else str(res),
                   session=str(inputs.get("session", "first")), runs=str(inputs.get("runs", "first")),
                   bids_filter=dict(inputs.get("bids_filter") or {}))

    def describe(self) -> str:
        res = f"_res-{self.res}" if self.res is not None else "[_res-*]"
        return f"sub-<label>[_ses-*]_task-{self.task}[_acq-*][_run-*]_space-{self.space}{res}{BOLD_ENDING}"


def _matches(value, wanted) -> bool:
    """One BIDS filter condition: null = the entity is absent; a list = any of; else equal."""
    if wanted is None:
        return value is None
    if isinstance(wanted, (list, tuple)):
        return any(_matches(value, w) for w in wanted)
    if value is None:
        return False
    if isinstance(value, int) or isinstance(wanted, int):  # run indices: 01 == 1
        try:
            return int(value) == int(wanted)
        except (TypeError, ValueError):
            return False
    return str(value) == str(wanted)


def _natural(label: str | None):
    """Sort key: absent first, numbers as numbers, then text."""
    if label is None:
        return (0, 0, "")
    text = str(label)
    return (1, int(text), "") if text.isdigit() else (2, 0, text)


def _files(subject_dir: Path, datatype: str, ending: str) -> Iterable[Path]:
    """Every file ending in ``ending`` in ``<datatype>/`` and ``ses-*/<datatype>/`` of one subject's folder."""
    try:
        top = sorted(os.scandir(subject_dir), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    folders = [Path(e.path) for e in top if e.name == datatype and e.is_dir()]
    folders += [Path(e.path, datatype) for e in top if _SESSION_DIR.match(e.name) and e.is_dir()]
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        yield from (Path(e.path) for e in entries if e.name.endswith(ending))


def _bold_files(subject_dir: Path) -> Iterable[Path]:
    """Every ``*_desc-preproc_bold.nii.gz`` in ``func/`` and ``ses-*/func/`` of one subject's folder."""
    return _files(subject_dir, "func", BOLD_ENDING)


def candidate_runs(derivatives: str | os.PathLike, label: str, selection: Selection) -> list[Run]:
    """The subject's preprocessed BOLDs of the task and space that pass the filter, echoes skipped."""
    runs = []
    for path in _bold_files(Path(derivatives, f"sub-{label}")):
        entities = parse_entities(path)
        if entities.get("subject") != label or entities.get("task") != selection.task:
            continue
        if entities.get("space") != selection.space or "echo" in entities and "echo" not in selection.bids_filter:
            continue
        if selection.res is not None and str(entities.get("res")) != selection.res:
            continue
        if all(_matches(entities.get(key), wanted) for key, wanted in selection.bids_filter.items()):
            runs.append(Run(path, tuple(sorted(entities.items()))))
    return runs


def choose_runs(runs: Sequence[Run], selection: Selection) -> tuple[list[Run], str | None]:
    """The runs to use among a subject's candidates, or none and the reason (the rules in the module doc)."""
    sessions = sorted({r.entity.get("session") for r in runs}, key=_natural)
    if selection.session != "first":
        if selection.session not in sessions:
            found = ", ".join(f"ses-{s}" for s in sessions if s is not None) or "none"
            return [], f"no run in session ses-{selection.session} (inputs.session; sessions found: {found})"
        chosen_session = selection.session
    else:
        chosen_session = sessions[0]
    in_session = [r for r in runs if r.entity.get("session") == chosen_session]
    by_run = {}
    for run in in_session:
        by_run.setdefault(run.label, []).append(run)
    variants = {key: group for key, group in by_run.items() if len(group) > 1}
    if variants:
        key, group = next(iter(sorted(variants.items())))
        names = ", ".join(r.bold.name for r in group)
        return [], (f"run {key} has {len(group)} preprocessed BOLDs in space {selection.space} that differ in "
                    f"res-/den-/cohort- ({names}); set inputs.res to choose one")

    def order(run: Run):
        entity = run.entity
        return (_natural(entity.get("run")), *(_natural(entity.get(key)) for key in _ORDER), run.bold.name)

    ordered = sorted(in_session, key=order)
    return (ordered[:1] if selection.runs == "first" else ordered), None


def find_runs(derivatives: str | os.PathLike, labels: Sequence[str], selection: Selection) -> tuple[dict[str, list[Run]], dict[str, str]]:
    """Each listed subject's runs to use, and why the others have none.

    Parameters
    ----------
    derivatives : path-like
        The fMRIPrep output folder (``sub-*/`` inside it).
    labels : sequence of str
        Subject labels without ``sub-`` (the participants table's).
    selection : Selection
        Task, space, optional res, session and run choice, BIDS filter.

    Returns
    -------
    runs : dict
        ``{label: [Run, ...]}`` for the subjects with a usable run (one with ``runs: first``;
        with ``all``, every run of the session in order).
        The companions (sidecar, mask, confounds) are named, not checked here:
        :func:`brainage.participants.inputs.input_problems` checks every file.
    problems : dict
        ``{label: reason}`` for the others; the reason names the folder and the pattern looked for.
    """
    def problem(label: str, runs: list[Run]) -> str | None:
        if not runs:
            return _none_found("preprocessed BOLD", selection.describe().replace("<label>", label),
                               Path(derivatives, f"sub-{label}"), selection)
        return None

    return _choose_each(labels, lambda label: candidate_runs(derivatives, label, selection), problem, selection)


def _none_found(what: str, pattern: str, folder: Path, selection: Selection) -> str:
    """The reason for a subject without a BOLD: the pattern, the folder and the filter looked for."""
    wanted = f" that passes inputs.bids_filter {dict(selection.bids_filter)}" if selection.bids_filter else ""
    return f"no {what}: nothing named {pattern} in {folder} (func/ or ses-*/func/){wanted}"


def _choose_each(labels: Sequence[str], candidates, problem, selection: Selection) -> tuple[dict, dict]:
    """Per subject: its candidate runs, a subject-level ``problem`` (or None), then :func:`choose_runs`."""
    chosen, problems = {}, {}
    for label in labels:
        runs = candidates(label)
        reason = problem(label, runs)
        if reason is None:
            picked, reason = choose_runs(runs, selection)
        if reason is None:
            chosen[label] = picked
        else:
            problems[label] = reason
    return chosen, problems


# --- raw BIDS (inputs.source: bids): the runs fMRIPrep will preprocess here ----------------------


class RawRun(_Bold):
    """One raw BOLD run of a local BIDS dataset (``sub-<label>/[ses-<s>/]func/…_bold.nii.gz``)."""

    @property
    def label(self) -> str:
        """The run's entities as in its name, e.g. ``ses-1_task-rest_run-2`` (fMRIPrep keeps them all)."""
        return self.bold.name[len(f"sub-{self.entity['subject']}_"): -len("_bold.nii.gz")]

    @property
    def funcdir(self) -> str:
        """``func`` or ``ses-<label>/func``: where fMRIPrep writes the run's derivatives."""
        session = self.entity.get("session")
        return f"ses-{session}/func" if session else "func"


def candidate_raw_runs(bids_dir: str | os.PathLike, label: str, selection: Selection) -> list[RawRun]:
    """The subject's raw BOLDs of the task that pass the filter (per-echo files skipped unless filtered)."""
    runs = []
    for path in _files(Path(bids_dir, f"sub-{label}"), "func", "_bold.nii.gz"):
        entities = parse_entities(path)
        if entities.get("subject") != label or entities.get("task") != selection.task or "space" in entities:
            continue
        if "echo" in entities and "echo" not in selection.bids_filter:
            continue
        if all(_matches(entities.get(key), wanted) for key, wanted in selection.bids_filter.items()):
            runs.append(RawRun(path, tuple(sorted(entities.items()))))
    return runs


def find_raw_runs(bids_dir: str | os.PathLike, labels: Sequence[str],
                  selection: Selection) -> tuple[dict[str, list[RawRun]], dict[str, str]]:
    """Each listed subject's raw runs to preprocess, by the same rules as :func:`find_runs`, and
    why the others have none (no BOLD of the task, or no T1w image: fMRIPrep needs one).

    Space and res entities do not apply to raw data; per-echo files (multi-echo) are skipped
    unless ``bids_filter`` names ``echo``.
    """
    def problem(label: str, runs: list[RawRun]) -> str | None:
        subject_dir = Path(bids_dir, f"sub-{label}")
        if not runs:
            pattern = f"sub-{label}[_ses-*]_task-{selection.task}[_acq-*][_run-*]_bold.nii.gz"
            return _none_found("raw BOLD", pattern, subject_dir, selection)
        if not any(True for _ in _files(subject_dir, "anat", "_T1w.nii.gz")):
            return f"no T1w image in {subject_dir} (anat/ or ses-*/anat/): fMRIPrep needs one"
        return None

    return _choose_each(labels, lambda label: candidate_raw_runs(bids_dir, label, selection), problem, selection)


def raw_run_inputs(bids_dir: str | os.PathLike, run: RawRun) -> list[Path]:
    """The raw files fMRIPrep reads for one run: the BOLD, the subject's T1w images, and the JSON
    sidecars of those that have one."""
    subject_dir = Path(bids_dir, f"sub-{run.entity['subject']}")
    images = [run.bold, *_files(subject_dir, "anat", "_T1w.nii.gz")]
    sidecars = [image.with_name(image.name.replace(".nii.gz", ".json")) for image in images]
    return images + [sidecar for sidecar in sidecars if sidecar.is_file()]
