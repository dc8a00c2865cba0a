"""Router spec strings (``name:param[,key=value...]``) and the registry that builds routers from them.

=====================  ===========================================================================
spec                   router
=====================  ===========================================================================
``uniform``            π_i = k/E: the bound (most experts activated for independent tokens)
``zipf:S``             Zipf popularity with exponent S >= 0, ranks shuffled per layer
``dirichlet:ALPHA``    popularity drawn per layer from Dirichlet(ALPHA·1), ALPHA > 0
``hot:H,share=F``      H hot experts per layer take a fraction F of the routing mass
``group[:S]``          DeepSeek-V3 group-limited routing with the model's n_group/topk_group
                       (override with ``n_group=``/``topk_group=``), optional Zipf(S) over groups
``temporal:RHO``       uniform popularity; a token repeats the previous token's experts w.p. RHO
``affinity:A``         uniform popularity; layer l's experts predict layer l+1's w.p. A
``trace:PATH``         a recorded trace (a path, or the name of a shipped trace in traces/)
``fit:PATH``           a synthetic router fitted to a trace (extends it to any length)
``counts:PATH``        an engine's expert-load dump (SGLang expert distribution recorder, vLLM EPLB load)
``default``            the model family's router fitted to measured activated-expert counts
                       (``model_db/routing.toml``; the pooled fit for families without one)
=====================  ===========================================================================

Every synthetic router also takes ``reuse=RHO``, ``affinity=A`` and ``seed=N``; ``temporal`` and ``affinity``
take ``zipf=S`` or ``dirichlet=ALPHA`` for a skewed base profile. Example: ``zipf:1.2,reuse=0.3,seed=7``.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capsim._paths import data_dir
from capsim.errors import ScenarioError, TraceError, UnknownRouterError
from capsim.models.spec import ModelSpec
from capsim.routing._base import Router
from capsim.routing.fit import fit_trace
from capsim.routing.popularity import (
    GroupPopularity,
    Popularity,
    dirichlet_popularity,
    empirical_popularity,
    hot_popularity,
    uniform_popularity,
    zipf_popularity,
)
from capsim.routing.synthetic import SyntheticRouter, UniformRouter
from capsim.routing.trace_router import TraceRouter
from capsim.routing.traces import Trace, load_trace


@dataclass(frozen=True)
class RouterSpec:
    """A parsed spec string: ``kind``, the positional ``arg`` (or None) and ``key=value`` ``options``."""

    text: str
    kind: str
    arg: str | None
    options: dict[str, str] = field(default_factory=dict)


_ALIASES = {"group-limited": "group", "trace-file": "trace"}


def parse_router_spec(spec: str) -> RouterSpec:
    """Split ``name[:param][,key=value...]``. ``trace:``/``fit:`` take the whole rest as a path when it
    holds no ``key=value`` part (paths may contain commas)."""
    text = spec.strip()
    if not text:
        raise ScenarioError("empty router spec; use e.g. uniform, zipf:1.2 or trace:PATH")
    head, _, rest = text.partition(":")
    kind = _ALIASES.get(head.strip().lower(), head.strip().lower())
    pieces = rest.split(",") if rest else []
    if "," in head:  # "uniform,reuse=0.3": options without a positional parameter
        kind_part, *opts = head.split(",")
        kind = _ALIASES.get(kind_part.strip().lower(), kind_part.strip().lower())
        pieces = opts + pieces
        arg = None
    else:
        arg = None
        if pieces and "=" not in pieces[0]:
            arg = pieces.pop(0).strip()
        if kind in ("trace", "fit", "counts") and rest and not any("=" in p for p in pieces):
            arg, pieces = rest.strip(), []
    options: dict[str, str] = {}
    for piece in pieces:
        key, eq, value = piece.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise ScenarioError(
                f"router spec {text!r}: {piece!r} is not key=value; write e.g. {kind}:1.2,reuse=0.3"
            )
        if key in options:
            raise ScenarioError(f"router spec {text!r}: option {key!r} given twice; keep one")
        options[key] = value.strip()
    return RouterSpec(text=text, kind=kind, arg=arg, options=options)


def _float(spec: RouterSpec, what: str, value: str | None) -> float:
    if value is None or value == "":
        raise ScenarioError(
            f"router spec {spec.text!r} needs a value for {what}; e.g. {_EXAMPLES.get(spec.kind, 'zipf:1.2')}"
        )
    try:
        out = float(value)
    except ValueError:
        raise ScenarioError(f"router spec {spec.text!r}: {what} must be a number, got {value!r}") from None
    if not np.isfinite(out):
        raise ScenarioError(f"router spec {spec.text!r}: {what} must be finite, got {value!r}")
    return out


def _int(spec: RouterSpec, what: str, value: str | None) -> int:
    x = _float(spec, what, value)
    if x != int(x):
        raise ScenarioError(f"router spec {spec.text!r}: {what} must be an integer, got {value!r}")
    return int(x)


_EXAMPLES = {
    "zipf": "zipf:1.2",
    "dirichlet": "dirichlet:0.5",
    "hot": "hot:2,share=0.5",
    "temporal": "temporal:0.3",
    "affinity": "affinity:0.5",
    "trace": "trace:traces/mixtral-8x7b-zipf1.2.npz",
    "fit": "fit:traces/mixtral-8x7b-zipf1.2.npz",
    "group": "group or group:0.8,n_group=8,topk_group=4",
}

_COMMON = {"reuse", "affinity", "seed"}
_VALID_OPTIONS: dict[str, set[str]] = {
    "uniform": _COMMON,
    "zipf": _COMMON,
    "dirichlet": _COMMON,
    "hot": _COMMON | {"share"},
    "group": _COMMON | {"n_group", "topk_group"},
    "temporal": {"affinity", "seed", "zipf", "dirichlet"},
    "affinity": {"reuse", "seed", "zipf", "dirichlet"},
    "trace": set(),
    "fit": {"seed"},
    "default": {"reuse", "affinity", "seed"},
    "counts": {"seed"},
}


def _check_options(spec: RouterSpec) -> None:
    valid = _VALID_OPTIONS[spec.kind]
    for key in spec.options:
        if key not in valid:
            hint = ", ".join(sorted(valid)) or "none"
            raise ScenarioError(
                f"router spec {spec.text!r}: unknown option {key!r}; options for {spec.kind}: {hint}"
            )


def _need_arg(spec: RouterSpec, what: str) -> str:
    if spec.arg is None or spec.arg == "":
        raise ScenarioError(f"router {spec.kind!r} needs {what}; e.g. {_EXAMPLES[spec.kind]}")
    return spec.arg


def _no_arg(spec: RouterSpec) -> None:
    if spec.arg is not None:
        raise ScenarioError(
            f"router {spec.kind!r} takes no positional parameter, got {spec.arg!r}; write {spec.kind}"
        )


def _base_profile(spec: RouterSpec, L: int, E: int, k: int, rng: np.random.Generator) -> Popularity:
    if "zipf" in spec.options and "dirichlet" in spec.options:
        raise ScenarioError(f"router spec {spec.text!r}: give zipf= or dirichlet=, not both")
    if "zipf" in spec.options:
        return zipf_popularity(L, E, k, _float(spec, "zipf", spec.options["zipf"]), rng)
    if "dirichlet" in spec.options:
        return dirichlet_popularity(L, E, k, _float(spec, "dirichlet", spec.options["dirichlet"]), rng)
    return uniform_popularity(L, E, k)


def _seed(spec: RouterSpec, default: int) -> int:
    """The ``seed=`` option, else ``default``; numpy seeds must be integers >= 0."""
    if "seed" not in spec.options:
        return default
    seed = _int(spec, "seed", spec.options["seed"])
    if seed < 0:
        raise ScenarioError(f"router spec {spec.text!r}: seed must be an integer >= 0, got {seed}")
    return seed


def _synthetic(spec: RouterSpec, model: ModelSpec, seed: int) -> SyntheticRouter:
    assert model.moe is not None  # checked by make_router before dispatch
    seed = _seed(spec, seed)
    rng = np.random.default_rng(seed)
    L, E, k = model.num_moe_layers, model.moe.num_experts, model.moe.top_k
    reuse = _float(spec, "reuse", spec.options["reuse"]) if "reuse" in spec.options else 0.0
    affinity = _float(spec, "affinity", spec.options["affinity"]) if "affinity" in spec.options else 0.0
    pop: Popularity
    if spec.kind == "uniform":
        _no_arg(spec)
        if not spec.options:
            return UniformRouter(L, E, k)
        pop = uniform_popularity(L, E, k)
    elif spec.kind == "zipf":
        pop = zipf_popularity(L, E, k, _float(spec, "the exponent S", _need_arg(spec, "an exponent")), rng)
    elif spec.kind == "dirichlet":
        pop = dirichlet_popularity(
            L, E, k, _float(spec, "the concentration", _need_arg(spec, "a concentration")), rng
        )
    elif spec.kind == "hot":
        hot = _int(spec, "the hot-expert count", _need_arg(spec, "a hot-expert count"))
        pop = hot_popularity(L, E, k, hot, _float(spec, "share", spec.options.get("share")), rng)
    elif spec.kind == "group":
        n_group = (
            _int(spec, "n_group", spec.options["n_group"]) if "n_group" in spec.options else model.moe.n_group
        )
        topk_group = (
            _int(spec, "topk_group", spec.options["topk_group"])
            if "topk_group" in spec.options
            else model.moe.topk_group
        )
        s = _float(spec, "the group exponent", spec.arg) if spec.arg else 0.0
        pop = GroupPopularity(L, E, k, n_group, topk_group, s, rng)
    elif spec.kind == "temporal":
        reuse = _float(spec, "the reuse probability", _need_arg(spec, "a reuse probability"))
        pop = _base_profile(spec, L, E, k, rng)
    else:  # affinity
        affinity = _float(spec, "the affinity probability", _need_arg(spec, "an affinity probability"))
        pop = _base_profile(spec, L, E, k, rng)
    return SyntheticRouter(pop, name=spec.kind, spec=spec.text, reuse=reuse, affinity=affinity, seed=seed)


def shipped_traces() -> dict[str, Path]:
    """Traces shipped in ``traces/`` by name (file name without ``.npz``)."""
    try:
        folder = data_dir("traces")
    except FileNotFoundError:
        return {}
    return {p.name[: -len(".npz")]: p for p in sorted(folder.glob("*.npz"))}


def resolve_trace_path(text: str) -> Path:
    """A trace path, or the name of a shipped trace (with or without ``.npz``)."""
    if not text.strip():
        raise ScenarioError("empty trace path; give a trace file or a shipped trace name (capsim trace list)")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~user that does not exist: a name, not a home folder
        path = Path(text)
    try:
        if path.is_file():
            return path
    except OSError:
        pass  # a name the file system refuses (too long): not a file
    shipped = shipped_traces()
    name = text.removesuffix(".npz")
    if name in shipped:
        return shipped[name]
    close = difflib.get_close_matches(name, list(shipped), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"shipped traces: {', '.join(shipped) or 'none'}"
    raise TraceError(text, f"no such trace file; give a path or a shipped trace name ({hint})")


def _trace_for(spec: RouterSpec, model: ModelSpec) -> Trace:
    trace = load_trace(resolve_trace_path(_need_arg(spec, "a trace path")))
    trace.validate_against(model)
    return trace


def _trace(spec: RouterSpec, model: ModelSpec, seed: int) -> Router:
    _check_options(spec)
    return TraceRouter(_trace_for(spec, model), spec=spec.text)


def _fit(spec: RouterSpec, model: ModelSpec, seed: int) -> Router:
    trace = _trace_for(spec, model)
    seed = _seed(spec, seed)
    return fit_trace(trace.topk_ids, trace.num_experts, source=trace.name).router(seed=seed, spec=spec.text)


ROUTING_FILE = "routing.toml"


@dataclass(frozen=True)
class DefaultRouter:
    """The default router of one model family: its spec and the measurement it was fitted to."""

    family: str | None
    """The family whose own measurements the spec was fitted to; None for the pooled default."""
    spec: str
    source: str


@functools.cache
def default_router_for(family: str) -> DefaultRouter:
    """The router ``--routing default`` builds for a model of ``family`` (``model_db/routing.toml``): the
    family's own fit, else the pooled ``[default]``. A missing or malformed file is a DataFileError."""
    import tomllib

    from capsim.errors import DataFileError

    path = data_dir("model_db") / ROUTING_FILE
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
        families = raw.get("families", {})
        if family in families:
            entry = families[family]
            return DefaultRouter(family, str(entry["spec"]), str(entry["source"]))
        return DefaultRouter(None, str(raw["default"]["spec"]), str(raw["default"]["source"]))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise DataFileError(str(path), f"cannot read the default routers ({exc}); reinstall capsim") from None


