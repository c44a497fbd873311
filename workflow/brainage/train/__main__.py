"""Command line of the training stage: ``python -m brainage.train model ...``."""

from __future__ import annotations

import argparse
import contextlib
import os

from brainage._cli import existing_dir, existing_file, json_object, positive_int, run
from brainage.train.fit import train_model


def _model(args: argparse.Namespace) -> None:
    # Started by torchrun with several processes: join the process group first (gloo on CPU,
    # NCCL with one GPU per process), leave it at the end.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        with process_group():
            _train(args)
    else:
        _train(args)


@contextlib.contextmanager
def process_group():
    """Join the torchrun process group for the duration of the block."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _train(args: argparse.Namespace) -> None:
    train_model(
        model=args.model,
        fold=args.fold,
        cohort=args.cohort,
        splits=args.splits,
        inputs=args.inputs,
        params=args.params,
        seed=args.seed,
        threads=args.threads,
        out_dir=args.out_dir,
        init_encoder=args.init_encoder,
        n_inner=args.inner_folds,
        group_by_site=args.group_by_site,
        atlas=args.atlas,
    )


def build_parser() -> argparse.ArgumentParser:
    """The stage's argument parser (one subcommand per verb)."""
    parser = argparse.ArgumentParser(prog="brainage.train", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("model", help="train one model on one outer fold")
    p.add_argument("--model", required=True, help="registered model name (brainage.models.list_models)")
    p.add_argument("--fold", required=True, type=int, help="outer test fold")
    p.add_argument("--cohort", required=True, type=existing_file, help="results/dataset/cohort.parquet")
    p.add_argument("--splits", required=True, type=existing_file, help="results/dataset/splits.tsv")
    p.add_argument("--inputs", required=True, nargs="+", type=existing_file, help="series or volume files")
    p.add_argument("--params", required=True, type=json_object, help="the model's config sub-tree as JSON")
    p.add_argument("--seed", required=True, type=int, help="the config seed")
    p.add_argument("--threads", required=True, type=positive_int, help="CPU threads for torch and BLAS")
    p.add_argument("--inner-folds", type=positive_int, default=5,
                   help="inner K-fold of the training subjects: cross-fitted predictions for the bias line and the stack")
    p.add_argument("--group-by-site", action="store_true", help="inner folds grouped by site (as the outer folds)")
    p.add_argument("--out-dir", required=True, help="folder for predictions.parquet, card.json, checkpoint.pt")
    p.add_argument("--init-encoder", type=existing_file, default=None,
                   help="pretrained frame encoder (brainage.pretrain encoder) for cnn_rnn with pretrain: true")
    p.add_argument("--atlas", type=existing_dir, default=None,
                   help="atlas folder (resources/atlases/<id>) for models that start from one (cnn_conn)")
    p.set_defaults(func=_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
