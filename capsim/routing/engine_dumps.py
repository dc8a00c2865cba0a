"""Expert-load dumps of serving engines as routers (``--routing counts:PATH``).

Engines that balance experts record how many tokens each expert received, per MoE layer, per forward pass:

- **SGLang** (``--expert-distribution-recorder-mode stat``, ``/dump_expert_distribution_record``): a
  ``torch.save`` file ``expert_distribution_recorder_<time>.pt`` holding a dict whose ``logical_count`` is an
  integer tensor of shape (buffered passes, MoE layers, logical experts), summed over ranks
  (sgl-project/sglang ``python/sglang/srt/eplb/expert_distribution.py``, ``_StatAccumulator.dump``); combined
  files keep one pass, (1, L, E). The ``per_pass`` and ``per_token`` modes write one file per rank,
  ``expert_distribution_recorder_<time>_<rank>.pt``: a dict of ``records`` (one per forward pass, each with a
  ``global_physical_count`` of shape (MoE layers, physical experts); per_token adds the pass's
  ``topk_ids_of_layer``) and ``last_physical_to_logical_map`` (``_DetailAccumulator.dump``). The passes'
  counts are stacked and the physical experts folded into their logical ones.
- **vLLM** EPLB (``--enable-eplb``): ``EplbState.expert_load_window``, a tensor of shape (window passes, MoE
  layers, physical experts), and ``expert_load_pass``, (MoE layers, physical experts); vLLM writes no file, so
  save either with ``torch.save`` or ``numpy.save`` (a ``.pt``, ``.npy`` or ``.npz`` with one array). Physical
  experts that replicate a logical one (redundant experts) are folded back with a ``physical_to_logical_map``
  saved next to it (a dict key or ``.npz`` member of that name, shape (layers, physical experts)).

Every token sends itself to k distinct experts, so over N tokens expert i's count c_i = N·π_i: the inclusion
probability is π_i = k·c_i / Σ_j c_j, exact in expectation. The router built from it is capsim's synthetic
router with that measured profile (:func:`capsim.routing.popularity.empirical_popularity`): decode activation
A_l(T) = Σ_i 1 − (1 − π_l,i)^T as for every independent-token router. Passes whose counts are all zero (idle
buffer slots) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capsim.errors import TraceError
from capsim.models.spec import ModelSpec

COUNT_KEYS = ("logical_count", "expert_load_window", "expert_load_pass", "counts")
"""Names an expert-load array is looked up by, in order (SGLang's, then vLLM's, then a plain name)."""
MAP_KEY = "physical_to_logical_map"
RECORDS_KEY = "records"
"""SGLang per_pass / per_token dumps: a list of per-pass dicts holding ``global_physical_count``."""
RECORD_COUNT_KEY = "global_physical_count"
RECORDS_MAP_KEY = "last_physical_to_logical_map"


@dataclass(frozen=True)
class ExpertCounts:
    """Tokens per expert: ``counts`` of shape (passes, MoE layers, experts), where they came from."""

    counts: np.ndarray
    source: str
    key: str

    @property
    def num_passes(self) -> int:
        return int(self.counts.shape[0])

    def inclusion(self, top_k: int) -> np.ndarray:
        """π (MoE layers x experts) = k·c_i / Σ_j c_j per layer, summed over passes."""
        total = self.counts.sum(axis=0).astype(np.float64)
        per_layer = total.sum(axis=1, keepdims=True)
        pi = np.divide(top_k * total, per_layer, out=np.zeros_like(total), where=per_layer > 0)
        return np.asarray(np.clip(pi, 0.0, 1.0), dtype=np.float64)

    def activated_per_pass(self) -> np.ndarray:
        """Distinct experts with a token, per pass and MoE layer (the measured A of each pass)."""
        return np.asarray((self.counts > 0).sum(axis=2))


def _load_raw(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return {"counts": np.load(path, allow_pickle=False)}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise TraceError(
                str(path),
                "reading a .pt dump needs PyTorch; install torch or re-save the array with numpy.save",
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict):
            obj = {"counts": obj}
        return {k: _to_numpy(v) for k, v in obj.items()}
    raise TraceError(str(path), f"unknown expert-load dump type {suffix!r}; give a .pt, .npy or .npz file")


def _to_numpy(value: Any) -> Any:
    """Tensors to arrays, through the lists and dicts of SGLang's per-pass records."""
    if hasattr(value, "numpy"):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


