"""Sweep output: chunks encoded by pyarrow (CSV, Parquet) or as JSON lines, streamed in order into one file.

Encoding. CSV and Parquet go through pyarrow's C++ writers (a float's text is its shortest round-trip form,
as ``repr`` gives it: pyarrow formats floats with the same shortest-digits rule, so a CSV value parses back to
the exact double). JSON lines keep the row dicts ``json.dumps`` would write. A value that is not finite (a row
that does not run) is missing: an empty CSV field, JSON ``null``, a Parquet null.

Streaming. Chunks are appended in chunk order to ``<parts>/output.partial``; Parquet chunks are spliced
(:mod:`capsim.sweep.parquet_splice`: bytes copied, offsets moved) and the footer is written once at the end, so
no chunk is ever decoded or rewritten. After each append the data is flushed to disk and ``progress.json`` is
replaced atomically with the number of chunks committed and the file's committed length; a crash leaves at
most a torn tail beyond that length, which a resumed run cuts off before appending again. So every row is in
the output exactly once, and the disk holds the output plus a few kilobytes (plus, with Dask, the parts of
chunks finished ahead of their turn). The finished file is renamed to the output path.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from capsim.errors import ScenarioError
from capsim.sweep.evaluate import COLUMNS, STRING_COLUMNS

FORMATS = ("csv", "jsonl", "parquet")


def require_pyarrow(fmt: str) -> None:
    """CSV and Parquet are written by pyarrow (a capsim dependency); say how to get it when it is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ScenarioError(
            f"{fmt} output needs pyarrow, a capsim dependency: pip install pyarrow (or write .jsonl)"
        ) from None


# ---- encoding ------------------------------------------------------------------------------------------------


def arrow_table(cols: dict[str, np.ndarray]) -> Any:
    """The chunk as a pyarrow Table in :data:`COLUMNS` order; floats that are not finite become nulls."""
    import pyarrow as pa

    arrays = []
    for name in COLUMNS:
        values = cols[name]
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            arrays.append(pa.array(values) if finite.all() else pa.array(values, mask=~finite))
        elif values.dtype.kind == "U":
            arrays.append(_string_array(values))
        elif values.dtype.kind in "biu":
            arrays.append(pa.array(values))
        else:
            arrays.append(pa.array(values.astype(str)))
    return pa.Table.from_arrays(arrays, names=list(COLUMNS))


def _string_array(values: np.ndarray) -> Any:
    """A pyarrow string array of a numpy unicode column, converting each run of equal values once: sweep
    string columns change only between groups (and the bottleneck between a few names), so this is ~10x
    cheaper than converting every cell."""
    import pyarrow as pa

    n = values.shape[0]
    if n == 0:
        return pa.array(values, type=pa.string())
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(values[1:], values[:-1], out=starts[1:])
    first = np.nonzero(starts)[0]
    distinct, code = np.unique(values[first], return_inverse=True)
    indices = np.repeat(code.reshape(-1).astype(np.int32), np.diff(np.append(first, n)))
    return pa.DictionaryArray.from_arrays(indices, pa.array(distinct, type=pa.string())).dictionary_decode()


def _csv_options(header: bool) -> Any:
    import pyarrow.csv as pcsv

    # "needed" quotes every string value (and escapes quotes), never numbers: a reason with a comma stays one field
    return pcsv.WriteOptions(include_header=header, quoting_style="needed")


def csv_header() -> bytes:
    """The CSV header line, as pyarrow writes it."""
    import pyarrow.csv as pcsv

    empty = arrow_table({name: np.zeros(0, dtype=np.float64) for name in COLUMNS})
    sink = io.BytesIO()
    pcsv.write_csv(empty, sink, _csv_options(header=True))
    return sink.getvalue()


def encode_chunk(cols: dict[str, np.ndarray], fmt: str) -> bytes:
    """One chunk's rows: CSV lines without a header, JSON lines, or a whole Parquet file (one row group)."""
    n = int(cols["batch"].shape[0])
    if fmt == "jsonl":
        return _encode_jsonl(cols) if n else b""
    if fmt == "csv":
        if n == 0:
            return b""
        import pyarrow.csv as pcsv

        sink = io.BytesIO()
        pcsv.write_csv(arrow_table(cols), sink, _csv_options(header=False))
        return sink.getvalue()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        # one row group per chunk, no page index or bloom filter: the splice moves only plain offsets;
        # dictionary pages for the string columns only (on floats they cost time and save nothing)
        pq.write_table(
            arrow_table(cols),
            sink,
            row_group_size=max(n, 1),
            write_page_index=False,
            use_dictionary=list(STRING_COLUMNS),
        )
        return sink.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def _encode_jsonl(cols: dict[str, np.ndarray]) -> bytes:
    """JSON lines, each what ``json.dumps`` writes for the row's dict, built column by column (one ``repr`` per
    float, one escape per distinct string) rather than cell by cell."""
    texts = [_json_column(cols[name]) for name in COLUMNS]
    keyed = [[f"{json.dumps(name)}: " + t for t in text] for name, text in zip(COLUMNS, texts)]
    return ("\n".join("{" + ", ".join(row) + "}" for row in zip(*keyed)) + "\n").encode()


