"""``capsim model list`` and ``capsim model show``: the model database, formatted (no computation here).

Counts come from :class:`capsim.models.spec.ModelSpec`, published figures from :mod:`capsim.models.db`; the JSON is
built from the same dictionaries as the text, never scraped from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from capsim.cli._console import out_console, print_json
from capsim.errors import ScenarioError
from capsim.models.db import PublishedCounts, load_model_db, resolve_model
from capsim.models.ingest_hf import load_config_file
from capsim.models.precision import kv_precision, weight_precision
from capsim.models.spec import WEIGHT_GROUPS, ModelSpec
from capsim.units import GB, KIB, MB

model_app = typer.Typer(
    help="The model database: list the models, show one model's parameters, KV cache and weight bytes.",
    no_args_is_help=True,
)

_KV_CONTEXTS: tuple[int, ...] = (4096, 32768, 131072)
"""Context lengths at which windowed models' KV cache is shown (plus the model's max context)."""


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group to the top-level app."""
    app.add_typer(model_app, name="model")


# ---- plain data, shared by text and JSON -----------------------------------------------------------------
def _experts_label(spec: ModelSpec) -> str:
    if spec.moe is None:
        return "-"
    label = f"{spec.moe.top_k} of {spec.moe.num_experts}"
    if spec.moe.num_shared_experts:
        label += f" +{spec.moe.num_shared_experts}"
    return label


def _layers_label(spec: ModelSpec) -> str:
    return f"{spec.num_layers} ({spec.num_moe_layers})"


def _sig4(n: float) -> str:
    """Billions to 4 significant figures (671.0, 46.70 -> 46.7, 3.608)."""
    return f"{n / 1e9:.4g}"


def _attention_label(spec: ModelSpec) -> str:
    a = spec.attention
    if a.kind == "mla":
        q = f"q_lora {a.q_lora_rank}" if a.q_lora_rank else "no q compression"
        return (
            f"MLA, {a.num_heads} heads, KV latent {a.kv_lora_rank} + RoPE key {a.qk_rope_head_dim} "
            f"per token per layer, {q}"
        )
    kind = "MHA" if a.num_kv_heads == a.num_heads else "GQA"
    label = f"{kind}, {a.num_heads} query / {a.num_kv_heads} KV heads, head_dim {a.head_dim}"
    extras = [
        name
        for name, on in (
            ("q/k/v bias", a.qkv_bias),
            ("o bias", a.o_bias),
            ("sinks", a.sinks),
            ("qk-norm", a.qk_norm),
        )
        if on
    ]
    if extras:
        label += " (" + ", ".join(extras) + ")"
    return label


def _windows_label(spec: ModelSpec) -> str | None:
    windows = [w for w in spec.layer_windows if w is not None]
    if not windows:
        return None
    sizes = sorted(set(windows))
    return (
        f"{len(windows)} of {spec.num_layers} layers {spec.window_kind} "
        f"(window {', '.join(f'{w:,}' for w in sizes)} tokens)"
    )


def _architecture(spec: ModelSpec) -> dict[str, Any]:
    moe = spec.moe
    return {
        "num_layers": spec.num_layers,
        "num_moe_layers": spec.num_moe_layers,
        "num_dense_layers": spec.num_dense_layers,
        "hidden_size": spec.hidden_size,
        "vocab_size": spec.vocab_size,
        "max_context": spec.max_context,
        "attention": _attention_label(spec),
        "attention_kind": spec.attention.kind,
        "kv_elements_per_token_per_layer": spec.attention.kv_elements_per_token(),
        "windowed_layers": _windows_label(spec),
        "num_experts": moe.num_experts if moe else 0,
        "top_k": moe.top_k if moe else 0,
        "num_shared_experts": moe.num_shared_experts if moe else 0,
        "expert_intermediate_size": moe.expert_intermediate_size if moe else 0,
        "shared_intermediate_size": moe.shared_intermediate_size if moe else 0,
        "dense_intermediate_size": spec.dense_intermediate_size,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }


def _kv_contexts(spec: ModelSpec) -> list[int]:
    if not any(w is not None for w in spec.layer_windows):
        return []
    contexts = [c for c in _KV_CONTEXTS if spec.max_context is None or c <= spec.max_context]
    if spec.max_context is not None and spec.max_context not in contexts:
        contexts.append(spec.max_context)
    return contexts


