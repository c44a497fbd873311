"""Time the default workflow on the embedded demo from scratch and record the metrics table.

Usage: python bench/demo_run.py [--cores 2]  (run inside the installed environment)
Appends a dated entry with the machine description to bench/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(REPO / "Snakefile", work)
        for folder in ("rules", "config", "profiles", "envs", "workflow"):
            shutil.copytree(REPO / folder, work / folder)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores)], cwd=work, env=env,
                       check=True, capture_output=True)
        seconds = time.perf_counter() - start
        metrics = pd.read_csv(work / "results/evaluate/metrics.tsv", sep="\t")
    cols = ["model", "n", "mae", "rmse", "r", "r2", "mae_over_sd", "mae_corrected"]
    table = metrics[cols].round(3).to_markdown(index=False) if _has_tabulate() else metrics[cols].round(3).to_string(index=False)
    entry = (
        f"\n## Demo run, {datetime.date.today().isoformat()}\n\n"
        f"Machine: {machine()}. `snakemake --cores {args.cores}` from scratch (default config): "
        f"**{seconds / 60:.1f} min** wall.\n\n```\n{table}\n```\n"
    )
    with open(REPO / "bench" / "results.md", "a") as out:
        out.write(entry)
    print(entry)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
