"""../shared beside the repository (real data, tools): a test needing it skips where it is absent, fails under CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Values of CI that do not mean "running under CI".
_NOT_CI = ("", "0", "false", "no")


def on_ci() -> bool:
    """Whether the tests run under CI: the environment variable CI is set (CI services set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def require_shared(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` if it exists; else skip the test, or fail it under CI.

    Locally a checkout without ../shared still runs every other test; CI must run these tests,
    so a missing path there is a failure that names it, never a silent skip.

    Parameters
    ----------
    path : path
        A file or folder under ../shared.
    what : str
        What it is, for the message.
    """
    path = Path(path)
    if path.exists():
        return path
    if on_ci():
        pytest.fail(f"{what} not found at {path}: under CI (CI={os.environ['CI']!r}) the tests need ../shared "
                    "beside the repository", pytrace=False)
    pytest.skip(f"{what} not found at {path}")
