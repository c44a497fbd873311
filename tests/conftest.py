"""Shared pytest set-up: offline nilearn data folder, repository paths, the shared real data."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _offline_nilearn(tmp_path_factory, monkeypatch):
    # nilearn fetchers fail offline but leave empty folders behind: keep them out of $HOME.
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path_factory.getbasetemp() / "nilearn_data"))


@pytest.fixture(scope="session")
def shared_data():
    """The real data in ../shared/data (never copied into the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
