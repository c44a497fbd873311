"""The ``brainage`` command: ``brainage <stage> ARGS`` runs ``python -m brainage.<stage> ARGS``."""

from __future__ import annotations

import argparse
import ast
import runpy
import sys
from pathlib import Path

from brainage._version import source_version

PACKAGE_DIR = Path(__file__).resolve().parent


def stages() -> dict[str, str]:
    """Every stage (a subpackage with a ``__main__.py``) and its one-line description.

    The description is the summary line of the stage package's docstring, read from the file: listing
    the stages imports none of them (some import torch).

    Returns
    -------
    dict of str to str
        Stage name -> description, sorted by name.
    """
    found = {}
    for main in sorted(PACKAGE_DIR.glob("*/__main__.py")):
        init = main.with_name("__init__.py")
        doc = ast.get_docstring(ast.parse(init.read_bytes(), filename=str(init))) if init.is_file() else None
        found[main.parent.name] = " ".join((doc or "").split("\n\n")[0].split())
    return found


def build_parser(descriptions: dict[str, str]) -> argparse.ArgumentParser:
    """The command's parser: ``--help`` lists the stages, ``--version`` prints the provenance version."""
    width = max(map(len, descriptions), default=0)
    listed = "\n".join(f"  {name:<{width}}  {text}" for name, text in descriptions.items())
    parser = argparse.ArgumentParser(
        prog="brainage",
        description="Brain age from resting-state fMRI: run one stage of the pipeline, as the workflow's "
                    "rules do with python -m brainage.<stage>.",
        epilog=f"stages:\n{listed}\n\n'brainage <stage> --help' lists a stage's verbs and options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {source_version()}")
    parser.add_argument("stage", choices=list(descriptions), metavar="<stage>", help="one of the stages below")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the stage's verb and its arguments")
    return parser


def run_stage(stage: str, args: list[str]) -> int:
    """Run ``python -m brainage.<stage> ARGS``: the stage's ``__main__`` module, with ``sys.argv`` as it sets it.

    Returns
    -------
    int
        0 if the module returns; every stage ends in ``raise SystemExit(main())`` instead, which
        propagates with the stage's exit code.
    """
    saved = sys.argv
    sys.argv = [f"brainage {stage}", *args]  # argv[0] becomes the module's file, as under python -m
    try:
        runpy.run_module(f"brainage.{stage}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``brainage ARGS``; return (or raise ``SystemExit`` with) the exit code.

    ``brainage <stage> ...`` hands every argument after the stage, unparsed, to the stage's own
    parser; anything else (``--help``, ``--version``, no or an unknown stage) is this parser's.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    descriptions = stages()
    if argv and argv[0] in descriptions:
        stage, args = argv[0], argv[1:]
    else:
        parsed = build_parser(descriptions).parse_args(argv)  # exits unless a stage follows options, e.g. "--"
        stage, args = parsed.stage, parsed.args
    return run_stage(stage, args)


if __name__ == "__main__":
    raise SystemExit(main())
