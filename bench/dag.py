"""Time Snakemake's DAG for 100 and 1000 subjects: a fresh dry run, and a dry run of a finished workflow.

Usage: python bench/dag.py [--subjects 100 1000] [--repeats 3] [--layout single|sessions] [--work DIR] [--record]
(run inside the installed environment). Goals (issue 5): for 1000 subjects, ``snakemake -n`` on a
finished workflow <= 10 s and the DAG of a fresh run <= 30 s on a 2-core machine.

The workflow reads a user's fMRIPrep derivatives (``inputs.source: fmriprep``): a participants table
of N synthetic subjects and, per subject, the four derivative files extraction reads, as empty files
(building the DAG reads no image). "Finished" is made by creating every planned output empty
(from ``snakemake --summary``), then ``snakemake --touch``: the outputs are touched in DAG order and
recorded in Snakemake's metadata, so the dry run that follows has nothing to do, as after a real run. Each timing is a fresh ``python -m snakemake`` process (what a
user waits for), best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from demo_run import machine  # noqa: E402  (bench/ is sys.path[0] when run as a script)
from snakemake_helpers import make_workdir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK, SPACE, RES = "rest", "MNI152NLin2009cAsym", "2"
SUFFIXES = (f"space-{SPACE}_res-{RES}_desc-preproc_bold.nii.gz", f"space-{SPACE}_res-{RES}_desc-preproc_bold.json",
            f"space-{SPACE}_res-{RES}_desc-brain_mask.nii.gz", "desc-confounds_timeseries.tsv",
            "desc-confounds_timeseries.json")


def write_derivatives(root: Path, n_subjects: int, layout: str = "single") -> None:
    """A participants table and empty fMRIPrep derivative files for ``n_subjects`` subjects.

    ``layout`` "single": one run per subject, ``res-2`` (the names before issue 17); "sessions": as a
    longitudinal fMRIPrep 24/25 run writes them, two sessions of two runs each, no ``res-``.
    """
    labels = [f"{k:05d}" for k in range(1, n_subjects + 1)]
    pd.DataFrame({
        "participant_id": [f"sub-{label}" for label in labels],
        "age": [8 + (k * 7919) % 70 for k in range(n_subjects)],
        "sex": ["F" if k % 2 else "M" for k in range(n_subjects)],
        "site": [f"site{k % 4}" for k in range(n_subjects)],
    }).to_csv(root / "participants.tsv", sep="\t", index=False)
    for label in labels:
        if layout == "single":
            func = root / "derivatives" / f"sub-{label}" / "func"
            func.mkdir(parents=True)
            for suffix in SUFFIXES:
                (func / f"sub-{label}_task-{TASK}_{suffix}").touch()
            continue
        for ses in ("1", "2"):
            func = root / "derivatives" / f"sub-{label}" / f"ses-{ses}" / "func"
            func.mkdir(parents=True)
            for run in (1, 2):
                stem = f"sub-{label}_ses-{ses}_task-{TASK}_run-{run}"
                for suffix in SUFFIXES:
                    (func / f"{stem}_{suffix.replace(f'_res-{RES}', '')}").touch()


def create_outputs(workdir: Path) -> None:
    """Create every planned output as an empty file (a folder for directory outputs: atlases, report figures)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--summary", "--cores", "1", "--configfile",
                             "config/test.yaml"], cwd=workdir, capture_output=True, text=True, check=True)
    for line in result.stdout.splitlines()[1:]:
        path = workdir / line.split("\t")[0]
        if not path.suffix:  # directory outputs: an atlas, the report's figures
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def run(workdir: Path, *args: str, expect: str | None = None) -> float:
    """Seconds for one ``snakemake`` call (fails loudly, or when its output lacks ``expect``)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", *args, "--configfile", "config/test.yaml"],
                            cwd=workdir, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    text = result.stdout + result.stderr
    if result.returncode != 0 or (expect is not None and expect not in text):
        raise SystemExit(f"snakemake {' '.join(args)} failed or did not say {expect!r}:\n{text[-3000:]}")
    return elapsed


def bench(n_subjects: int, work: Path, repeats: int, layout: str = "single") -> dict:
    """Fresh and finished dry-run times for one cohort size."""
    workdir = work / f"n{n_subjects}"
    shutil.rmtree(workdir, ignore_errors=True)
    data = workdir / "data"
    data.mkdir(parents=True)
    write_derivatives(data, n_subjects, layout)
    inputs = {"source": "fmriprep", "derivatives": str(data / "derivatives"),
              "participants": str(data / "participants.tsv"), "dataset": "bench"}
    make_workdir(workdir, {"inputs": inputs | ({"res": RES} if layout == "single" else {"runs": "all"})})
    fresh = [run(workdir, "-n", "--cores", "2", expect=f"extract_subject{' ' * 8}") for _ in range(repeats)]
    create_outputs(workdir)
    touch = run(workdir, "--touch", "--cores", "2")
    finished = [run(workdir, "-n", "--cores", "2", expect="Nothing to be done") for _ in range(repeats)]
    return {"subjects": n_subjects, "fresh": min(fresh), "fresh_all": fresh, "touch": touch,
            "finished": min(finished), "finished_all": finished}


def table(rows: list[dict]) -> str:
    lines = ["| subjects | fresh DAG, `-n` (s) | finished, `-n` (s) | `--touch` (s) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['subjects']} | {r['fresh']:.1f} ({', '.join(f'{t:.1f}' for t in r['fresh_all'])}) | "
                     f"{r['finished']:.1f} ({', '.join(f'{t:.1f}' for t in r['finished_all'])}) | {r['touch']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--layout", choices=["single", "sessions"], default="single",
                        help="single: one res-2 run per subject; sessions: 2 sessions x 2 runs, no res-, runs: all")
    parser.add_argument("--record", action="store_true", help="append the entry to bench/results.md")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="brainage-dag-"))
    rows = [bench(n, work, args.repeats, args.layout) for n in args.subjects]
    entry = (f"\n## DAG scale (bench/dag.py), {datetime.date.today().isoformat()}\n\nMachine: {machine()}. "
             f"Snakemake {_version('snakemake')}; `inputs.source: fmriprep` with empty derivative files (layout "
             f"{args.layout}); default "
             f"models and folds. Each figure is a fresh `python -m snakemake` process, best of {args.repeats} "
             "(all runs in brackets).\n\n" + table(rows) + "\n")
    print(entry)
    if args.record:
        with (REPO / "bench" / "results.md").open("a") as out:
            out.write(entry)


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


if __name__ == "__main__":
    main()
