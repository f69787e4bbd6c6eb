"""How fast the command line answers: ``medattn --help``, every command's ``--help`` and a completion.

Each case runs ``--repeat`` times (default 5) in a fresh interpreter, the cases taking turns (round
1 runs every case once, then round 2, ...) so that a machine whose load drifts during the run
slows every case alike. The report gives each case's median wall time and its ratio to
``python -c pass`` measured the same way, so that a slow or busy machine shows in the baseline
rather than in the ratio. Targets: 0.5 s for ``medattn --help``; 2.5 s for a command's ``--help``
and for a completion (shell completion runs the program on every TAB; torch may load for the
model registry, nothing heavier).

The program is started as ``python -c "from medattn.cli import app; app(prog_name='medattn')" ARGS``,
which is what the ``medattn`` script does, with the medattn this interpreter imports (run it from
the repository root, or set ``PYTHONPATH``, to time a working tree).

Usage::

    python benchmarks/cli_startup.py                 # every case, 5 runs each
    python benchmarks/cli_startup.py --repeat 9
    python benchmarks/cli_startup.py --only train    # the cases whose name contains "train"
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from medattn.cli import COMMANDS

PROGRAM = [sys.executable, "-c", "from medattn.cli import app; app(prog_name='medattn')"]
BASELINE = "python -c pass"
#: The ``data`` command's subcommands (each has its own ``--help``).
DATA_SUBCOMMANDS = ("synth", "prepare", "check")
#: Completing a ``--model`` value needs the model registry: the slowest kind of completion.
COMPLETION_WORDS = "medattn train --model deit"
ROOT_TARGET_S = 0.5
COMMAND_TARGET_S = 2.5


def cases() -> dict[str, tuple[list[str], dict[str, str], float | None]]:
    """Case name -> (command, extra environment, target seconds or ``None``)."""
    out: dict[str, tuple[list[str], dict[str, str], float | None]] = {
        BASELINE: ([sys.executable, "-c", "pass"], {}, None),
        "import medattn.cli": ([sys.executable, "-c", "import medattn.cli"], {}, None),
        "medattn --help": ([*PROGRAM, "--help"], {}, ROOT_TARGET_S),
    }
    for name in COMMANDS:
        out[f"medattn {name} --help"] = ([*PROGRAM, name, "--help"], {}, COMMAND_TARGET_S)
    for sub in DATA_SUBCOMMANDS:
        out[f"medattn data {sub} --help"] = ([*PROGRAM, "data", sub, "--help"], {}, COMMAND_TARGET_S)
    completion = {
        "_MEDATTN_COMPLETE": "complete_bash",
        "COMP_WORDS": COMPLETION_WORDS,
        "COMP_CWORD": str(len(COMPLETION_WORDS.split()) - 1),
    }
    out[f"complete '{COMPLETION_WORDS}<TAB>'"] = (PROGRAM, completion, COMMAND_TARGET_S)
    return out


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    """Wall time of one run of ``cmd`` (output discarded; a failing run is an error)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    return time.perf_counter() - start


def main() -> None:
    """Measure the cases in turns and print one line each: median, ratio to ``python -c pass``, target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (the median is reported)")
    parser.add_argument("--only", default="", help="only the cases whose name contains this text")
    args = parser.parse_args()
    chosen = {name: case for name, case in cases().items() if name == BASELINE or args.only in name}
    times: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.repeat):
        for name, (cmd, env, _target) in chosen.items():
            times[name].append(seconds(cmd, env))
    base = statistics.median(times[BASELINE])
    width = max(len(name) for name in chosen) + 2
    print(f"{'case':<{width}} {'median s':>9} {'x python':>9} {'target s':>9}  (median of {args.repeat} runs)")
    missed = 0
    for name, (_cmd, _env, target) in chosen.items():
        t = statistics.median(times[name])
        verdict = "" if target is None else ("  ok" if t <= target else "  OVER")
        missed += target is not None and t > target
        shown = f"{target:9.1f}" if target is not None else " " * 9
        print(f"{name:<{width}} {t:9.3f} {t / base:9.1f} {shown}{verdict}")
    print(f"{missed} case(s) over target" if missed else "every case within its target")


if __name__ == "__main__":
    main()
