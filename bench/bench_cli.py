"""Start-up time of the ``srp`` command: ``srp --help`` must answer in under a second.

Measured side by side in one run, best of N fresh processes each: a bare ``python -c pass``, ``import
srp_megatron``, ``srp --help`` (lists the commands without importing them) and ``srp label --help`` (imports one
command module). Exits 1 when ``srp --help`` takes 1 s or more.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TARGET_S = 1.0


def best_of(cmd: list[str], repeats: int) -> float:
    """The shortest wall time of ``repeats`` runs of ``cmd`` (each a fresh process)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    """Print the table and return 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    py = sys.executable
    srp = os.path.join(os.path.dirname(py), "srp")
    rows = [
        ("python -c pass", [py, "-c", "pass"]),
        ("import srp_megatron", [py, "-c", "import srp_megatron"]),
        ("srp --help", [srp, "--help"]),
        ("srp label --help", [srp, "label", "--help"]),
    ]
    results = {name: best_of(cmd, repeats) for name, cmd in rows}
    print(f"start-up time, best of {repeats} fresh processes")
    print(f"  {'command':<24}{'s':>8}")
    for name, seconds in results.items():
        print(f"  {name:<24}{seconds:>8.3f}")
    help_s = results["srp --help"]
    ok = help_s < TARGET_S
    print(f"srp --help: {help_s:.3f} s, {help_s / results['python -c pass']:.1f}x a bare interpreter; "
          f"target < {TARGET_S:.1f} s {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
