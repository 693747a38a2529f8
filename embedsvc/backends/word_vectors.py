"""The word-vectors kind: reading every supported file format into one read-only `WordVectors` space.

gensim does the parsing (word2vec text and binary, GloVe, fastText `.bin`, gensim native); the embedded default is
distilled by `embedsvc.backends.minilm_static`, which also gives it a sentence mode (texts). Raw vectors are kept as
loaded (memory-mapped where the format allows); the unit-normalised copy used for cosine search is computed once, as
gensim's `vectors / norms`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # gensim takes over a second to import; a server without word models never needs it
    from gensim.models import KeyedVectors

from embedsvc.backends.base import (
    Capability,
    Kind,
    LoadContext,
    Loaded,
    ModelSpec,
    Options,
    bool_value,
    enum_value,
    path_value,
)
from embedsvc.backends.devices import vectors_checksum
from embedsvc.backends.text_models import StaticEncoder
from embedsvc.errors import ConfigError, EmbedsvcError, out_of_vocabulary
from embedsvc.vectors import unit_rows

# Folded vocabularies kept per word model (EvaluateAnalogies' restrict_vocab and case; each costs a dict of the
# vocabulary).
_FOLDED_CACHE = 4

log = logging.getLogger(__name__)

EMBEDDED_WORD_MODEL = "minilm-static"


class WordVectorFormat(StrEnum):
    WORD2VEC_TEXT = "word2vec-text"
    WORD2VEC_BINARY = "word2vec-binary"
    GLOVE = "glove"
    FASTTEXT = "fasttext"
    GENSIM = "gensim"
    # The embedded default: distilled from all-MiniLM-L6-v2 with model2vec and cached under the data directory.
    MODEL2VEC_DISTILLED = "model2vec"


@dataclass(frozen=True)
class WordVectorsOptions(Options):
    kind: ClassVar[str] = "word-vectors"

    format: WordVectorFormat
    # The file to read; None for the embedded default.
    path: Path | None = None
    # gensim's native format is a pickle: loading one runs code from the file, so it must be asked for explicitly.
    allow_pickle: bool = False


class ModelLoadError(RuntimeError):
    """A model file could not be read; the message is one line naming the model, the file and the problem."""


class WordVectors:
    """A read-only vocabulary of word vectors with gensim KeyedVectors semantics (a `capabilities.WordSpace`)."""

    def __init__(
        self, name: str, kv: KeyedVectors, *, fmt: WordVectorFormat, source: str, version: str | None = None
    ) -> None:
        vectors = np.asarray(kv.vectors)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ValueError("the model has no vectors")
        if vectors.dtype != np.float32:
            vectors = vectors.astype(np.float32)
            kv.vectors = vectors
        if not np.isfinite(vectors).all():
            raise ValueError("the vectors contain NaN or infinite values")
        self.name = name
        self.kv = kv
        self.format = fmt
        self.source = source
        from gensim.models.fasttext import FastTextKeyedVectors

        self.has_subwords = isinstance(kv, FastTextKeyedVectors)
        self.words: list[str] = kv.index_to_key
        self.index: dict[str, int] = kv.key_to_index
        self.vectors: np.ndarray = vectors
        # float32 as gensim computes them (np.linalg.norm of float32 rows), so unit rows equal get_vector(norm=True).
        self.norms: np.ndarray = np.linalg.norm(vectors, axis=1)
        kv.norms = self.norms
        # A zero vector has no direction: gensim would produce NaN; it scores 0 against everything here instead.
        self.unit: np.ndarray = np.ascontiguousarray(unit_rows(vectors, self.norms), dtype=np.float32)
        self.unit.setflags(write=False)
        # A file's model is identified by its bytes; a derived one (minilm-static) by what it was made from.
        self.version = version or "sha256:" + vectors_checksum(vectors, self.words)[:16]
        self.space = f"model:{name}@{self.version}"
        self._folded: OrderedDict[tuple[int, bool], tuple[dict[str, int], np.ndarray]] = OrderedDict()
        self._folded_lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def indices(self, words: Sequence[str], field: str | None = None) -> list[int | None]:
        """Vocabulary index of each word; None for OOV words of a subword model; OUT_OF_VOCABULARY otherwise."""
        found = [self.index.get(w) for w in words]
        if not self.has_subwords:
            missing = [w for w, i in zip(words, found, strict=True) if i is None]
            if missing:
                raise out_of_vocabulary(self.name, missing, field, self.index)
        return found

    def vector(self, word: str, index: int | None, *, norm: bool) -> np.ndarray:
        """The word's vector (unit length with `norm`); subword models build OOV vectors from n-grams."""
        if index is not None:
            return self.unit[index] if norm else self.vectors[index]
        vec = np.asarray(self.kv.get_vector(word, norm=norm), dtype=np.float32)
        if not np.isfinite(vec).all() or not vec.any():
            raise out_of_vocabulary(self.name, [word])
        return vec

    def memory_bytes(self) -> int:
        """Bytes of the vectors and their unit-normalised copy (memory-mapped caches count too)."""
        unit = 0 if self.unit is self.vectors else self.unit.nbytes
        return int(np.asarray(self.vectors).nbytes + unit)

    def warm_up(self) -> None:
        """One cosine ranking over the whole vocabulary: touches every page of the unit matrix (memory-mapped caches
        included) and wakes the BLAS threads, so the first search does not pay for them."""
        scores = self.unit @ self.unit[0]
        int(np.argmax(scores))

    def frequencies(self) -> np.ndarray:
        """p(w) per vocabulary row: from the model's counts when it has them, else Zipf's law over the rank."""
        try:
            counts = np.asarray([self.kv.get_vecattr(w, "count") for w in self.words], dtype=np.float64)
        except (KeyError, AttributeError):  # files without counts (word2vec, GloVe) have none
            counts = np.zeros(self.size, np.float64)
        # gensim invents counts (size - rank) for files that carry none; those are not frequencies.
        invented = np.array_equal(counts, np.arange(self.size, 0, -1, dtype=np.float64))
        if invented or counts.min() <= 0:
            counts = 1.0 / np.arange(1, self.size + 1, dtype=np.float64)
        return (counts / counts.sum()).astype(np.float32)

    def folded_vocabulary(self, restrict_vocab: int, case_sensitive: bool) -> tuple[dict[str, int], np.ndarray]:
        """gensim evaluate_word_analogies' `ok_vocab` (key -> index of its first, most frequent spelling) and, for
        each of the first `restrict_vocab` rows, the index its key maps to. Cached for the last few values asked
        (restrict_vocab comes from requests: an unbounded cache would grow with every new value)."""
        key = (min(max(restrict_vocab, 0), len(self.words)), case_sensitive)
        with self._folded_lock:
            found = self._folded.get(key)
            if found is not None:
                self._folded.move_to_end(key)
                return found
        found = self._fold(*key)
        with self._folded_lock:
            self._folded[key] = found
            while len(self._folded) > _FOLDED_CACHE:
                self._folded.popitem(last=False)
        return found

    def _fold(self, restrict_vocab: int, case_sensitive: bool) -> tuple[dict[str, int], np.ndarray]:
        keys = self.words[:restrict_vocab]
        folded = keys if case_sensitive else [k.upper() for k in keys]
        vocab = {k: i for i, k in reversed(list(enumerate(folded)))}
        canonical = np.fromiter((vocab[k] for k in folded), dtype=np.int64, count=len(folded))
        return vocab, canonical


