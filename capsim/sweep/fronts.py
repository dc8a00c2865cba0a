"""Pareto fronts of sweep rows: the rows no other row beats on (lower TPOT, higher decode throughput), per chunk
and merged across chunks and workers (capsim.pareto decides dominance)."""

from __future__ import annotations

from typing import Any

import numpy as np

from capsim.pareto import pareto_mask as _minimised_front
from capsim.sweep.evaluate import COLUMNS


def pareto_mask(tpot: np.ndarray, throughput: np.ndarray) -> np.ndarray:
    """Rows not dominated in (lower TPOT, higher throughput)."""
    return _minimised_front(tpot, -np.asarray(throughput, dtype=np.float64))


def pareto_rows(cols: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    ok = cols["feasible"].astype(bool) & np.isfinite(cols["tpot_s"].astype(np.float64))
    idx = np.nonzero(ok)[0]
    if idx.size == 0:
        return []
    mask = pareto_mask(
        cols["tpot_s"][idx].astype(np.float64), cols["decode_tokens_per_s"][idx].astype(np.float64)
    )
    chosen = idx[mask]
    chosen = chosen[np.argsort(cols["tpot_s"][chosen].astype(np.float64), kind="stable")]
    # column by column (numpy's tolist gives Python ints, floats, bools and strs at C speed), not value by
    # value: a chunk's front of a few hundred rows x 26 columns cost 20 ms per chunk through cell()
    values = [_json_values(cols[k][chosen]) for k in COLUMNS]
    return [dict(zip(COLUMNS, row)) for row in zip(*values)]


def _json_values(column: np.ndarray) -> list[Any]:
    """A column's values as :func:`capsim.sweep.evaluate.cell` gives them one by one (non-finite floats:
    None)."""
    out: list[Any] = column.tolist()
    if column.dtype.kind == "f" and not np.isfinite(column).all():
        return [v if bad is False else None for v, bad in zip(out, (~np.isfinite(column)).tolist())]
    return out


def merge_fronts(*fronts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pareto front of the union of fronts (row dicts, as :func:`pareto_rows` returns them, so feasible with
    a finite TPOT), ordered by TPOT."""
    rows = [r for front in fronts for r in front]
    if not rows:
        return []
    tpot = np.array([r["tpot_s"] for r in rows], dtype=np.float64)
    throughput = np.array([r["decode_tokens_per_s"] for r in rows], dtype=np.float64)
    chosen = np.nonzero(pareto_mask(tpot, throughput))[0]
    return [rows[i] for i in chosen[np.argsort(tpot[chosen], kind="stable")]]
