"""One largest-batch authority (capsim.engine.memory.largest_batch) used by predict, fit, plan and sweep (issue 15:
Mixtral-8x7B on 2x H100 used to give 601 in predict, waves of 589 at batch 600, and 583 in fit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from capsim import Scenario, predict
from capsim.economics.feasibility import max_batch_at
from capsim.economics.plan import _configs
from capsim.engine.memory import (
    activation_bytes,
    kv_bytes_per_sequence_at,
    largest_batch,
    logit_bytes_per_sequence,
    usable_bytes,
    weight_bytes_per_device,
)
from capsim.engine.resolve import resolve
from capsim.hardware.db import load_hardware_db
from capsim.sweep.evaluate import evaluate_segment, resolve_group
from capsim.sweep.grid import Grid

MIXTRAL_2XH100 = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2)


def _need(rs, b: int, p: int, g: int) -> float:  # type: ignore[no-untyped-def]
    """Per-device bytes of b resident sequences, written out directly (not through largest_batch)."""
    weights = sum(weight_bytes_per_device(rs).values())
    per_seq = float(kv_bytes_per_sequence_at(rs, p + g)) + logit_bytes_per_sequence(rs)
    return weights + float(activation_bytes(rs, b, p)) + b * per_seq


def test_largest_batch_is_the_boundary_of_what_fits() -> None:
    rs, _ = resolve(MIXTRAL_2XH100)
    most = int(largest_batch(rs, 512, 128))
    assert most == 589
    assert _need(rs, most, 512, 128) <= usable_bytes(rs) < _need(rs, most + 1, 512, 128)


@given(p=st.integers(1, 32_000), g=st.integers(1, 700), chunk=st.sampled_from([1, 512, 8192, 65536]))
def test_largest_batch_boundary_property(p: int, g: int, chunk: int) -> None:
    rs, _ = resolve(replace(MIXTRAL_2XH100, prefill_chunk_tokens=chunk))
    most = int(largest_batch(rs, p, g))
    usable = usable_bytes(rs)
    assert most == 0 or _need(rs, most, p, g) <= usable * (1 + 1e-12)
    assert _need(rs, most + 1, p, g) > usable * (1 - 1e-12)


def test_vectorised_equals_scalar() -> None:
    rs, _ = resolve(MIXTRAL_2XH100)
    prompts = np.array([1, 16, 512, 4096, 30_000])
    gens = np.array([1, 128, 128, 700, 2_000])
    vector = largest_batch(rs, prompts, gens)
    assert vector.tolist() == [int(largest_batch(rs, int(p), int(g))) for p, g in zip(prompts, gens)]


def test_predict_fit_plan_and_sweep_agree() -> None:
    db = load_hardware_db()
    at_1 = predict(MIXTRAL_2XH100, hardware_db=db).memory
    at_600 = predict(replace(MIXTRAL_2XH100, batch=600), hardware_db=db).memory
    # 600 sequences = 2 waves (ceil(600 / 589)); batch 589 = 1 wave
    assert (at_1.max_batch, at_600.max_batch, at_600.waves) == (589, 589, 2)
    assert predict(replace(MIXTRAL_2XH100, batch=589), hardware_db=db).memory.waves == 1
    assert max_batch_at(MIXTRAL_2XH100, db) == 589
    configs, _ = _configs(["h100-sxm"], ["native"], replace(MIXTRAL_2XH100, gpus=None), db, [2])
    assert [c.max_batch for c in configs] == [589]
    grid = Grid(models=("mixtral-8x7b",), hardware=("h100-sxm",), gpus=(2,), batch=(1, 600))
    cols = evaluate_segment(grid, resolve_group(grid, grid.group_keys[0], db), 0, 2)
    assert cols["max_batch"].tolist() == [589, 589]
    assert cols["waves"].tolist() == [1, 2]


def test_a_context_the_kv_cache_cannot_hold_gives_zero() -> None:
    rs, _ = resolve(MIXTRAL_2XH100)
    # Mixtral KV: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 131,072 B/token, /2 ranks = 65,536 B;
    # 10^6 tokens = 65.5 GB per device > 72 GB usable - 23.4 GB weights
    assert int(largest_batch(rs, 10**6, 1)) == 0
