"""Command line: ``python -m brainage.export derivatives|volumes ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import existing_dir, existing_file, json_object, run
from brainage.export import export_derivatives, export_volumes


def _derivatives(args: argparse.Namespace) -> None:
    export_derivatives(series=args.series, atlases=args.atlases, cohort=args.cohort, config=args.config,
                       out_dir=args.out_dir)


def _volumes(args: argparse.Namespace) -> None:
    export_volumes(volumes=args.volumes, out=args.out)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m brainage.export", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    derivatives = verbs.add_parser(
        "derivatives", help="write the ROI series, correlation matrices and atlases as a BIDS-Derivatives folder")
    derivatives.add_argument("--series", type=existing_file, nargs="+", required=True,
                             help="ROI-series Parquet files of every subject and atlas "
                                  "(results/extract/sub-*/sub-*_atlas-<id>_timeseries.parquet)")
    derivatives.add_argument("--atlases", type=existing_dir, nargs="*", default=[],
                             help="atlas folders resources/atlases/<id> (none for ready-made ROI series)")
    derivatives.add_argument("--cohort", type=existing_file, required=True,
                             help="results/dataset/cohort.parquet: the subjects to export")
    derivatives.add_argument("--config", type=json_object, required=True, help="full resolved workflow config (JSON)")
    derivatives.add_argument("--out-dir", type=Path, required=True,
                             help="derivatives folder to write, e.g. results/derivatives/brainage")
    derivatives.set_defaults(func=_derivatives)
    volumes = verbs.add_parser("volumes", help="write one subject's volumes Parquet as a 4D NIfTI")
    volumes.add_argument("--volumes", type=existing_file, required=True, help="a *_volumes.parquet file")
    volumes.add_argument("--out", type=Path, required=True, help="NIfTI to write (.nii.gz)")
    volumes.set_defaults(func=_volumes)
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
