"""Sweep writers: Parquet chunks spliced into one file read back as the rows evaluated, filtered chunks and
empty outputs included; a clear error when pyarrow is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from capsim.errors import ScenarioError
from capsim.sweep import Grid
from capsim.sweep.run import Filters, SweepRun, evaluate_chunk, resolve_groups, run_local

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# 2 groups x 4 batches x 2 prompts x 2 generated lengths = 32 rows; Mixtral does not fit one H100 (no row
# of that group survives --feasible-only, so whole chunks are filtered away)
GRID = Grid(
    models=("mixtral-8x7b", "qwen3-30b-a3b"),
    hardware=("h100-sxm",),
    batch=(1, 8, 64, 512),
    prompt_len=(256, 4096),
    gen_len=(1, 64),
)


def _expected(db, filters: Filters, chunk_rows: int):  # type: ignore[no-untyped-def]
    """The kept rows, evaluated in the same chunks."""
    from capsim.sweep.writers import arrow_table

    groups = resolve_groups(GRID, db)
    parts = [
        evaluate_chunk(GRID, groups, a, min(a + chunk_rows, GRID.size))
        for a in range(0, GRID.size, chunk_rows)
    ]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = filters.mask(cols)
    return arrow_table({k: v[keep] for k, v in cols.items()})


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 32])
@pytest.mark.parametrize("filters", [Filters(), Filters(feasible_only=True)])
def test_spliced_parquet_reads_back_every_kept_row(
    tmp_path, default_hardware_db, chunk_rows, filters
) -> None:  # type: ignore[no-untyped-def]
    run = SweepRun(GRID, tmp_path / "s.parquet", "parquet", chunk_rows, filters)
    run_local(run, default_hardware_db, run.prepare())
    out = run.finish()
    table = pq.read_table(out)
    expected = _expected(default_hardware_db, filters, chunk_rows)
    assert table.num_rows == expected.num_rows
    assert expected.num_rows == (32 if not filters.feasible_only else 16)  # feasible: the 16 Qwen rows
    assert table.equals(expected)
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == expected.num_rows
    # one row group per chunk that kept a row: offsets of every column chunk point inside the file
    for i in range(meta.num_row_groups):
        for j in range(meta.num_columns):
            assert 4 <= meta.row_group(i).column(j).data_page_offset < out.stat().st_size


def test_parquet_with_no_row_has_the_schema(tmp_path, default_hardware_db) -> None:  # type: ignore[no-untyped-def]
    grid = Grid(
        models=("mixtral-8x7b",), hardware=("h100-sxm",), batch=(1, 2)
    )  # 93 GB of weights: no row fits
    run = SweepRun(grid, tmp_path / "none.parquet", "parquet", 1, Filters(feasible_only=True))
    run_local(run, default_hardware_db, run.prepare())
    table = pq.read_table(run.finish())
    assert table.num_rows == 0
    from capsim.sweep.evaluate import COLUMNS

    assert table.column_names == list(COLUMNS)


def test_missing_pyarrow_is_one_clear_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from capsim.sweep.writers import require_pyarrow

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(
        ScenarioError, match=r"csv output needs pyarrow, a capsim dependency: pip install pyarrow"
    ):
        require_pyarrow("csv")


def test_string_columns_convert_by_runs() -> None:
    from capsim.sweep.writers import _string_array

    values = np.array(["b", "b", "a", "a", "a", "b", "c, d", "c, d"])
    assert _string_array(values).to_pylist() == values.tolist()
    assert _string_array(values[:0]).to_pylist() == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_local_sweep_streams_into_one_file(tmp_path, default_hardware_db, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """Bounded disk, no rewrite pass: while a local sweep runs its folder holds only the manifest, the commit
    record and the growing output (plus, for Parquet, the row-group index), never a part per chunk; the output
    only grows, and finishing renames it (the bytes are not copied: same inode)."""
    run = SweepRun(GRID, tmp_path / f"s.{fmt}", fmt, 5, Filters())
    todo = run.prepare()
    sizes: list[int] = []

    def look(index: int, rows: int) -> None:
        names = {p.name for p in run.parts_dir.iterdir()}
        assert names <= {"manifest.json", "progress.json", "output.partial", "row_groups.bin"}, names
        sizes.append((run.parts_dir / "output.partial").stat().st_size)

    run_local(run, default_hardware_db, todo, look)
    inode = (run.parts_dir / "output.partial").stat().st_ino
    out = run.finish()
    assert len(sizes) == run.n_chunks == 7  # 32 rows in chunks of 5
    assert sizes == sorted(sizes) and sizes[0] > 0
    assert out.stat().st_ino == inode
