"""How fast the command line answers: ``medattn --help`` and ``medattn train --help``.

Each command runs ``--repeat`` times (default 5) in a fresh interpreter; the report gives the median
wall time and its ratio to ``python -c pass`` measured the same way, so that a slow or busy machine
shows in the baseline rather than in the ratio. The targets are 0.5 s for ``medattn --help`` (shell
completion runs the program on every TAB) and 2.5 s for a command's ``--help`` (torch may load for
the registries, nothing heavier).

Usage::

    python benchmarks/cli_startup.py            # the medattn found on this interpreter's path
    python benchmarks/cli_startup.py --repeat 9
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "medattn --help": [sys.executable, "-m", "medattn", "--help"],
    "medattn train --help": [sys.executable, "-m", "medattn", "train", "--help"],
    "import medattn.cli": [sys.executable, "-c", "import medattn.cli"],
}
TARGETS_S = {"medattn --help": 0.5, "medattn train --help": 2.5}


def median_seconds(cmd: list[str], repeat: int) -> float:
    """Median wall time of ``cmd`` over ``repeat`` runs (output discarded; a failing run is an error)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Measure every case and print one line each: median seconds, ratio to ``python -c pass``, target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (the median is reported)")
    args = parser.parse_args()
    base = median_seconds(CASES["python -c pass"], args.repeat)
    print(f"{'command':<24} {'median s':>9} {'x python':>9} {'target s':>9}")
    for name, cmd in CASES.items():
        t = base if name == "python -c pass" else median_seconds(cmd, args.repeat)
        target = TARGETS_S.get(name)
        print(f"{name:<24} {t:9.3f} {t / base:9.1f} {target if target is not None else '':>9}")


if __name__ == "__main__":
    main()
