"""Command line: ``python -m brainage.participants manifest|merge ...``."""

from __future__ import annotations

import argparse

from brainage._cli import existing_dir, existing_file, json_object, run
from brainage.participants import build_manifest
from brainage.participants.discover import Selection
from brainage.participants.merge import merge_manifests


def _manifest(args: argparse.Namespace) -> None:
    build_manifest(
        participants=args.participants,
        dataset=args.dataset,
        derivatives=args.derivatives,
        selection=Selection.from_config(args.selection, args.selection.get("res")),
        out=args.out,
        exclusions_out=args.exclusions_out,
        exclude=args.exclude,
        raw=args.raw_bids,
    )


def _merge(args: argparse.Namespace) -> None:
    merge_manifests(
        manifests=args.manifests,
        exclusions=args.exclusions,
        out=args.out,
        exclusions_out=args.exclusions_out,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return the exit code."""
    parser = argparse.ArgumentParser(prog="brainage.participants", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    manifest = verbs.add_parser("manifest", help="write the participants manifest and its exclusions")
    manifest.add_argument("--participants", type=existing_file, required=True, help="BIDS participants.tsv")
    manifest.add_argument("--dataset", required=True, help="dataset name written into the manifest")
    manifest.add_argument("--derivatives", type=existing_dir, required=True,
                          help="fMRIPrep derivatives folder (with --raw-bids: the raw BIDS dataset)")
    manifest.add_argument("--raw-bids", action="store_true",
                          help="--derivatives is a raw BIDS dataset fMRIPrep runs on: look for raw *_bold.nii.gz and a T1w")
    manifest.add_argument(
        "--selection",
        type=json_object,
        required=True,
        help='the runs to use as JSON: task, space, res (null: any single one), session, runs, bids_filter '
        '(the inputs config keys), e.g. {"task": "rest", "space": "MNI152NLin2009cAsym", "res": null}',
    )
    manifest.add_argument(
        "--exclude",
        type=json_object,
        default={},
        help='subjects to leave out as JSON, participant id -> reason (inputs.exclude), e.g. {"sub-01": "artefact"}',
    )
    manifest.add_argument("--out", required=True, help="manifest TSV to write")
    manifest.add_argument("--exclusions-out", required=True, help="exclusions TSV to write")
    manifest.set_defaults(func=_manifest)
    merge = verbs.add_parser("merge", help="merge per-dataset manifests and exclusions into one of each")
    merge.add_argument("--manifests", type=existing_file, nargs="+", required=True, help="per-dataset manifest TSVs")
    merge.add_argument("--exclusions", type=existing_file, nargs="*", default=[], help="per-dataset exclusions TSVs")
    merge.add_argument("--out", required=True, help="merged manifest TSV to write")
    merge.add_argument("--exclusions-out", required=True, help="merged exclusions TSV to write")
    merge.set_defaults(func=_merge)
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
