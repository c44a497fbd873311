"""Command line: ``python -m brainage.extract subject ...`` (one subject per call)."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import existing_dir, existing_file, json_object, run
from brainage.extract.subject import extract_subject


def _subject(args: argparse.Namespace) -> None:
    extract_subject(
        args.participant_id,
        args.bold,
        args.mask,
        args.atlas,
        args.params,
        args.series_out,
        args.volumes_out,
        args.qc_out,
        confounds=args.confounds,
        # No confounds table means an already denoised BOLD (ABIDE PCP func_preproc).
        denoised=args.confounds is None,
    )


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(prog="python -m brainage.extract", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    sub = verbs.add_parser(
        "subject",
        help="denoise one subject's BOLD; write ROI series (per atlas), volumes and QC",
        description="Excluded subjects (bad data) get a QC record with the reason and empty "
        "outputs; the exit code stays 0. Without --confounds the BOLD is taken as already "
        "denoised (e.g. ABIDE PCP func_preproc): no confound regression, no scrubbing.",
    )
    sub.add_argument("--participant-id", required=True, help="e.g. sub-001")
    sub.add_argument("--bold", required=True, nargs="+", type=existing_file,
                     help="*_desc-preproc_bold.nii.gz or PCP *_func_preproc.nii.gz; TR from its "
                     ".json sidecar if present, else from the NIfTI header. Several runs: each is "
                     "denoised on its own, then they are joined in time (same order for --mask, --confounds)")
    sub.add_argument("--mask", required=True, nargs="+", type=existing_file,
                     help="*_desc-brain_mask.nii.gz or PCP *_func_mask.nii.gz, one per --bold")
    sub.add_argument("--confounds", nargs="+", type=existing_file,
                     help="*_desc-confounds_timeseries.tsv, one per --bold (each checked to be the one "
                     "nilearn reads); omit for an already denoised BOLD")
    sub.add_argument("--atlas", required=True, nargs="+", type=existing_dir,
                     help="atlas folders from 'python -m brainage.download atlas' (atlas.json, labels.tsv, "
                     "image); the BOLD is read once for all")
    sub.add_argument("--params", required=True, type=json_object,
                     help="the 'extract' config section as a JSON object")
    sub.add_argument("--series-out", required=True, nargs="+", type=Path,
                     help="ROI series Parquet, one per --atlas in the same order")
    sub.add_argument("--volumes-out", required=True, type=Path, help="downsampled volumes Parquet")
    sub.add_argument("--qc-out", required=True, type=Path, help="QC JSON")
    sub.set_defaults(func=_subject)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
