"""Command line of the demo cohort: ``python -m brainage.demo generate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import json_object, run


def _generate(args: argparse.Namespace) -> None:
    from brainage.demo.generate import generate_demo

    generate_demo(args.out_dir, args.params, args.seed, n_threads=args.threads)


def build_parser() -> argparse.ArgumentParser:
    """The ``brainage.demo`` argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="python -m brainage.demo", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    generate = verbs.add_parser("generate", help="write the synthetic fMRIPrep-format demo cohort")
    generate.add_argument("--params", type=json_object, required=True, help="the demo config section as JSON")
    generate.add_argument("--seed", type=int, required=True, help="the config seed")
    generate.add_argument("--out-dir", type=Path, required=True, help="output folder (participants.tsv, derivatives/)")
    generate.add_argument(
        "--threads", type=int, default=1, help="subjects generated concurrently (the rule's threads; same data)"
    )
    generate.set_defaults(func=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo command line; returns the exit code."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
