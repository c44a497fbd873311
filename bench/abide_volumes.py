"""Real ABIDE signal in volumetric form: the PCP cc200 ROI series projected onto CC200 and block-averaged.

Usage: python bench/abide_volumes.py --out DIR [--voxel-size 4] [--scaling global|voxel]
       [--max-subjects N] [--seed 42] [--sites NYU UM_1 ...] [--data DIR]

No real 4D fMRI with ages can be downloaded here. This builds the CNN-RNN's real-signal test bed
from ``shared/data/abide1_pcp_cpac_filtglobal_cc200``: every voxel of a CC200 region (3 mm labels)
carries its region's real series, the frames are block-averaged to ``--voxel-size`` and scaled as
extraction does (:mod:`brainage.demo.projected`). The spatial detail inside a region is gone (all its
voxels share one series); what is real is each region's signal, the subjects, ages, sites and scan
lengths. Writes under ``--out``:

- ``volumes/sub-<id>_volumes.parquet`` (:func:`brainage.storage.write_volumes`),
- ``series/sub-<id>_atlas-cc200_timeseries.parquet`` (the same series unchanged, ``roi_001..roi_200``),
- ``participants.tsv`` (participant_id, age, sex, site) of the subjects written.

The ROI Parquet is read in one streaming pass (rows are sorted by participant), one subject in memory
at a time.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from brainage import storage
from brainage._cli import existing_dir, run
from brainage.demo.projected import constant_regions, projected_frames, projection_operator
from brainage.errors import InputDataError

logger = logging.getLogger("abide_volumes")

DATA = Path("/work/shared/data/abide1_pcp_cpac_filtglobal_cc200")
SERIES_FILE, ATLAS_FILE, PARTICIPANTS_FILE = "timeseries_cc200.parquet", "atlas/CC200.nii.gz", "participants.tsv"
N_REGIONS = 200
LABELS = [f"roi_{r:03d}" for r in range(1, N_REGIONS + 1)]
DATASET = "ABIDE I PCP C-PAC filt_global (strategy inferred, see SOURCES.md), CC200 ROI series"


def select_subjects(participants: pd.DataFrame, max_subjects: int | None, seed: int,
                    sites: list[str] | None) -> pd.DataFrame:
    """The subjects to write: all of ``sites``, or a seeded sample stratified by site.

    Systematic sampling within each site: subjects in a seeded random order get the key
    ``(rank + offset) / site size`` (one random offset in [0, 1) per site); the ``max_subjects``
    smallest keys form the sample, so every site gets its share (+-1) of the sample.

    Parameters
    ----------
    participants : DataFrame
        ``participants.tsv`` (participant_id, site, ...).
    max_subjects : int or None
        None: every subject.
    seed : int
    sites : list of str or None
        Keep only these ``site`` values.

    Returns
    -------
    DataFrame
        The chosen rows, in the table's order.
    """
    if sites:
        unknown = sorted(set(sites) - set(participants["site"]))
        if unknown:
            raise ValueError(f"--sites: unknown site(s) {unknown}; valid: {sorted(participants['site'].unique())}")
        participants = participants[participants["site"].isin(sites)]
    if max_subjects is None or max_subjects >= len(participants):
        return participants
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(participants))
    shuffled = participants.iloc[order]
    rank = shuffled.groupby("site", sort=False).cumcount().to_numpy()
    size = shuffled.groupby("site", sort=False)["site"].transform("size").to_numpy()
    offsets = dict(zip(sorted(participants["site"].unique()), rng.random(participants["site"].nunique()), strict=True))
    key = (rank + shuffled["site"].map(offsets).to_numpy()) / size
    chosen = shuffled.index[np.argsort(key, kind="stable")[:max_subjects]]
    return participants.loc[participants.index.isin(chosen)]


def iter_subjects(path: Path, wanted: set[str],
                  batch_size: int = 16384) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Stream ``(participant_id, t, series)`` for the ``wanted`` subjects of the ROI Parquet.

    Yields
    ------
    participant_id : str
    t : ndarray, shape (n_timepoints,), int64
    series : ndarray, shape (n_timepoints, 200), float32

    Raises
    ------
    InputDataError
        If ROI columns are missing or the rows are not grouped by participant.
    """
    # No pre-buffering: one column chunk at a time is read, not a whole row group (~60 MB less).
    source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    missing = [c for c in ["participant_id", "t", *LABELS] if c not in source.schema_arrow.names]
    if missing:
        raise InputDataError(f"{path}: missing columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    done: set[str] = set()
    current, chunks = None, []
    for batch in source.iter_batches(batch_size=batch_size, columns=["participant_id", "t", *LABELS]):
        ids = batch.column(0).to_numpy(zero_copy_only=False).astype(str)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
            if ids[a] != current:
                if current is not None and chunks:
                    yield current, *_stack(chunks)
                if ids[a] in done:
                    raise InputDataError(f"{path}: rows of {ids[a]} are not contiguous (expected rows sorted by "
                                         "participant_id, t)")
                done.add(ids[a])
                current, chunks = ids[a], []
            if current in wanted:
                chunks.append(batch.slice(a, b - a))
    if current is not None and chunks:
        yield current, *_stack(chunks)


def _stack(chunks: list) -> tuple[np.ndarray, np.ndarray]:
    """``t`` and the (n_timepoints, 200) float32 series of one subject's record batches."""
    t = np.concatenate([c.column(1).to_numpy() for c in chunks]).astype(np.int64)
    series = np.concatenate([np.column_stack([c.column(j).to_numpy() for j in range(2, 2 + N_REGIONS)])
                             for c in chunks]).astype(np.float32)
    return t, series


def write_subject(out: Path, row: pd.Series, t: np.ndarray, series: np.ndarray, projection: tuple,
                  args: argparse.Namespace) -> None:
    """Check one subject's series, then write its volumes and its ROI series."""
    pid = row["participant_id"]
    if not np.array_equal(t, np.arange(len(t))) or len(t) != int(row["n_timepoints"]):
        raise InputDataError(f"{args.data / SERIES_FILE}: {pid} has time points {t[:3].tolist()}..., "
                             f"expected 0..{int(row['n_timepoints']) - 1} (participants.tsv n_timepoints)")
    constant = constant_regions(series)
    if constant.size:
        logger.info("%s: %d constant region(s) project to 0: %s", pid, constant.size,
                    ", ".join(LABELS[j] for j in constant))
    weights, mask, affine = projection
    provenance = {
        "dataset": DATASET, "site": row["site"], "file_id": row["file_id"], "atlas": "cc200",
        "sources": {"timeseries": SERIES_FILE, "atlas": Path(ATLAS_FILE).name, "participants": PARTICIPANTS_FILE},
        "frames": t.tolist(), "n_timepoints": len(t), "tr": None, "constant_regions": [LABELS[j] for j in constant],
        "generator": "bench/abide_volumes.py",
    }
    storage.write_timeseries(out / "series" / f"{pid}_atlas-cc200_timeseries.parquet", series, LABELS,
                             participant_id=pid, provenance=provenance)
    frames = projected_frames(weights, series, args.scaling)
    storage.write_volumes(out / "volumes" / f"{pid}_volumes.parquet", frames, mask, affine, participant_id=pid,
                          provenance=provenance | {
                              "volume_voxel_size": args.voxel_size, "volume_scaling": args.scaling,
                              "params": {"volume_voxel_size": args.voxel_size, "volume_scaling": args.scaling},
                              "projection": "region series painted on the CC200 3 mm labels, block-averaged "
                                            "over the labelled voxels of each coarse voxel"})


def abide_volumes(args: argparse.Namespace) -> None:
    """Write the volumes, series and participants of the chosen subjects under ``args.out``."""
    start = time.perf_counter()
    table = storage.read_tsv(args.data / PARTICIPANTS_FILE, dtype={"participant_id": str})
    chosen = select_subjects(table, args.max_subjects, args.seed, args.sites)
    logger.info("%d of %d subjects chosen (%s)", len(chosen), len(table),
                ", ".join(f"{s} {n}" for s, n in chosen["site"].value_counts().sort_index().items()))
    projection = projection_operator(args.data / ATLAS_FILE, args.voxel_size, N_REGIONS)
    rows = chosen.set_index("participant_id", drop=False)
    written = []
    for pid, t, series in iter_subjects(args.data / SERIES_FILE, set(rows.index)):
        write_subject(args.out, rows.loc[pid], t, series, projection, args)
        written.append(pid)
        if len(written) % 50 == 0 or len(written) == len(rows):
            logger.info("%d/%d subjects written (%.0f s)", len(written), len(rows), time.perf_counter() - start)
        if len(written) == len(rows):
            break  # the rest of the file holds no chosen subject
    absent = sorted(set(rows.index) - set(written))
    if absent:
        raise InputDataError(f"{args.data / SERIES_FILE}: no rows for {len(absent)} subject(s) of "
                             f"{PARTICIPANTS_FILE}: {absent[:5]}")
    storage.write_tsv(args.out / "participants.tsv", chosen[["participant_id", "age", "sex", "site"]])
    size = sum(p.stat().st_size for p in args.out.rglob("*.parquet"))
    logger.info("done: %d subjects, grid %s, %d voxels, %.1f s, %.2f GB on disk, peak RSS %.0f MB",
                len(written), projection[1].shape, int(projection[1].sum()), time.perf_counter() - start,
                size / 1e9, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="abide_volumes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--voxel-size", type=float, default=4.0, help="coarse voxel size, mm (default 4)")
    parser.add_argument("--scaling", choices=["global", "voxel"], default="global",
                        help="volume scaling, as extract.volume_scaling (default global)")
    parser.add_argument("--max-subjects", type=_positive_int, default=None,
                        help="seeded site-stratified sample of this many subjects (default all)")
    parser.add_argument("--seed", type=int, default=42, help="sampling seed (default 42)")
    parser.add_argument("--sites", nargs="+", default=None, help="keep only these sites (participants.tsv site)")
    parser.add_argument("--data", type=existing_dir, default=DATA, help=f"ABIDE cc200 folder (default {DATA})")
    parser.set_defaults(func=abide_volumes)
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
