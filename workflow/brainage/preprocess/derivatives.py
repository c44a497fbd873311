"""After one fMRIPrep job: did it leave the derivatives brainage needs, and which version ran."""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from pathlib import Path

from brainage import storage
from brainage.errors import PreprocessError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 25
# fMRIPrep writes nipype crash files as crash-*.txt (or .pklz) under <output>/sub-<label>/log/<run>/;
# older versions and plugins put them in the working directory.
_CRASH_PATTERN = "crash-*"


def log_tail(path: str | os.PathLike, n_lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``n_lines`` lines of a text file (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=n_lines)]


def crash_files(folders: list[str | os.PathLike]) -> list[Path]:
    """nipype crash files under ``folders``, newest first."""
    found = {p for folder in folders if Path(folder).is_dir() for p in Path(folder).rglob(_CRASH_PATTERN)}
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def version_run(description: str | os.PathLike) -> str | None:
    """The fMRIPrep version in a derivatives ``dataset_description.json`` (``GeneratedBy``), or None."""
    path = Path(description)
    if not path.is_file():
        return None
    try:
        generated = json.loads(path.read_text()).get("GeneratedBy", [])
    except (json.JSONDecodeError, AttributeError):
        return None
    versions = [g.get("Version") for g in generated if isinstance(g, dict) and g.get("Name") == "fMRIPrep"]
    return versions[0] if versions else None


def _failure_message(participant_id, exit_code, missing, log_file, search_dirs) -> str:
    if exit_code != 0:
        head = f"fMRIPrep failed for {participant_id} (exit code {exit_code})"
    else:
        head = f"fMRIPrep finished for {participant_id} (exit code 0) but left no usable derivatives"
    lines = [head + "."]
    if missing:
        lines.append("Missing (expected in the configured space; check --output-spaces and the BIDS filter):")
        lines += [f"  {p}" for p in missing]
    tail = log_tail(log_file)
    lines.append(f"Last {len(tail)} lines of fMRIPrep's log {log_file}:" if tail
                 else f"fMRIPrep's log {log_file} is empty or missing.")
    lines += [f"  | {line}" for line in tail]
    crashes = crash_files(search_dirs)
    if crashes:
        lines.append(f"Crash files ({len(crashes)}; the newest first, plain text or `nipypecli crash FILE`):")
        lines += [f"  {p}" for p in crashes[:10]]
    else:
        lines.append(f"No crash files under {', '.join(str(d) for d in search_dirs) or '(nowhere searched)'}.")
    lines.append("The working directory is kept: rerunning the job resumes where fMRIPrep stopped.")
    return "\n".join(lines)


def check_derivatives(
    participant_id: str,
    exit_code: int,
    expected: list[str | os.PathLike],
    log_file: str | os.PathLike,
    search_dirs: list[str | os.PathLike],
    version: str,
    description: str | os.PathLike,
    record_out: str | os.PathLike,
    provenance: dict,
) -> dict:
    """Check one fMRIPrep job and record what ran; fail with fMRIPrep's own evidence.

    Parameters
    ----------
    participant_id : str
        e.g. ``sub-0010001``.
    exit_code : int
        fMRIPrep's (or the container engine's) exit status.
    expected : list of path
        Derivatives that must exist and be non-empty (preprocessed BOLD and its JSON, brain
        mask, confounds TSV and JSON).
    log_file : path
        fMRIPrep's log; its tail goes into the error message.
    search_dirs : list of path
        Folders searched for nipype crash files (the subject's output and work folders).
    version : str
        The pinned version (``preprocess.version``).
    description : path
        The derivatives' ``dataset_description.json``; its ``GeneratedBy`` names the version run.
    record_out : path
        JSON record written on success: participant, versions, derivatives, ``provenance``.
    provenance : dict
        What to record with it (engine, image, command).

    Returns
    -------
    dict
        The record.

    Raises
    ------
    PreprocessError
        When fMRIPrep failed or a derivative is missing, with the missing files, the log tail,
        the crash files found and a note that the working directory is kept.
    """
    missing = [str(p) for p in expected if not Path(p).is_file() or Path(p).stat().st_size == 0]
    if exit_code != 0 or missing:
        raise PreprocessError(_failure_message(participant_id, exit_code, missing, log_file, search_dirs))
    ran = version_run(description)
    if ran != version:
        # Not fatal: the derivatives are there and valid; the record and the report say what ran.
        log.warning("%s: fMRIPrep %s ran, but preprocess.version pins %s (recorded as run)",
                    participant_id, ran or "of unknown version", version)
    record = {"participant_id": participant_id, "stage": "preprocess", "fmriprep_version": ran,
              "pinned_version": version, "derivatives": [str(p) for p in expected], **provenance}
    storage.write_json(record_out, record)
    log.info("%s: fMRIPrep %s derivatives complete (%d files)", participant_id, ran, len(expected))
    return record
