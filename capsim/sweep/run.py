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

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFileError, ScenarioError
from ..hardware import HardwareDB
from .evaluate import COLUMNS, Group, evaluate_segment, resolve_group
from .grid import Grid

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
        return None if np.isnan(v) else v
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def encode_part(cols: dict[str, np.ndarray], fmt: str, header: bool) -> bytes:
    n = cols["batch"].shape[0]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: [_cell(v) for v in cols[k]] for k in COLUMNS})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()
    buf = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(COLUMNS)
        for i in range(n):
            writer.writerow(["" if (c := _cell(cols[k][i])) is None else c for k in COLUMNS])
    else:
        for i in range(n):
            buf.write(json.dumps({k: _cell(cols[k][i]) for k in COLUMNS}) + "\n")
    return buf.getvalue().encode()


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            found = json.loads(manifest_path.read_text())
            if found != self.manifest():
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
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            tables = [pq.read_table(self.part_path(i)) for i in range(self.n_chunks)]
            sink = io.BytesIO()
            pq.write_table(pa.concat_tables(tables), sink)
            atomic_write(self.out, sink.getvalue())
        else:
            fd, tmp = tempfile.mkstemp(dir=self.out.parent, prefix=f".{self.out.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                for i in range(self.n_chunks):
                    data = self.part_path(i).read_bytes()
                    if self.fmt == "csv" and i > 0:
                        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                    fh.write(data)
            os.replace(tmp, self.out)
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


def _dask_chunk(grid: Grid, start: int, stop: int, extra_db: tuple[str, ...]) -> dict[str, np.ndarray]:
    from ..hardware import load_hardware_db

    db = load_hardware_db(extra=tuple(Path(p) for p in extra_db))
    groups = resolve_groups(grid, db)
    return evaluate_chunk(grid, groups, start, stop)


def run_dask(
    run: SweepRun, todo: list[int], scheduler: str | None, extra_db: tuple[str, ...],
    on_chunk: Callable[[int, int], None] | None = None, workers: int = 2,
) -> int:
    """Evaluate chunks on a Dask cluster (``scheduler`` address, or a local cluster of ``workers`` processes);
    the parts are written here as results arrive, so output and resume guarantees are the local ones."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ScenarioError("the dask backend needs dask[distributed]: pip install 'capsim[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    written = 0
    try:
        futures = {}
        for index in todo:
            start, stop = run.rows_of(index)
            futures[client.submit(_dask_chunk, run.grid, start, stop, extra_db, pure=False)] = index
        for future in as_completed(futures):
            index = futures[future]
            written += run.write_part(index, future.result())
            if on_chunk:
                start, stop = run.rows_of(index)
                on_chunk(index, stop - start)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return written