def _records_to_counts(file: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """SGLang per_pass / per_token dump -> {global_physical_count: (passes, layers, physical)[, map]}."""
    records = raw[RECORDS_KEY]
    if not isinstance(records, list) or not records:
        raise TraceError(str(file), f"{RECORDS_KEY} is empty: the recorder saw no forward pass")
    try:
        passes = [np.asarray(r[RECORD_COUNT_KEY]) for r in records]
    except (KeyError, TypeError):
        raise TraceError(
            str(file), f"every entry of {RECORDS_KEY} needs a {RECORD_COUNT_KEY} (layers x physical experts)"
        ) from None
    if len({c.shape for c in passes}) != 1:
        raise TraceError(str(file), f"the {RECORD_COUNT_KEY} arrays of {RECORDS_KEY} differ in shape")
    out: dict[str, Any] = {RECORD_COUNT_KEY: np.stack(passes)}
    if RECORDS_MAP_KEY in raw:
        out[MAP_KEY] = np.asarray(raw[RECORDS_MAP_KEY])
    return out


TOKEN_IDS_KEY = "topk_ids_of_layer"
"""SGLang per_token records: (MoE layers, tokens of the pass, 8) expert ids, -1 where a column is unused."""


def load_token_routes(path: str | Path, top_k: int) -> np.ndarray:
    """(MoE layers, tokens, ``top_k``) logical expert ids of an SGLang ``per_token`` dump: every record's
    ``topk_ids_of_layer`` in record order (a pass's tokens in the engine's batch order), physical ids folded to
    logical ones through ``last_physical_to_logical_map``, the recorder's -1 padding columns (it keeps 8) cut
    to ``top_k``. A route of consecutive tokens of one sequence only when the batch held one sequence (the
    recorder keeps no request ids): record at batch 1 to study reuse over time (docs/trace-format.md).

    Raises :class:`TraceError` for a file without per-token records or with fewer than ``top_k`` ids per token."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TraceError(str(file), "no such expert-load dump; give the .pt file SGLang's recorder wrote")
    raw = _load_raw(file)
    records = raw.get(RECORDS_KEY)
    if (
        not isinstance(records, list)
        or not records
        or not all(isinstance(r, dict) and TOKEN_IDS_KEY in r for r in records)
    ):
        raise TraceError(
            str(file),
            f"no per-token routes in it: record with --expert-distribution-recorder-mode per_token "
            f"(each of its {RECORDS_KEY} holds {TOKEN_IDS_KEY})",
        )
    ids = np.concatenate([np.asarray(r[TOKEN_IDS_KEY], dtype=np.int64) for r in records], axis=1)
    if ids.ndim != 3 or ids.shape[2] < top_k:
        raise TraceError(
            str(file), f"{TOKEN_IDS_KEY} has shape {ids.shape}; expected (layers, tokens, >= {top_k})"
        )
    ids = ids[:, :, :top_k]
    if (ids < 0).any():
        raise TraceError(
            str(file), f"some tokens have fewer than {top_k} expert ids (-1 entries): wrong top-k?"
        )
    if RECORDS_MAP_KEY in raw:
        mapping = np.asarray(raw[RECORDS_MAP_KEY], dtype=np.int64)
        if mapping.ndim != 2 or mapping.shape[0] != ids.shape[0] or ids.max() >= mapping.shape[1]:
            raise TraceError(
                str(file), f"{RECORDS_MAP_KEY} has shape {mapping.shape}; it does not cover the recorded ids"
            )
        ids = np.take_along_axis(mapping[:, None, :], ids.reshape(ids.shape[0], 1, -1), axis=2).reshape(
            ids.shape
        )
    return ids


def load_expert_counts(path: str | Path) -> ExpertCounts:
    """Read an SGLang or vLLM expert-load dump (module docstring) as counts (passes, layers, experts).

    Raises :class:`TraceError` naming the file and the problem (missing file, no count array, bad shape,
    negative counts)."""
    try:
        file = Path(path).expanduser()
    except RuntimeError:  # ~user that does not exist
        file = Path(path)
    if not file.is_file():
        raise TraceError(str(file), "no such expert-load dump; give the .pt/.npy/.npz file the engine wrote")
    raw = _load_raw(file)
    if RECORDS_KEY in raw:
        raw = _records_to_counts(file, raw)
    key = next((k for k in (*COUNT_KEYS, RECORD_COUNT_KEY) if k in raw), None)
    if key is None:
        raise TraceError(
            str(file),
            f"no expert-load array in it; expected one of {', '.join(COUNT_KEYS)} or SGLang's {RECORDS_KEY}",
        )
    counts = np.asarray(raw[key])
    if counts.ndim == 2:
        counts = counts[None]
    if counts.ndim != 3 or 0 in counts.shape:
        raise TraceError(
            str(file),
            f"{key} has shape {counts.shape}; expected (passes, layers, experts) or (layers, experts)",
        )
    if not np.issubdtype(counts.dtype, np.number) or (counts < 0).any():
        raise TraceError(str(file), f"{key} must hold non-negative token counts")
    if MAP_KEY in raw:
        counts = _fold_physical(file, counts, np.asarray(raw[MAP_KEY]))
    busy = counts.reshape(counts.shape[0], -1).sum(axis=1) > 0
    if not busy.any():
        raise TraceError(str(file), f"{key} is all zeros: the recorder saw no tokens")
    return ExpertCounts(counts[busy].astype(np.int64), str(file), key)


def _fold_physical(file: Path, counts: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Sum redundant physical experts into their logical expert (vLLM EPLB / SGLang physical counts)."""
    layers, physical = counts.shape[1], counts.shape[2]
    if (
        mapping.shape != (layers, physical)
        or not np.issubdtype(mapping.dtype, np.integer)
        or (mapping < 0).any()
    ):
        raise TraceError(
            str(file),
            f"{MAP_KEY} has shape {mapping.shape}; expected ({layers}, {physical}) "
            "non-negative logical expert ids",
        )
    logical = int(mapping.max()) + 1
    out = np.zeros((counts.shape[0], layers, logical), dtype=np.int64)
    for layer in range(layers):
        # transposed views: physical expert j of every pass adds into logical expert mapping[layer, j]
        np.add.at(out[:, layer, :].T, mapping[layer], counts[:, layer, :].T)
    return out


def check_against(counts: ExpertCounts, model: ModelSpec) -> None:
    """The dump must have the model's MoE layers and routed experts."""
    assert model.moe is not None  # make_router checked
    _, layers, experts = counts.counts.shape
    if (layers, experts) != (model.num_moe_layers, model.moe.num_experts):
        raise TraceError(
            counts.source,
            f"has {layers} MoE layers x {experts} experts; {model.id} has "
            f"{model.num_moe_layers} x {model.moe.num_experts}",
        )
