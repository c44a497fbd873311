"""Declared dependencies: pyproject.toml and envs/brainage.yaml agree, and cover what the package imports."""

import ast
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "workflow" / "brainage"

# Declared runtime dependencies that the package does not import, and why they are still needed.
NOT_IMPORTED = {
    "snakemake": "runs the workflow",
    "snakemake-executor-plugin-slurm": "the cluster executor (profiles/slurm)",
    "fmriprep-docker": "the fMRIPrep launcher the fmriprep_subject rule runs",
    "nipype": "a named dependency of the project (fMRIPrep's engine); the QC tests check our CompCor against it",
    "jsonschema": "snakemake.utils.validate checks the config with it",
    "pyyaml": "the config files",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_canonical(Requirement(d).name): str(Requirement(d).specifier) for d in deps}


def _env_pip() -> list[str]:
    env = yaml.safe_load((REPO / "envs" / "brainage.yaml").read_text())
    pip = [entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict) and "pip" in entry]
    assert len(pip) == 1, env["dependencies"]
    return pip[0]


def _imported_top_level() -> dict[str, set[str]]:
    # Top-level module -> files importing it (absolute imports only: relative ones are the package).
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.relative_to(REPO).as_posix())
    return {k: v for k, v in found.items() if k != "brainage" and k not in sys.stdlib_module_names}


def test_every_dependency_is_pinned_and_the_conda_env_lists_the_same():
    declared = _declared()
    assert all(declared.values()), {k: v for k, v in declared.items() if not v}
    env = _env_pip()
    assert {_canonical(Requirement(d).name): str(Requirement(d).specifier) for d in env} == declared


def test_conda_env_installs_no_local_package():
    # `-e ..` resolves against Snakemake's copy of the env file under .snakemake/conda/; the jobs
    # import brainage from the repository's workflow/ through PYTHONPATH instead.
    for entry in _env_pip():
        assert not entry.startswith(("-", ".", "/", "file:")) and "/" not in entry, entry
        Requirement(entry)  # a plain requirement, nothing pip-specific


def test_every_third_party_import_is_a_declared_dependency():
    declared = set(_declared())
    distributions = packages_distributions()
    missing = {}
    for module, files in _imported_top_level().items():
        provided = {_canonical(d) for d in distributions.get(module, [])}
        if not provided & declared:
            missing[module] = (sorted(provided), sorted(files))
    assert not missing, f"imported but not declared in pyproject.toml (module: distributions, files): {missing}"


def test_every_declared_dependency_is_imported_or_needed_otherwise():
    distributions = packages_distributions()
    imported = {_canonical(d) for m in _imported_top_level() for d in distributions.get(m, [])}
    unused = set(_declared()) - imported - set(NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml but imported nowhere in workflow/brainage: {sorted(unused)}"
    assert not set(NOT_IMPORTED) & imported, "a NOT_IMPORTED entry is imported now: remove it there"


def test_the_brainage_script_is_the_stage_launcher(capsys):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"brainage": "brainage.__main__:main"}
    module, _, name = scripts["brainage"].partition(":")
    entry = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as done:
        entry(["--help"])  # what the installed script runs, as `brainage --help`
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: brainage ")
