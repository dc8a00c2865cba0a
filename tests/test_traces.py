"""Trace format: round trip, lazy loading, atomic writes, and one clear error for every corrupt or mismatched file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from strategies import tiny_moe_model

from capsim import TraceError
from capsim.routing import traces as traces_mod
from capsim.routing.traces import FORMAT_VERSION, load_trace, write_trace

FIX = "re-record it or re-create it with `capsim trace synth`"


def _ids(layers: int = 2, tokens: int = 5, k: int = 2, experts: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((layers, tokens, experts)), axis=2)[:, :, :k]


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    """A valid 2-layer, 5-token, top-2-of-8 trace with gate weights, written fresh for each test."""
    ids = _ids()
    gates = np.full(ids.shape, 0.5)
    return write_trace(
        tmp_path / "t.npz",
        ids,
        model_id="tiny-moe-2x8k2",
        num_experts=8,
        top_k=2,
        metadata={"recorded_with": "test", "prompt_set": "none"},
        gate_weights=gates,
    )


def _rewrite(
    src: Path,
    dst: Path,
    *,
    meta: dict | None = None,
    drop: str | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    raw_meta: bytes | None = None,
) -> Path:
    """Copy a trace member by member, replacing or dropping some: builds the corrupt variants."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name == drop:
                continue
            data = zin.read(name)
            if name == "meta.json" and raw_meta is not None:
                data = raw_meta
            elif name == "meta.json" and meta is not None:
                data = json.dumps(meta).encode()
            elif arrays and name.removesuffix(".npy") in arrays:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arrays[name.removesuffix(".npy")])
                data = buf.getvalue()
            zout.writestr(name, data)
    return dst


def _meta(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("meta.json"))


# ---- round trip and laziness -------------------------------------------------------------------------------
def test_round_trip(trace_file: Path):
    tr = load_trace(trace_file)
    assert (tr.model_id, tr.num_layers, tr.num_tokens, tr.top_k, tr.num_experts) == (
        "tiny-moe-2x8k2",
        2,
        5,
        2,
        8,
    )
    assert tr.metadata == {"recorded_with": "test", "prompt_set": "none"}
    assert tr.version == FORMAT_VERSION
    np.testing.assert_array_equal(tr.topk_ids, _ids())
    assert tr.topk_ids.dtype == np.uint8  # E <= 256
    assert tr.gate_weights is not None and tr.gate_weights.dtype == np.float32
    # a standard numpy npz reader sees the arrays too
    with np.load(trace_file) as z:
        np.testing.assert_array_equal(z["topk_ids"], _ids())


def test_ids_are_read_lazily(trace_file: Path, tmp_path: Path):
    """load_trace reads meta.json only: a file whose id array is broken opens, and fails on first use."""
    bad = _rewrite(trace_file, tmp_path / "bad.npz", arrays={"topk_ids": np.zeros((3, 3), dtype=np.uint8)})
    tr = load_trace(bad)
    assert tr.num_tokens == 5
    with pytest.raises(TraceError) as info:
        _ = tr.topk_ids
    assert str(info.value) == (
        f"{bad}: topk_ids.npy has shape (3, 3) but meta.json says (layers, tokens, k) = (2, 5, 2); {FIX}"
    )


def test_uint16_ids_for_more_than_256_experts(tmp_path: Path):
    ids = np.array([[[300, 1]]])
    tr = load_trace(write_trace(tmp_path / "big.npz", ids, model_id="m", num_experts=512, top_k=2))
    assert tr.topk_ids.dtype == np.uint16
    assert tr.topk_ids.tolist() == [[[300, 1]]]


# ---- atomic writes --------------------------------------------------------------------------------------
def test_crash_while_writing_leaves_old_file_and_no_debris(trace_file: Path, monkeypatch):
    before = trace_file.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # a crash mid-write (BaseException, as a kill would be)

    monkeypatch.setattr(traces_mod, "_write_array", boom)
    with pytest.raises(KeyboardInterrupt):
        write_trace(trace_file, _ids(seed=1), model_id="x", num_experts=8, top_k=2)
    assert trace_file.read_bytes() == before
    assert sorted(p.name for p in trace_file.parent.iterdir()) == ["t.npz"]


