"""Command line: ``python -m brainage.dataset build ...``."""

from __future__ import annotations

import argparse

from brainage._cli import existing_file, json_object, run
from brainage.dataset import build_cohort


def _build(args: argparse.Namespace) -> None:
    build_cohort(
        manifest=args.manifest,
        participant_exclusions=args.participant_exclusions,
        qc_files=args.qc,
        params=args.params,
        qc_params=args.qc_params,
        seed=args.seed,
        cohort_out=args.cohort_out,
        splits_out=args.splits_out,
        exclusions_out=args.exclusions_out,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return the exit code."""
    parser = argparse.ArgumentParser(prog="brainage.dataset", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    build = verbs.add_parser("build", help="write cohort.parquet, splits.tsv and exclusions.tsv")
    build.add_argument("--manifest", type=existing_file, required=True, help="participants manifest TSV")
    build.add_argument(
        "--participant-exclusions",
        type=existing_file,
        required=True,
        help="participants-stage exclusions TSV",
    )
    build.add_argument("--qc", type=existing_file, nargs="+", required=True, help="extraction QC JSON files")
    build.add_argument("--params", type=json_object, required=True, help="the dataset config section as JSON")
    build.add_argument("--qc-params", type=json_object, required=True,
                       help="the qc config section (motion thresholds) as JSON")
    build.add_argument("--seed", type=int, required=True, help="the config seed")
    build.add_argument("--cohort-out", required=True, help="cohort.parquet to write")
    build.add_argument("--splits-out", required=True, help="splits.tsv to write")
    build.add_argument("--exclusions-out", required=True, help="exclusions.tsv to write")
    build.set_defaults(func=_build)
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