def _word2vec(binary: bool, no_header: bool = False) -> Callable[[Path], KeyedVectors]:
    def load(path: Path) -> KeyedVectors:
        from gensim.models import KeyedVectors

        return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header)

    return load


def _gensim_native(path: Path) -> KeyedVectors:
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load(str(path), mmap="r")
    if not isinstance(kv, KeyedVectors):
        raise ValueError(f"the file holds a {type(kv).__name__}, not KeyedVectors")
    return kv


def _fasttext(path: Path) -> KeyedVectors:
    from gensim.models.fasttext import load_facebook_vectors

    return load_facebook_vectors(str(path))


_LOADERS: dict[WordVectorFormat, Callable[[Path], KeyedVectors]] = {
    WordVectorFormat.WORD2VEC_TEXT: _word2vec(binary=False),
    WordVectorFormat.WORD2VEC_BINARY: _word2vec(binary=True),
    WordVectorFormat.GLOVE: _word2vec(binary=False, no_header=True),
    WordVectorFormat.FASTTEXT: _fasttext,
    WordVectorFormat.GENSIM: _gensim_native,
}


def load_word_vectors(spec: ModelSpec, data_dir: Path) -> WordVectors:
    """Read the model a spec names; any failure becomes a one-line ModelLoadError."""
    if spec.format is WordVectorFormat.MODEL2VEC_DISTILLED:
        from embedsvc.backends.minilm_static import load_minilm_static  # imports gensim, as the loaders below do

        try:
            kv, source, version = load_minilm_static(data_dir)
            return WordVectors(spec.name, kv, fmt=WordVectorFormat.MODEL2VEC_DISTILLED, source=source, version=version)
        except Exception as exc:
            raise ModelLoadError(f"model '{spec.name}': cannot build the embedded default: {_one_line(exc)}") from exc
    path, fmt = spec.path, spec.options.format
    if path is None or not path.is_file():
        raise ModelLoadError(f"model '{spec.name}': {path}: no such file")
    try:
        kv = _LOADERS[fmt](path)
        return WordVectors(spec.name, kv, fmt=fmt, source=str(path))
    except EmbedsvcError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model '{spec.name}': cannot read {path} as {fmt.value}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class WordVectorsKind(Kind):
    name = WordVectorsOptions.kind
    keys = frozenset({"path", "format", "allow_pickle"})

    def runs_file_code(self, spec: ModelSpec) -> bool:
        return bool(getattr(spec.options, "allow_pickle", False))

    def parse(self, where: str, entry: Mapping[str, Any]) -> WordVectorsOptions:
        fmt = enum_value(f"{where}.format", WordVectorFormat, entry.get("format"), hidden=("model2vec",))
        if fmt is WordVectorFormat.MODEL2VEC_DISTILLED:
            raise ConfigError(f"{where}.format: 'model2vec' is reserved for the embedded default")
        path = path_value(where, entry, "a file path")
        allow_pickle = bool_value(where, entry, "allow_pickle", False)
        if fmt is WordVectorFormat.GENSIM and not allow_pickle:
            raise ConfigError(
                f"{where}: gensim's native format is a Python pickle, which runs code from the file when loaded; "
                "set allow_pickle = true only for files you trust, or convert it to word2vec-binary"
            )
        return WordVectorsOptions(fmt, path, allow_pickle)

    def embedded(self) -> tuple[ModelSpec, ...]:
        return (
            ModelSpec(
                EMBEDDED_WORD_MODEL,
                WordVectorsOptions(WordVectorFormat.MODEL2VEC_DISTILLED),
                "Static word vectors distilled with model2vec from all-MiniLM-L6-v2 (whole words only).",
            ),
        )

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        if spec.format is WordVectorFormat.MODEL2VEC_DISTILLED:  # and its sentence mode
            return frozenset({Capability.WORDS, Capability.TEXTS})
        return frozenset({Capability.WORDS})

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        space = load_word_vectors(spec, context.data_dir)
        parts: dict[Capability, object] = {Capability.WORDS: space}
        if spec.format is WordVectorFormat.MODEL2VEC_DISTILLED:
            from embedsvc.backends.minilm_static import sentence_model_dir  # imports gensim: see load_word_vectors

            parts[Capability.TEXTS] = StaticEncoder(
                spec.name, sentence_model_dir(context.data_dir), version=space.version
            )
        return Loaded(
            engine="numpy",
            dimension=space.dimension,
            version=space.version,
            source=space.source,
            vocabulary_size=space.size,
            has_subwords=space.has_subwords,
            parts=parts,
        )


KIND = WordVectorsKind()
