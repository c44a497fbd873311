"""Command line of the download stage: ``python -m brainage.download atlas``."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import json_object, run


def _atlas(args: argparse.Namespace) -> None:
    from brainage.download.atlas import build_atlas

    build_atlas(args.params, args.seed, args.out, args.labels_out)


def build_parser() -> argparse.ArgumentParser:
    """The ``brainage.download`` argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="python -m brainage.download", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    atlas = verbs.add_parser("atlas", help="build (kmeans) or copy (file) the atlas label image and table")
    atlas.add_argument("--params", type=json_object, required=True, help="the atlas config section as JSON")
    atlas.add_argument("--seed", type=int, required=True, help="the config seed")
    atlas.add_argument("--out", type=Path, required=True, help="label image to write (.nii.gz)")
    atlas.add_argument("--labels-out", type=Path, required=True, help="label table to write (.tsv)")
    atlas.set_defaults(func=_atlas)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the download command line; returns the exit code."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
