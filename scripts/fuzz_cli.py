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
    start = time.perf_counter()
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
            print(f"{n + 1} invocations, {len(failures)} broken, {rate:.1f}/s", file=sys.stderr, flush=True)

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
