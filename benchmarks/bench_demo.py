"""The demo's time budget: ``pclesr demo --quick`` must finish in 60 s (issue 11), and the full
demo should stay a coffee break.

Runs ``pclesr demo --quick`` (and, with ``--full``, ``pclesr demo``) in a fresh process, as a
user or CI would, into a temporary folder, and prints each stage's wall time beside the target.
The stages are read from the demo's own numbered lines, timed as they appear.

Run ``python benchmarks/bench_demo.py [--full] [--device cpu]``. Figures taken while other jobs
share the CPU are pessimistic; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table

TARGETS_S = {"--quick": 60.0, "full": 600.0}


def timed_demo(extra: list[str], device: str) -> list[tuple[str, float]]:
    """Wall time at which each numbered stage line appears, and the total."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "napari_pclesr.cli", "demo", "--out", folder]
        command += ["--device", device, *extra]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        marks = []
        for line in process.stdout:
            if line.startswith("[") and "/5]" in line[:6]:
                marks.append((line[:5], time.perf_counter() - start))
        if process.wait() != 0:
            raise SystemExit(f"pclesr demo {' '.join(extra)} failed (status {process.returncode})")
        marks.append(("total", time.perf_counter() - start))
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also time the full demo")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    runs = [("--quick", ["--quick"])] + ([("full", [])] if args.full else [])
    load = os.getloadavg()[0]
    for name, extra in runs:
        marks = timed_demo(extra, args.device)
        rows = [(stage, f"{seconds:.1f}") for stage, seconds in marks]
        total = marks[-1][1]
        target = TARGETS_S[name]
        rows.append(("target", f"{target:.0f}"))
        rows.append(("verdict", "met" if total <= target else f"MISSED by {total - target:.0f} s"))
        print_table(
            f"pclesr demo {name} (device {args.device}, load average {load:.1f})",
            ("stage ends", "seconds"),
            rows,
        )


if __name__ == "__main__":
    main()
