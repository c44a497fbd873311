"""Run the workflow in a scratch copy of the repository's workflow files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def make_workdir(path: Path, config: dict | None = None) -> Path:
    """Copy Snakefile, rules, config, profiles and the package sources into ``path``.

    The package sources are copied (not linked) so tests may edit them to check code-change reruns;
    the jobs import the copy (rules/common.smk puts its workflow/ on PYTHONPATH). ``config`` is
    written as ``config/test.yaml``.
    """
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", path / "Snakefile")
    for folder in ("rules", "config", "profiles", "envs", "workflow"):
        shutil.copytree(REPO / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    if config is not None:
        (path / "config" / "test.yaml").write_text(yaml.safe_dump(config))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1500,
              env: dict[str, str] | None = None, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir`` with this interpreter's environment first on PATH.

    ``env`` replaces the inherited environment (PATH excepted); ``path_first`` goes before everything
    on PATH (e.g. a folder of stand-in executables).
    """
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    env.setdefault("NILEARN_DATA", str(workdir / ".nilearn_data"))
    extra = ["--configfile", "config/test.yaml"] if (workdir / "config" / "test.yaml").exists() else []
    cmd = [sys.executable, "-m", "snakemake", *args, *extra]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count} (empty when nothing to do)."""
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    match = re.search(r"Job stats:\n(.*?)\n\s*\n", text, re.S)
    if match is None:
        raise AssertionError(f"no job table in dry-run output:\n{text}")
    jobs = {}
    for line in match.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs
