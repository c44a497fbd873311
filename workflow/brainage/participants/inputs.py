"""Each subject's preprocessed input files: present, readable as files, and that subject's own."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

SUBJECT_PLACEHOLDER = "{subject}"

# The subject a BIDS file name belongs to: "sub-<label>_..." (labels are letters and digits).
_OWNER = re.compile(r"^sub-([A-Za-z0-9]+)_")


def subject_path(template: str, label: str) -> Path:
    """One subject's file: ``{subject}`` in ``template`` replaced by ``label`` (no ``sub-``)."""
    # str.replace, not str.format: the template may hold other braces (BIDS entities never do,
    # but a user's folder name might).
    return Path(template.replace(SUBJECT_PLACEHOLDER, label))


def input_problems(labels: Sequence[str], bold_template: str, other_templates: Sequence[str] = ()) -> dict[str, str]:
    """Why a subject's input files cannot be used, for the subjects that have a problem.

    Three rules, checked in this order; a subject gets the reason of the first that fails:

    1. Every file exists: the BOLD and each of ``other_templates`` (its sidecar, mask,
       confounds). A symlink whose target is absent (a DataLad / git-annex file whose content
       was not fetched) is missing, and the reason says so.
    2. No file resolves to another subject's file: the real path (all symlinks followed) must
       not be named ``sub-<other>_...``. Symlinks themselves are fine: DataLad and git-annex
       store every file as a symlink into ``.git/annex/objects/...`` under a hash name, which
       names no subject. Only the file name is read, not the folders above it (a folder called
       ``sub-...`` may be anything).
    3. No two subjects share one BOLD (the same file through symlinks or hard links): the
       data cannot be both people's. When exactly one of them has the real file under its own
       name (not a symlink), that subject keeps it and the others are excluded; otherwise (two
       annex links to one object: git-annex stores identical content once; hard links) all
       are excluded.
       Masks may legitimately be identical between subjects, so only the BOLD is checked.

    Parameters
    ----------
    labels : sequence of str
        Subject labels without ``sub-``.
    bold_template : str
        Preprocessed BOLD path with a ``{subject}`` placeholder.
    other_templates : sequence of str
        The other files extraction reads, each with a ``{subject}`` placeholder.

    Returns
    -------
    dict
        ``{label: reason}``; the reason names the file(s) and what is wrong.
    """
    problems = {}
    for label in labels:
        reason = _missing(label, bold_template, other_templates) or _foreign(label, [bold_template, *other_templates])
        if reason is not None:
            problems[label] = reason
    checked = [label for label in labels if label not in problems]
    problems.update(_shared_bolds(checked, bold_template))
    return problems


def _missing(label: str, bold_template: str, other_templates: Sequence[str]) -> str | None:
    reasons = []
    for template in (bold_template, *other_templates):
        path = subject_path(template, label)
        if path.is_file():
            continue
        what = "no preprocessed BOLD" if template == bold_template else "missing input file"
        if path.is_symlink():
            reasons.append(f"{what}: {path} is a symlink to {os.readlink(path)}, which does not exist "
                           "(a DataLad / git-annex file whose content was not fetched? `datalad get` it)")
        elif path.exists():
            reasons.append(f"{what}: {path} is not a file")
        else:
            reasons.append(f"{what}: {path}")
    return "; ".join(reasons) or None


def _foreign(label: str, templates: Sequence[str]) -> str | None:
    for template in templates:
        path = subject_path(template, label)
        real = Path(os.path.realpath(path))
        owner = _OWNER.match(real.name)
        if owner is not None and owner.group(1) != label:
            return (f"{path} resolves to {real}, a file of sub-{owner.group(1)}, not of sub-{label} "
                    "(a symlink to another subject's data)")
    return None


def _shared_bolds(labels: Sequence[str], bold_template: str) -> dict[str, str]:
    groups = defaultdict(list)
    for label in labels:
        path = subject_path(bold_template, label)
        info = path.stat()
        groups[(info.st_dev, info.st_ino)].append((label, path))
    problems = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        real = Path(os.path.realpath(members[0][1]))
        owners = [label for label, path in members
                  if not path.is_symlink() and Path(os.path.realpath(path)).name == path.name]
        for label, path in members:
            if owners == [label]:
                continue
            others = ", ".join(f"sub-{x} ({p})" for x, p in members if x != label)
            problems[label] = (f"{path} is the same file ({real}) as the BOLD of {others}: "
                               "one scan cannot be two subjects' data")
    return problems
