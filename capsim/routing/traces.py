"""Recorded routing traces: the on-disk format, an atomic writer and a lazy, validating loader.

A trace records, for every MoE layer and every token, the ids of the ``top_k`` routed experts the router
chose (and optionally their gate weights). It is what S-MBU's 𝟙[l, i] is computed from (MoE-CAP §4.1:
"obtained by tracing router outputs"). The format is specified in docs/trace-format.md; in short:

* a zip container that ``numpy.load`` also reads as an ``.npz``, with the members
  ``meta.json`` (UTF-8 JSON, written first), ``topk_ids.npy`` (``uint8`` when E ≤ 256, else ``uint16``;
  shape ``(layers, tokens, k)``) and, optionally, ``gate_weights.npy`` (``float16``/``float32``, same shape);
* ``meta.json`` holds ``format = "capsim-trace"``, ``version``, ``model_id``, ``num_experts``, ``top_k``,
  ``num_layers``, ``num_tokens``, ``has_gate_weights`` and a free ``metadata`` object (where and how the
  trace was recorded, the prompt set, the synthetic router and seed, ...).

Writing goes to a temporary file in the target directory, is fsync'ed and then renamed over the target with
``os.replace``: a crash leaves either the old file or the new one, never half a file under the final name.
Loading reads ``meta.json`` only; the id array is read (and checked: shape, id range, k distinct experts
per token) on first access. Every problem raises :class:`capsim.errors.TraceError` naming the file, the
problem and the fix.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim.errors import TraceError
from capsim.models.spec import ModelSpec

FORMAT_NAME = "capsim-trace"
FORMAT_VERSION = 1
"""Bumped on any incompatible change of the members or of ``meta.json``; readers refuse newer versions."""

META_MEMBER = "meta.json"
IDS_MEMBER = "topk_ids.npy"
GATES_MEMBER = "gate_weights.npy"

_MAX_EXPERTS = 2**16
"""uint16 ids; no published MoE model has more experts per layer than this."""

_REQUIRED_META: dict[str, type] = {
    "format": str,
    "version": int,
    "model_id": str,
    "num_experts": int,
    "top_k": int,
    "num_layers": int,
    "num_tokens": int,
    "has_gate_weights": bool,
    "metadata": dict,
}

_FIX_REWRITE = "re-record it or re-create it with `capsim trace synth`"


def _ids_dtype(num_experts: int) -> np.dtype[Any]:
    return np.dtype(np.uint8) if num_experts <= 256 else np.dtype(np.uint16)


class Trace:
    """A routing trace: expert ids per (MoE layer, token, slot), plus what it was recorded from.

    Shape facts (``num_layers``, ``num_tokens``, ``top_k``, ``num_experts``) come from ``meta.json`` and are
    available without reading the ids. :attr:`topk_ids` is read from disk on first access and kept.
    Build one with :func:`load_trace` (from a file) or :meth:`from_arrays` (in memory).
    """

    def __init__(
        self,
        *,
        path: Path | None,
        model_id: str,
        num_experts: int,
        top_k: int,
        num_layers: int,
        num_tokens: int,
        metadata: Mapping[str, Any],
        has_gate_weights: bool,
        version: int = FORMAT_VERSION,
        topk_ids: NDArray[np.integer[Any]] | None = None,
        gate_weights: NDArray[np.floating[Any]] | None = None,
    ) -> None:
        self.path = path
        self.model_id = model_id
        self.num_experts = num_experts
        self.top_k = top_k
        self.num_layers = num_layers
        self.num_tokens = num_tokens
        self.metadata: dict[str, Any] = dict(metadata)
        self.has_gate_weights = has_gate_weights
        self.version = version
        self._topk_ids = topk_ids
        self._gate_weights = gate_weights

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        topk_ids: ArrayLike,
        *,
        model_id: str,
        num_experts: int,
        top_k: int,
        metadata: Mapping[str, Any] | None = None,
        gate_weights: ArrayLike | None = None,
        name: str = "<in-memory trace>",
    ) -> Trace:
        """An in-memory trace from an id array of shape ``(layers, tokens, k)``, validated like a file."""
        ids, gates = _checked_arrays(name, topk_ids, num_experts, top_k, gate_weights)
        meta = dict(metadata or {})
        _check_json(name, meta)
        return cls(
            path=None,
            model_id=model_id,
            num_experts=num_experts,
            top_k=top_k,
            num_layers=int(ids.shape[0]),
            num_tokens=int(ids.shape[1]),
            metadata=meta,
            has_gate_weights=gates is not None,
            topk_ids=ids,
            gate_weights=gates,
        )

    # ---- lazily loaded arrays --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<in-memory trace>"

    @property
    def topk_ids(self) -> NDArray[np.integer[Any]]:
        """Expert ids, shape ``(num_layers, num_tokens, top_k)``, each in ``[0, num_experts)``."""
        if self._topk_ids is None:
            ids = self._check_loaded(self._read_member(IDS_MEMBER), IDS_MEMBER)
            if not np.issubdtype(ids.dtype, np.integer):
                raise TraceError(
                    self.name, f"{IDS_MEMBER} has dtype {ids.dtype}, not integer; {_FIX_REWRITE}"
                )
            _check_ids(self.name, ids, self.num_experts, self.top_k)
            self._topk_ids = ids
        return self._topk_ids

    @property
    def gate_weights(self) -> NDArray[np.floating[Any]] | None:
        """Gate weights of the chosen experts (same shape as :attr:`topk_ids`), or None if not recorded."""
        if not self.has_gate_weights:
            return None
        if self._gate_weights is None:
            raw = self._read_member(GATES_MEMBER)
            gates = self._check_loaded(raw, GATES_MEMBER)
            _check_gates(self.name, gates, (self.num_layers, self.num_tokens, self.top_k))
            self._gate_weights = gates
        return self._gate_weights

    def _read_member(self, member: str) -> NDArray[Any]:
        if self.path is None:  # in-memory traces always carry their arrays; this is a programming error
            raise RuntimeError("in-memory trace without arrays")
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(member) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except FileNotFoundError:
            raise TraceError(str(self.path), f"the file disappeared after loading; {_FIX_REWRITE}") from None
        except KeyError:
            raise TraceError(str(self.path), f"member {member!r} is missing; {_FIX_REWRITE}") from None
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as exc:
            raise TraceError(
                str(self.path), f"member {member!r} is corrupt or truncated ({exc}); {_FIX_REWRITE}"
            ) from None

    def _check_loaded(self, arr: NDArray[Any], member: str) -> NDArray[Any]:
        expected = (self.num_layers, self.num_tokens, self.top_k)
        if arr.shape != expected:
            raise TraceError(
                self.name,
                f"{member} has shape {arr.shape} but meta.json says (layers, tokens, k) = {expected}; "
                f"{_FIX_REWRITE}",
            )
        return arr

    # ---- validation against a model --------------------------------------------------------------------
    def validate_against(self, model: ModelSpec) -> None:
        """Check that this trace can drive ``model``: MoE layer count, expert count, top-k and id range.

        The model id may differ (e.g. DeepSeek-R1 has DeepSeek-V3's routing shape); the shapes may not.
        Raises :class:`TraceError` naming the first mismatch and the fix.
        """
        synth = f"synthesise one with `capsim trace synth --model {model.id} ...`"
        if model.moe is None or model.num_moe_layers == 0:
            raise TraceError(
                self.name, f"model {model.id!r} has no MoE layers, so a routing trace does not apply"
            )
        checks = (
            ("MoE layers", self.num_layers, model.num_moe_layers),
            ("routed experts per layer", self.num_experts, model.moe.num_experts),
            ("experts per token (top-k)", self.top_k, model.moe.top_k),
        )
        for what, have, want in checks:
            if have != want:
                raise TraceError(
                    self.name,
                    f"trace has {have} {what} but model {model.id!r} has {want}; "
                    f"use a trace recorded on {model.id!r} or {synth}",
                )
        ids = self.topk_ids  # reads and range-checks against the trace's own expert count
        if ids.size and int(ids.max()) >= model.moe.num_experts:
            raise TraceError(
                self.name,
                f"expert id {int(ids.max())} is out of range for {model.moe.num_experts} experts; {synth}",
            )

    def summary(self) -> str:
        """One line: model, shape and provenance."""
        src = self.metadata.get("router") or self.metadata.get("recorded_with") or "unknown origin"
        return (
            f"{self.model_id}: {self.num_layers} MoE layers x {self.num_tokens} tokens x top-{self.top_k} "
            f"of {self.num_experts} experts ({src})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``meta.json`` content (no arrays), for ``--json``."""
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "path": None if self.path is None else str(self.path),
            "model_id": self.model_id,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "num_layers": self.num_layers,
            "num_tokens": self.num_tokens,
            "has_gate_weights": self.has_gate_weights,
            "metadata": dict(self.metadata),
        }


