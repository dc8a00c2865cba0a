"""The shipped model database: ``model_db/<id>.json`` (published HF configs, unchanged) and
``model_db/published.toml`` (the publishers' total/active parameter counts, with sources).

Loading happens here and only here; building a :class:`~capsim.models.spec.ModelSpec` from a config is
:mod:`capsim.models.ingest_hf`'s job. Ids are case-insensitive; an unknown id raises
:class:`~capsim.errors.UnknownModelError` with the closest ids (``difflib.get_close_matches``).
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsim._paths import data_dir
from capsim.errors import DataFileError, UnknownModelError
from capsim.models.ingest_hf import load_config_file
from capsim.models.spec import ModelSpec

PUBLISHED_FILE = "published.toml"


@dataclass(frozen=True)
class PublishedCounts:
    """A model's parameter counts as its publisher states them (counts, not billions).

    ``active_counts_embedding`` says whether the published active figure includes the input-embedding table;
    capsim's :attr:`ModelSpec.active_params` never does, so :meth:`comparable_active` adds it back before
    comparing. ``*_soft`` marks figures the reference sheet flags as uncertain ``(?)``.
    """

    id: str
    name: str
    source: str
    total_params: float | None
    active_params: float | None
    active_counts_embedding: bool
    convention_basis: str
    total_soft: bool = False
    active_soft: bool = False
    active_range: tuple[float, float] | None = None
    note: str = ""

    def comparable_active(self, spec: ModelSpec) -> int:
        """capsim's active count on the publisher's basis (plus the embedding table if it counts it)."""
        return spec.active_params + (spec.embedding_params if self.active_counts_embedding else 0)

    def total_rel_diff(self, spec: ModelSpec) -> float | None:
        """(capsim total - published total) / published total; None where no total is published."""
        if self.total_params is None:
            return None
        return (spec.total_params - self.total_params) / self.total_params

    def active_rel_diff(self, spec: ModelSpec) -> float | None:
        """(capsim active - published active) / published active, like for like; None if unpublished."""
        if self.active_params is None:
            return None
        return (self.comparable_active(spec) - self.active_params) / self.active_params

    def to_dict(self, spec: ModelSpec | None = None) -> dict[str, Any]:
        """JSON-ready fields; with ``spec``, capsim's comparable counts and the relative differences too."""
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "active_counts_embedding": self.active_counts_embedding,
            "convention_basis": self.convention_basis,
            "total_soft": self.total_soft,
            "active_soft": self.active_soft,
            "active_range": list(self.active_range) if self.active_range else None,
            "note": self.note,
        }
        if spec is not None:
            out["capsim_total_params"] = spec.total_params
            out["capsim_active_params_comparable"] = self.comparable_active(spec)
            out["total_rel_diff"] = self.total_rel_diff(spec)
            out["active_rel_diff"] = self.active_rel_diff(spec)
        return out


