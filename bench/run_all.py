"""Run every benchmark in quick mode (``make bench``); ``--full`` runs the full sizes (several GB, an hour).

Each benchmark prints its own side-by-side table and ratio and exits non-zero if its target is missed;
this script runs them one after another and summarises pass/fail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

BENCHES = ["bench_cli.py", "bench_label.py", "bench_render.py", "bench_dataset.py", "bench_step.py"]


def main() -> int:
    """Run the benchmarks and return the number that missed their target."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    for name in BENCHES:
        cmd = [sys.executable, os.path.join(here, name)] + ([] if args.full else ["--quick"])
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        results[name] = subprocess.call(cmd)
    print("\n=== summary")
    for name, rc in results.items():
        print(f"{name:<20} {'target met' if rc == 0 else f'TARGET MISSED (exit {rc})'}")
    return sum(rc != 0 for rc in results.values())


if __name__ == "__main__":
    sys.exit(main())