# ---- writing -----------------------------------------------------------------------------------------------
def write_trace(
    path: str | os.PathLike[str],
    topk_ids: ArrayLike,
    *,
    model_id: str,
    num_experts: int,
    top_k: int,
    metadata: Mapping[str, Any] | None = None,
    gate_weights: ArrayLike | None = None,
) -> Path:
    """Write a trace atomically and return its path.

    ``topk_ids``: integer array ``(layers, tokens, k)`` of expert ids in ``[0, num_experts)``, k distinct
    ids per token. ``gate_weights``: optional float array of the same shape. ``metadata``: JSON-serialisable
    provenance (``recorded_with``, ``prompt_set``, ``router``, ``seed``, hardware, ...), stored verbatim.
    The file is complete under ``path`` or not there at all (temporary file + fsync + ``os.replace``).
    """
    target = Path(path)
    ids, gates = _checked_arrays(str(target), topk_ids, num_experts, top_k, gate_weights)
    meta_user = dict(metadata or {})
    _check_json(str(target), meta_user)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_id": model_id,
        "num_experts": int(num_experts),
        "top_k": int(top_k),
        "num_layers": int(ids.shape[0]),
        "num_tokens": int(ids.shape[1]),
        "has_gate_weights": gates is not None,
        "metadata": meta_user,
    }
    if not target.parent.is_dir():
        raise TraceError(str(target), f"directory {str(target.parent)!r} does not exist; create it first")
    if target.is_dir():
        raise TraceError(str(target), f"is a directory; give a file name, e.g. {target / 'trace.npz'}")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise TraceError(str(target), f"cannot be written ({exc.strerror}); choose another path") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(META_MEMBER, json.dumps(meta, indent=1, sort_keys=True))
                _write_array(zf, IDS_MEMBER, ids)
                if gates is not None:
                    _write_array(zf, GATES_MEMBER, gates)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_array(zf: zipfile.ZipFile, member: str, arr: NDArray[Any]) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    zf.writestr(member, buf.getvalue())


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not all platforms allow this.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---- loading -----------------------------------------------------------------------------------------------
def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Open a trace lazily: read and check ``meta.json`` now, the arrays on first access.

    Raises :class:`TraceError` if the file is missing, not a capsim trace, truncated, of a newer format
    version, or has a malformed ``meta.json``.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceError(str(p), "no such trace file; check the path (shipped traces: `capsim trace list`)")
    if not zipfile.is_zipfile(p):
        raise TraceError(
            str(p), f"not a capsim trace (not a zip/npz container, or truncated); {_FIX_REWRITE}"
        )
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if META_MEMBER not in names:
                raise TraceError(str(p), f"no {META_MEMBER} member: not a capsim trace; {_FIX_REWRITE}")
            raw = zf.read(META_MEMBER)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TraceError(str(p), f"unreadable or truncated container ({exc}); {_FIX_REWRITE}") from None
    meta = _parse_meta(str(p), raw)
    if IDS_MEMBER not in names:
        raise TraceError(str(p), f"member {IDS_MEMBER!r} is missing; {_FIX_REWRITE}")
    if meta["has_gate_weights"] and GATES_MEMBER not in names:
        raise TraceError(
            str(p), f"meta.json announces gate weights but {GATES_MEMBER!r} is missing; {_FIX_REWRITE}"
        )
    return Trace(
        path=p,
        model_id=meta["model_id"],
        num_experts=meta["num_experts"],
        top_k=meta["top_k"],
        num_layers=meta["num_layers"],
        num_tokens=meta["num_tokens"],
        metadata=meta["metadata"],
        has_gate_weights=meta["has_gate_weights"],
        version=meta["version"],
    )


