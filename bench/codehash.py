"""CPU time of the code hashes one DAG build computes (every rule's ``code_hash``), in a fresh process.

Usage: python bench/codehash.py [--repeats 5]. Each repeat is a new interpreter (the per-process caches
start empty, as in a real ``snakemake`` run or a cluster job that parses the Snakefile again).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_BUILD = """
import sys, time
sys.path.insert(0, {root!r})
start = time.process_time()
from brainage._codehash import code_hash
for entry in {entries!r}:
    code_hash(entry, root={root!r})
print(1000 * (time.process_time() - start))
"""


def entries() -> list[str]:
    """The entry modules named by ``code=code_hash(...)`` in rules/*.smk, one per rule."""
    found = []
    for rules in sorted((REPO / "rules").glob("*.smk")):
        found += re.findall(r'code=code_hash\("([\w.]+)"\)', rules.read_text())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = entries()
    script = ONE_BUILD.format(root=str(REPO / "workflow"), entries=names)
    times = [float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
             for _ in range(args.repeats)]
    print(f"{len(names)} code hashes: best {min(times):.1f} ms CPU ({', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
