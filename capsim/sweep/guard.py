"""What a sweep checks before it computes anything, and the lock that keeps two runs of one sweep apart.

- Output paths (``--out``, ``--pareto``): the nearest existing folder above the file must be a writable
  folder (probed with a temporary file that is removed at once), and the path itself must not be a folder.
  Checked before the first byte is written, so a bad path leaves nothing behind.
- Size: :func:`estimate` gives the rows, the output bytes (per-row sizes measured on a 3,696-row grid,
  rounded up: CSV 261 B, JSONL 620 B, Parquet 71 B per row) and the memory of one chunk in flight;
  :func:`check_size` refuses, with the numbers, a grid above :data:`ROW_LIMIT` rows, an output larger than
  the free disk (parts plus the concatenated file: twice the output), or a chunk larger than a quarter of
  the machine's memory, unless ``--force``.
- Concurrency: :func:`sweep_lock` takes an exclusive ``flock`` on ``<parts>/lock`` for the whole run; a second
  run of the same output stops with one line instead of racing the first one's clean-up. The kernel releases
  the lock when a process dies, so a killed run never blocks the next.
- Stale parts: a parts folder holding no finished part (a run that stopped before its first chunk) is
  replaced; one holding parts of a different grid is named with the fix (delete it, or rerun to resume).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from capsim.errors import ScenarioError
from capsim.sweep.grid import Grid

ROW_LIMIT = 100_000_000
"""Rows a sweep runs without ``--force`` (about 26 GB of CSV)."""

BYTES_PER_ROW = {"csv": 300, "jsonl": 700, "parquet": 100}
"""Output bytes per row, rounded up from a measured 3,696-row grid (2 models x 2 GPUs x 3 counts x 11 batches
x 7 prompts x 4 generated lengths): CSV 261, JSONL 620, Parquet 71 bytes per row."""

CHUNK_BYTES_PER_ROW = 4096
"""Memory per row of a chunk in flight: 25 columns of 8 bytes, fixed-width strings (up to 256 bytes for the
reason a row does not run) and the evaluation's temporaries, with room to spare."""


@dataclass(frozen=True)
class SweepEstimate:
    rows: int
    output_bytes: int
    chunk_bytes: int

    def describe(self) -> str:
        return (
            f"{self.rows:,} rows, about {_size(self.output_bytes)} of output, "
            f"{_size(self.chunk_bytes)} of memory per chunk"
        )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def estimate(grid: Grid, fmt: str, chunk_rows: int) -> SweepEstimate:
    rows = grid.size
    return SweepEstimate(rows, rows * BYTES_PER_ROW[fmt], min(rows, chunk_rows) * CHUNK_BYTES_PER_ROW)


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _existing_folder(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_size(est: SweepEstimate, out: Path, force: bool) -> None:
    """Refuse a sweep too large to be meant (rows), to fit the disk (output) or memory (one chunk)."""
    if force:
        return
    if est.rows > ROW_LIMIT:
        raise ScenarioError(
            f"the grid has {est.describe()}; above {ROW_LIMIT:,} rows a sweep needs --force "
            "(or narrow the axes)"
        )
    free = shutil.disk_usage(_existing_folder(out)).free
    if 2 * est.output_bytes > free:
        raise ScenarioError(
            f"the grid has {est.describe()}; the parts and the output need about {_size(2 * est.output_bytes)} "
            f"but {_existing_folder(out)} has {_size(free)} free; narrow the axes, use --feasible-only, "
            "write .parquet, or give --force"
        )
    memory = _physical_memory()
    if memory is not None and est.chunk_bytes > memory // 4:
        raise ScenarioError(
            f"--chunk-rows gives {_size(est.chunk_bytes)} of memory per chunk, over a quarter of this machine's "
            f"{_size(memory)}; use a smaller --chunk-rows (or --force)"
        )


def check_output_path(path: Path, flag: str) -> None:
    """One error line if ``path`` cannot be written: it is a folder, a folder on its way is a file, or the
    nearest existing folder refuses a new file. Creates nothing that stays."""
    if path.is_dir():
        raise ScenarioError(f"{flag} {path} is a folder; give a file name inside it")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ScenarioError(f"{flag} {path}: {folder} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".capsim-probe-")
    except OSError as exc:
        raise ScenarioError(
            f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)


@contextmanager
def sweep_lock(parts_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``parts_dir/lock`` (creating the folder) while the body runs."""
    import fcntl

    for attempt in range(3):  # another run may remove the folder between the mkdir and the open
        parts_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(parts_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ScenarioError(
                    f"another capsim sweep is writing {parts_dir.name[: -len('.parts')]} right now; wait for it to "
                    "finish (it resumes from the same parts), or write to another --out"
                ) from None
            raise
        yield
    finally:
        os.close(fd)  # releases the lock


def has_finished_parts(parts_dir: Path) -> bool:
    """Whether a parts folder holds any finished chunk: one committed to the streamed output (its
    ``progress.json`` counts chunks > 0) or a ``part-*`` file waiting for its turn."""
    if not parts_dir.is_dir():
        return False
    if any(p.name.startswith("part-") for p in parts_dir.iterdir()):
        return True
    try:
        import json

        return int(json.loads((parts_dir / "progress.json").read_text()).get("chunks", 0)) > 0
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def discard_if_empty(parts_dir: Path) -> None:
    """Remove a parts folder that holds no finished part: nothing to resume, so it must not block a run."""
    if parts_dir.is_dir() and not has_finished_parts(parts_dir):
        shutil.rmtree(parts_dir, ignore_errors=True)


@contextmanager
def discard_parts_on_failure(parts_dir: Path) -> Iterator[None]:
    """If the body fails before any chunk is finished, remove the parts folder: a run that wrote nothing
    leaves nothing (a run that wrote parts keeps them, so rerunning the same command resumes)."""
    try:
        yield
    except BaseException:
        discard_if_empty(parts_dir)
        raise
