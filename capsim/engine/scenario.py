"""A scenario: what is being predicted. Every option is declared once here, with its help text; the CLI
builds its flags from these fields so the defaults of the library and of the command line never drift."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from capsim.errors import ScenarioError
from capsim.models.precision import KV_PRECISIONS, is_weight_dtype, weight_dtype_choices
from capsim.models.spec import ModelSpec

if TYPE_CHECKING:
    from capsim.engine.deployment import Deployment

MAX_DEVICES_PER_NODE = 4096
"""Devices in one node (one scale-up domain): the largest shipped system has 72 (GB200 NVL72)."""
MAX_DEGREE = 1 << 20
"""Pipeline stages, replicas and nodes capsim accepts."""
MAX_COUNT = 2**31 - 1
"""Largest batch or token count (int64 sums and products of them stay exact)."""
MAX_HOST_MEMORY_GB = 1e9
"""Largest host memory per node (an exabyte; far beyond any machine, and finite in bytes)."""


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Scenario:
    """One inference configuration. Lengths are in tokens; ``batch`` is concurrent sequences."""

    model: str | ModelSpec = _opt("mixtral-8x7b", "model id (capsim model list) or path to a config.json")
    hardware: str = _opt("h100-sxm", "accelerator or system id (capsim hardware list)")
    gpus: int | None = _opt(
        None,
        "devices used per node; default: all of a system, or for an accelerator id the fewest of 1, 2, 4, 8 "
        "that hold the model",
    )
    batch: int = _opt(1, "concurrent sequences decoded together")
    prompt_len: int = _opt(512, "prompt tokens per sequence")
    gen_len: int = _opt(128, "generated tokens per sequence (the first comes from prefill)")
    weight_dtype: str | None = _opt(
        None, "weight precision of the transformer weights; default: the model's published precisions"
    )
    kv_dtype: str = _opt("bf16", "KV-cache precision")
    routing: str = _opt(
        "default",
        "routing model for activated experts: default (the model family's router fitted "
        "to measured activated-expert counts, docs/routing.md), uniform (the upper bound), or see "
        "capsim trace",
    )
    prefill_chunk_tokens: int = _opt(8192, "tokens per prefill forward pass (chunked prefill)")
    seed: int = _opt(0, "seed for stochastic routers")
    mode: str = _opt(
        "gpu",
        "execution mode: gpu (all weights resident), offload (experts in host DRAM/SSD, "
        "fetched into a GPU expert cache), cpu-experts (experts computed on the CPU), cpu (CPU only)",
    )
    expert_layers: str | None = _opt(
        None, "MoE layers whose routed experts leave the GPU, FIRST:LAST (default all)"
    )
    expert_tier: str = _opt("dram", "where offloaded experts live: dram or ssd")
    cache_policy: str = _opt("lru", "GPU expert-cache policy for offload: lru, lfu or oracle (Belady)")
    prefetch: bool = _opt(
        True, "offload: overlap expert copies with compute (optimistic) instead of serialising"
    )
    prefetch_accuracy: float = _opt(
        1.0,
        "offload with prefetch: share of the fetched experts predicted ahead of use (overlapped); the rest "
        "are fetched on demand, serially (0.86 for next-layer gate prediction, docs/deployment.md)",
    )
    host_copy: str = _opt(
        "pinned", "offload: host buffers experts are copied from, pinned or pageable (about half the rate)"
    )
    numa: str = _opt(
        "single",
        "CPU execution over sockets: single (one socket), replicate (a weight copy per socket), "
        "interleave (pages spread over the sockets), tp (tensor parallel across sockets)",
    )
    threads: int | None = _opt(
        None, "CPU threads (physical cores) computing; default: every core of the sockets used"
    )
    host_memory_gb: float | None = _opt(
        None, "host DRAM capacity in GB when the system entry does not give it"
    )
    placement: str | None = _opt(
        None,
        "where routed experts live, e.g. auto, gpu, experts:dram, experts[10:60]:dram, cold-experts:32:ssd, "
        "comma-separated clauses applied in order (docs/deployment.md); experts off the GPU imply --mode offload",
    )
    ep: int = _opt(
        1,
        "expert-parallel degree: 1 (experts tensor-parallel) or any E dividing tp x attention-dp and the "
        "expert slots (E groups of whole experts, each expert split over tp x attention-dp / E devices; "
        "all-to-all dispatch)",
    )
    attention_dp: int = _opt(
        1,
        "attention data-parallel ranks inside a replica: each holds the attention weights and "
        "1/N of the sequences and their KV cache; the MoE layers span all tp x N devices "
        "(SGLang --enable-dp-attention, TensorRT-LLM attention DP)",
    )
    redundant_experts: int = _opt(0, "extra expert replicas placed EPLB-style over the EP groups (--ep > 1)")
    all_to_all: str = _opt(
        "nccl",
        "dispatch/combine kernels for --ep > 1: nccl, or deepep (DeepEP normal kernels "
        "for prefill, low-latency kernels for decode)",
    )
    two_batch_overlap: bool = _opt(
        False,
        "decode as two micro-batches whose dispatch/combine overlaps the other's "
        "compute (SGLang --enable-two-batch-overlap); needs --ep > 1 or --attention-dp > 1",
    )
    spec: str | None = _opt(
        None,
        "speculative decoding: mtp:K (the model's multi-token-prediction module drafts K "
        "tokens) or draft:MODEL:K (a draft model drafts K tokens); the target verifies them in one step",
    )
    acceptance: float | None = _opt(
        None,
        "probability that a draft token is accepted (0-1); default for mtp: the "
        "DeepSeek-V3 report's 0.85-0.90 (0.875); required for draft models",
    )
    tp: int | None = _opt(
        None, "tensor-parallel degree, inside one node; default: the devices left by --pp and --dp"
    )
    pp: int = _opt(1, "pipeline-parallel stages (layers split; micro-batches in flight)")
    dp: int = _opt(1, "data-parallel replicas; --batch is split over them")
    nodes: int = _opt(1, "nodes, joined by the system's scale-out network (or --network)")
    network: str | None = _opt(
        None, "link id joining the nodes (e.g. ib-ndr, roce-400g); default: the system's"
    )
    engine: str | None = _opt(
        None,
        "serving engine whose execution costs apply (capsim/engine/engines.toml: tensorrt-llm, vllm, sglang, "
        "transformers, moe-infinity; FAMILY@RELEASE such as vllm@0.7.3 picks the profile fitted on that "
        "release): kernel latency with CUDA graphs, host dispatch when eager, compute fraction; default: "
        "the device class's",
    )
    expert_dtype: str | None = _opt(
        None,
        "weight precision of the routed experts only (e.g. int4 with bf16 attention); default: --weight-dtype",
    )

    def deployment(self) -> Deployment:
        """The execution mode and expert placement as a :class:`capsim.engine.deployment.Deployment`."""
        from capsim.engine.deployment import Deployment

        return Deployment(
            mode=self.mode,
            expert_tier=self.expert_tier,
            cache_policy=self.cache_policy,
            prefetch=self.prefetch,
            prefetch_accuracy=self.prefetch_accuracy,
            host_copy=self.host_copy,
            numa=self.numa,
            host_memory_gb=self.host_memory_gb,
            placement=self.placement,
            threads=self.threads,
        )

    def validate(self) -> None:
        """Raise :class:`ScenarioError` for values that cannot describe a real run."""
        self.deployment().validate()
        checks = (
            (self.batch, "batch", 1),
            (self.prompt_len, "prompt length", 1),
            (self.gen_len, "generated length", 1),
            (self.prefill_chunk_tokens, "prefill chunk", 1),
        )
        for value, label, minimum in checks:
            if not isinstance(value, int) or value < minimum:
                raise ScenarioError(f"{label} must be an integer >= {minimum}, got {value!r}")
        for value, label in (
            (self.ep, "ep"),
            (self.pp, "pp"),
            (self.dp, "dp"),
            (self.nodes, "nodes"),
            (self.attention_dp, "attention-dp"),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScenarioError(f"{label} must be an integer >= 1, got {value!r}")
        if not isinstance(self.redundant_experts, int) or self.redundant_experts < 0:
            raise ScenarioError(f"redundant-experts must be an integer >= 0, got {self.redundant_experts!r}")
        from capsim.engine.layout import ALL_TO_ALL_BACKENDS

        if self.all_to_all not in ALL_TO_ALL_BACKENDS:
            raise ScenarioError(
                f"unknown --all-to-all {self.all_to_all!r}; choose one of {', '.join(ALL_TO_ALL_BACKENDS)}"
            )
        if self.spec is not None:
            from capsim.engine.speculative import parse_spec

            parse_spec(self.spec, self.acceptance)
        elif self.acceptance is not None:
            raise ScenarioError(
                "--acceptance is the draft tokens' acceptance rate; give --spec mtp:K or draft:MODEL:K"
            )
        if self.tp is not None and (not isinstance(self.tp, int) or self.tp < 1):
            raise ScenarioError(f"tp must be an integer >= 1, got {self.tp!r}")
        if self.gpus is not None and (not isinstance(self.gpus, int) or self.gpus < 1):
            raise ScenarioError(f"gpus must be an integer >= 1, got {self.gpus!r}")
        # bounds before anything is built: a node of 2^31 devices would be a graph of 2^31 nodes
        bounds: tuple[tuple[int | None, str, int], ...] = (
            (self.gpus, "--gpus", MAX_DEVICES_PER_NODE),
            (self.tp, "--tp", MAX_DEVICES_PER_NODE),
            (self.ep, "--ep", MAX_DEVICES_PER_NODE),
            (self.pp, "--pp", MAX_DEGREE),
            (self.dp, "--dp", MAX_DEGREE),
            (self.nodes, "--nodes", MAX_DEGREE),
        )
        for degree, label, most in bounds:
            if isinstance(degree, int) and degree > most:
                raise ScenarioError(
                    f"{label} {degree:,} is beyond what capsim models (at most {most:,}); use a smaller value"
                )
        tp, pp, dp, adp, nodes = self.tp, self.pp, self.dp, self.attention_dp, self.nodes
        if tp is not None and all(isinstance(v, int) for v in (tp, pp, dp, adp, nodes)):
            per_node = -(-tp * adp * pp * dp // nodes)
            if per_node > MAX_DEVICES_PER_NODE:
                raise ScenarioError(
                    f"--tp {tp} x --attention-dp {adp} x --pp {pp} x --dp {dp} over {nodes} node(s) = {per_node:,} "
                    f"devices per node, beyond what capsim models (at most {MAX_DEVICES_PER_NODE:,}); use more "
                    "--nodes or smaller degrees"
                )
        for value, label in (
            (self.batch, "batch"),
            (self.prompt_len, "prompt length"),
            (self.gen_len, "generated length"),
            (self.prefill_chunk_tokens, "prefill chunk"),
        ):
            if isinstance(value, int) and value > MAX_COUNT:
                raise ScenarioError(f"{label} {value:,} is beyond what capsim models (at most {MAX_COUNT:,})")
        if self.host_memory_gb is not None and not (0 < self.host_memory_gb < float("inf")):
            raise ScenarioError(
                f"--host-memory-gb must be a positive number of GB, got {self.host_memory_gb!r}"
            )
        if self.host_memory_gb is not None and self.host_memory_gb > MAX_HOST_MEMORY_GB:
            # 1.8e308 GB is finite, but not in bytes: the expert-slot count became inf // x = NaN (fuzz run)
            raise ScenarioError(
                f"--host-memory-gb {self.host_memory_gb:g} is beyond what capsim models "
                f"(at most {MAX_HOST_MEMORY_GB:,.0f} GB)"
            )
        for dtype, flag in ((self.weight_dtype, "weight"), (self.expert_dtype, "expert")):
            if dtype is not None and not is_weight_dtype(dtype):
                raise ScenarioError(f"unknown {flag} dtype {dtype!r}; choose one of {weight_dtype_choices()}")
        if self.kv_dtype.lower() not in KV_PRECISIONS:
            raise ScenarioError(
                f"unknown KV-cache dtype {self.kv_dtype!r}; choose one of {', '.join(KV_PRECISIONS)}"
            )

    @classmethod
    def help_for(cls, name: str) -> str:
        """The help text declared for field ``name`` (used by the CLI)."""
        for f in fields(cls):
            if f.name == name:
                return str(f.metadata.get("help", ""))
        raise KeyError(name)