def test_crash_on_first_write_leaves_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(
        traces_mod, "_write_array", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    )
    with pytest.raises(OSError, match="disk full"):
        write_trace(tmp_path / "new.npz", _ids(), model_id="x", num_experts=8, top_k=2)
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_normal_permissions(trace_file: Path):
    """Not mkstemp's private 0600: the mode a plain open() would give under the current umask."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert trace_file.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- corrupt or truncated files ---------------------------------------------------------------------------
def test_missing_file(tmp_path: Path):
    with pytest.raises(TraceError) as info:
        load_trace(tmp_path / "none.npz")
    assert (
        str(info.value)
        == f"{tmp_path / 'none.npz'}: no such trace file; check the path (shipped traces: `capsim trace list`)"
    )


def test_truncated_file(trace_file: Path, tmp_path: Path):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(trace_file.read_bytes()[:-40])  # the zip directory is at the end
    with pytest.raises(TraceError) as info:
        load_trace(cut)
    assert str(info.value) == f"{cut}: not a capsim trace (not a zip/npz container, or truncated); {FIX}"


def test_not_a_zip(tmp_path: Path):
    p = tmp_path / "x.npz"
    np.save(p.with_suffix(".npy"), np.zeros(3))
    p.write_bytes(p.with_suffix(".npy").read_bytes())
    with pytest.raises(TraceError, match="not a capsim trace"):
        load_trace(p)


def test_corrupted_bytes_fail_the_crc(trace_file: Path, tmp_path: Path):
    """Flipping bytes inside the compressed id array is caught (zip CRC-32 or decompression error)."""
    data = bytearray(trace_file.read_bytes())
    with zipfile.ZipFile(trace_file) as zf:
        info = zf.getinfo("topk_ids.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 15):
        data[i] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    tr = load_trace(bad)
    with pytest.raises(TraceError) as exc:
        _ = tr.topk_ids
    assert str(exc.value).startswith(f"{bad}: member 'topk_ids.npy' is corrupt or truncated (")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.pop("num_experts"), "meta.json field 'num_experts' is missing"),
        (lambda m: m.update(top_k="2"), "meta.json field 'top_k' must be int, got str"),
        (lambda m: m.update(num_layers=True), "meta.json field 'num_layers' must be int, got bool"),
        (lambda m: m.update(format="other"), "meta.json format is 'other', expected 'capsim-trace'"),
        (lambda m: m.update(num_tokens=0), "meta.json field 'num_tokens' must be >= 1, got 0"),
        (lambda m: m.update(top_k=9), "meta.json top_k=9 exceeds num_experts=8"),
    ],
)
def test_malformed_meta_names_the_field(trace_file: Path, tmp_path: Path, change, problem):
    meta = _meta(trace_file)
    change(meta)
    bad = _rewrite(trace_file, tmp_path / "bad.npz", meta=meta)
    with pytest.raises(TraceError) as info:
        load_trace(bad)
    assert str(info.value) == f"{bad}: {problem}; {FIX}"


def test_newer_version_asks_for_upgrade(trace_file: Path, tmp_path: Path):
    meta = _meta(trace_file)
    meta["version"] = FORMAT_VERSION + 1
    bad = _rewrite(trace_file, tmp_path / "new.npz", meta=meta)
    with pytest.raises(TraceError) as info:
        load_trace(bad)
    assert (
        str(info.value)
        == f"{bad}: trace format version 2 is newer than this capsim reads (1); upgrade capsim"
    )


def test_meta_not_json(trace_file: Path, tmp_path: Path):
    bad = _rewrite(trace_file, tmp_path / "bad.npz", raw_meta=b"{not json")
    with pytest.raises(TraceError, match=r"meta.json is not valid JSON \("):
        load_trace(bad)


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("meta.json", "no meta.json member: not a capsim trace"),
        ("topk_ids.npy", "member 'topk_ids.npy' is missing"),
        ("gate_weights.npy", "meta.json announces gate weights but 'gate_weights.npy' is missing"),
    ],
)
def test_missing_member(trace_file: Path, tmp_path: Path, member, problem):
    bad = _rewrite(trace_file, tmp_path / "bad.npz", drop=member)
    with pytest.raises(TraceError) as info:
        load_trace(bad)
    assert str(info.value) == f"{bad}: {problem}; {FIX}"


def test_out_of_range_and_duplicate_ids_in_file(trace_file: Path, tmp_path: Path):
    ids = _ids().astype(np.uint8)
    ids[1, 3, 0] = 9
    bad = _rewrite(trace_file, tmp_path / "range.npz", arrays={"topk_ids": ids})
    with pytest.raises(TraceError) as info:
        _ = load_trace(bad).topk_ids
    assert str(info.value) == f"{bad}: expert id 9 is outside [0, 8); {FIX}"
    ids = _ids().astype(np.uint8)
    ids[0, 2, 1] = ids[0, 2, 0]
    bad = _rewrite(trace_file, tmp_path / "dup.npz", arrays={"topk_ids": ids})
    with pytest.raises(TraceError) as info:
        _ = load_trace(bad).topk_ids
    assert str(info.value) == (
        f"{bad}: token 2 of layer 0 lists the same expert twice (top-k ids must be distinct); {FIX}"
    )


def test_float_ids_and_bad_gates_in_file(trace_file: Path, tmp_path: Path):
    bad = _rewrite(trace_file, tmp_path / "f.npz", arrays={"topk_ids": _ids().astype(np.float32)})
    with pytest.raises(TraceError, match="topk_ids.npy has dtype float32, not integer"):
        _ = load_trace(bad).topk_ids
    gates = np.full((2, 5, 2), np.nan, dtype=np.float32)
    bad = _rewrite(trace_file, tmp_path / "g.npz", arrays={"gate_weights": gates})
    with pytest.raises(TraceError) as info:
        _ = load_trace(bad).gate_weights
    assert str(info.value) == f"{bad}: gate_weights contains NaN or infinity; record finite gate weights"


# ---- the writer refuses bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"topk_ids": np.zeros((2, 3))}, "topk_ids must have shape (layers, tokens, k), got 2 dimension(s)"),
        ({"top_k": 3}, "topk_ids has 2 ids per token but top_k=3; pass matching values"),
        ({"topk_ids": _ids().astype(float)}, "topk_ids must be integers, got dtype float64"),
        ({"num_experts": 4}, "expert id 7 is outside [0, 4); " + FIX),
        ({"num_experts": 0}, "num_experts must be an integer in [1, 65536], got 0"),
        (
            {"metadata": {"x": object}},
            "metadata is not JSON-serialisable (Object of type type is not JSON serializable); pass plain str/int/float/list/dict",
        ),
        ({"gate_weights": np.ones((2, 5, 3))}, "gate_weights has shape (2, 5, 3) but topk_ids has (2, 5, 2)"),
    ],
)
def test_writer_rejects_bad_input(tmp_path: Path, kwargs, problem):
    args = {"topk_ids": _ids(), "model_id": "m", "num_experts": 8, "top_k": 2, **kwargs}
    ids = args.pop("topk_ids")
    target = tmp_path / "w.npz"
    with pytest.raises(TraceError) as info:
        write_trace(target, ids, **args)
    assert str(info.value) == f"{target}: {problem}"
    assert not target.exists()


def test_writer_needs_the_directory(tmp_path: Path):
    target = tmp_path / "no" / "t.npz"
    with pytest.raises(TraceError) as info:
        write_trace(target, _ids(), model_id="m", num_experts=8, top_k=2)
    assert str(info.value) == f"{target}: directory {str(target.parent)!r} does not exist; create it first"


# ---- validation against a model ----------------------------------------------------------------------------
def test_validate_against_matching_model(trace_file: Path):
    load_trace(trace_file).validate_against(tiny_moe_model(2, 8, 2))


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (tiny_moe_model(3, 8, 2), "trace has 2 MoE layers but model 'tiny-moe-3x8k2' has 3"),
        (tiny_moe_model(2, 16, 2), "trace has 8 routed experts per layer but model 'tiny-moe-2x16k2' has 16"),
        (tiny_moe_model(2, 8, 1), "trace has 2 experts per token (top-k) but model 'tiny-moe-2x8k1' has 1"),
    ],
)
def test_validate_against_mismatch(trace_file: Path, model, problem):
    with pytest.raises(TraceError) as info:
        load_trace(trace_file).validate_against(model)
    assert str(info.value) == (
        f"{trace_file}: {problem}; use a trace recorded on {model.id!r} or synthesise one with "
        f"`capsim trace synth --model {model.id} ...`"
    )


def test_validate_against_dense_model(trace_file: Path):
    dense = tiny_moe_model()
    dense = type(dense)(**{**dense.__dict__, "moe": None, "ffn_kinds": ()})
    with pytest.raises(TraceError, match="has no MoE layers, so a routing trace does not apply"):
        load_trace(trace_file).validate_against(dense)
