"""`kitaru --help` start-up time as a ratio to `python3 -c pass`, both measured here.

Runs the console script installed next to this interpreter (not a pyenv/asdf shim, whose
own start-up would be measured instead) and reports medians over several runs.
Target: ratio <= 3.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
TARGET = 3.0


def median_seconds(argv: list[str]) -> float:
    subprocess.run(argv, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kitaru_script() -> list[str]:
    beside = Path(sys.executable).parent / "kitaru"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("kitaru")
    return [found] if found else [sys.executable, "-m", "kitaru.cli.main"]


def main() -> int:
    baseline = median_seconds([sys.executable, "-c", "pass"])
    kitaru = median_seconds([*kitaru_script(), "--help"])
    ratio = kitaru / baseline
    print(f"python3 -c pass : {baseline * 1000:7.1f} ms (median of {RUNS})")
    print(f"kitaru --help   : {kitaru * 1000:7.1f} ms (median of {RUNS})")
    print(f"ratio           : {ratio:7.2f}x (target <= {TARGET:g}x)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
