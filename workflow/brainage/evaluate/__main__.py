"""Command line: ``python -m brainage.evaluate run ...``."""

from __future__ import annotations

import argparse

from brainage._cli import existing_file, json_object, run
from brainage.evaluate import evaluate


def _run(args: argparse.Namespace) -> None:
    evaluate(
        prediction_files=args.predictions,
        params=args.params,
        predictions_out=args.predictions_out,
        metrics_out=args.metrics_out,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return the exit code."""
    parser = argparse.ArgumentParser(prog="brainage.evaluate", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    verb = verbs.add_parser("run", help="pool predictions, correct the age bias, write metrics")
    verb.add_argument(
        "--predictions",
        type=existing_file,
        nargs="+",
        required=True,
        help="prediction Parquet files (kind predictions)",
    )
    verb.add_argument("--params", type=json_object, required=True, help="the evaluate config section as JSON")
    verb.add_argument("--seed", type=int, default=0, help="workflow seed; the bootstrap resamples derive from it")
    verb.add_argument("--predictions-out", required=True, help="predictions.parquet to write")
    verb.add_argument("--metrics-out", required=True, help="metrics.tsv to write")
    verb.set_defaults(func=_run)
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
