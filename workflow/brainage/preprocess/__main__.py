"""Command line of the preprocess stage: ``python -m brainage.preprocess templateflow|check``."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import json_object, run


def _templateflow(args: argparse.Namespace) -> None:
    from brainage.preprocess.templateflow import prefetch_templates

    prefetch_templates({**args.params, **args.archive}, args.space, args.home, args.out, progress=not args.no_progress)


def _check(args: argparse.Namespace) -> None:
    from brainage.preprocess.derivatives import check_derivatives

    check_derivatives(
        participant_id=args.participant_id,
        exit_code=args.exit_code,
        expected=args.expect,
        log_file=args.log,
        search_dirs=args.crash_search,
        version=args.version,
        description=args.description,
        record_out=args.record_out,
        provenance={"engine": args.engine, "image": args.image, "command": args.command},
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``brainage.preprocess`` argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="python -m brainage.preprocess", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    tf = verbs.add_parser("templateflow", help="fetch the TemplateFlow templates fMRIPrep needs")
    tf.add_argument("--params", type=json_object, required=True,
                    help="the preprocess.templateflow config section as JSON")
    tf.add_argument("--archive", type=json_object, required=True,
                    help="where the archive is: {bucket, endpoint_url} of preprocess.templateflow, as JSON")
    tf.add_argument("--space", required=True, help="the output space, e.g. MNI152NLin2009cAsym:res-2")
    tf.add_argument("--home", type=Path, required=True, help="the TemplateFlow home to fill")
    tf.add_argument("--out", type=Path, required=True, help="TSV listing every template file fetched")
    tf.add_argument("--no-progress", action="store_true", help="no progress bar")
    tf.set_defaults(func=_templateflow)

    check = verbs.add_parser("check", help="after an fMRIPrep job: its exit code and expected derivatives")
    check.add_argument("--participant-id", required=True, help="e.g. sub-0010001")
    check.add_argument("--exit-code", type=int, required=True, help="fMRIPrep's exit code")
    check.add_argument("--expect", type=Path, nargs="+", required=True, help="derivatives that must exist")
    check.add_argument("--log", type=Path, required=True, help="fMRIPrep's log (its tail is shown on failure)")
    check.add_argument("--crash-search", type=Path, nargs="*", default=[],
                       help="folders searched for fMRIPrep crash files on failure")
    check.add_argument("--version", required=True, help="the pinned fMRIPrep version (preprocess.version)")
    check.add_argument("--description", type=Path, required=True,
                       help="the derivatives' dataset_description.json (its GeneratedBy names the version run)")
    check.add_argument("--record-out", type=Path, required=True, help="JSON record of what ran, written on success")
    check.add_argument("--engine", required=True, help="preprocess.engine (recorded)")
    check.add_argument("--image", default=None, help="the image run (recorded)")
    check.add_argument("--command", required=True, help="the fMRIPrep command line (recorded)")
    check.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m brainage.preprocess``."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
