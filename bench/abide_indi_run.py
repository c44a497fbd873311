"""The ABIDE PCP cc200 config on all 831 real subjects, served by a local S3-protocol server.

Usage: python bench/abide_indi_run.py [--cores 2] [--work DIR]  (inside the installed environment)

1. lays the real ABIDE data out as the INDI bucket (../shared/tools/make_indi_mirror.py) and
   serves it from moto on 127.0.0.1;
2. `snakemake indi_download` with config/abide_pcp_cc200.yaml (endpoint_url pointed at the server):
   the download time;
3. `snakemake` (5-fold age-stratified CV): time and metrics;
4. the same with config/abide_pcp_cc200_site_cv.yaml (leave-one-site-out; download and conversion
   are reused; --site-cv-only runs just this step in an existing --work folder).
Appends a dated entry with the machine description to bench/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "bench")]

from demo_run import machine  # noqa: E402
from s3_testing import moto_server, upload_tree  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "abide1_pcp_cpac_filtglobal_cc200"
COLUMNS = ["model", "set", "n", "mae", "r", "r2", "mae_over_sd", "mae_corrected"]


def _snakemake(work: Path, *args: str, overlays: tuple[str, ...] = ()) -> float:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    configs = ["config/abide_pcp_cc200.yaml", *overlays, "config/bench.yaml"]
    cmd = [sys.executable, "-m", "snakemake", *args, "--configfile", *configs]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return time.perf_counter() - start


def _metrics(work: Path) -> str:
    metrics = pd.read_csv(work / "results/evaluate/metrics.tsv", sep="\t")
    return metrics[[c for c in COLUMNS if c in metrics]].round(3).to_string(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/brainage-abide-bench"))
    parser.add_argument("--site-cv-only", action="store_true", help="only step 4, in an existing --work")
    args = parser.parse_args()
    work, mirror = args.work / "run", args.work / "bucket"
    if args.site_cv_only:
        _record(_site_cv(work, args.cores))
        return
    shutil.rmtree(args.work, ignore_errors=True)
    subprocess.run([sys.executable, REPO.parent / "shared/tools/make_indi_mirror.py", DATA, mirror], check=True)
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".git", ".venv", "results", "resources", "logs", ".snakemake", "__pycache__"))
    with moto_server() as endpoint:
        start = time.perf_counter()
        n_objects = upload_tree(endpoint, mirror)
        upload = time.perf_counter() - start
        (work / "config/bench.yaml").write_text(json.dumps({"indi": {"endpoint_url": endpoint}}))
        download = _snakemake(work, "--cores", str(args.cores), "indi_download")
        files = pd.read_csv(work / "resources/indi/abide_pcp/files.tsv", sep="\t")
        size_mb = files["size"].sum() / 1e6
        full = _snakemake(work, "--cores", str(args.cores))
        kfold = _metrics(work)
        n_cohort = len(pd.read_parquet(work / "results/dataset/cohort.parquet"))
    lines = [
        f"\n## ABIDE PCP cc200, all subjects from a local INDI mirror, {datetime.date.today().isoformat()}\n",
        f"Machine: {machine()}. moto server on 127.0.0.1 holding {n_objects} objects (upload {upload:.0f} s).",
        f"`snakemake --cores {args.cores} indi_download --configfile config/abide_pcp_cc200.yaml` "
        f"(+ endpoint_url): **{download:.0f} s** for {len(files)} files ({size_mb:.0f} MB).",
        f"Then `snakemake --cores {args.cores}` (conversion, {n_cohort} subjects in the cohort, "
        f"5-fold age-stratified CV): **{full / 60:.1f} min**.\n",
        f"```\n{kfold}\n```\n",
    ]
    _record("\n".join(lines) + _site_cv(work, args.cores))


def _site_cv(work: Path, cores: int) -> str:
    """Leave-one-site-out on the downloaded data (the bucket is not contacted again)."""
    shutil.copy(REPO / "config/abide_pcp_cc200_site_cv.yaml", work / "config")
    seconds = _snakemake(work, "--cores", str(cores), overlays=("config/abide_pcp_cc200_site_cv.yaml",))
    return (
        f"\nLeave-one-site-out, {datetime.date.today().isoformat()} ({machine()}): `--configfile "
        f"config/abide_pcp_cc200.yaml config/abide_pcp_cc200_site_cv.yaml`, 15 site-grouped folds, download "
        f"and conversion reused: **{seconds / 60:.1f} min**.\n\n```\n{_metrics(work)}\n```\n"
    )


def _record(text: str) -> None:
    print(text)
    with open(REPO / "bench" / "results.md", "a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
