"""Command line of the pretraining stage: ``python -m brainage.pretrain encoder ...``."""

from __future__ import annotations

import argparse

from brainage._cli import existing_file, json_object, positive_int, run
from brainage.pretrain.contrastive import pretrain_encoder


def _encoder(args: argparse.Namespace) -> None:
    pretrain_encoder(
        fold=args.fold,
        cohort=args.cohort,
        splits=args.splits,
        inputs=args.inputs,
        params=args.params,
        seed=args.seed,
        threads=args.threads,
        out=args.out,
    )


def build_parser() -> argparse.ArgumentParser:
    """The stage's argument parser (one subcommand per verb)."""
    parser = argparse.ArgumentParser(prog="brainage.pretrain", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("encoder", help="pretrain the cnn_rnn frame encoder on one fold's training subjects")
    p.add_argument("--fold", required=True, type=int, help="outer test fold (its subjects are not used)")
    p.add_argument("--cohort", required=True, type=existing_file, help="results/dataset/cohort.parquet")
    p.add_argument("--splits", required=True, type=existing_file, help="results/dataset/splits.tsv")
    p.add_argument("--inputs", required=True, nargs="+", type=existing_file, help="volume files")
    p.add_argument("--params", required=True, type=json_object,
                   help='{"channels": models.cnn_rnn.channels, **the pretrain section} as JSON')
    p.add_argument("--seed", required=True, type=int, help="the config seed")
    p.add_argument("--threads", required=True, type=positive_int, help="CPU threads for torch and BLAS")
    p.add_argument("--out", required=True, help="encoder.pt (card.json is written beside it)")
    p.set_defaults(func=_encoder)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
