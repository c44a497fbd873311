"""Shared pytest set-up: offline nilearn data folder, repository paths, the shared real data."""

import pytest
from shared_paths import SHARED, require_shared

SHARED_DATA = SHARED / "data"


@pytest.fixture(autouse=True)
def _offline_nilearn(tmp_path_factory, monkeypatch):
    # nilearn fetchers fail offline but leave empty folders behind: keep them out of $HOME.
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path_factory.getbasetemp() / "nilearn_data"))


@pytest.fixture(scope="session")
def shared_data():
    """The real data in ../shared/data (never copied into the repository); skipped without it, failed under CI."""
    return require_shared(SHARED_DATA, "shared data")
