"""The version written into provenance: the release number, and the git commit of a source checkout."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path

from brainage import __version__

logger = logging.getLogger(__name__)

PACKAGE = "brainage"
# The source root that holds this package (the repository's workflow/ in a checkout).
ROOT = Path(__file__).resolve().parent.parent
_GIT_TIMEOUT_S = 5
# Set by git hooks and some tools; they would point git at another repository than ``root``'s.
_GIT_LOCATION_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


@functools.cache
def source_version(root: str | os.PathLike = ROOT) -> str:
    """The package version for provenance (Parquet metadata, model cards, the report, BIDS descriptions).

    Parameters
    ----------
    root : path, optional
        The folder holding the ``brainage`` package; default: where this module was imported from.

    Returns
    -------
    str
        A PEP 440 version. When ``brainage/__init__.py`` under ``root`` is tracked in a git work
        tree: ``__version__`` with the commit checked out as local label, e.g. ``0.1.0+g7a5b1bc``,
        and ``.dirty`` added when a file under ``root`` differs from it (edited, staged, deleted or
        untracked, e.g. ``0.1.0+g7a5b1bc.dirty``). Otherwise (no git, not a checkout, an installed
        copy, git failing or slower than 5 s): ``__version__`` itself, e.g. ``0.1.0``.

    Notes
    -----
    git runs on the first call in a process, never at import, and its answer is kept for the
    process (a job is one process). The version is provenance only: no rerun trigger or code hash
    (``brainage._codehash``) contains it, so a commit that changes no code reruns nothing.
    """
    tracked = _git(root, "ls-files", "--", f"{PACKAGE}/__init__.py")
    commit = _git(root, "rev-parse", "--short", "HEAD") if tracked else None
    changed = _git(root, "status", "--porcelain", "--", ".") if commit else None
    if changed is None:
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if changed else "")


def _git(root: str | os.PathLike, *args: str) -> str | None:
    # git's output, stripped; None where git is missing, fails (no work tree, no commit, a
    # repository of another owner) or takes too long.
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARIABLES}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take the index lock from a user's git
    try:
        done = subprocess.run(["git", "-C", os.fspath(root), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, env=env, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        logger.debug("git %s in %s: %s", " ".join(args), root, err)
        return None
    return done.stdout.strip()
