"""Command line of the download stage: ``python -m brainage.download atlas|indi|pcp-rois``."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainage._cli import existing_file, json_object, run


def _atlas(args: argparse.Namespace) -> None:
    from brainage.download.atlas import build_atlas

    build_atlas(args.spec, args.seed, args.out_dir, data_dir=args.data_dir, urls=args.urls)


def _indi(args: argparse.Namespace) -> None:
    from brainage.download.indi_fetch import fetch_dataset

    fetch_dataset(
        entry=args.entry,
        indi_params=args.indi,
        seed=args.seed,
        out_dir=args.out_dir,
        manifest_out=args.manifest_out,
        files_out=args.files_out,
        exclusions_out=args.exclusions_out,
        progress=not args.no_progress,
    )


def _pcp_rois(args: argparse.Namespace) -> None:
    from brainage.download.pcp import convert_pcp_rois

    convert_pcp_rois(args.participant_id, args.rois, args.params, args.series_out, args.qc_out)


def build_parser() -> argparse.ArgumentParser:
    """The ``brainage.download`` argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="python -m brainage.download", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    atlas = verbs.add_parser("atlas", help="build one atlas of the registry (fetched, generated or a user image) "
                                           "into a folder: atlas.json, labels.tsv, atlas.nii.gz")
    atlas.add_argument("--spec", type=json_object, required=True,
                       help="one atlases entry as JSON, e.g. '{\"name\": \"schaefer\", \"n_rois\": 400}'")
    atlas.add_argument("--seed", type=int, required=True, help="the config seed (kmeans parcels)")
    atlas.add_argument("--out-dir", type=Path, required=True, help="atlas folder to write (resources/atlases/<id>)")
    atlas.add_argument("--data-dir", type=Path, required=True,
                       help="nilearn data folder the downloads are cached in (atlas_fetch.data_dir)")
    atlas.add_argument("--urls", type=json_object, default={},
                       help="mirror base URL by atlas name as JSON (atlas_fetch.urls); default: the public URLs")
    atlas.set_defaults(func=_atlas)

    fetch = verbs.add_parser("indi", help="download one INDI dataset: phenotypes, selected subjects' files")
    fetch.add_argument("--entry", type=json_object, required=True, help="one item of the datasets config list, as JSON")
    fetch.add_argument("--indi", type=json_object, required=True, help="the indi config section as JSON")
    fetch.add_argument("--seed", type=int, required=True, help="the config seed (max_subjects sampling)")
    fetch.add_argument("--out-dir", type=Path, required=True, help="folder the files are written under")
    fetch.add_argument("--manifest-out", type=Path, required=True, help="participants TSV to write")
    fetch.add_argument("--files-out", type=Path, required=True, help="fetched-files TSV to write")
    fetch.add_argument("--exclusions-out", type=Path, required=True, help="exclusions TSV to write")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_indi)

    rois = verbs.add_parser("pcp-rois", help="convert one ABIDE PCP .1D ROI series file to Parquet + QC")
    rois.add_argument("--participant-id", required=True, help="e.g. sub-0050003")
    rois.add_argument("--rois", type=existing_file, required=True, help="the PCP <FILE_ID>_rois_<atlas>.1D file")
    rois.add_argument(
        "--params", type=json_object, required=True,
        help="JSON with min_frames (extract.min_frames) and, for provenance, pcp_pipeline and pcp_strategy",
    )
    rois.add_argument("--series-out", type=Path, required=True, help="ROI series Parquet to write")
    rois.add_argument("--qc-out", type=Path, required=True, help="QC record JSON to write")
    rois.set_defaults(func=_pcp_rois)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the download command line; returns the exit code."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
