"""CLI fuzzing: argument vectors for every ``capsim`` command, and the contract each invocation must keep.

Used by ``tests/test_cli_fuzz.py`` (a short run inside the normal pytest run) and ``scripts/fuzz_cli.py`` (the
long QA run, >= 10,000 in-process invocations, recorded in docs/robustness.md).

The contract (issue 15), checked by :func:`invoke_and_check` for every argument vector:

1. no traceback: the only exception leaving a command is ``SystemExit`` (typer's runner reports anything
   else as ``result.exception``), and nothing on stdout/stderr contains ``Traceback``;
2. exit status 0 (done), 1 (a capsim error, or no option/mode runs: one ``error:`` line on stderr) or 2 (a
   usage error: unknown option or command, a value of the wrong type: one ``error:`` line);
3. a failed invocation (exit 1 or 2) leaves the sandbox exactly as it found it: no partial or stray files
   (temporaries, ``.parts`` folders, half-written outputs);
4. nothing previously written is damaged: the sandbox's pre-existing files keep their bytes unless the
   invocation succeeded and named that file as an output;
5. a successful invocation leaves no temporary files (``*.tmp``, dot-files) and no ``.parts`` folders.

Argument vectors mix valid values (ids from the databases), boundary values (0, 1, -1, huge integers,
nan, inf, empty strings), hostile strings (rich markup, path traversal, control characters, very long
text), bad paths (unwritable ``/proc/...``, a file used as a folder, a folder used as a file, missing
files) and corrupt files (garbage TOML, a truncated ``.npz``, an empty config.json), placed into a
sandbox folder that the invocation runs in.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st
from typer.testing import CliRunner

from capsim.cli import app

runner = CliRunner()


def _cached_command() -> object:
    """typer rebuilds the click command tree on every CliRunner.invoke (~0.4 s); the fuzz builds it once."""
    import typer.main
    import typer.testing

    command = typer.main.get_command(app)
    typer.testing._get_command = lambda _app: command  # type: ignore[attr-defined]
    return command


_COMMAND = _cached_command()

MODELS = ["mixtral-8x7b", "qwen3-30b-a3b", "olmoe-1b-7b", "deepseek-v2-lite", "gpt-oss-20b", "deepseek-v3"]
HARDWARE = ["h100-sxm", "a100-sxm-80gb", "mi300x", "rtx-4090", "l4", "dgx-h100", "epyc-9654-2s", "h200-sxm"]
DTYPES = ["bf16", "fp8", "int4", "mxfp4", "fp16", "int8", "native"]

# ---- the sandbox ---------------------------------------------------------------------------------------
PRE_EXISTING: dict[str, bytes] = {
    "existing.csv": b"model,batch\nmixtral-8x7b,1\n",
    "existing.json": b'{"kept": true}\n',
    "corrupt.toml": b"\x00\xff[[[ not toml = = \n",
    "corrupt.npz": b"PK\x03\x04 truncated zip",
    "empty.json": b"",
    "config.json": b'{"model_type": "mixtral", "hidden_size": "wide"}',
    "grid.toml": b'models = ["mixtral-8x7b"]\nhardware = ["h100-sxm"]\nbatch = "1:4:x2"\n',
    "badgrid.toml": b'models = ["mixtral-8x7b"]\nhardware = ["h100-sxm"]\nbatch = ["a", 1.5]\n',
    "prices.toml": b"this is = not [valid\n",
    "adir/keep.txt": b"keep\n",
}


def populate(sandbox: Path) -> None:
    for rel, data in PRE_EXISTING.items():
        path = sandbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content hash (folders as 'dir'), for everything under ``root``."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            found[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            try:
                found[os.path.relpath(p, root)] = hashlib.sha1(Path(p).read_bytes()).hexdigest()
            except OSError:
                found[os.path.relpath(p, root)] = "unreadable"
    return found


@contextmanager
def in_folder(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ---- value strategies ----------------------------------------------------------------------------------
BOUNDARY_INTS = [
    "0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "8",
    "16",
    "4096",
    "32768",
    "100000",
    "2147483648",
    "99999999999999999999999",
    "-99999999999999999999999",
]
HOSTILE = [
    "",
    " ",
    "[red]x[/red]",
    "../../etc/passwd",
    "a\x00b",
    "é€😀",
    "x" * 300,
    "nan",
    "inf",
    "-inf",
    "1e309",
    "0x10",
    "1,2,,3",
    ":",
    "1:2:3:4",
    "--help",
    "-",
    "None",
    "true",
    "$(rm -rf /)",
    "\n",
    "%s%n",
]
BAD_PATHS = [
    "/proc/capsim/out.csv",
    "existing.csv/inner.csv",
    "adir",
    "missing/deeper/x.csv",
    "/dev/null/x",
    "corrupt.toml",
    "corrupt.npz",
    "empty.json",
    "config.json",
    "existing.json",
    "existing.csv",
    "nonexistent.toml",
    "adir/",
    "/",
    "",
]


def mostly(good: st.SearchStrategy[str], *bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``good`` about four times in five: enough valid vectors reach the engine and the writers."""
    return st.one_of(good, good, good, good, st.one_of(*bad)) if bad else good


