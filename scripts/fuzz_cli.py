"""The long CLI fuzz run (issue 15): >= 10,000 in-process invocations of random argument vectors for every
capsim command, each checked against the contract in tests/cli_fuzz.py. Results go to docs/robustness.md.

    nice -n 19 python scripts/fuzz_cli.py --invocations 10000 --report fuzz-report.json

Every invocation runs in a fresh sandbox folder with pre-existing valid and corrupt files, under a 120 s
alarm (a hang is reported, not waited for). A broken contract is recorded with its argument vector and the
run goes on; the exit status is 1 when any was found.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from cli_fuzz import any_argv, check, populate
from hypothesis import HealthCheck, Phase, given, seed, settings


class _Hang(Exception):
    pass


def _rss_mb() -> float:
    """This process's resident memory now (MB), from /proc (0 where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


GROWTH_MB = 200.0
"""An invocation after which the process holds this much more memory is recorded with its argument vector
(a run killed for memory, rc 137, is otherwise silent about the input that did it)."""


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise _Hang("invocation ran past 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--report", type=Path, default=None, help="write the summary as JSON here")
    args = parser.parse_args()

    counts: collections.Counter[str] = collections.Counter()
    by_command: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, object]] = []
    growth: list[dict[str, object]] = []
    start = time.perf_counter()
    rss_start = _rss_mb()
    signal.signal(signal.SIGALRM, _alarm)

    @seed(args.seed)
    @settings(
        max_examples=args.invocations,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(argv=any_argv())
    def one(argv: list[str]) -> None:
        n = sum(counts.values())
        if n >= args.invocations:
            return
        rss_before = _rss_mb()
        with tempfile.TemporaryDirectory() as tmp:
            sandbox = Path(tmp)
            populate(sandbox)
            signal.alarm(120)
            try:
                outcome = check(argv, sandbox)
            except _Hang as exc:
                failures.append({"argv": argv, "exit": None, "problem": str(exc)})
                counts["hang"] += 1
                return
            finally:
                signal.alarm(0)
        rss_after = _rss_mb()
        if rss_after - rss_before > GROWTH_MB:
            growth.append(
                {"argv": argv, "rss_before_mb": round(rss_before), "rss_after_mb": round(rss_after)}
            )
            print(
                f"MEMORY: capsim {' '.join(argv)!r}: {rss_before:.0f} -> {rss_after:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
        counts[f"exit {outcome.exit_code}"] += 1
        by_command[" ".join(w for w in argv[:2] if not w.startswith("-"))] += 1
        if outcome.problem is not None:
            failures.append({"argv": argv, "exit": outcome.exit_code, "problem": outcome.problem})
            print(
                f"CONTRACT BROKEN: capsim {' '.join(argv)!r}: {outcome.problem[:500]}",
                file=sys.stderr,
                flush=True,
            )
        if (n + 1) % 250 == 0:
            rate = (n + 1) / (time.perf_counter() - start)
            print(
                f"{n + 1} invocations, {len(failures)} broken, {rate:.1f}/s, {_rss_mb():.0f} MB resident",
                file=sys.stderr,
                flush=True,
            )

    while sum(counts.values()) < args.invocations:  # hypothesis may stop early on a small space
        one()
    summary = {
        "invocations": sum(counts.values()),
        "exit_codes": dict(counts),
        "by_command": dict(sorted(by_command.items())),
        "contract_broken": len(failures),
        "tracebacks": sum(
            1 for f in failures if "uncaught" in str(f["problem"]) or "traceback" in str(f["problem"])
        ),
        "seconds": round(time.perf_counter() - start, 1),
        "resident_mb": {"start": round(rss_start), "end": round(_rss_mb())},
        "memory_growth": growth[:200],
        "seed": args.seed,
        "failures": failures[:200],
    }
    text = json.dumps(summary, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
