"""The ``brainage`` command (brainage.__main__): lists every stage and runs it as ``python -m`` does."""

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import brainage
from brainage.__main__ import main, stages
from brainage._version import source_version

REPO = Path(__file__).resolve().parents[2]


def _stages_with_a_main() -> set[str]:
    # Independently of brainage.__main__: the import system's view of the package.
    packages = [m.name for m in pkgutil.iter_modules(brainage.__path__) if m.ispkg]
    return {name for name in packages if importlib.util.find_spec(f"brainage.{name}.__main__") is not None}


def _run(*args) -> subprocess.CompletedProcess:
    # This tree's package, whatever copy of brainage is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def _help(capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_stage_with_its_docstring_summary(capsys):
    expected = _stages_with_a_main()
    assert {"train", "extract", "report", "download"} <= expected and "torchloop" not in expected
    listed = _help(capsys).split("\nstages:\n")[1].split("\n\n")[0].splitlines()
    found = dict(re.fullmatch(r"  (\S+) +(.*)", line).groups() for line in listed)
    assert set(found) == expected == set(stages())
    for name, text in found.items():
        summary = " ".join(importlib.import_module(f"brainage.{name}").__doc__.split("\n\n")[0].split())
        assert text == summary and text, name


def test_version_is_the_provenance_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"brainage {source_version()}\n"


@pytest.mark.parametrize("argv", [["nosuch"], ["nosuch", "--help"], []], ids=["unknown", "unknown-help", "none"])
def test_an_unknown_or_missing_stage_exits_2_naming_the_stages(capsys, argv):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    if argv:
        assert "invalid choice: 'nosuch'" in err and all(f"'{name}'" in err for name in stages())
    else:
        assert "the following arguments are required: <stage>" in err


def _same_run(args) -> subprocess.CompletedProcess:
    command = _run("-m", "brainage", *args)
    direct = _run("-m", f"brainage.{args[0]}", *args[1:])
    # Log lines start with a time stamp: compare what follows it.
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.M)
    assert (command.returncode, command.stdout, stamp.sub("", command.stderr)) == (
        direct.returncode, direct.stdout, stamp.sub("", direct.stderr))
    return command


@pytest.mark.parametrize(("args", "shown"), [(["train", "--help"], "{model}"), (["train", "model", "-h"], "--inner-folds")])
def test_a_stage_help_is_the_python_m_help(args, shown):
    done = _same_run(args)
    assert done.returncode == 0 and done.stdout.startswith("usage: brainage.train") and shown in done.stdout


@pytest.mark.parametrize("args", [["dataset", "build", "--cohort"], ["demo", "nosuch"], ["demo", "--", "generate"]],
                         ids=["missing-value", "unknown-verb", "double-dash"])
def test_a_stage_usage_error_is_the_python_m_error(args):
    done = _same_run(args)
    assert done.returncode == 2 and "error:" in done.stderr


def test_a_failing_stage_exits_1_as_under_python_m(tmp_path):
    args = ["demo", "generate", "--params", '{"n_subjects": 2}', "--seed", "0", "--out-dir", str(tmp_path / "demo")]
    done = _same_run(args)
    assert done.returncode == 1 and "ERROR python -m brainage.demo: demo parameters lack demo.age_max" in done.stderr
    assert not (tmp_path / "demo").exists()