def _show_payload(
    spec: ModelSpec, published: PublishedCounts | None, weight_dtype: str | None, kv_dtype: str
) -> dict[str, Any]:
    weight_bytes = spec.weight_bytes_by_group(weight_dtype)
    return {
        "id": spec.id,
        "name": spec.name,
        "family": spec.family,
        "source": spec.source,
        "architecture": _architecture(spec),
        "total_params": spec.total_params,
        "active_params": spec.active_params,
        "params_by_group": spec.params_by_group(),
        "active_params_by_group": spec.active_params_by_group(),
        "kv_dtype": kv_precision(kv_dtype).name,
        "kv_cache_bytes_per_token": spec.kv_cache_bytes_per_token(kv_dtype),
        "kv_cache_bytes_per_token_at_context": {
            str(c): spec.kv_cache_bytes_per_token(kv_dtype, context=c) for c in _kv_contexts(spec)
        },
        "weight_dtypes": spec.weight_dtypes(weight_dtype),
        "weight_bytes_by_group": {g: weight_bytes[g] for g in WEIGHT_GROUPS},
        "weight_bytes_total": sum(weight_bytes.values()),
        "published": published.to_dict(spec) if published else None,
        "notes": list(spec.notes),
    }


# ---- text formatting -------------------------------------------------------------------------------------
def _billions(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:,.2f}"


def _published_b(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:g}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:+.2f} %"


def _published_lines(p: dict[str, Any]) -> list[str]:
    lines = [f"published ({p['source']}):"]
    total_soft = " (?)" if p["total_soft"] else ""
    lines.append(
        f"  total:  {_published_b(p['total_params'])} B{total_soft}; "
        f"capsim differs by {_pct(p['total_rel_diff'])}"
        if p["total_params"]
        else "  total:  -"
    )
    if p["active_params"] is not None:
        basis = "with" if p["active_counts_embedding"] else "without"
        lines.append(
            f"  active: {_published_b(p['active_params'])} B, counted {basis} the embedding table "
            f"({p['convention_basis']}); capsim on that basis {p['capsim_active_params_comparable']:,} "
            f"({_pct(p['active_rel_diff'])})"
        )
    elif p["active_range"]:
        lo, hi = p["active_range"]
        lines.append(
            f"  active: {_published_b(lo)}-{_published_b(hi)} B (?) (soft range); capsim "
            f"{p['capsim_active_params_comparable']:,} ({_billions(p['capsim_active_params_comparable'])} B)"
        )
    if p["note"]:
        lines.append(f"  note: {p['note']}")
    return lines


def _show_lines(d: dict[str, Any]) -> list[str]:
    arch = d["architecture"]
    lines = [f"{d['name']}  (id {d['id']}, family {d['family']})", f"source: {d['source']}", "architecture:"]
    lines.append(
        f"  layers:      {arch['num_layers']} ({arch['num_moe_layers']} MoE, "
        f"{arch['num_dense_layers']} dense)"
    )
    ctx = f"{arch['max_context']:,}" if arch["max_context"] else "-"
    lines.append(f"  hidden size: {arch['hidden_size']:,}; vocab {arch['vocab_size']:,}; max context {ctx}")
    lines.append(f"  attention:   {arch['attention']}")
    if arch["windowed_layers"]:
        lines.append(f"  windows:     {arch['windowed_layers']}")
    if arch["num_experts"]:
        moe = (
            f"  MoE:         {arch['num_experts']} routed experts, top-{arch['top_k']}, "
            f"expert FFN width {arch['expert_intermediate_size']:,}"
        )
        if arch["num_shared_experts"]:
            moe += (
                f"; {arch['num_shared_experts']} shared expert(s), total width "
                f"{arch['shared_intermediate_size']:,}"
            )
        lines.append(moe)
    if arch["num_dense_layers"]:
        lines.append(f"  dense FFN:   width {arch['dense_intermediate_size']:,}")
    lines.append("parameters:")
    lines.append(f"  total params:  {d['total_params']:,} ({_billions(d['total_params'])} B)")
    lines.append(
        f"  active params: {d['active_params']:,} ({_billions(d['active_params'])} B) per token, "
        "input-embedding table excluded"
    )
    kv = d["kv_cache_bytes_per_token"]
    lines.append(f"KV cache ({d['kv_dtype']}):")
    lines.append(f"  kv_cache_bytes_per_token: {kv:,.0f} ({kv / KIB:,.1f} KiB), all layers at full length")
    for ctx_s, per_token in d["kv_cache_bytes_per_token_at_context"].items():
        c = int(ctx_s)
        lines.append(
            f"  at context {c:,}: {per_token:,.0f} B per token on average, "
            f"{per_token * c / MB:,.1f} MB per sequence"
        )
    lines.append("weights:")
    lines.append(f"  {'group':<15} {'dtype':<6} {'params':>17} {'GB':>10}")
    for g in WEIGHT_GROUPS:
        lines.append(
            f"  {g:<15} {d['weight_dtypes'][g]:<6} {d['params_by_group'][g]:>17,} "
            f"{d['weight_bytes_by_group'][g] / GB:>10,.3f}"
        )
    lines.append(f"  {'total':<15} {'':<6} {d['total_params']:>17,} {d['weight_bytes_total'] / GB:>10,.3f}")
    if d["published"]:
        lines.extend(_published_lines(d["published"]))
    if d["notes"]:
        lines.append("notes:")
        lines.extend(f"  - {n}" for n in d["notes"])
    return lines