def ints(valid: list[str]) -> st.SearchStrategy[str]:
    return mostly(st.sampled_from(valid), st.sampled_from(BOUNDARY_INTS), st.integers(-5, 70_000).map(str))


def floats(valid: list[str]) -> st.SearchStrategy[str]:
    return mostly(
        st.sampled_from(valid),
        st.sampled_from(["0", "-1", "nan", "inf", "1e309", "0.5", "1e-9"]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )


def choice(valid: list[str]) -> st.SearchStrategy[str]:
    return mostly(st.sampled_from(valid), st.sampled_from(HOSTILE), st.text(min_size=0, max_size=12))


def id_list(valid: list[str]) -> st.SearchStrategy[str]:
    return mostly(st.lists(st.sampled_from(valid), min_size=1, max_size=3).map(",".join), choice(valid))


def axis(valid: list[str]) -> st.SearchStrategy[str]:
    ranges = [
        "1:8:x2",
        "-1:8:x2",
        "0:8:x2",
        "1:100000000:+1",
        "128:1024:+128",
        "8:1:x2",
        "1:8:x1",
        "1:8:+0",
        "1:64:x1.5",
        "1,2,4",
        "0,4",
        "2,16",
        "99999999999999999999999",
    ]
    return mostly(
        st.sampled_from(valid),
        st.sampled_from(ranges),
        st.sampled_from(BOUNDARY_INTS),
        st.sampled_from(HOSTILE),
    )


def durations() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "50ms",
                "0.2s",
                "1s",
                "200us",
                "2min",
                "50",
                "0",
                "-5ms",
                "fast",
                "1h",
                "nanms",
                "infs",
                "1e309ms",
                "",
            ]
        ),
        st.floats(0, 1e4).map(lambda x: f"{x}ms"),
    )


def paths(good: list[str]) -> st.SearchStrategy[str]:
    return mostly(st.sampled_from(good), st.sampled_from(BAD_PATHS))


@dataclass
class Command:
    """One command: fixed words, required options and optional ones, each with a value strategy (None = a
    flag). ``outputs`` names the options whose values are files the command may write."""

    words: tuple[str, ...]
    options: dict[str, st.SearchStrategy[str] | None]
    required: tuple[str, ...] = ()
    positional: st.SearchStrategy[str] | None = None
    outputs: tuple[str, ...] = ()
    weight: int = 1
    parse_only: bool = False
    """Commands that measure the machine (minutes): only argument vectors that fail to parse are generated."""
    extra: dict[str, object] = field(default_factory=dict)
    forced: tuple[str, ...] = ()
    """Options always given (keeps a search command to a few hardware ids: the fuzz measures robustness,
    not how long a search over the whole database takes)."""


HW_DB = st.one_of(st.sampled_from(["corrupt.toml", "missing.toml", "adir", "empty.json"]))