class ModelDB:
    """The model database in ``directory``: one ``<id>.json`` per model plus ``published.toml``.

    Specs are built on first :meth:`get` and cached; treat the returned specs as read-only.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._paths: dict[str, Path] = {p.stem.lower(): p for p in sorted(self.directory.glob("*.json"))}
        self._published = _load_published(self.directory / PUBLISHED_FILE, set(self._paths))
        self._specs: dict[str, ModelSpec] = {}

    def ids(self) -> list[str]:
        """All model ids, sorted."""
        return sorted(self._paths)

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and model_id.lower() in self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def _key(self, model_id: str) -> str:
        key = model_id.lower()
        if key not in self._paths:
            # HF-style ids ("mistralai/Mixtral-8x7B-v0.1") are matched on their last component
            probe = key.rsplit("/", 1)[-1]
            close = difflib.get_close_matches(probe, self.ids(), n=3, cutoff=0.6)
            raise UnknownModelError(model_id, self.ids(), close)
        return key

    def config_path(self, model_id: str) -> Path:
        """The config.json file of ``model_id``."""
        return self._paths[self._key(model_id)]

    def get(self, model_id: str) -> ModelSpec:
        """The :class:`ModelSpec` of ``model_id`` (case-insensitive)."""
        key = self._key(model_id)
        if key not in self._specs:
            pub = self._published.get(key)
            self._specs[key] = load_config_file(
                self._paths[key], model_id=key, name=pub.name if pub else None
            )
        return self._specs[key]

    def published(self, model_id: str) -> PublishedCounts | None:
        """The published counts of ``model_id``; None if published.toml has no entry for it."""
        return self._published.get(self._key(model_id))


def _load_published(path: Path, ids: set[str]) -> dict[str, PublishedCounts]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(str(path), f"is not valid TOML ({exc}); fix the syntax") from None
    out: dict[str, PublishedCounts] = {}
    for model_id, entry in data.items():
        if model_id.lower() not in ids:
            raise DataFileError(
                str(path), f"[{model_id}] has no model_db/{model_id}.json; add it or drop the entry"
            )
        if not isinstance(entry, Mapping):
            raise DataFileError(str(path), f"{model_id!r} must be a table ([{model_id}])")
        out[model_id.lower()] = _published_entry(str(path), model_id.lower(), entry)
    return out


def _published_entry(path: str, model_id: str, entry: Mapping[str, Any]) -> PublishedCounts:
    def bad(field: str, expected: str) -> DataFileError:
        return DataFileError(
            path, f"[{model_id}] field {field!r} must be {expected}, got {entry.get(field)!r}"
        )

    def count(field: str) -> float | None:
        value = entry.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise bad(field, "a positive number")
        return float(value)

    for field in ("name", "source"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise bad(field, "a non-empty string")
    for field in ("active_counts_embedding", "total_soft", "active_soft"):
        if field in entry and not isinstance(entry[field], bool):
            raise bad(field, "true or false")
    if "active_counts_embedding" not in entry:
        raise bad("active_counts_embedding", "true or false")
    basis = entry.get("convention_basis")
    if basis not in ("stated", "inferred"):
        raise bad("convention_basis", "'stated' or 'inferred'")
    rng = entry.get("active_range")
    active_range: tuple[float, float] | None = None
    if rng is not None:
        if (
            not isinstance(rng, list)
            or len(rng) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
            or not 0 < rng[0] <= rng[1]
        ):
            raise bad("active_range", "[low, high] with 0 < low <= high")
        active_range = (float(rng[0]), float(rng[1]))
    return PublishedCounts(
        id=model_id,
        name=entry["name"],
        source=entry["source"],
        total_params=count("total_params"),
        active_params=count("active_params"),
        active_counts_embedding=entry["active_counts_embedding"],
        convention_basis=basis,
        total_soft=entry.get("total_soft", False),
        active_soft=entry.get("active_soft", False),
        active_range=active_range,
        note=str(entry.get("note", "")),
    )


@functools.cache
def _load_default() -> ModelDB:
    return ModelDB(data_dir("model_db"))


def load_model_db(directory: Path | None = None) -> ModelDB:
    """The model database: the shipped one (cached) or the one in ``directory`` (not cached)."""
    if directory is None:
        return _load_default()
    return ModelDB(directory)


def resolve_model(id_or_path: str, family: str | None = None) -> ModelSpec:
    """A model from a database id or a config.json path.

    An existing file (or a folder holding ``config.json``) is loaded with
    :func:`capsim.models.ingest_hf.load_config_file`; a string ending in ``.json`` that names no file raises
    DataFileError; anything else is looked up as a database id. ``family`` forces the family of a file.
    """
    path = Path(id_or_path)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError:  # e.g. a name longer than the file system allows: not a path, so an id
        is_file = is_dir = False
    if is_file or (is_dir and (path / "config.json").is_file()):
        return load_config_file(path, family=family)
    if id_or_path.lower().endswith(".json"):
        raise DataFileError(
            id_or_path, "no such file; give an existing config.json path or a model id (capsim model list)"
        )
    db = load_model_db()
    if is_dir and id_or_path not in db:
        raise DataFileError(
            id_or_path,
            "is a folder without a config.json; give a config.json path or a model id (capsim model list)",
        )
    return db.get(id_or_path)
