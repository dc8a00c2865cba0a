"""Start-up time of the CLI against a bare interpreter (issue 15: `capsim --help` and `capsim predict` < 0.5 s).

Runs each command N times in a fresh process -- the installed ``capsim`` console script (next to this Python,
importing this checkout's code) -- and reports the minimum and the median wall time and CPU time (user + sys
of the child), and the minima minus those of `python -c pass`, i.e. what capsim itself adds. On a shared,
loaded machine the minimum is the run least disturbed by the neighbours; wall time there also measures them,
CPU time does not. Also lists which heavy libraries each command imported.

    python benchmarks/startup.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("sympy", "scipy", "matplotlib", "torch", "dask", "networkx", "pydantic", "numpy", "pyarrow")
_SCRIPT = Path(sys.executable).with_name("capsim")
"""The console script pip installed (not a shell shim in front of it, e.g. pyenv's, which adds its own time)."""
_CAPSIM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "capsim"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "capsim --help": [*_CAPSIM, "--help"],
    "capsim --version": [*_CAPSIM, "--version"],
    "capsim predict": [*_CAPSIM, "predict"],
}
_PROBE = (
    "import sys, runpy; sys.argv = ['capsim'] + sys.argv[1:]\n"
    "try:\n    runpy.run_module('capsim', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    "print('\\nHEAVY', ' '.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
)


def _once(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _imported(argv: list[str]) -> list[str]:
    if argv[: len(_CAPSIM)] != _CAPSIM:
        return []
    code = _PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code, *argv[len(_CAPSIM) :]],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("HEAVY")]
    return line[-1].split()[1:] if line else ["?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for name, argv in COMMANDS.items():
        _once(argv)  # warm the file cache and .pyc files
        runs = [_once(argv) for _ in range(args.runs)]
        results[name] = {
            "argv": argv,
            "wall_min_s": min(w for w, _ in runs),
            "wall_median_s": statistics.median(w for w, _ in runs),
            "cpu_min_s": min(c for _, c in runs),
            "cpu_median_s": statistics.median(c for _, c in runs),
            "imports": _imported(argv),
        }
    base = results["python -c pass"]
    for r in results.values():
        r["wall_over_python_s"] = r["wall_min_s"] - base["wall_min_s"]
        r["cpu_over_python_s"] = r["cpu_min_s"] - base["cpu_min_s"]
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"runs": args.runs, "load_average": load, "results": results}, indent=1))
        return
    print(
        f"{args.runs} runs each; load average {load[0]:.1f} on {os.cpu_count()} CPUs; capsim = {' '.join(_CAPSIM)}"
    )
    print(
        f"{'command':<18} {'wall min':>8} {'median':>7} {'cpu min':>8} {'median':>7} "
        f"{'wall-py':>8} {'cpu-py':>7}  heavy imports"
    )
    for name, r in results.items():
        print(
            f"{name:<18} {r['wall_min_s']:8.3f} {r['wall_median_s']:7.3f} {r['cpu_min_s']:8.3f} "
            f"{r['cpu_median_s']:7.3f} {r['wall_over_python_s']:8.3f} {r['cpu_over_python_s']:7.3f}  "
            f"{' '.join(r['imports']) or '-'}"
        )


if __name__ == "__main__":
    main()