COMMANDS: list[Command] = [
    Command(
        ("predict",),
        {
            "--model": choice(MODELS + ["config.json", "missing/config.json"]),
            "--hardware": choice(HARDWARE),
            "--gpus": ints(["1", "2", "4", "8"]),
            "--batch": ints(["1", "8", "64", "600"]),
            "--prompt-len": ints(["512", "4096", "32641"]),
            "--gen-len": ints(["1", "128"]),
            "--weight-dtype": choice(DTYPES),
            "--kv-dtype": choice(["bf16", "fp8", "int2"]),
            "--routing": choice(
                ["uniform", "zipf:1.2", "dirichlet:0.5", "hot:4", "fit:corrupt.npz", "zipf:-1"]
            ),
            "--prefill-chunk": ints(["512", "8192"]),
            "--mode": choice(["gpu", "offload", "cpu-experts", "cpu"]),
            "--placement": choice(
                ["auto", "gpu", "experts:dram", "experts[10:60]:dram", "cold-experts:32:ssd"]
            ),
            "--expert-layers": choice(["0:3", "5:1", "x"]),
            "--host-memory-gb": floats(["64", "1024"]),
            "--ep": ints(["1", "2", "8"]),
            "--tp": ints(["1", "2", "8"]),
            "--pp": ints(["1", "2"]),
            "--dp": ints(["1", "2"]),
            "--nodes": ints(["1", "2"]),
            "--expert-dtype": choice(DTYPES),
            "--json": None,
            "--hardware-db": HW_DB,
        },
        weight=6,
    ),
    Command(
        ("fit",),
        {
            "--model": choice(MODELS),
            "--hardware": choice(HARDWARE),
            "--gpus": ints(["1", "2", "3"]),
            "--batch": ints(["1", "64"]),
            "--prompt-len": ints(["512", "100000"]),
            "--gen-len": ints(["128"]),
            "--weight-dtype": choice(DTYPES),
            "--host-memory-gb": floats(["64"]),
            "--json": None,
        },
        weight=2,
    ),
    Command(
        ("sweep",),
        {
            "--out": paths(["out.csv", "out.jsonl", "sub/out.csv", "existing.csv", "o.parquet"]),
            "--model": id_list(MODELS[:4]),
            "--hardware": id_list(HARDWARE[:5]),
            "--gpus": axis(["1", "2", "0,4"]),
            "--batch": axis(["1", "1:64:x4"]),
            "--prompt-len": axis(["512", "128:1024:x2"]),
            "--gen-len": axis(["128", "1,16"]),
            "--weight-dtype": id_list(DTYPES),
            "--kv-dtype": id_list(["bf16", "fp8"]),
            "--grid": paths(["grid.toml", "badgrid.toml"]),
            "--format": choice(["csv", "jsonl", "parquet", "xlsx"]),
            "--chunk-rows": ints(["1", "3", "50000"]),
            "--feasible-only": None,
            "--slo-tpot": durations(),
            "--slo-ttft": durations(),
            "--pareto": paths(["front.json", "existing.json"]),
            "--backend": choice(["local", "dask"]),
            "--workers": ints(["0", "1"]),
            "--json": None,
        },
        required=("--out",),
        outputs=("--out", "--pareto"),
        weight=5,
        extra={"never_with": {"--backend": "dask"}},
    ),
    Command(
        ("explain",),
        {"--model": choice(MODELS), "--phase": choice(["decode", "prefill"]), "--json": None},
        weight=2,
    ),
    Command(
        ("hardware", "list"),
        {
            "--kind": choice(["accelerator", "cpu", "dram", "ssd", "link", "system"]),
            "--json": None,
            "--hardware-db": HW_DB,
        },
    ),
    Command(("hardware", "show"), {"--json": None}, positional=choice(HARDWARE + ["ib-ndr", "ddr5-4800"])),
    Command(("model", "list"), {"--json": None}),
    Command(("model", "show"), {"--json": None}, positional=choice(MODELS + ["config.json", "empty.json"])),
    Command(("trace", "list"), {"--json": None}),
    Command(
        ("trace", "stats"),
        {
            "--tokens": ints(["1", "8", "32", "192", "100000"]),
            "--no-png": None,
            "--png": paths(["heat.png", "sub/heat.png"]),
            "--json": None,
            "--model": choice(MODELS),
        },
        positional=choice(["deepseek-v3-group", "corrupt.npz", "missing.npz", "adir"]),
        outputs=("--png",),
        weight=2,
    ),
    Command(
        ("trace", "fit"),
        {"--json": None},
        positional=choice(["deepseek-v3-group", "corrupt.npz", "empty.json"]),
    ),
    Command(
        ("trace", "synth"),
        {
            "--model": choice(MODELS[:3]),
            "--router": choice(["zipf:1.2", "uniform", "x:1"]),
            "--tokens": ints(["1", "64", "0"]),
            "--out": paths(["t.npz", "sub/t.npz"]),
            "--seed": ints(["0", "1"]),
        },
        required=("--model", "--router", "--tokens", "--out"),
        outputs=("--out",),
        weight=2,
    ),
    Command(
        ("compare",),
        {
            "--model": choice(MODELS[:3]),
            "--hardware": id_list(HARDWARE[:5]),
            "--gpus": choice(["auto", "1", "2", "0", "x"]),
            "--batch": ints(["1", "64"]),
            "--objective": choice(["cost_per_mtok", "tpot", "throughput", "purchase"]),
            "--basis": choice(["owned", "rented"]),
            "--price": choice(["h100-sxm=30000", "h100-sxm=-1", "x=y"]),
            "--prices": paths(["prices.toml"]),
            "--pue": floats(["1.2"]),
            "--utilization": floats(["0.5"]),
            "--json": None,
            "--csv": paths(["cmp.csv", "existing.csv"]),
        },
        required=("--model",),
        outputs=("--csv",),
        weight=2,
        forced=("--hardware",),
    ),
    Command(
        ("plan",),
        {
            "--model": choice(MODELS[:3]),
            "--slo-tpot": durations(),
            "--slo-ttft": durations(),
            "--hardware": id_list(["h100-sxm", "l4"]),
            "--weight-dtypes": id_list(["native", "fp8", "int3"]),
            "--max-batch": ints(["1", "8"]),
            "--top": ints(["1", "3"]),
            "--budget": floats(["100000"]),
            "--plot": paths(["plan.png", "sub/plan"]),
            "--json": None,
        },
        required=("--model", "--slo-tpot"),
        outputs=("--plot",),
        weight=1,
        forced=("--hardware", "--max-batch"),
    ),
    Command(
        ("radar",),
        {
            "--model": choice(MODELS[:2]),
            "--hardware": id_list(["h100-sxm", "mi300x", "l4"]),
            "--batch": ints(["1", "8"]),
            "--cost-axis": choice(["purchase", "power", "usd_per_mtok"]),
            "--cost-cap": floats(["1e6"]),
            "--out": paths(["radar.png", "sub/r"]),
        },
        required=("--model", "--out"),
        outputs=("--out",),
        weight=1,
        forced=("--hardware",),
    ),
    Command(
        ("serve",),
        {
            "--model": choice(MODELS[:3]),
            "--hardware": choice(["h100-sxm", "mi300x", "l4"]),
            "--gpus": ints(["2", "8"]),
            "--system": choice(["vllm-like", "sglang-like", "trtllm-like", "vllm"]),  # the last: not a preset
            "--engine": choice(["vllm", "transformers", "none", "vlm", "vllm@0.3"]),
            "--max-num-seqs": ints(["8", "256"]),
            "--max-batched-tokens": ints(["512", "8192"]),
            "--chunked-prefill": None,
            "--no-chunked-prefill": None,
            "--block-size": ints(["16", "1"]),
            "--rate": choice(["4", "1:8:x2", "0", "inf", "-1"]),
            "--burstiness": floats(["1", "0.5"]),
            "--concurrency": ints(["4"]),
            "--offline": None,
            "--duration": durations(),
            "--prompt-len": choice(["512", "128:1024", "0"]),
            "--output-len": choice(["64", "1:128"]),
            "--dataset": choice(["sharegpt", "nosuch"]),
            "--requests": paths(["existing.json", "corrupt.toml"]),
            "--replicas": ints(["1", "2"]),
            "--slo": choice(["ttft=200ms,tpot=50ms", "tpot=50", "latency=1s"]),
            "--figure": paths(["timeline.png", "sub/t"]),
            "--json": None,
        },
        required=("--model",),
        outputs=("--figure",),
        weight=2,
        forced=("--num-prompts",),
        extra={"fixed": {"--num-prompts": "16"}},
    ),
    Command(
        ("measure",),
        {
            "--model": choice(MODELS[:3]),
            "--hardware": choice(["h100-sxm", "h200-sxm"]),
            "--gpus": ints(["1", "2"]),
            "--batch": ints(["1", "64"]),
            "--prompt-len": ints(["512"]),
            "--gen-len": ints(["128"]),
            "--tpot": durations(),
            "--throughput": floats(["1000"]),
            "--ttft": durations(),
            "--activated-experts": choice(["2", "6.5", "x", "-1"]),
            "--expert-counts": paths(["corrupt.npz", "existing.json"]),
            "--moecap-records": paths(["existing.json", "empty.json"]),
            "--moecap-compat": None,
            "--engine": choice(["sglang", "vllm", "x"]),
            "--json": None,
        },
        weight=2,
    ),
    Command(("profile",), {}, parse_only=True),
    Command(("validate",), {}, parse_only=True),
    Command(("calibrate",), {}, parse_only=True),
]


