"""What every model kind shares: the spec of a model to host, the `Kind` interface, and what a loaded model offers.

A kind (word vectors, text encoders, VAEs, image encoders, ...) is one backend module holding an options dataclass and
a `Kind` subclass; `embedsvc.backends.kinds` lists them in one table. The rest of the server never switches on a kind:
it asks a loaded model for its capabilities (`Loaded.words`, `.text`, `.image`, `.vae`), and a spec for the ones it
will have (`Kind.offers`) before it has loaded.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from embedsvc.backends.devices import is_device
from embedsvc.errors import ConfigError

if TYPE_CHECKING:
    from embedsvc.backends.image_encoders import ImageEncoder
    from embedsvc.backends.text_encoders import TextEncoder
    from embedsvc.backends.vae import VAEModel
    from embedsvc.backends.word_vectors import WordVectors

E = TypeVar("E", bound=StrEnum)


class Capability(StrEnum):
    """What a hosted model can be asked for; a model may offer several (minilm-static: words and texts)."""

    WORDS = "words"  # a vocabulary of word vectors: lookups, nearest words, arithmetic
    TEXTS = "texts"  # embeds texts, behind a dynamic batcher
    IMAGES = "images"  # embeds images
    LATENTS = "latents"  # a generative latent space: encode, decode, sample, ...


@dataclass(frozen=True)
class ImageShape:
    """What an image model reads: channels (1 grey, 3 RGB) and a square side in pixels."""

    channels: int
    size: int


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
    """How calls to a text encoder are merged: at most max_batch_size texts, waiting at most max_wait_ms."""

    enabled: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0


@dataclass(frozen=True)
class Loaded:
    """A loaded model: what it reports (ListModels) and one object per capability it offers."""

    dimension: int
    version: str
    source: str
    device: str = "cpu"
    vocabulary_size: int = 0
    has_subwords: bool = False
    image_shape: ImageShape | None = None
    words: WordVectors | None = None
    text: TextEncoder | None = None
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    image: ImageEncoder | None = None
    vae: VAEModel | None = None
    # What runs the model: "torch", "onnx", "numpy" (word vectors, static encoders); "" when not said.
    engine: str = ""
    # "int8" for a quantised model, with its measured closeness to fp32 (an onnx_text.Quality); "fp32" otherwise.
    precision: str = "fp32"
    quality: Any = None

    @property
    def capabilities(self) -> frozenset[Capability]:
        facets = (
            (Capability.WORDS, self.words),
            (Capability.TEXTS, self.text),
            (Capability.IMAGES, self.image),
            (Capability.LATENTS, self.vae),
        )
        return frozenset(c for c, value in facets if value is not None)


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
        """Load (not yet warmed up: the registry does that per capability); one-line errors."""


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
