"""What every model kind shares: the spec of a model to host, the `Kind` interface, and what a loaded model offers.

A kind (word vectors, text encoders, VAEs, image encoders, ...) is one backend module holding an options dataclass and
a `Kind` subclass; `embedsvc.backends.kinds` lists them in one table. The rest of the server never switches on a kind:
a loaded model is a set of parts by capability (`Loaded.parts`, each part honouring its capability's protocol in
`embedsvc.backends.capabilities`), and a spec says which capabilities it will have (`Kind.offers`) before it has
loaded.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from embedsvc.backends.capabilities import PROTOCOLS, Capability, ImageShape
from embedsvc.backends.devices import is_device
from embedsvc.errors import ConfigError

E = TypeVar("E", bound=StrEnum)


class Options:
    """Base of every kind's options dataclass: each has a `format` and a `path` (None: embedded or file-less)."""

    kind: ClassVar[str]
    format: StrEnum
    path: Path | None


@dataclass(frozen=True)
class ModelSpec:
    """One model to host: its name, its kind's options, and a description for ListModels."""

    name: str
    options: Any  # the kind's Options dataclass; its class says the kind
    description: str = ""

    @property
    def kind(self) -> str:
        return str(self.options.kind)

    @property
    def format(self) -> StrEnum:
        return self.options.format

    @property
    def path(self) -> Path | None:
        return self.options.path

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "embedded"


@dataclass(frozen=True)
class Requirement:
    """A model another one builds on (an averaged-words encoder on its word model), loaded before it."""

    field: str  # the options key that names it
    model: str
    capability: Capability
    what: str  # for messages: "a word-vectors model"


@dataclass(frozen=True)
class BatchingOptions:
    """How calls to a text encoder (or a cross-encoder) are merged: at most max_batch_size texts (pairs), waiting at
    most max_wait_ms."""

    enabled: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0


@dataclass(frozen=True)
class Loaded:
    """A loaded model: what it reports (ListModels) and its parts, one per capability it offers (one object may be
    offered under several: a VAE's)."""

    dimension: int
    version: str
    source: str
    device: str = "cpu"
    vocabulary_size: int = 0
    has_subwords: bool = False
    image_shape: ImageShape | None = None
    # Each part honours its capability's protocol (capabilities.PROTOCOLS); the registry checks it at load.
    parts: Mapping[Capability, object] = field(default_factory=dict)
    # How the model's calls are merged (a model offering TEXTS or PAIRS).
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    # What runs the model: "torch", "onnx", "numpy" (word vectors, static encoders); "" when not said.
    engine: str = ""
    # "int8" for a quantised model, with its measured closeness to fp32 (an onnx_text.Quality); "fp32" otherwise.
    precision: str = "fp32"
    quality: Any = None

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset(self.parts)

    def unfit_parts(self) -> list[str]:
        """The capabilities whose part does not honour the capability's protocol (a kind's bug, refused at load)."""
        return [c.value for c, part in self.parts.items() if not isinstance(part, PROTOCOLS[c])]


@dataclass(frozen=True)
class LoadContext:
    """What a kind may use while loading: the data directory (caches), the server's default device, and the models
    loaded before it (those it `requires`)."""

    data_dir: Path
    device: str = "auto"
    loaded: Mapping[str, Loaded] = field(default_factory=dict)


class Kind(ABC):
    """One model kind: how its configuration is parsed, what it offers, how it loads."""

    name: ClassVar[str]  # the `kind` value of a [[models]] entry
    # Configuration keys of this kind besides name, kind and description.
    keys: ClassVar[frozenset[str]]

    @abstractmethod
    def parse(self, where: str, entry: Mapping[str, Any]) -> Options:
        """The options of one [[models]] entry (keys already checked); ConfigError naming `where` and the key."""

    def embedded(self) -> tuple[ModelSpec, ...]:
        """Models of this kind served by default (built from installed packages, never downloaded)."""
        return ()

    @abstractmethod
    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        """What the model will offer once loaded (known before loading, for errors and bindings)."""

    def requires(self, spec: ModelSpec) -> tuple[Requirement, ...]:
        return ()

    def runs_file_code(self, spec: ModelSpec) -> bool:
        """True when loading runs code stored in the model's files (a pickle, a TorchScript archive): such entries
        come only from the operator's configuration file, never from a request."""
        return False

    @abstractmethod
    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        """Load (not yet warmed up: the registry calls each part's `warm_up()`); one-line errors."""


# ---- configuration helpers shared by the kinds' `parse` -------------------------------------------------------------


def enum_value(key: str, enum: type[E], value: Any, *, hidden: tuple[str, ...] = ()) -> E:
    try:
        return enum(value)
    except ValueError:
        choices = " | ".join(e.value for e in enum if e.value not in hidden)
        raise ConfigError(f"{key}: must be one of {choices}, got {value!r}") from None


def path_value(where: str, entry: Mapping[str, Any], what: str) -> Path:
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}.path: {what} is required")
    return Path(path).expanduser()


def bool_value(where: str, entry: Mapping[str, Any], key: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: must be true or false")
    return value


def int_value(where: str, entry: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where}.{key}: must be an integer {low}..{high}, got {value!r}")
    return value


def number_value(where: str, entry: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = entry.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ConfigError(f"{where}.{key}: must be a number {low:g}..{high:g}, got {value!r}")
    return float(value)


def device_value(where: str, entry: Mapping[str, Any]) -> str:
    """A model's device: "" (the server's), auto, cpu or cuda:N."""
    device = entry.get("device", "")
    if not isinstance(device, str) or (device and not is_device(device)):
        raise ConfigError(f"{where}.device: {device!r} is not auto, cpu or cuda:N")
    return device
