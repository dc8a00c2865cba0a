"""Run a sweep in chunks with resumable, exactly-once output.

Rows are cut into chunks of ``chunk_rows`` contiguous row indices. Each finished chunk is written to its own
part file ``<out>.parts/part-<index>.<fmt>`` atomically (temporary file + ``os.replace``), so a part either
exists whole or not at all. ``manifest.json`` in the parts folder records the grid fingerprint, chunk size,
format and filters; a restarted sweep with the same grid skips the parts that exist and computes the rest
(never losing or duplicating a row), and refuses to resume a different grid. When every part exists they are
concatenated in chunk order into ``<out>`` (atomically) and the parts folder is removed.

Memory stays bounded by the chunk: only one chunk's columns are alive at a time per worker.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DataFileError, ScenarioError
from ..hardware import HardwareDB
from .evaluate import COLUMNS, Group, evaluate_segment, resolve_group
from .grid import Grid
from .guard import has_finished_parts

FORMATS = ("csv", "jsonl", "parquet")


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


def pareto_mask(tpot: np.ndarray, throughput: np.ndarray) -> np.ndarray:
    """Rows not dominated in (lower TPOT, higher throughput): sort by TPOT, keep strict throughput records."""
    order = np.lexsort((-throughput, tpot))
    sorted_tp = throughput[order]
    previous_best = np.maximum.accumulate(np.concatenate([[-np.inf], sorted_tp[:-1]]))
    keep = np.zeros(tpot.shape[0], dtype=bool)
    keep[order] = sorted_tp > previous_best
    return keep


def pareto_rows(cols: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    ok = cols["feasible"].astype(bool) & np.isfinite(cols["tpot_s"].astype(np.float64))
    idx = np.nonzero(ok)[0]
    if idx.size == 0:
        return []
    mask = pareto_mask(cols["tpot_s"][idx].astype(np.float64), cols["decode_tokens_per_s"][idx].astype(np.float64))
    chosen = idx[mask]
    chosen = chosen[np.argsort(cols["tpot_s"][chosen].astype(np.float64), kind="stable")]
    return [{k: _cell(cols[k][i]) for k in COLUMNS} for i in chosen]


def format_of(path: Path, fmt: str | None) -> str:
    chosen = fmt or {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "")
    if chosen not in FORMATS:
        raise ScenarioError(f"cannot tell the output format of {path}; use a .csv, .jsonl or .parquet name or --format")
    if chosen == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ScenarioError("parquet output needs pyarrow: pip install pyarrow (or write .csv / .jsonl)") from None
    return chosen


def evaluate_chunk(grid: Grid, groups: list[Group], start: int, stop: int) -> dict[str, np.ndarray]:
    """Columns of rows ``start:stop`` (concatenated over the groups the chunk spans)."""
    parts = [evaluate_segment(grid, groups[g], a, b) for g, a, b in grid.segments(start, stop)]
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}


def _cell(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def encode_part(cols: dict[str, np.ndarray], fmt: str, header: bool) -> bytes:
    """One chunk's rows as CSV (with a header line when asked), JSON lines or Parquet.

    Text is built column by column (one ``repr`` per float, one escape per distinct string), not cell by cell:
    formatting, not evaluation, would otherwise bound a sweep's speed. A value that is not finite (a row that
    does not run) is an empty CSV field and JSON ``null``. Each JSON line is what ``json.dumps`` writes for
    the row's dict (same separators, shortest-repr floats)."""
    n = cols["batch"].shape[0]
    if fmt == "parquet":
        return _encode_parquet(cols)
    if n == 0:
        return (",".join(COLUMNS) + "\n").encode() if (fmt == "csv" and header) else b""
    texts = [_column_text(cols[name], fmt) for name in COLUMNS]
    if fmt == "csv":
        lines = map(",".join, zip(*texts))
        head = ",".join(COLUMNS) + "\n" if header else ""
        return (head + "\n".join(lines) + "\n").encode()
    keyed = [[f"{json.dumps(name)}: " + t for t in text] for name, text in zip(COLUMNS, texts)]
    return ("\n".join("{" + ", ".join(row) + "}" for row in zip(*keyed)) + "\n").encode()


