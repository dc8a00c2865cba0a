"""``capsim trace synth|import-sglang|stats|fit|list``: routing traces, formatted (the analytics live in
capsim.routing).

``synth`` samples a synthetic router into a trace file; ``import-sglang`` converts SGLang's per-token expert
recorder dump into one; ``stats`` prints per-layer activation, load
imbalance and reuse distance as a rich table (or ``--json``) and writes a layers x experts heatmap PNG;
``fit`` prints the router parameters estimated from a trace; ``list`` shows the shipped traces.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from capsim.errors import ScenarioError, TraceError

if TYPE_CHECKING:  # the routing stack loads when a trace command runs, not at start-up
    from capsim.models.spec import ModelSpec
    from capsim.routing.stats import TraceStats
from capsim.cli._console import out_console, print_json

trace_app = typer.Typer(
    help="Routing traces: synthesise one, import SGLang's per-token recorder dump, show its statistics and "
    "heatmap, fit router parameters.",
    no_args_is_help=True,
)

_DEFAULT_STEPS: tuple[int, ...] = (1, 8, 32, 128)


def register(app: typer.Typer) -> None:
    """Add the ``trace`` command group to the top-level app."""
    app.add_typer(trace_app, name="trace")


def _resolve_model(model_id: str) -> ModelSpec:
    """Look a model up by id or config.json path (indirection so tests can substitute a tiny model)."""
    from capsim.models.db import resolve_model

    return resolve_model(model_id)


# ---- synth ---------------------------------------------------------------------------------------------
@trace_app.command("synth")
def synth(
    model: Annotated[str, typer.Option("--model", "-m", help="Model id or config.json path.")],
    router: Annotated[
        str, typer.Option("--router", "-r", help="Synthetic router spec, e.g. zipf:1.2 (docs/routing.md).")
    ],
    tokens: Annotated[int, typer.Option("--tokens", "-n", help="Tokens to sample (one sequence).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Trace file to write (.npz).")],
    seed: Annotated[int, typer.Option(help="Seed for the router's profile and the sampling.")] = 0,
) -> None:
    """Sample a synthetic router into a trace file (written atomically)."""
    from capsim.routing import SyntheticRouter, make_router
    from capsim.routing.traces import write_trace

    spec = _resolve_model(model)
    r = make_router(router, spec, seed=seed)
    if not isinstance(r, SyntheticRouter):
        raise ScenarioError(
            f"router {router!r} is not synthetic; synth takes uniform, zipf:S, dirichlet:A, hot:H, group, temporal:R, affinity:A or fit:PATH"
        )
    ids = r.sample(tokens, seed=seed)
    command = (
        f"capsim trace synth --model {model} --router {router} --tokens {tokens} --out {out} --seed {seed}"
    )
    try:
        path = write_trace(
            out,
            ids,
            model_id=spec.id,
            num_experts=r.num_experts,
            top_k=r.top_k,
            metadata={
                "router": router,
                "seed": seed,
                "recorded_with": "capsim trace synth",
                "command": command,
                "router_params": r.to_dict(),
            },
        )
    except OSError as exc:  # disk full, permissions: write_trace has already removed its temporary file
        raise TraceError(
            str(out), f"cannot be written ({exc.strerror or exc}); choose another path"
        ) from None
    console = out_console()
    console.print(
        f"wrote {path} ({spec.id}: {r.num_moe_layers} MoE layers x {tokens} tokens x top-{r.top_k} of {r.num_experts})",
        soft_wrap=True,
        markup=False,
    )


# ---- import-sglang --------------------------------------------------------------------------------------
@trace_app.command("import-sglang")
def import_sglang(
    dump: Annotated[
        Path, typer.Argument(help="SGLang per_token recorder file (expert_distribution_recorder_*.pt).")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model id or config.json path.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Trace file to write (.npz).")],
) -> None:
    """Turn an SGLang ``--expert-distribution-recorder-mode per_token`` dump into a capsim trace."""
    from capsim.routing.engine_dumps import load_token_routes
    from capsim.routing.traces import write_trace

    spec = _resolve_model(model)
    if spec.moe is None:
        raise ScenarioError(f"{spec.id} has no routed experts; a routing trace needs an MoE model")
    ids = load_token_routes(dump, spec.moe.top_k)
    if ids.shape[0] != spec.num_moe_layers or ids.max() >= spec.moe.num_experts:
        raise TraceError(
            str(dump),
            f"has {ids.shape[0]} MoE layers and expert ids up to {int(ids.max())}; {spec.id} has "
            f"{spec.num_moe_layers} layers of {spec.moe.num_experts} experts",
        )
    try:
        path = write_trace(
            out,
            ids,
            model_id=spec.id,
            num_experts=spec.moe.num_experts,
            top_k=spec.moe.top_k,
            metadata={
                "recorded_with": "sglang expert distribution recorder (per_token)",
                "source": str(dump),
            },
        )
    except OSError as exc:
        raise TraceError(
            str(out), f"cannot be written ({exc.strerror or exc}); choose another path"
        ) from None
    out_console().print(
        f"wrote {path} ({spec.id}: {ids.shape[0]} MoE layers x {ids.shape[1]} tokens x top-{spec.moe.top_k})",
        soft_wrap=True,
        markup=False,
    )


# ---- stats ---------------------------------------------------------------------------------------------
@trace_app.command("stats")
def stats(
    path: Annotated[
        str, typer.Argument(help="Trace file, or the name of a shipped trace (capsim trace list).")
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Validate the trace against this model.")
    ] = None,
    tokens: Annotated[
        list[int] | None, typer.Option("--tokens", "-t", help="Step sizes in tokens (repeatable).")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Heatmap PNG path [default: ./<trace>-heatmap.png].")
    ] = None,
    no_png: Annotated[bool, typer.Option("--no-png", help="Do not write the heatmap.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
) -> None:
    """Per-layer activated experts (vs the uniform bound), load imbalance and reuse distance of a trace."""
    from capsim.routing import resolve_trace_path, trace_stats
    from capsim.routing.traces import load_trace

    trace = load_trace(resolve_trace_path(path))
    if model is not None:
        trace.validate_against(_resolve_model(model))
    steps = tuple(tokens) if tokens else tuple(t for t in _DEFAULT_STEPS if t <= trace.num_tokens) or (1,)
    bad = [t for t in steps if not 1 <= t <= trace.num_tokens]
    if bad:
        raise ScenarioError(
            f"--tokens {bad[0]}: a step takes 1 to {trace.num_tokens:,} tokens of this {trace.num_tokens:,}-token "
            "trace; choose step sizes in that range"
        )
    result = trace_stats(trace, steps)
    png_path: Path | None = None
    if not no_png:
        png_path = (
            png if png is not None else Path(f"{Path(trace.name).name.removesuffix('.npz')}-heatmap.png")
        )
        png_path = _write_heatmap(result, png_path)
    if as_json:
        payload = result.to_dict()
        payload["heatmap_png"] = None if png_path is None else str(png_path)
        print_json(payload)
        return
    _print_stats(result)
    if png_path is not None:
        out_console().print(f"heatmap: {png_path}", soft_wrap=True, markup=False)


def _print_stats(st: TraceStats) -> None:
    console = out_console()
    tr = st.trace
    console.print(tr.summary(), soft_wrap=True, markup=False)
    t = st.steps[-1]
    table = Table(title=f"per-layer routing statistics (step of T = {t} tokens)")
    for col in (
        "layer",
        "experts used",
        "max/mean load",
        "max/mean per step",
        f"A({t}) decode",
        f"A({t}) window",
        "vs uniform",
        "reuse dist (median)",
    ):
        table.add_column(col, justify="right")
    j = len(st.steps) - 1
    for layer in range(st.counts.shape[0]):
        table.add_row(
            str(layer),
            f"{st.experts_used[layer]}/{tr.num_experts}",
            _fmt(st.load_imbalance[layer]),
            _fmt(st.step_imbalance[layer, j]),
            f"{st.activated_independent[layer, j]:.2f}",
            f"{st.activated_window[layer, j]:.2f}",
            f"{st.activated_independent[layer, j] / st.uniform[j]:.3f}",
            _fmt(st.reuse_median[layer], ".0f"),
        )
    console.print(table)
    mean_a = st.activated_independent.mean(axis=0)
    mean_w = st.activated_window.mean(axis=0)
    for i, steps in enumerate(st.steps):
        console.print(
            f"T={steps}: mean A decode {mean_a[i]:.2f}, window {mean_w[i]:.2f}, uniform bound {st.uniform[i]:.2f} "
            f"(ratio {mean_a[i] / st.uniform[i]:.3f})",
            soft_wrap=True,
            markup=False,
        )
    fit = st.fit
    alpha = "none (within noise)" if fit.dirichlet_alpha is None else f"{fit.dirichlet_alpha:.3g}"
    console.print(
        f"fitted: {fit.spec()} (zipf s={fit.zipf_s:.3g}, dirichlet alpha={alpha}, reuse={fit.reuse:.3g}, "
        f"affinity={fit.affinity:.3g})",
        soft_wrap=True,
        markup=False,
    )


def _fmt(x: float, spec: str = ".2f") -> str:
    import numpy as np

    return "-" if not np.isfinite(x) else format(x, spec)


def _write_heatmap(st: TraceStats, path: Path) -> Path:
    """Write the layers x experts heatmap to ``path`` (``.png`` appended when it has no suffix); the path written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (CI and servers have no display)
    import matplotlib.pyplot as plt

    if not path.parent.is_dir():
        raise ScenarioError(
            f"cannot write {path}: directory {str(path.parent)!r} does not exist; create it first"
        )
    if path.is_dir():
        raise ScenarioError(f"--png {path} is a directory; give a file name, e.g. {path / 'heatmap.png'}")
    from matplotlib.backend_bases import FigureCanvasBase

    # matplotlib picks the format from the suffix; without one it would append .png behind our back
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    if path.suffix[1:].lower() not in FigureCanvasBase.get_supported_filetypes():
        raise ScenarioError(
            f"--png {path}: cannot write a {path.suffix!r} image; use a .png (or .svg/.pdf) name"
        )
    fig, ax = plt.subplots(
        figsize=(min(4 + st.counts.shape[1] / 12, 16), min(2 + st.counts.shape[0] / 6, 12))
    )
    image = ax.imshow(st.counts, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_title(f"tokens per expert: {st.trace.model_id}, {st.trace.num_tokens} tokens")
    fig.colorbar(image, ax=ax, label="tokens routed")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ScenarioError(f"cannot write {path} ({exc.strerror}); choose another --png path") from None
    finally:
        plt.close(fig)
    return path


# ---- fit -----------------------------------------------------------------------------------------------
@trace_app.command("fit")
def fit(
    path: Annotated[str, typer.Argument(help="Trace file, or the name of a shipped trace.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimate synthetic-router parameters (Zipf exponent, Dirichlet concentration, reuse, affinity)."""
    from capsim.routing import fit_trace, resolve_trace_path
    from capsim.routing.traces import load_trace

    trace = load_trace(resolve_trace_path(path))
    result = fit_trace(trace.topk_ids, trace.num_experts, source=trace.name)
    if as_json:
        print_json(result.to_dict())
        return
    console = out_console()
    console.print(trace.summary(), soft_wrap=True, markup=False)
    alpha = "none (within noise)" if result.dirichlet_alpha is None else f"{result.dirichlet_alpha:.3g}"
    for label, value in (
        ("zipf exponent", f"{result.zipf_s:.3g}"),
        ("dirichlet alpha", alpha),
        ("reuse", f"{result.reuse:.3g}"),
        ("affinity", f"{result.affinity:.3g}"),
        ("spec", result.spec()),
        ("extend with", f"--routing fit:{trace.name}"),
    ):
        console.print(f"{label}: {value}", soft_wrap=True, markup=False)


# ---- list ----------------------------------------------------------------------------------------------
@trace_app.command("list")
def list_traces(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The traces shipped in traces/ (see traces/README.md for how each was made)."""
    from capsim.routing import shipped_traces
    from capsim.routing.traces import load_trace

    rows: list[dict[str, Any]] = []
    for name, p in shipped_traces().items():
        tr = load_trace(p)
        rows.append(
            {
                "name": name,
                "model_id": tr.model_id,
                "num_layers": tr.num_layers,
                "num_tokens": tr.num_tokens,
                "top_k": tr.top_k,
                "num_experts": tr.num_experts,
                "router": tr.metadata.get("router"),
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="shipped traces")
    for col in ("name", "model", "layers", "tokens", "top-k of E", "router"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["model_id"],
            str(r["num_layers"]),
            str(r["num_tokens"]),
            f"{r['top_k']} of {r['num_experts']}",
            str(r["router"]),
        )
    out_console().print(table)