def _default(spec: RouterSpec, model: ModelSpec, seed: int) -> Router:
    _no_arg(spec)
    assert model.moe is not None  # checked by make_router before dispatch
    chosen = default_router_for(model.family)
    # the fitted spec with the user's reuse/affinity/seed options added
    text = ",".join([chosen.spec, *(f"{k}={v}" for k, v in spec.options.items())])
    fitted = f"{model.family} family" if chosen.family else "pooled, no measurement of this family"
    moe = model.moe
    shape = (model.num_moe_layers, moe.num_experts, moe.top_k, moe.n_group, moe.topk_group)
    return _default_router(text, shape, seed, model, f"default ({text}: {fitted}; {chosen.source})")


_DEFAULT_ROUTERS: dict[tuple[object, ...], Router] = {}


def _default_router(text: str, shape: tuple[int, ...], seed: int, model: ModelSpec, label: str) -> Router:
    """Build (once per spec, routing shape and seed: building a Zipf profile shuffles every layer, which costs
    more than a whole prediction) the default router. Synthetic routers hold no state between calls."""
    key = (text, shape, seed)
    if key not in _DEFAULT_ROUTERS:
        router = _synthetic(parse_router_spec(text), model, seed)
        router.name = "default"
        router.spec = label
        _DEFAULT_ROUTERS[key] = router
    return _DEFAULT_ROUTERS[key]


