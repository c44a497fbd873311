"""Each subject's preprocessed input files: present, readable as files, and that subject's own."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

# The subject a BIDS file name belongs to: "sub-<label>_..." (labels are letters and digits).
_OWNER = re.compile(r"^sub-([A-Za-z0-9]+)_")


def input_problems(files: Mapping[str, Sequence[str | os.PathLike]]) -> dict[str, str]:
    """Why a subject's input files cannot be used, for the subjects that have a problem.

    Three rules, checked in this order; a subject gets the reason of the first that fails:

    1. Every file exists: the BOLD and each other file (its sidecar, mask, confounds). A
       symlink whose target is absent (a DataLad / git-annex file whose content was not
       fetched) is missing, and the reason says so.
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
    files : mapping
        ``{label: [bold, *others]}``: subject labels without ``sub-``, each with its BOLD
        first, then the other files extraction reads (several runs: each run's files, BOLDs
        first).

    Returns
    -------
    dict
        ``{label: reason}``; the reason names the file(s) and what is wrong.
    """
    problems = {}
    for label, paths in files.items():
        paths = [Path(p) for p in paths]
        reason = _missing(paths) or _foreign(label, paths)
        if reason is not None:
            problems[label] = reason
    problems.update(_shared_bolds({label: Path(paths[0]) for label, paths in files.items() if label not in problems}))
    return problems


def _missing(paths: Sequence[Path]) -> str | None:
    reasons = []
    for index, path in enumerate(paths):
        if path.is_file():
            continue
        what = "no preprocessed BOLD" if index == 0 else "missing input file"
        if path.is_symlink():
            reasons.append(f"{what}: {path} is a symlink to {os.readlink(path)}, which does not exist "
                           "(a DataLad / git-annex file whose content was not fetched? `datalad get` it)")
        elif path.exists():
            reasons.append(f"{what}: {path} is not a file")
        else:
            reasons.append(f"{what}: {path}")
    return "; ".join(reasons) or None


def _foreign(label: str, paths: Sequence[Path]) -> str | None:
    for path in paths:
        real = Path(os.path.realpath(path))
        owner = _OWNER.match(real.name)
        if owner is not None and owner.group(1) != label:
            return (f"{path} resolves to {real}, a file of sub-{owner.group(1)}, not of sub-{label} "
                    "(a symlink to another subject's data)")
    return None


def _shared_bolds(bolds: Mapping[str, Path]) -> dict[str, str]:
    groups = defaultdict(list)
    for label, path in bolds.items():
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