# ---- commands --------------------------------------------------------------------------------------------
@model_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array on stdout")] = False,
) -> None:
    """List the models in the database: layer/expert structure and parameter counts (vs published)."""
    db = load_model_db()
    rows: list[dict[str, Any]] = []
    for model_id in db.ids():
        spec, pub = db.get(model_id), db.published(model_id)
        rows.append(
            {
                "id": model_id,
                "name": spec.name,
                "family": spec.family,
                "num_layers": spec.num_layers,
                "num_moe_layers": spec.num_moe_layers,
                "num_experts": spec.moe.num_experts if spec.moe else 0,
                "top_k": spec.moe.top_k if spec.moe else 0,
                "num_shared_experts": spec.moe.num_shared_experts if spec.moe else 0,
                "total_params": spec.total_params,
                "active_params": spec.active_params,
                "published_total_params": pub.total_params if pub else None,
                "published_active_params": pub.active_params if pub else None,
                "published_active_counts_embedding": pub.active_counts_embedding if pub else None,
                "published_active_range": list(pub.active_range) if pub and pub.active_range else None,
                "total_rel_diff": pub.total_rel_diff(spec) if pub else None,
                "active_rel_diff": pub.active_rel_diff(spec) if pub else None,
                "_spec": spec,
            }
        )
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "_spec"} for r in rows])
        return
    table = Table(
        title="capsim model database (parameters in billions)",
        box=None,
        pad_edge=False,
        collapse_padding=True,
    )
    for header in ("id", "family", "layers", "experts"):
        table.add_column(header, no_wrap=True)
    for header in ("total", "pub.", "active", "pub."):
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        pub_active = _published_b(r["published_active_params"])
        if r["published_active_counts_embedding"] and r["published_active_params"] is not None:
            pub_active += "*"
        elif r["published_active_range"] is not None:
            lo, hi = r["published_active_range"]
            pub_active = f"{_published_b(lo)}-{_published_b(hi)}?"
        table.add_row(
            r["id"],
            r["family"],
            _layers_label(r["_spec"]),
            _experts_label(r["_spec"]),
            _sig4(r["total_params"]),
            _published_b(r["published_total_params"]),
            _sig4(r["active_params"]),
            pub_active,
        )
    console = out_console()
    console.print(table)
    console.print(
        "layers: all (MoE); experts: top-k of E (+shared); active: per token without the input-embedding "
        "table; * = the published figure includes it (capsim model show ID compares like with like); "
        "? = soft (uncertain). "
        "Published counts and sources: model_db/published.toml",
        soft_wrap=True,
    )


@model_app.command("show")
def show_model(
    model: Annotated[
        str | None, typer.Argument(help="model id (capsim model list) or a config.json path")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="a Hugging Face config.json to load")
    ] = None,
    family: Annotated[
        str | None, typer.Option("--family", help="force the family of --config (e.g. grok1)")
    ] = None,
    weight_dtype: Annotated[
        str | None,
        typer.Option(
            "--weight-dtype",
            help="weights of attention and experts/FFNs at this precision, router/norms/embeddings/lm_head bf16 "
            "(default: the model's native dtypes)",
        ),
    ] = None,
    kv_dtype: Annotated[str, typer.Option("--kv-dtype", help="KV-cache precision")] = "bf16",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """Show one model: architecture, total/active parameters, KV-cache bytes per token, weight bytes per group
    and the published counts with capsim's relative difference."""
    if weight_dtype is not None:
        weight_precision(weight_dtype)  # fail on a bad name before any work
    kv_precision(kv_dtype)
    published: PublishedCounts | None = None
    if config is not None:
        spec = load_config_file(config, model_id=model, family=family)
    elif model is None:
        raise typer.BadParameter(
            "give a model id (see 'capsim model list') or --config PATH", param_hint="MODEL"
        )
    else:
        spec = resolve_model(model, family=family)
        db = load_model_db()
        from_db = spec.id in db and Path(model).suffix != ".json" and not Path(model).exists()
        if from_db and family is not None:
            # resolve_model only applies --family to files: silently showing the database family misleads
            raise ScenarioError(
                f"--family applies to a config.json; {model!r} is a database model of family {spec.family!r} "
                "(drop --family, or give --config PATH)"
            )
        if from_db:
            published = db.published(spec.id)
    payload = _show_payload(spec, published, weight_dtype, kv_dtype)
    if as_json:
        print_json(payload)
        return
    console = out_console()
    for line in _show_lines(payload):
        console.print(line, markup=False, soft_wrap=True)
