"""THE table of model kinds. Adding a kind: one backend module with an Options dataclass and a `Kind`, one entry
here, and its value in `ModelKind` of protos/embedsvc/v1/models.proto (docs/architecture.md walks through it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from embedsvc.backends import autoencoder, cross_encoders, gan, image_encoders, text_encoders, vae, word_vectors
from embedsvc.backends.base import Kind, ModelSpec
from embedsvc.errors import ConfigError

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        word_vectors.KIND,
        text_encoders.KIND,
        vae.KIND,
        image_encoders.KIND,
        cross_encoders.KIND,
        gan.KIND,
        autoencoder.KIND,
    )
}
DEFAULT_KIND = word_vectors.KIND.name
# Keys every [[models]] entry may have, whatever its kind.
COMMON_KEYS = frozenset({"name", "kind", "description"})


def kind_of(spec: ModelSpec) -> Kind:
    return KINDS[spec.kind]


def embedded_models() -> tuple[ModelSpec, ...]:
    """The models served by default, kind by kind in the table's order."""
    return tuple(spec for kind in KINDS.values() for spec in kind.embedded())


def parse_model(i: int, entry: Any) -> ModelSpec:
    """One [[models]] entry of the configuration; ConfigError naming the entry and the key."""
    where = f"models[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a table")
    name = entry.get("name")
    if not isinstance(name, str) or not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{where}.name: must be 1-128 characters of letters, digits, '-', '_' or '.', got {name!r}")
    where = f"models[{i}] ({name})"
    kind = KINDS.get(entry.get("kind", DEFAULT_KIND))
    if kind is None:
        choices = " | ".join(KINDS)
        raise ConfigError(f"{where}.kind: must be one of {choices}, got {entry.get('kind')!r}")
    unknown = set(entry) - COMMON_KEYS - kind.keys
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) for a {kind.name} model: {', '.join(sorted(unknown))}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description: must be a string")
    return ModelSpec(name, kind.parse(where, entry), description)


def check_requirements(specs: Iterable[ModelSpec], configured: Iterable[ModelSpec]) -> None:
    """Every model a configured one builds on exists and offers what it needs."""
    by_name = {s.name: s for s in specs}
    for spec in configured:
        for need in kind_of(spec).requires(spec):
            base = by_name.get(need.model)
            if base is None or need.capability not in kind_of(base).offers(base):
                raise ConfigError(
                    f"models ({spec.name}).{need.field}: {need.model!r} is not {need.what} of this server"
                )


def load_order(specs: Iterable[ModelSpec]) -> list[ModelSpec]:
    """Configuration order, except that a model comes after the models it builds on."""
    pending = list(specs)
    names = {s.name for s in pending}
    done: set[str] = set()
    ordered: list[ModelSpec] = []
    while pending:
        ready = [s for s in pending if all(r.model in done or r.model not in names for r in kind_of(s).requires(s))]
        if not ready:  # a cycle: load the rest as configured, their requirement errors name the problem
            ready = pending[:1]
        for spec in ready:
            ordered.append(spec)
            done.add(spec.name)
            pending.remove(spec)
    return ordered