def _column_text(values: np.ndarray, fmt: str) -> list[str]:
    """Text of every cell of one column, for CSV or JSON."""
    missing = "" if fmt == "csv" else "null"
    if values.dtype.kind == "f":
        text = list(map(float.__repr__, values.tolist()))
        for i in np.nonzero(~np.isfinite(values))[0].tolist():
            text[i] = missing
        return text
    if values.dtype.kind == "b":
        words = ("False", "True") if fmt == "csv" else ("false", "true")
        return [words[v] for v in values.tolist()]
    if values.dtype.kind in "iu":
        return list(map(str, values.tolist()))
    escape = _csv_field if fmt == "csv" else json.dumps
    cache: dict[str, str] = {}
    return [cache[v] if v in cache else cache.setdefault(v, escape(v)) for v in map(str, values.tolist())]


def _csv_field(text: str) -> str:
    """A CSV field as the csv module's minimal quoting writes it."""
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _encode_parquet(cols: dict[str, np.ndarray]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name in COLUMNS:
        values = cols[name]
        if values.dtype.kind == "f":
            arrays[name] = pa.array(values, mask=~np.isfinite(values))
        elif values.dtype.kind in "biu":
            arrays[name] = pa.array(values)
        else:
            arrays[name] = pa.array(values.astype(str).tolist(), type=pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays), sink)
    return sink.getvalue()


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file handle whose content appears at ``path`` whole or not at all: written to a temporary file
    beside it, flushed to disk, then renamed over ``path`` (a crash leaves only a ``.tmp`` file, which a
    resumed sweep ignores). The file gets the usual permissions (0666 less the umask)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as fh:
        fh.write(data)