@st.composite
def argv_for(draw: st.DrawFn, command: Command) -> list[str]:
    """An argument vector for ``command``: its required options (usually), some optional ones, in any order."""
    if command.parse_only:
        # an unknown option makes the parser stop before the command measures anything
        junk = draw(st.sampled_from(["--no-such-option", "--gpus-typo", "--fast"]))
        return [*command.words, junk, *draw(st.lists(st.sampled_from(HOSTILE + BOUNDARY_INTS), max_size=3))]
    args: list[str] = list(command.words)
    if command.positional is not None and draw(st.integers(0, 9)) > 0:
        args.append(draw(command.positional))
    chosen = set(draw(st.lists(st.sampled_from(sorted(command.options)), max_size=4, unique=True)))
    if draw(st.integers(0, 9)) > 0:
        chosen |= set(command.required)
    chosen |= set(command.forced)
    fixed = command.extra.get("fixed", {})
    never = command.extra.get("never_with", {})
    for name in sorted(chosen, key=lambda n: draw(st.integers(0, 100))):
        if name in fixed:  # type: ignore[operator]
            args += [name, fixed[name]]  # type: ignore[index]
            continue
        strategy = command.options[name]
        if strategy is None:
            args.append(name)
            continue
        value = draw(strategy)
        if never.get(name) == value:  # type: ignore[union-attr]
            continue  # a local Dask cluster takes seconds to start: fuzzed by the dedicated test instead
        args += [name, value]
    if draw(st.integers(0, 19)) == 0:
        args.append(draw(st.sampled_from(["--nope", "extra-arg", "-x"])))
    return args


