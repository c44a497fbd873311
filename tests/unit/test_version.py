"""brainage._version: the provenance version tells commits and edited trees apart, and git runs lazily."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from brainage import __version__
from brainage._version import source_version

REPO = Path(__file__).resolve().parents[2]
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")
# A commit without the user's git configuration (identity, signing).
_COMMIT = ["-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false", "commit", "-q"]


def _git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git repository with one commit: README.md and the source root src/ holding brainage/."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never the git of a folder above
    repo = tmp_path / "repo"
    (repo / "src" / "brainage").mkdir(parents=True)
    (repo / "src" / "brainage" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (repo / "README.md").write_text("readme\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, *_COMMIT, "-m", "one")
    return repo


def version(root) -> str:
    """The version for ``root`` computed now (the cached answer is per process)."""
    return source_version.__wrapped__(root)


@needs_git
def test_a_clean_checkout_is_the_release_and_its_commit(checkout):
    sha = _git(checkout, "rev-parse", "--short", "HEAD")
    found = version(checkout / "src")
    assert found == f"{__version__}+g{sha}"
    assert Version(found).public == __version__ and Version(found).local == f"g{sha}"
    _git(checkout, *_COMMIT, "--allow-empty", "-m", "two")  # another commit, another version
    assert version(checkout / "src") == f"{__version__}+g{_git(checkout, 'rev-parse', '--short', 'HEAD')}" != found


@needs_git
@pytest.mark.parametrize("change", ["edit", "stage", "untracked", "delete"])
def test_a_change_under_the_source_root_is_dirty(checkout, change):
    sha = _git(checkout, "rev-parse", "--short", "HEAD")
    package = checkout / "src" / "brainage"
    if change in ("edit", "stage"):
        (package / "__init__.py").write_text('__version__ = "0.1.0"\nx = 1\n')
    if change == "stage":
        _git(checkout, "add", ".")
    if change == "untracked":
        (package / "new.py").write_text("")
    if change == "delete":
        (package / "other.py").write_text("")
        _git(checkout, "add", ".")
        _git(checkout, *_COMMIT, "-m", "other")
        sha = _git(checkout, "rev-parse", "--short", "HEAD")
        (package / "other.py").unlink()
    found = version(checkout / "src")
    assert found == f"{__version__}+g{sha}.dirty"
    assert Version(found).local == f"g{sha}.dirty"


@needs_git
def test_changes_outside_the_source_root_and_ignored_files_are_not_dirty(checkout):
    (checkout / ".gitignore").write_text("__pycache__/\n")
    _git(checkout, "add", ".gitignore")
    _git(checkout, *_COMMIT, "-m", "ignore")
    sha = _git(checkout, "rev-parse", "--short", "HEAD")
    (checkout / "README.md").write_text("edited\n")  # the workflow's results, configs, docs: not the package code
    (checkout / "notes.txt").write_text("untracked\n")
    (checkout / "src" / "brainage" / "__pycache__").mkdir()
    (checkout / "src" / "brainage" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert version(checkout / "src") == f"{__version__}+g{sha}"


@needs_git
def test_a_package_that_git_does_not_track_is_the_plain_release(checkout):
    # An installed copy in an ignored folder of a checkout (a virtual environment in the repository).
    (checkout / ".gitignore").write_text(".venv/\n")
    site = checkout / ".venv" / "site-packages"
    shutil.copytree(checkout / "src", site)
    assert version(site) == __version__
    # A folder in no git repository, and a repository without commits.
    elsewhere = checkout.parent / "elsewhere"
    shutil.copytree(checkout / "src", elsewhere)
    assert version(elsewhere) == __version__
    empty = checkout.parent / "empty"
    shutil.copytree(checkout / "src", empty / "src")
    _git(empty, "init", "-q")
    _git(empty, "add", ".")  # tracked in the index, but no commit yet
    assert version(empty / "src") == __version__


@needs_git
def test_without_git_on_the_path_the_version_is_the_plain_release(checkout, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert version(checkout / "src") == __version__


@needs_git
def test_the_answer_is_kept_for_the_process(checkout):
    root = checkout / "src"
    first = source_version(root)
    (root / "brainage" / "__init__.py").write_text("changed = True\n")
    assert source_version(root) == first and version(root) == f"{first}.dirty"


@needs_git
def test_importing_runs_no_git_and_the_version_runs_it_once(tmp_path):
    # A git on PATH that records each call, then runs the real one.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "git").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {GIT} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")])}
    code = ("import brainage._version, brainage.storage, brainage.report.page, pathlib, sys\n"
            "p = pathlib.Path(sys.argv[1]); print(p.exists())\n"
            "v = brainage._version.source_version(); assert v == brainage._version.source_version(); print(v)")
    out = subprocess.run([sys.executable, "-c", code, str(calls)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "False"  # nothing ran git at import
    assert len(calls.read_text().splitlines()) <= 3  # once per process: the second call is the kept answer
    assert out[1].startswith(__version__)


def test_this_tree_reports_its_own_commit():
    # The tests run on this repository's workflow/ (PYTHONPATH): a checkout gives its commit.
    found = source_version()
    assert Version(found).public == __version__
    if GIT is None or not (REPO / ".git").exists():
        assert found == __version__
        return
    sha = _git(REPO, "rev-parse", "--short", "HEAD")
    dirty = bool(_git(REPO, "status", "--porcelain", "--", "workflow"))
    assert found == f"{__version__}+g{sha}" + (".dirty" if dirty else "")