@dataclass
class SweepRun:
    """State of one sweep: where parts go and which are done."""

    grid: Grid
    out: Path
    fmt: str
    chunk_rows: int
    filters: Filters

    @property
    def parts_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def part_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:07d}.{self.fmt}"

    @property
    def n_chunks(self) -> int:
        return self.grid.chunks(self.chunk_rows)

    def manifest(self) -> dict[str, Any]:
        return {
            "grid": self.grid.fingerprint(), "chunk_rows": self.chunk_rows, "format": self.fmt,
            "filters": [self.filters.feasible_only, self.filters.slo_tpot_s, self.filters.slo_ttft_s],
            "rows": self.grid.size,
        }

    def prepare(self) -> list[int]:
        """Create or check the parts folder; return the chunk indices still to compute."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        manifest_path = self.parts_dir / "manifest.json"
        if self.parts_dir.exists() and manifest_path.exists():
            try:
                found = json.loads(manifest_path.read_text())
            except (ValueError, OSError):
                found = None  # unreadable: treated as a different grid
            if found != self.manifest() and not has_finished_parts(self.parts_dir):
                atomic_write(manifest_path, json.dumps(self.manifest()).encode())  # nothing to resume: start over
            elif found != self.manifest():
                raise ScenarioError(
                    f"{self.parts_dir} holds an interrupted sweep of a different grid or settings; "
                    "delete it or rerun with the same arguments to resume"
                )
        else:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(manifest_path, json.dumps(self.manifest()).encode())
        return [i for i in range(self.n_chunks) if not self.part_path(i).exists()]

    def rows_of(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_rows
        return start, min(self.grid.size, start + self.chunk_rows)

    def write_part(self, index: int, cols: dict[str, np.ndarray]) -> int:
        keep = self.filters.mask(cols)
        kept = {k: v[keep] for k, v in cols.items()}
        # The chunk's Pareto rows go to a sidecar first, the part last: a part that exists implies its sidecar.
        front = pareto_rows(kept)
        atomic_write(self.front_path(index), json.dumps(front).encode())
        atomic_write(self.part_path(index), encode_part(kept, self.fmt, header=(self.fmt == "csv")))
        return int(keep.sum())

    def front_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:07d}.front.json"

    def pareto_front(self) -> list[dict[str, Any]]:
        """Pareto front (lowest TPOT, highest decode tokens/s) over every written part."""
        rows: list[dict[str, Any]] = []
        for i in range(self.n_chunks):
            if self.front_path(i).exists():
                rows.extend(json.loads(self.front_path(i).read_text()))
        if not rows:
            return []
        cols = {k: np.array([r[k] for r in rows], dtype=object) for k in COLUMNS}
        for k in ("tpot_s", "decode_tokens_per_s"):
            cols[k] = cols[k].astype(np.float64)
        cols["feasible"] = cols["feasible"].astype(bool)
        return pareto_rows(cols)

    def finish(self) -> Path:
        """Concatenate the parts in order into the output file and remove the parts folder."""
        missing = [i for i in range(self.n_chunks) if not self.part_path(i).exists()]
        if missing:
            raise DataFileError(str(self.parts_dir), f"part {missing[0]} is missing; rerun the sweep to resume")
        # one part in memory at a time: the output may be far larger than memory
        with atomic_output(self.out) as fh:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                writer = None
                for i in range(self.n_chunks):
                    table = pq.read_table(self.part_path(i))
                    writer = writer or pq.ParquetWriter(fh, table.schema)
                    writer.write_table(table)
                if writer is not None:
                    writer.close()
            else:
                for i in range(self.n_chunks):
                    data = self.part_path(i).read_bytes()
                    if self.fmt == "csv" and i > 0:
                        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                    fh.write(data)
        shutil.rmtree(self.parts_dir)
        return self.out


def resolve_groups(grid: Grid, db: HardwareDB) -> list[Group]:
    """Resolve every group up front, so unknown ids fail before any work is done."""
    return [resolve_group(grid, key, db) for key in grid.group_keys]


def run_local(
    run: SweepRun, db: HardwareDB, todo: Iterable[int], on_chunk: Callable[[int, int], None] | None = None
) -> int:
    """Evaluate and write the chunks in ``todo`` in this process; returns rows written."""
    groups = resolve_groups(run.grid, db)
    written = 0
    for index in todo:
        start, stop = run.rows_of(index)
        written += run.write_part(index, evaluate_chunk(run.grid, groups, start, stop))
        if on_chunk:
            on_chunk(index, stop - start)
    return written


_WORKER_GROUPS: dict[tuple[str, tuple[str, ...], bool], list[Group]] = {}
"""Resolved groups per (grid fingerprint, extra databases), kept by each worker process across its chunks."""


def _dask_chunk(
    grid: Grid, start: int, stop: int, extra_db: tuple[str, ...], override: bool
) -> dict[str, np.ndarray]:
    """Evaluate rows ``start:stop`` on a Dask worker (resolving the grid's groups once per worker)."""
    key = (grid.fingerprint(), extra_db, override)
    if key not in _WORKER_GROUPS:
        from ..hardware import load_hardware_db

        db = load_hardware_db(tuple(Path(p) for p in extra_db), on_redefinition="replace" if override else "raise")
        _WORKER_GROUPS.clear()
        _WORKER_GROUPS[key] = resolve_groups(grid, db)
    return evaluate_chunk(grid, _WORKER_GROUPS[key], start, stop)


def run_dask(
    run: SweepRun, todo: list[int], scheduler: str | None, extra_db: tuple[str, ...],
    on_chunk: Callable[[int, int], None] | None = None, workers: int = 2, override: bool = False,
) -> int:
    """Evaluate chunks on a Dask cluster (``scheduler`` address, or a local cluster of ``workers`` processes);
    the parts are written here as results arrive, so output and resume guarantees are the local ones.
    Workers load the hardware database themselves: ``extra_db`` files must be readable at the same paths."""
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
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    written = 0
    try:
        # a bounded number of chunks in flight: results wait in memory only until this process writes them
        in_flight = max(2, 2 * len(client.scheduler_info().get("workers", {})) or 2 * workers)
        pending = iter(todo)
        futures: dict[Any, int] = {}

        def submit_next() -> Any | None:
            index = next(pending, None)
            if index is None:
                return None
            start, stop = run.rows_of(index)
            future = client.submit(_dask_chunk, run.grid, start, stop, extra_db, override, pure=False)
            futures[future] = index
            return future

        running = as_completed([f for f in (submit_next() for _ in range(in_flight)) if f is not None])
        for future in running:
            index = futures.pop(future)
            written += run.write_part(index, future.result())
            future.release()
            following = submit_next()
            if following is not None:
                running.add(following)
            if on_chunk:
                start, stop = run.rows_of(index)
                on_chunk(index, stop - start)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return written
