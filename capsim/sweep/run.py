"""Run a sweep in chunks with resumable, exactly-once output.

Rows are cut into chunks of ``chunk_rows`` contiguous row indices, evaluated, filtered, encoded and streamed in
chunk order into the output (:class:`capsim.sweep.writers.StreamedOutput`: one file under ``<out>.parts/``,
committed after every chunk, renamed to ``<out>`` when complete). ``manifest.json`` in the parts folder records
the grid fingerprint, chunk size, format and filters; a restarted sweep with the same grid continues after the
last committed chunk (never losing or duplicating a row), and refuses to resume a different grid.

Dask workers evaluate, encode and write their chunks themselves, each as ``part-<index>.<fmt>`` (atomically,
with its row count and Pareto rows in a sidecar written first); this process appends the parts in order as
their turn comes and deletes them, so only chunks finished ahead of their turn wait on disk.

Memory stays bounded by the chunk: only one chunk's columns are alive at a time per worker.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capsim.errors import DataFileError, ScenarioError
from capsim.hardware.db import HardwareDB
from capsim.sweep.evaluate import COLUMNS, Group, evaluate_segment, resolve_group
from capsim.sweep.fronts import pareto_rows
from capsim.sweep.grid import Grid
from capsim.sweep.guard import has_finished_parts
from capsim.sweep.writers import (
    FORMATS,
    StreamedOutput,
    atomic_write,
    encode_chunk,
    remove_folder,
    require_pyarrow,
)


@dataclass(frozen=True)
class Filters:
    """Row filters applied before writing (deterministic, so resumed runs write the same rows)."""

    feasible_only: bool = False
    slo_tpot_s: float | None = None
    slo_ttft_s: float | None = None

    def mask(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        keep = np.ones(cols["batch"].shape[0], dtype=bool)
        if self.feasible_only or self.slo_tpot_s is not None or self.slo_ttft_s is not None:
            keep &= cols["feasible"]
        with np.errstate(invalid="ignore"):
            if self.slo_tpot_s is not None:
                keep &= cols["tpot_s"] <= self.slo_tpot_s
            if self.slo_ttft_s is not None:
                keep &= cols["ttft_s"] <= self.slo_ttft_s
        return keep


def format_of(path: Path, fmt: str | None) -> str:
    chosen = fmt or {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "")
    if chosen not in FORMATS:
        raise ScenarioError(
            f"cannot tell the output format of {path}; use a .csv, .jsonl or .parquet name or --format"
        )
    if chosen in ("csv", "parquet"):
        require_pyarrow(chosen)
    return chosen


def evaluate_chunk(grid: Grid, groups: list[Group], start: int, stop: int) -> dict[str, np.ndarray]:
    """Columns of rows ``start:stop`` (concatenated over the groups the chunk spans)."""
    parts = [evaluate_segment(grid, groups[g], a, b) for g, a, b in grid.segments(start, stop)]
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}


def filter_and_encode(
    cols: dict[str, np.ndarray], fmt: str, filters: Filters
) -> tuple[bytes, list[dict[str, Any]], int]:
    """(encoded kept rows, their Pareto rows, how many) of one evaluated chunk."""
    keep = filters.mask(cols)
    kept = cols if keep.all() else {k: v[keep] for k, v in cols.items()}
    return encode_chunk(kept, fmt), pareto_rows(kept), int(keep.sum())


@dataclass
class SweepRun:
    """State of one sweep: where the output is built and which chunks are done."""

    grid: Grid
    out: Path
    fmt: str
    chunk_rows: int
    filters: Filters

    def __post_init__(self) -> None:
        self.stream = StreamedOutput(self.parts_dir, self.fmt)

    @property
    def parts_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def part_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:07d}.{self.fmt}"

    def part_info_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:07d}.json"

    @property
    def n_chunks(self) -> int:
        return self.grid.chunks(self.chunk_rows)

    @property
    def committed(self) -> int:
        """Chunks already in the output (0 … committed − 1)."""
        return self.stream.chunks

    def manifest(self) -> dict[str, Any]:
        return {
            "grid": self.grid.fingerprint(),
            "chunk_rows": self.chunk_rows,
            "format": self.fmt,
            "filters": [self.filters.feasible_only, self.filters.slo_tpot_s, self.filters.slo_ttft_s],
            "rows": self.grid.size,
        }

    def prepare(self) -> list[int]:
        """Create or check the parts folder, open the output where it stopped, append any parts waiting for
        their turn; return the chunk indices still to compute."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        manifest_path = self.parts_dir / "manifest.json"
        if self.parts_dir.exists() and manifest_path.exists():
            try:
                found = json.loads(manifest_path.read_text())
            except (ValueError, OSError):
                found = None  # unreadable: treated as a different grid
            if found != self.manifest() and not has_finished_parts(self.parts_dir):
                # nothing to resume: start over (a fresh stream, the new grid's manifest)
                for stale in self.parts_dir.iterdir():
                    if stale.is_file() and stale.name != "lock":
                        stale.unlink()
                atomic_write(manifest_path, json.dumps(self.manifest()).encode())
            elif found != self.manifest():
                raise ScenarioError(
                    f"{self.parts_dir} holds an interrupted sweep of a different grid or settings; "
                    "delete it or rerun with the same arguments to resume"
                )
        else:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(manifest_path, json.dumps(self.manifest()).encode())
        self.stream = StreamedOutput(self.parts_dir, self.fmt)
        self.stream.open()
        self.collect()
        return [i for i in range(self.committed, self.n_chunks) if not self.part_path(i).exists()]

    def rows_of(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_rows
        return start, min(self.grid.size, start + self.chunk_rows)

    def write_part(self, index: int, cols: dict[str, np.ndarray]) -> int:
        """Filter, encode and deliver chunk ``index``; returns the rows kept."""
        payload, front, kept = filter_and_encode(cols, self.fmt, self.filters)
        self.deliver(index, payload, front, kept)
        return kept

    def deliver(self, index: int, payload: bytes, front: list[dict[str, Any]], kept: int) -> None:
        """Append chunk ``index`` if it is next in order (then any waiting parts), else park it as a part."""
        if index == self.committed:
            self.stream.append(payload, front, kept)
            self.collect()
        else:
            write_part_file(self, index, payload, front, kept)

    def collect(self) -> None:
        """Append, in order, the parts whose turn has come, deleting each once it is committed."""
        while self.committed < self.n_chunks and self.part_path(self.committed).exists():
            index = self.committed
            info = json.loads(self.part_info_path(index).read_text())
            self.stream.append(self.part_path(index).read_bytes(), info["front"], info["rows"])
            self.part_path(index).unlink()
            self.part_info_path(index).unlink()

    def pareto_front(self) -> list[dict[str, Any]]:
        """Pareto front (lowest TPOT, highest decode tokens/s) over every written chunk."""
        return self.stream.front

    def finish(self) -> Path:
        """Complete the output file, move it to ``out`` and remove the parts folder."""
        if self.committed < self.n_chunks:
            raise DataFileError(
                str(self.parts_dir), f"part {self.committed} is missing; rerun the sweep to resume"
            )
        self.stream.finish(self.out)
        remove_folder(self.parts_dir)
        return self.out


def write_part_file(
    run: SweepRun, index: int, payload: bytes, front: list[dict[str, Any]], kept: int
) -> None:
    """Park chunk ``index`` as a part file: its sidecar (rows, Pareto rows) first, the part last, each atomic,
    so a part that exists is whole and has its sidecar."""
    atomic_write(run.part_info_path(index), json.dumps({"rows": kept, "front": front}).encode())
    atomic_write(run.part_path(index), payload)


def resolve_groups(grid: Grid, db: HardwareDB) -> list[Group]:
    """Resolve every group up front, so unknown ids fail before any work is done."""
    return [resolve_group(grid, key, db) for key in grid.group_keys]


@contextmanager
def long_lived_heap() -> Iterator[None]:
    """Exempt the objects that exist now (databases, resolved groups, compiled formulas) from Python's cyclic
    garbage collector while a sweep evaluates: a full collection walks all of them (~47,000, most of them
    sympy's) and took 14-16 ms, a sixth of the first pass over benchmarks/suite.py's mixed grid. The sweep's
    own objects are still collected; on exit the exempted ones are collected again as before, so a long-lived
    process that calls the library does not keep its earlier garbage."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_local(
    run: SweepRun, db: HardwareDB, todo: Iterable[int], on_chunk: Callable[[int, int], None] | None = None
) -> int:
    """Evaluate and write the chunks in ``todo`` in this process; returns rows written."""
    groups = resolve_groups(run.grid, db)
    written = 0
    with long_lived_heap():
        for index in todo:
            start, stop = run.rows_of(index)
            written += run.write_part(index, evaluate_chunk(run.grid, groups, start, stop))
            if on_chunk:
                on_chunk(index, stop - start)
    return written


_WORKER_GROUPS: dict[tuple[str, tuple[str, ...], bool], list[Group]] = {}
"""Resolved groups per (grid fingerprint, extra databases), kept by each worker process across its chunks."""


def _worker_groups(grid: Grid, extra_db: tuple[str, ...], override: bool) -> list[Group]:
    """The grid's resolved groups in this process, resolved on first use (and the formulas compiled by
    evaluating a few rows): a worker does it once, or inherits them from the client it was forked from."""
    key = (grid.fingerprint(), extra_db, override)
    if key not in _WORKER_GROUPS:
        from capsim.hardware.db import load_hardware_db

        db = load_hardware_db(
            tuple(Path(p) for p in extra_db), on_redefinition="replace" if override else "raise"
        )
        _WORKER_GROUPS.clear()
        _WORKER_GROUPS[key] = resolve_groups(grid, db)
        evaluate_chunk(grid, _WORKER_GROUPS[key], 0, min(grid.size, 10))
    return _WORKER_GROUPS[key]


def _dask_chunk(
    run: SweepRun, index: int, extra_db: tuple[str, ...], override: bool
) -> tuple[int, int, list[dict[str, Any]]]:
    """On a Dask worker: evaluate chunk ``index`` (resolving the grid's groups once per worker), filter and
    encode it, and write it as a part file. Returns (index, rows kept, its Pareto rows)."""
    grid = run.grid
    groups = _worker_groups(grid, extra_db, override)
    start, stop = run.rows_of(index)
    with long_lived_heap():
        cols = evaluate_chunk(grid, groups, start, stop)
        payload, front, kept = filter_and_encode(cols, run.fmt, run.filters)
    write_part_file(run, index, payload, front, kept)
    return index, kept, front


def run_dask(
    run: SweepRun,
    todo: list[int],
    scheduler: str | None,
    extra_db: tuple[str, ...],
    on_chunk: Callable[[int, int], None] | None = None,
    workers: int = 2,
    override: bool = False,
) -> int:
    """Evaluate chunks on a Dask cluster (``scheduler`` address, or a local cluster of ``workers`` processes).

    Workers write their chunks as part files in the parts folder and return only their row counts and Pareto
    rows; this process appends the parts to the output in order as their turn comes. So the parts folder must
    be on a filesystem the workers share (any local cluster does), and workers load the hardware database
    themselves: ``extra_db`` files must be readable at the same paths. Output and resume guarantees are the
    local ones."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ScenarioError("the dask backend needs dask[distributed]: pip install 'capsim[dask]'") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ScenarioError(
                f"cannot reach the Dask scheduler {scheduler!r} ({type(exc).__name__}); check the address "
                "(tcp://HOST:8786) or omit --scheduler for a local cluster"
            ) from None
    else:
        import multiprocessing
        import warnings

        import dask

        # Local workers are forked from this process after it has resolved the grid and compiled the formulas,
        # so each starts with them instead of importing capsim and resolving again (on a 2-core machine that
        # start-up cost 2-3 s of CPU per worker); spawn where the platform cannot fork. The workers' sampling
        # profiler (every 10 ms) is off: it serves the dashboard, which nobody opens. The scheduler's HTTP
        # server takes any free port (":0"), never 8787, which another cluster on the machine may hold.
        fork = "fork" in multiprocessing.get_all_start_methods()
        if fork:
            _worker_groups(run.grid, extra_db, override)
        settings: dict[str, Any] = {"distributed.worker.profile.enabled": False}
        if fork:
            settings["distributed.worker.multiprocessing-method"] = "fork"
        with dask.config.set(settings), warnings.catch_warnings():
            # Python >= 3.12 warns on any fork of a multi-threaded process; the nanny forks from the
            # cluster's event-loop thread, and its child runs only that thread's work (a new event loop)
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
        client = Client(cluster)
    written = 0
    # the run travels once to each worker, not once per chunk (its stream's file handles stay here)
    shipped = SweepRun(run.grid, run.out.resolve(), run.fmt, run.chunk_rows, run.filters)
    try:
        [remote_run] = client.scatter([shipped], broadcast=True)
        # a bounded number of chunks in flight: parts wait on disk only until their turn
        n_workers = len(client.scheduler_info().get("workers", {})) or workers
        in_flight = max(2, 4 * n_workers)
        pending = iter(todo)

        def submit_next() -> Any | None:
            index = next(pending, None)
            if index is None:
                return None
            return client.submit(_dask_chunk, remote_run, index, extra_db, override, pure=False)

        running = as_completed([f for f in (submit_next() for _ in range(in_flight)) if f is not None])
        for future in running:
            index, kept, _ = future.result()
            future.release()
            written += kept
            following = submit_next()
            if following is not None:
                running.add(following)
            run.collect()
            if on_chunk:
                start, stop = run.rows_of(index)
                on_chunk(index, stop - start)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return written