def any_argv() -> st.SearchStrategy[list[str]]:
    """An argument vector for any command, weighted by how much each command has to get wrong."""
    weighted = [c for c in COMMANDS for _ in range(c.weight)]
    return st.sampled_from(weighted).flatmap(argv_for)


# ---- the contract --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    argv: list[str]
    exit_code: int
    problem: str | None


def _outputs_named(argv: list[str], sandbox: Path) -> set[str]:
    """Sandbox-relative paths an invocation may write: the values of output options (with image suffixes
    for plot stems) and files the commands name by default in the working folder."""
    named: set[str] = set()
    output_flags = {"--out", "--pareto", "--png", "--csv", "--plot", "--figure"}
    for flag, value in itertools.pairwise(argv):
        if flag in output_flags:
            p = Path(value)
            for candidate in (
                p,
                p.with_suffix(".png"),
                p.with_suffix(".svg"),
                Path(str(p) + ".png"),
                Path(str(p) + ".svg"),
            ):
                with suppress(ValueError):
                    named.add(os.path.relpath((sandbox / candidate).resolve(), sandbox.resolve()))
    return named


def _default_outputs(rel: str) -> bool:
    """Files commands write by default into the working folder (trace stats' heatmap, radar's pictures)."""
    name = Path(rel).name
    return name.endswith("-heatmap.png") or name.startswith("capsim-radar-")


def check(argv: list[str], sandbox: Path, invoke: Callable[[list[str]], object] | None = None) -> Outcome:
    """Run ``argv`` in ``sandbox`` (already populated) and return what, if anything, broke the contract."""
    before = snapshot(sandbox)
    with in_folder(sandbox):
        result = runner.invoke(app, argv, catch_exceptions=True)
    code = result.exit_code
    out = result.stdout + result.stderr
    after = snapshot(sandbox)
    problem: str | None = None
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        problem = f"uncaught {type(exc).__name__}: {exc}\n{tb[-3000:]}"
    elif "Traceback (most recent call last)" in out:
        problem = "a traceback was printed"
    elif code not in (0, 1, 2):
        problem = f"exit status {code} (documented: 0, 1, 2)"
    elif code in (1, 2) and not any(line.startswith("error: ") for line in result.stderr.splitlines()):
        problem = f"exit {code} without an 'error: ' line on stderr: {result.stderr[-300:]!r}"
    if problem is None:
        created = {p for p in after if p not in before}
        changed = {p for p in before if p in after and after[p] != before[p]}
        removed = {p for p in before if p not in after}
        if removed:
            problem = f"previously written files removed: {sorted(removed)}"
        elif code != 0 and (created or changed):
            problem = f"exit {code} but files changed: created {sorted(created)}, changed {sorted(changed)}"
        elif code == 0:
            allowed = _outputs_named(argv, sandbox)
            damaged = sorted(p for p in changed if p not in allowed)
            stray = sorted(
                p
                for p in created
                if Path(p).name.startswith(".") or p.endswith((".tmp", ".parts")) or ".parts" in Path(p).parts
            )
            if damaged:
                problem = f"succeeded but changed files it was not asked to write: {damaged}"
            elif stray:
                problem = f"succeeded but left temporary files: {stray}"
            else:
                unexpected = sorted(
                    p for p in created if p not in allowed and not _default_outputs(p) and after[p] != "dir"
                )
                if unexpected:
                    problem = f"succeeded but wrote files nobody named: {unexpected}"
    return Outcome(argv, code, problem)
