"""Command line of the report stage: ``python -m brainage.report build ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import existing_dir, existing_file, json_object, run
from brainage.report.build import build_report


def _build(args: argparse.Namespace) -> None:
    build_report(args.config, args.manifest, args.cohort, args.exclusions, args.metrics,
                 args.predictions, args.cards, args.out, args.fmriprep_records, args.extract_qc, args.atlases,
                 figures_out=args.figures_out)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m brainage.report", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    build = verbs.add_parser("build", help="write the self-contained HTML report")
    build.add_argument("--config", type=json_object, required=True, help="full resolved workflow config (JSON)")
    build.add_argument("--manifest", type=existing_file, required=True, help="results/participants.tsv")
    build.add_argument("--cohort", type=existing_file, required=True, help="results/dataset/cohort.parquet")
    build.add_argument("--exclusions", type=existing_file, required=True, help="results/dataset/exclusions.tsv")
    build.add_argument("--metrics", type=existing_file, required=True, help="results/evaluate/metrics.tsv")
    build.add_argument("--predictions", type=existing_file, required=True,
                       help="results/evaluate/predictions.parquet")
    build.add_argument("--cards", type=existing_file, nargs="+", required=True,
                       help="model cards results/models/model-*/fold-*/card.json")
    build.add_argument("--fmriprep-records", type=existing_file, nargs="*", default=[],
                       help="records of the fMRIPrep jobs (results/preprocess/sub-*/.../*_fmriprep.json)")
    build.add_argument("--extract-qc", type=existing_file, nargs="*", default=[],
                       help="extraction QC records (results/extract/sub-*/sub-*_qc.json)")
    build.add_argument("--atlases", type=existing_dir, nargs="*", default=[],
                       help="built atlas folders resources/atlases/<id>, in config order")
    build.add_argument("--out", type=Path, required=True, help="HTML file to write")
    build.add_argument("--figures-out", type=Path, help="folder for each model's figure as <model>.png (optional)")
    build.set_defaults(func=_build)
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
