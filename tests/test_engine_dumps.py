"""Expert-load dumps of serving engines as routers (capsim.routing.engine_dumps, ``--routing counts:PATH``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tiny_moe_model

from capsim import make_router
from capsim.errors import TraceError
from capsim.routing.engine_dumps import load_expert_counts

torch = pytest.importorskip("torch")

MODEL = tiny_moe_model(num_moe_layers=2, num_experts=8, top_k=2)  # invented test model


def _sglang_dump(path, counts: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """What SGLang's _StatAccumulator.dump writes: dict(rank=..., logical_count=(passes, layers, experts))."""
    torch.save({"rank": 0, "logical_count": torch.tensor(counts)}, path)


def test_sglang_dump_gives_the_measured_inclusion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # two passes of 4 tokens x k=2 = 8 assignments per layer; layer 0 always uses experts 0..3 twice each
    counts = np.zeros((3, 2, 8), dtype=np.int64)
    counts[0, 0, :4] = 2
    counts[1, 0, :4] = 2
    counts[0, 1, :] = 1
    counts[1, 1, :] = 1
    # pass 2 is an idle buffer slot (all zeros): dropped
    path = tmp_path / "expert_distribution_recorder_1.pt"
    _sglang_dump(path, counts)
    loaded = load_expert_counts(path)
    assert loaded.num_passes == 2 and loaded.key == "logical_count"
    pi = loaded.inclusion(top_k=2)
    # layer 0: 16 assignments, expert 0 has 4 -> pi = 2 x 4 / 16 = 0.5; layer 1: 2 x 2 / 16 = 0.25 each
    assert pi[0, :4] == pytest.approx([0.5] * 4) and pi[0, 4:].sum() == 0
    assert pi[1] == pytest.approx([0.25] * 8)
    assert loaded.activated_per_pass().tolist() == [[4, 8], [4, 8]]
    router = make_router(f"counts:{path}", MODEL)
    # decode of 3 independent tokens, layer 0: 4 x (1 - 0.5^3) = 3.5; layer 1: 8 x (1 - 0.75^3) = 4.625
    assert router.activated_per_layer(np.array([3.0]))[:, 0] == pytest.approx([3.5, 4.625])


def test_vllm_eplb_window_with_redundant_experts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 10 physical experts: physical 8 and 9 replicate logical 0 and 1
    window = np.zeros((1, 2, 10), dtype=np.int64)
    window[0, :, :8] = 1
    window[0, :, 8:] = 1
    mapping = np.tile(np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 1]), (2, 1))
    path = tmp_path / "eplb.npz"
    np.savez(path, expert_load_window=window, physical_to_logical_map=mapping)
    loaded = load_expert_counts(path)
    assert loaded.counts.shape == (1, 2, 8)
    assert loaded.counts[0, 0].tolist() == [2, 2, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"other": np.ones((2, 8))}, "no expert-load array"),
        ({"counts": np.ones(8)}, r"expected \(passes, layers, experts\)"),
        ({"counts": -np.ones((2, 8))}, "non-negative"),
        ({"counts": np.zeros((2, 8))}, "all zeros"),
    ],
)
def test_bad_dumps_are_one_error_line(tmp_path, arrays, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(TraceError, match=message):
        load_expert_counts(path)


def test_wrong_model_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.npy"
    np.save(path, np.ones((3, 16), dtype=np.int64))
    with pytest.raises(TraceError, match="3 MoE layers x 16 experts"):
        make_router(f"counts:{path}", MODEL)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=8, max_size=8).filter(lambda c: sum(c) > 0))
def test_inclusion_sums_to_k_and_activation_is_monotone(tmp_path_factory, row: list[int]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("c") / "c.npy"
    np.save(path, np.array([row, row], dtype=np.int64))
    loaded = load_expert_counts(path)
    pi = loaded.inclusion(top_k=2)
    if (pi < 1.0).all():  # counts that a real k=2 router can produce (no expert above every token)
        assert pi.sum(axis=1) == pytest.approx([2.0, 2.0])
    router = make_router(f"counts:{path}", MODEL)
    a = router.activated_per_layer(np.array([1.0, 2.0, 8.0, 64.0]))
    assert (np.diff(a, axis=1) >= -1e-12).all()


def test_sglang_per_pass_records_with_redundant_experts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What SGLang's _DetailAccumulator.dump writes (--expert-distribution-recorder-mode per_pass/per_token):
    dict(records=[{forward_pass_id, rank, gatherer_key, global_physical_count (layers, physical), ...}],
    last_physical_to_logical_map (layers, physical)). 10 physical experts: 8 and 9 replicate logical 0 and 1."""
    mapping = torch.tensor(np.tile(np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 1]), (2, 1)))
    first = torch.zeros((2, 10), dtype=torch.int32)
    first[:, :8] = 1
    first[:, 8:] = 1  # pass 0: 10 assignments per layer, logical 0 and 1 get 2 each
    second = torch.zeros((2, 10), dtype=torch.int32)
    second[0, 0] = 3  # pass 1: layer 0 sends 3 to physical 0 and 3 to physical 8 (both logical 0)
    second[0, 8] = 3
    second[1, 2:8] = 1
    records = [
        {"forward_pass_id": 0, "rank": 0, "gatherer_key": "primary", "global_physical_count": first},
        {
            "forward_pass_id": 1,
            "rank": 0,
            "gatherer_key": "primary",
            "global_physical_count": second,
            "topk_ids_of_layer": torch.zeros((2, 3, 8), dtype=torch.int32),  # per_token mode's extra
            "input_ids": [1, 2, 3],
        },
    ]
    path = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    torch.save({"records": records, "last_physical_to_logical_map": mapping}, path)
    loaded = load_expert_counts(path)
    assert loaded.key == "global_physical_count" and loaded.counts.shape == (2, 2, 8)
    assert loaded.counts[0, 0].tolist() == [2, 2, 1, 1, 1, 1, 1, 1]
    assert loaded.counts[1, 0].tolist() == [6, 0, 0, 0, 0, 0, 0, 0]
    # layer 0 over both passes: logical 0 has 2 + 6 = 8 of 16 assignments -> pi = 2 x 8 / 16 = 1.0
    pi = loaded.inclusion(top_k=2)
    assert pi[0, 0] == pytest.approx(1.0) and pi[0].sum() == pytest.approx(2.0)
    router = make_router(f"counts:{path}", MODEL)
    assert router.inclusion[0, 0] == pytest.approx(1.0)


def test_sglang_records_without_counts_say_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    torch.save({"records": [{"forward_pass_id": 0}]}, path)
    with pytest.raises(TraceError, match="every entry of records needs a global_physical_count"):
        load_expert_counts(path)
    torch.save({"records": []}, path)
    with pytest.raises(TraceError, match="records is empty"):
        load_expert_counts(path)