def _counts(spec: RouterSpec, model: ModelSpec, seed: int) -> Router:
    from capsim.routing.engine_dumps import check_against, load_expert_counts

    assert model.moe is not None  # checked by make_router before dispatch
    counts = load_expert_counts(_need_arg(spec, "an expert-load dump path"))
    check_against(counts, model)
    pop = empirical_popularity(counts.inclusion(model.moe.top_k))
    return SyntheticRouter(
        pop,
        name="counts",
        spec=f"{spec.text} ({counts.num_passes} passes of {counts.key})",
        seed=_seed(spec, seed),
    )


_BUILDERS: dict[str, Callable[[RouterSpec, ModelSpec, int], Router]] = {
    "default": _default,
    "counts": _counts,
    "uniform": _synthetic,
    "zipf": _synthetic,
    "dirichlet": _synthetic,
    "hot": _synthetic,
    "group": _synthetic,
    "temporal": _synthetic,
    "affinity": _synthetic,
    "trace": _trace,
    "fit": _fit,
}

ROUTER_KINDS: tuple[str, ...] = tuple(_BUILDERS)
"""The router kinds :func:`make_router` accepts."""


def _looks_like_trace_path(kind: str) -> bool:
    return kind.endswith(".npz") or "/" in kind or "\\" in kind or kind in shipped_traces()


def make_router(spec: str, model: ModelSpec, *, seed: int = 0) -> Router:
    """Build the router named by ``spec`` (module docstring) for ``model``; ``seed`` unless ``seed=`` is given."""
    if model.moe is None or model.num_moe_layers == 0:
        raise ScenarioError(f"model {model.id!r} has no MoE layers; routing does not apply")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ScenarioError(f"seed must be an integer >= 0, got {seed!r}; pass e.g. --seed 0")
    parsed = parse_router_spec(spec)
    if parsed.kind not in _BUILDERS and _looks_like_trace_path(parsed.kind):
        raise ScenarioError(
            f"router spec {spec.strip()!r} looks like a trace file; write trace:{spec.strip()} "
            f"(or fit:{spec.strip()} for a router fitted to it)"
        )
    if parsed.kind not in _BUILDERS:
        close = difflib.get_close_matches(parsed.kind, ROUTER_KINDS, n=3)
        raise UnknownRouterError(parsed.kind, ROUTER_KINDS, close)
    _check_options(parsed)
    return _BUILDERS[parsed.kind](parsed, model, seed)
