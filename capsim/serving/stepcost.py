"""The time and traffic of one continuous-batching step, exactly as :func:`capsim.engine.passes.mixed_passes` says,
at a few microseconds per step.

A step is one forward pass of T tokens from S sequences of which ``lm`` emit a token; its attention scores
P query-key pairs (prefill-equivalent, summed over layers) and reads K KV tokens (summed over layers). In the
engine every operation but the attention core is a part that depends on T (and S, through the activated
experts) plus a part that depends on ``lm`` only (the lm_head, and an engine's per-sequence overhead
``per_sequence_s``); the attention core is one roofline charge

    t_attn = max(a · P, b · (K + L·T))

(FLOPs linear in the pairs, bytes linear in the tokens read plus the T·L tokens written). So

    t_step(T, S, lm, P, K) = base(T, S) + emit(lm) + max(a·P, b·(K + L·T))

with ``base`` and ``emit`` (``lm_time``) tabulated once from the engine over every T and ``lm`` a run can see, and
a, b read from the engine's own attention charge. An eagerly executed engine (capsim.engine.engines: PyTorch
eager, as Hugging Face transformers and MoE-Infinity run MoE blocks) dispatches every op from the host while the
device runs the ones already queued, so its step takes

    t_step = max(t_device, host(T, S) + step overhead)

with t_device the sum above and host(T, S) = MoE layers × moe_host_s + expert_host_s × activated experts (a
function of the step's tokens and sequences only, tabulated like ``base``): the host term is a maximum over the
whole step, not an operation that adds, so it is kept out of ``base`` (capsim.engine.roofline.pass_times). Nothing here re-derives a formula: every table entry and
coefficient comes from a ``mixed_passes`` evaluation, and :meth:`StepCost.check` compares the decomposition
with ``mixed_passes`` on random steps when the model is built (a changed engine that breaks the structure
fails loudly instead of silently disagreeing with ``predict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capsim.engine.passes import attention_window_rows, mixed_passes
from capsim.engine.resolved import ResolvedScenario
from capsim.engine.roofline import PassTimes
from capsim.errors import ScenarioError

_PROBE_PAIRS = 1.0e6
_PROBE_KV = 1.0e6
_HOST_OP = "host_dispatch"
"""The op under which pass_times charges the unhidden host time of eager execution (max(host, device) − device)."""


def _host_seconds(cost: PassTimes) -> np.ndarray | None:
    """Eager execution's host dispatch per step (the ``host`` of pass_times' (host, device) entry); None when the
    engine replays graphs (no host term)."""
    return next((np.asarray(host) for op, host, _ in cost.op_times if op == _HOST_OP), None)


def _table_seconds(cost: PassTimes) -> np.ndarray:
    """Step time without the attention core (charged from a and b) and the unhidden host time (a max)."""
    ops = [t for op, t in cost.time_by_op.items() if op not in ("attn_core", _HOST_OP)]
    return np.asarray(np.sum(ops, axis=0), dtype=np.float64)


def _device_seconds(cost: PassTimes) -> np.ndarray:
    """Step time without the unhidden host time: the sum of every device op and the overheads."""
    return np.asarray(cost.time - cost.time_by_op.get(_HOST_OP, 0.0), dtype=np.float64)


@dataclass
class StepTraffic:
    """Per-step bytes and FLOPs for the utilisation metrics (whole replica), same decomposition as time."""

    weight_sparse: np.ndarray
    weight_dense: np.ndarray
    flops_sparse: np.ndarray
    flops_dense: np.ndarray


class StepCost:
    """Step time (seconds) of continuous-batching steps of up to ``max_tokens`` tokens and ``max_lm`` emitting
    sequences on the resolved scenario ``rs``."""

    def __init__(self, rs: ResolvedScenario, max_tokens: int, max_lm: int) -> None:
        self.rs = rs
        self.max_tokens = int(max_tokens)
        self.max_lm = int(max_lm)
        windows, counts = attention_window_rows(rs.model)
        self.windows = windows
        self.layer_counts = counts
        self.num_layers = float(counts.sum())
        rows = windows.shape[0]
        tokens = np.arange(1, self.max_tokens + 1, dtype=np.float64)
        zeros = np.zeros((rows, tokens.shape[0]))
        # base(T): everything but the attention core, with S = T (decode-like routing) and no emitting sequence
        cost = mixed_passes(rs, tokens, tokens, np.zeros_like(tokens), zeros, zeros, zeros)
        self.base = np.concatenate([[np.nan], _table_seconds(cost)])  # index by T
        # eager execution: host(T) + step overhead, the floor the step's device time is compared with
        host = _host_seconds(cost)
        self.host: np.ndarray | None = (
            None if host is None else np.concatenate([[np.nan], host + rs.rates.step_overhead_s])
        )
        # traffic at P = K = 0, lm = 0: the attention core adds FLOPs a_f·P and reads K tokens' KV bytes
        self._w_sparse = np.concatenate([[np.nan], cost.weight_bytes_sparse])
        self._w_dense = np.concatenate([[np.nan], cost.weight_bytes_dense])
        self._f_sparse = np.concatenate([[np.nan], cost.flops_sparse])
        self._f_dense = np.concatenate([[np.nan], cost.flops_dense])
        self.metric_peak_flops = cost.metric_peak_flops
        # what lm emitting sequences add, lm = 0..max_lm (T = 1): the lm_head and the engine's per-sequence
        # overhead (capsim.engine.roofline: per_sequence_s), which depend on lm only
        lms = np.arange(0, self.max_lm + 1, dtype=np.float64)
        ones = np.ones_like(lms)
        z = np.zeros((rows, lms.shape[0]))
        lm_cost = mixed_passes(rs, ones, ones, lms, z, z, z)
        lm_seconds = _table_seconds(lm_cost)
        self.lm_time = lm_seconds - lm_seconds[0]
        base_w = lm_cost.weight_bytes_sparse[0]
        self._lm_w_sparse = lm_cost.weight_bytes_sparse - base_w
        self._lm_w_dense = lm_cost.weight_bytes_dense - lm_cost.weight_bytes_dense[0]
        self._lm_f_sparse = lm_cost.flops_sparse - lm_cost.flops_sparse[0]
        self._lm_f_dense = lm_cost.flops_dense - lm_cost.flops_dense[0]
        # attention coefficients from the engine's own attn_core charge: (t_compute, t_memory) at a probe
        probe = mixed_passes(
            rs,
            np.array([1.0]),
            np.array([1.0]),
            np.array([0.0]),
            np.zeros((rows, 1)),
            np.full((rows, 1), _PROBE_PAIRS),
            np.full((rows, 1), _PROBE_KV),
        )
        t_cmp, t_mem = next((tc, tm) for op, tc, tm in probe.op_times if op == "attn_core")
        self.a = float(t_cmp[0]) / (_PROBE_PAIRS * self.num_layers)
        self.b = float(t_mem[0]) / ((_PROBE_KV + 1.0) * self.num_layers)
        self.kv_bytes_per_token_read = float(probe.kv_read_bytes[0]) / (_PROBE_KV * self.num_layers)
        self.flops_per_pair = (float(probe.flops_sparse[0]) - self._f_sparse[1]) / (
            _PROBE_PAIRS * self.num_layers
        )
        self.sequence_dependent = self._routing_depends_on_sequences()
        self._extra: dict[tuple[int, int], tuple[float, float, float, float]] = {}
        self.check()

    def _routing_depends_on_sequences(self) -> bool:
        """True when the router's activated experts for T tokens depend on how many sequences they come from
        (correlated routers): then base(T, S) is evaluated per (T, S) on demand."""
        router = self.rs.router
        if router is None:
            return False
        t = np.array([2.0, 7.0, 64.0, float(max(self.max_tokens, 2))])
        return not np.allclose(
            router.activated_per_layer(t),
            router.activated_per_layer(t, sequences=np.ones(4)),
            rtol=1e-12,
            atol=0.0,
        )

    def _sequence_extra(self, tokens: int, sequences: int) -> tuple[float, float, float, float]:
        """(device time, sparse weight bytes, sparse FLOPs, host dispatch) of (T, S) − (T, T) for correlated
        routers (host dispatch: 0 unless the engine runs eagerly)."""
        key = (tokens, sequences)
        hit = self._extra.get(key)
        if hit is None:
            rows = self.windows.shape[0]
            z = np.zeros((rows, 2))
            t = np.array([float(tokens)] * 2)
            c = mixed_passes(self.rs, t, np.array([float(sequences), float(tokens)]), np.zeros(2), z, z, z)
            device = _device_seconds(c)
            host = _host_seconds(c)
            hit = (
                float(device[0] - device[1]),
                float(c.weight_bytes_sparse[0] - c.weight_bytes_sparse[1]),
                float(c.flops_sparse[0] - c.flops_sparse[1]),
                0.0 if host is None else float(host[0] - host[1]),
            )
            self._extra[key] = hit
        return hit

    def time(self, tokens: int, sequences: int, lm: int, pairs: float, kv: float) -> float:
        """Seconds of one step (``pairs``, ``kv``: summed over layers, prefill-equivalent pairs)."""
        t = self.base[tokens] + self.lm_time[lm]
        attn_c = self.a * pairs
        attn_m = self.b * (kv + self.num_layers * tokens)
        t += attn_c if attn_c > attn_m else attn_m  # (a conditional, not max(): this runs once per step)
        host_extra = 0.0
        if self.sequence_dependent and sequences != tokens:
            extra = self._sequence_extra(tokens, sequences)
            t += extra[0]
            host_extra = extra[3]
        if self.host is not None:
            host = self.host[tokens] + host_extra
            if host > t:  # eager: the host's dispatch binds the step
                t = host
        return float(t)

    def times(self, tokens: np.ndarray, lm: np.ndarray, pairs: np.ndarray, kv: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`time` for steps whose sequences equal their tokens or whose router ignores S."""
        attn = np.maximum(self.a * pairs, self.b * (kv + self.num_layers * tokens))
        t = self.base[tokens] + self.lm_time[lm] + attn
        if self.host is not None:
            t = np.maximum(t, self.host[tokens])
        return np.asarray(t, dtype=np.float64)

    def traffic(self, tokens: np.ndarray, lm: np.ndarray, pairs: np.ndarray, kv: np.ndarray) -> StepTraffic:
        """Bytes and FLOPs of steps (vectorised); the KV bytes read are separate (:attr:`kv_bytes_per_token_read`)."""
        f_attn = self.flops_per_pair * pairs
        return StepTraffic(
            weight_sparse=self._w_sparse[tokens] + self._lm_w_sparse[lm],
            weight_dense=self._w_dense[tokens] + self._lm_w_dense[lm],
            flops_sparse=self._f_sparse[tokens] + self._lm_f_sparse[lm] + f_attn,
            flops_dense=self._f_dense[tokens] + self._lm_f_dense[lm] + f_attn,
        )

    def check(self, samples: int = 24, seed: int = 0) -> float:
        """Largest relative difference between :meth:`time` and ``mixed_passes`` over random steps; raises
        if it exceeds 1e-9 (the engine changed in a way this decomposition does not capture)."""
        rng = np.random.default_rng(seed)
        rows = self.windows.shape[0]
        tokens = rng.integers(1, self.max_tokens + 1, samples)
        seqs = np.minimum(tokens, rng.integers(1, self.max_lm + 1, samples))
        lm = np.minimum(seqs, rng.integers(0, self.max_lm + 1, samples))
        d_pairs = rng.uniform(0, 4e6, (rows, samples)) * (rng.random(samples) < 0.7)
        p_pairs = rng.uniform(0, 4e7, (rows, samples)) * (rng.random(samples) < 0.5)
        kv = rng.uniform(0, 4e6, (rows, samples))
        ref = mixed_passes(
            self.rs, tokens.astype(float), seqs.astype(float), lm.astype(float), d_pairs, p_pairs, kv
        )
        ratio = self.decode_pair_ratio()
        lw = self.layer_counts[:, None]
        mine = np.array(
            [
                self.time(
                    int(tokens[i]),
                    int(seqs[i]),
                    int(lm[i]),
                    float((lw[:, 0] * (p_pairs[:, i] + ratio * d_pairs[:, i])).sum()),
                    float((lw[:, 0] * kv[:, i]).sum()),
                )
                for i in range(samples)
            ]
        )
        err = float(np.max(np.abs(mine - ref.time) / ref.time))
        if err > 1e-9:
            raise ScenarioError(
                f"serving step model differs from the engine by {err:.2e} (relative) on {self.rs.model.id}; "
                "this engine configuration is not supported by capsim serve"
            )
        return err

    def decode_pair_ratio(self) -> float:
        """FLOPs of a decode pair over a prefill pair (1 except MLA's absorbed decode; engine.mixed_passes)."""
        from capsim.engine.roofline import attention_dims

        d_qk, d_v = attention_dims(self.rs.model, "decode")
        p_qk, p_v = attention_dims(self.rs.model, "prefill")
        return (d_qk + d_v) / (p_qk + p_v)