def _parse_meta(name: str, raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(name, f"meta.json is not valid JSON ({exc}); {_FIX_REWRITE}") from None
    if not isinstance(meta, dict):
        raise TraceError(name, f"meta.json must be a JSON object; {_FIX_REWRITE}")
    for key, typ in _REQUIRED_META.items():
        if key not in meta:
            raise TraceError(name, f"meta.json field {key!r} is missing; {_FIX_REWRITE}")
        value = meta[key]
        # bool is an int subclass in Python: keep the two apart explicitly
        ok = isinstance(value, typ) and (typ is bool or not isinstance(value, bool))
        if not ok:
            raise TraceError(
                name,
                f"meta.json field {key!r} must be {typ.__name__}, got {type(value).__name__}; {_FIX_REWRITE}",
            )
    if meta["format"] != FORMAT_NAME:
        raise TraceError(
            name, f"meta.json format is {meta['format']!r}, expected {FORMAT_NAME!r}; {_FIX_REWRITE}"
        )
    if meta["version"] > FORMAT_VERSION:
        raise TraceError(
            name,
            f"trace format version {meta['version']} is newer than this capsim reads ({FORMAT_VERSION}); "
            "upgrade capsim",
        )
    if meta["version"] < 1:
        raise TraceError(name, f"meta.json version {meta['version']} is invalid; {_FIX_REWRITE}")
    for key in ("num_experts", "top_k", "num_layers", "num_tokens"):
        if meta[key] < 1:
            raise TraceError(name, f"meta.json field {key!r} must be >= 1, got {meta[key]}; {_FIX_REWRITE}")
    if meta["top_k"] > meta["num_experts"]:
        raise TraceError(
            name, f"meta.json top_k={meta['top_k']} exceeds num_experts={meta['num_experts']}; {_FIX_REWRITE}"
        )
    return meta


# ---- array checks shared by the writer and the loader -------------------------------------------------
def _checked_arrays(
    name: str, topk_ids: ArrayLike, num_experts: int, top_k: int, gate_weights: ArrayLike | None
) -> tuple[NDArray[np.integer[Any]], NDArray[np.floating[Any]] | None]:
    if not (isinstance(num_experts, int | np.integer) and 1 <= num_experts <= _MAX_EXPERTS):
        raise TraceError(name, f"num_experts must be an integer in [1, {_MAX_EXPERTS}], got {num_experts!r}")
    if not (isinstance(top_k, int | np.integer) and 1 <= top_k <= num_experts):
        raise TraceError(name, f"top_k must be an integer in [1, num_experts={num_experts}], got {top_k!r}")
    arr = np.asarray(topk_ids)
    if arr.ndim != 3:
        raise TraceError(name, f"topk_ids must have shape (layers, tokens, k), got {arr.ndim} dimension(s)")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise TraceError(name, f"topk_ids has shape {arr.shape}: it needs at least one layer and one token")
    if arr.shape[2] != top_k:
        raise TraceError(
            name, f"topk_ids has {arr.shape[2]} ids per token but top_k={top_k}; pass matching values"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise TraceError(name, f"topk_ids must be integers, got dtype {arr.dtype}")
    _check_ids(name, arr, num_experts, top_k)
    ids = arr.astype(_ids_dtype(num_experts), copy=False)
    gates: NDArray[np.floating[Any]] | None = None
    if gate_weights is not None:
        g = np.asarray(gate_weights)
        if not np.issubdtype(g.dtype, np.floating):
            raise TraceError(name, f"gate_weights must be floating point, got dtype {g.dtype}")
        if g.dtype not in (np.float16, np.float32):
            g = g.astype(np.float32)
        _check_gates(name, g, arr.shape)
        gates = g
    return ids, gates


def _check_ids(name: str, ids: NDArray[Any], num_experts: int, top_k: int) -> None:
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num_experts:
        bad = lo if lo < 0 else hi
        raise TraceError(name, f"expert id {bad} is outside [0, {num_experts}); {_FIX_REWRITE}")
    if top_k > 1:
        s = np.sort(ids, axis=2)
        dup = np.nonzero((np.diff(s.astype(np.int64), axis=2) == 0).any(axis=2))
        if dup[0].size:
            layer, token = int(dup[0][0]), int(dup[1][0])
            raise TraceError(
                name,
                f"token {token} of layer {layer} lists the same expert twice (top-k ids must be distinct); "
                f"{_FIX_REWRITE}",
            )


def _check_gates(name: str, gates: NDArray[Any], shape: tuple[int, ...]) -> None:
    if tuple(gates.shape) != tuple(shape):
        raise TraceError(name, f"gate_weights has shape {gates.shape} but topk_ids has {tuple(shape)}")
    if not np.isfinite(gates).all():
        raise TraceError(name, "gate_weights contains NaN or infinity; record finite gate weights")


def _check_json(name: str, meta: Mapping[str, Any]) -> None:
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TraceError(
            name, f"metadata is not JSON-serialisable ({exc}); pass plain str/int/float/list/dict"
        ) from None