def _json_column(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "f":
        text = list(map(float.__repr__, values.tolist()))
        for i in np.nonzero(~np.isfinite(values))[0].tolist():
            text[i] = "null"
        return text
    if values.dtype.kind == "b":
        return [("false", "true")[v] for v in values.tolist()]
    if values.dtype.kind in "iu":
        return list(map(str, values.tolist()))
    cache: dict[str, str] = {}
    return [cache[v] if v in cache else cache.setdefault(v, json.dumps(v)) for v in map(str, values.tolist())]


# ---- atomic files --------------------------------------------------------------------------------------------


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


# ---- the streamed output -------------------------------------------------------------------------------------


class StreamedOutput:
    """The output file being built in ``folder``, chunk by chunk in chunk order, with its commit record.

    Files are opened per append (no handle outlives a call), so an interrupted run leaves nothing open."""

    PARTIAL = "output.partial"
    PROGRESS = "progress.json"
    ROW_GROUPS = "row_groups.bin"

    def __init__(self, folder: Path, fmt: str) -> None:
        self.folder = folder
        self.fmt = fmt
        self.chunks = 0
        """Chunks committed (0 … chunks − 1 are in the file)."""
        self.length = 0
        """Committed bytes of the output file."""
        self.rows = 0
        self.front: list[dict[str, Any]] = []
        self.row_groups = 0
        self.row_group_bytes = 0
        """Committed bytes of ``row_groups.bin`` (Parquet: the spliced row groups' metadata, for the footer)."""
        self._template: bytes | None = None

    @property
    def partial(self) -> Path:
        return self.folder / self.PARTIAL

    def open(self) -> int:
        """Start or resume the output: cut anything past the committed length (a torn tail); returns the
        chunks committed."""
        progress = self.folder / self.PROGRESS
        if progress.exists():
            state = json.loads(progress.read_text())
            self.chunks, self.length, self.rows = state["chunks"], state["length"], state["rows"]
            self.front = state["front"]
            self.row_groups, self.row_group_bytes = state["row_groups"], state["row_group_bytes"]
            self._template = bytes.fromhex(state["template"]) if state["template"] else None
            _cut(self.partial, self.length)
            _cut(self.folder / self.ROW_GROUPS, self.row_group_bytes)
            return self.chunks
        start = b""
        if self.fmt == "parquet":
            from capsim.sweep.parquet_splice import MAGIC

            start = MAGIC
        elif self.fmt == "csv":
            start = csv_header()
        self.partial.write_bytes(start)
        (self.folder / self.ROW_GROUPS).write_bytes(b"")
        self.length = len(start)
        self._commit()
        return 0

    def append(self, payload: bytes, front: list[dict[str, Any]], rows: int) -> None:
        """Append the next chunk's encoded rows and commit them."""
        if self.fmt == "parquet":
            if rows:
                from capsim.sweep.parquet_splice import row_groups_at, split_file

                chunk = split_file(payload)
                if self._template is None:
                    self._template = chunk.metadata
                described = row_groups_at(chunk, self.length, self.row_groups)
                self.row_group_bytes = _append(self.folder / self.ROW_GROUPS, self.row_group_bytes, described)
                self.row_groups += chunk.num_row_groups
                self.length = _append(self.partial, self.length, chunk.body)
        elif payload:
            self.length = _append(self.partial, self.length, payload)
        self.rows += rows
        self.chunks += 1
        if front:
            from capsim.sweep.fronts import merge_fronts

            self.front = merge_fronts(self.front, front)
        self._commit()

    def _commit(self) -> None:
        state = {
            "chunks": self.chunks,
            "length": self.length,
            "rows": self.rows,
            "front": self.front,
            "row_groups": self.row_groups,
            "row_group_bytes": self.row_group_bytes,
            "template": self._template.hex() if self._template else None,
        }
        atomic_write(self.folder / self.PROGRESS, json.dumps(state).encode())

    def finish(self, out: Path) -> Path:
        """Write the Parquet footer (if any), flush, and rename the file to ``out``."""
        if self.fmt == "parquet":
            from capsim.sweep.parquet_splice import EncodedChunk, footer, split_file

            template = self._template
            if template is None:  # no row at all: the schema comes from an empty chunk
                template = split_file(encode_chunk(_no_rows(), "parquet")).metadata
            row_groups = (self.folder / self.ROW_GROUPS).read_bytes()[: self.row_group_bytes]
            tail = footer(EncodedChunk(b"", template, 0, 0), row_groups, self.row_groups, self.rows)
            _append(self.partial, self.length, tail)
        os.chmod(self.partial, 0o666 & ~_umask())
        os.replace(self.partial, out)
        return out


def _append(path: Path, at: int, data: bytes) -> int:
    """Write ``data`` at byte ``at`` of ``path`` (dropping anything after it), flushed to disk; returns the
    new length."""
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(data)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())
    return at + len(data)


def _cut(path: Path, length: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(length)


def _no_rows() -> dict[str, np.ndarray]:
    from capsim.sweep.evaluate import empty_columns

    return empty_columns(
        0, {"model": "", "hardware": "", "weight_dtype": "", "kv_dtype": "", "bottleneck": ""}
    )


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder)
