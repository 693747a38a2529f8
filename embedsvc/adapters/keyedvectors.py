"""`RemoteKeyedVectors`: gensim 4's `KeyedVectors` read API over a word model hosted by embedsvc.

    from embedsvc.adapters.keyedvectors import RemoteKeyedVectors

    kv = RemoteKeyedVectors("localhost:50051", "glove")
    kv.most_similar(positive=["king", "woman"], negative=["man"], topn=3)

It is a `gensim.models.KeyedVectors` (isinstance holds) whose storage lives in the service:

- vocabulary-wide searches (`most_similar`, `most_similar_cosmul`, `similar_by_*`, `evaluate_word_analogies`) run on
  the server (ArithmeticService, batched), with gensim's argument handling: words, vectors and `(key, weight)`
  tuples, integer indices, `restrict_vocab`, `clip_end`; `topn=None` (all scores), a non-zero `clip_start` and vector
  terms of `most_similar_cosmul` are computed here from the full matrix, exactly as gensim computes them;
- the vocabulary (`index_to_key`, `key_to_index`, `len`) is streamed once on first use (ExportWords), and the vectors
  a call needs are fetched in one batched EmbedWords call and kept in a bounded cache; gensim's own code then runs on
  them (`similarity`, `n_similarity`, `distance`, `doesnt_match`, `rank_by_centrality`, `most_similar_to_given`,
  `relative_cosine_similarity`, `evaluate_word_pairs`), so the answers are gensim's;
- `vectors`, `norms` and `get_normed_vectors()` stream the whole matrix on first use (refused by the server above
  `limits.max_word_export_bytes`, 2 GiB by default); `distances(word)` with no other words, `closer_than` and `rank`
  need it, as they do in gensim.

The model lives in the service: methods that change vectors (`add_vector`, `__setitem__`, `save`, ...) raise
`ReadOnlyModelError`. A missing key raises `KeyError`; a failed call raises `EmbedsvcClientError` (code and reason in
its message).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from gensim import utils
from gensim.models.keyedvectors import _EXTENDED_KEY_TYPES, _KEY_TYPES, KeyedVectors, _ensure_list

from embedsvc.adapters._connect import WORDS_PER_CALL, Connection, client
from embedsvc.client import Client

logger = logging.getLogger(__name__)

# Expressions per Arithmetic call in evaluate_word_analogies (the server's limits.max_expressions is 4,096).
_QUESTIONS_PER_CALL = 2_000


class ReadOnlyModelError(TypeError):
    """Raised by the methods that would change a model that lives in the service."""


def _read_only(name: str) -> Any:
    def refuse(self: RemoteKeyedVectors, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyModelError(
            f"RemoteKeyedVectors.{name}: the model '{self.model}' lives in the embedsvc service and is read-only here; "
            "change its file and reload it (ModelService.ReloadModel), or copy it into a local KeyedVectors "
            "(KeyedVectors(vector_size); add_vectors(kv.index_to_key, kv.vectors))"
        )

    refuse.__name__ = name
    return refuse


class RemoteKeyedVectors(KeyedVectors):
    """gensim KeyedVectors' read API, answered by an embedsvc word model (see the module's docstring)."""

    def __init__(
        self,
        target: str | Client = "localhost:50051",
        model: str = "",
        *,
        cache_size: int = 100_000,
        **connection: Any,
    ) -> None:
        """`target` is "host:port" (with `api_key`, `tls`, `ca_file`, `cert_file`, `key_file`, `timeout` as for
        `embedsvc.client.Client`) or a Client. `cache_size` bounds the word vectors kept after fetching them."""
        if not model:
            raise ValueError("model: the name of a word model hosted by the server is required")
        self._client, self._owns_client = client(target, Connection(**connection))  # type: ignore[typeddict-item]
        self.model = model
        info = self._client.get_model(model)
        if info.vocabulary_size <= 0:
            raise ValueError(f"model '{model}' is not a word model (it has no vocabulary)")
        self.vector_size = int(info.dimension)
        self.has_subwords = bool(info.has_subwords)
        self.space = info.space
        self._size = int(info.vocabulary_size)
        self._lock = threading.RLock()
        self._index_to_key: list[str] | None = None
        self._key_to_index: dict[str, int] | None = None
        self._vectors: np.ndarray | None = None
        self._norms: np.ndarray | None = None
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self.next_index = self._size
        self.mapfile_path = None
        self.expandos: dict[str, Any] = {}

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RemoteKeyedVectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return f"RemoteKeyedVectors<model={self.model}, vector_size={self.vector_size}, {self._size} keys>"

    # gensim's KeyedVectors has only __str__ (`KeyedVectors<vector_size=100, 1000 keys>`); at a prompt, `>>> kv`
    # shows the same line rather than an object address.
    __repr__ = __str__

    # ---- the vocabulary ------------------------------------------------------------------------------------------

    def _vocabulary(self) -> tuple[list[str], dict[str, int]]:
        with self._lock:
            if self._index_to_key is None:
                words: list[str] = []
                for chunk in self._client.export_words(self.model):
                    words += chunk.words
                self._index_to_key = words
                self._size = len(words)
                if self._key_to_index is None:
                    self._key_to_index = {w: i for i, w in enumerate(words)}
            assert self._key_to_index is not None
            return self._index_to_key, self._key_to_index

    @property
    def index_to_key(self) -> list[str]:
        return self._vocabulary()[0]

    @index_to_key.setter
    def index_to_key(self, value: list[str]) -> None:
        raise ReadOnlyModelError("index_to_key: the vocabulary of a remote model cannot be replaced")

    @property
    def key_to_index(self) -> dict[str, int]:
        return self._vocabulary()[1]

    @key_to_index.setter
    def key_to_index(self, value: dict[str, int]) -> None:
        # gensim's evaluate_word_pairs looks keys up in a folded vocabulary for a while and then puts the real one
        # back: that is a lookup table swap, not a change to the model.
        self._vocabulary()
        self._key_to_index = value

    def __len__(self) -> int:
        return self._size

    def get_index(self, key: Any, default: int | None = None) -> int:
        val = self.key_to_index.get(key, -1)
        if val >= 0:
            return int(val)
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self):
            return int(key)
        if default is not None:
            return default
        raise KeyError(f"Key '{key}' not present")

    def has_index_for(self, key: Any) -> bool:
        return self.get_index(key, -1) >= 0

    def __contains__(self, key: Any) -> bool:
        return self.has_index_for(key)

    # ---- vectors ---------------------------------------------------------------------------------------------------

    @property
    def vectors(self) -> np.ndarray:
        """The whole matrix, streamed once on first use (read-only)."""
        with self._lock:
            if self._vectors is None:
                rows = np.empty((len(self), self.vector_size), dtype=np.float32)
                filled = 0
                for chunk in self._client.export_words(self.model, include_vectors=True):
                    assert chunk.vectors is not None
                    rows[chunk.start : chunk.start + len(chunk.words)] = chunk.vectors
                    filled += len(chunk.words)
                if filled != len(self):
                    raise RuntimeError(f"ExportWords sent {filled} of {len(self)} vectors of model '{self.model}'")
                rows.setflags(write=False)
                self._vectors = rows
            return self._vectors

    @vectors.setter
    def vectors(self, value: np.ndarray) -> None:
        raise ReadOnlyModelError("vectors: the vectors of a remote model cannot be replaced")

    @property
    def norms(self) -> np.ndarray:
        with self._lock:
            if self._norms is None:
                self._norms = np.linalg.norm(self.vectors, axis=1)
            return self._norms

    @norms.setter
    def norms(self, value: np.ndarray | None) -> None:
        if value is not None:
            raise ReadOnlyModelError("norms: computed from the remote vectors")

    def fill_norms(self, force: bool = False) -> None:
        """Norms are computed from the full matrix when it is fetched, and per fetched row otherwise."""

    def _fetch(self, indices: Iterable[int]) -> None:
        """Fetch the vectors of these vocabulary rows that are not cached yet, in as few calls as possible."""
        if self._vectors is not None:
            return
        with self._lock:
            wanted = [i for i in dict.fromkeys(indices) if i not in self._rows]
        words = self.index_to_key
        for start in range(0, len(wanted), WORDS_PER_CALL):
            part = wanted[start : start + WORDS_PER_CALL]
            got = self._client.embed_words(self.model, [words[i] for i in part]).vectors
            with self._lock:
                for i, row in zip(part, got, strict=True):
                    row = np.array(row, dtype=np.float32)
                    row.setflags(write=False)
                    self._rows[i] = row
                    self._rows.move_to_end(i)
                while len(self._rows) > max(self._cache_size, len(wanted)):
                    self._rows.popitem(last=False)

    def _prefetch(self, keys: Iterable[Any]) -> None:
        """Fetch, in one batch, the vectors of those keys that are in the vocabulary (others fail later as gensim's
        code fails on them)."""
        self._fetch(i for i in (self.get_index(k, -1) for k in keys if isinstance(k, _KEY_TYPES)) if i >= 0)

    def _row(self, index: int) -> np.ndarray:
        if self._vectors is not None:
            return self._vectors[index]
        with self._lock:
            row = self._rows.get(index)
        if row is None:
            self._fetch([index])
            with self._lock:
                row = self._rows[index]
        return row

    def get_vector(self, key: Any, norm: bool = False) -> np.ndarray:
        """The key's vector (unit length with `norm`), as gensim returns it; KeyError for a missing key. For a
        fastText model, an out-of-vocabulary word gets its vector from subwords."""
        index = self.get_index(key, -1)
        if index < 0:
            if self.has_subwords and isinstance(key, str):
                return self._subword_vector(key, norm)
            raise KeyError(f"Key '{key}' not present")
        row = self._row(index)
        if norm:
            if self._vectors is not None:
                result = self._vectors[index] / self.norms[index]
            else:
                result = row / np.linalg.norm(row[np.newaxis, :], axis=1)[0]
        else:
            result = row
        result.setflags(write=False)
        return result

    def _subword_vector(self, word: str, norm: bool) -> np.ndarray:
        found = self._client.embed_words(self.model, [word], normalize=norm).vectors[0]
        result = np.array(found, dtype=np.float32)
        result.setflags(write=False)
        return result

    def __getitem__(self, key_or_keys: Any) -> np.ndarray:
        if isinstance(key_or_keys, _KEY_TYPES):
            return self.get_vector(key_or_keys)
        keys = list(key_or_keys)
        self._prefetch(keys)
        return np.vstack([self.get_vector(key) for key in keys])

    def get_mean_vector(
        self,
        keys: Any,
        weights: Any = None,
        pre_normalize: bool = True,
        post_normalize: bool = False,
        ignore_missing: bool = True,
    ) -> np.ndarray:
        """gensim's get_mean_vector, with the keys' vectors fetched in one call."""
        if len(keys) == 0:
            raise ValueError("cannot compute mean with no input")
        if isinstance(weights, list):
            weights = np.array(weights, dtype=np.float32)
        if weights is None:
            weights = np.ones(len(keys), dtype=np.float32)
        if len(keys) != weights.shape[0]:
            raise ValueError("keys and weights array must have same number of elements")
        self._prefetch(k for k in keys if not isinstance(k, np.ndarray))
        mean: np.ndarray = np.zeros(self.vector_size, np.float32)
        total_weight = 0
        for idx, key in enumerate(keys):
            if isinstance(key, np.ndarray):
                mean += weights[idx] * key
                total_weight += abs(weights[idx])
            elif self.__contains__(key):
                mean += weights[idx] * self.get_vector(key, norm=pre_normalize)
                total_weight += abs(weights[idx])
            elif not ignore_missing:
                raise KeyError(f"Key '{key}' not present in vocabulary")
        if total_weight > 0:
            mean = mean / total_weight
        if post_normalize:
            from gensim import matutils

            mean = matutils.unitvec(mean).astype(np.float32)
        return mean

    # ---- searches on the server ----------------------------------------------------------------------------------

    def _term(self, key: Any, weight: float) -> tuple[float, Any]:
        if isinstance(key, np.ndarray):
            vector = np.asarray(key, dtype=np.float32)
            if vector.shape != (self.vector_size,):
                raise ValueError(f"a vector term must have shape ({self.vector_size},), got {vector.shape}")
            return float(weight), vector
        index = self.get_index(key, -1)
        if index < 0:
            raise KeyError(f"Key '{key}' not present in vocabulary")
        return float(weight), self.index_to_key[index]

    def most_similar(
        self,
        positive: Any = None,
        negative: Any = None,
        topn: Any = 10,
        clip_start: int = 0,
        clip_end: int | None = None,
        restrict_vocab: int | None = None,
        indexer: Any = None,
    ) -> Any:
        """gensim most_similar, searched by the server (3CosAdd). `topn=None` returns every score, as gensim does."""
        if indexer is not None:
            raise ValueError("indexer: RemoteKeyedVectors searches on the server; an approximate indexer is not used")
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive = _ensure_list(positive)
        negative = _ensure_list(negative)
        keys: list[Any] = []
        weight = np.concatenate((np.ones(len(positive)), -1.0 * np.ones(len(negative))))
        for idx, item in enumerate(positive + negative):
            if isinstance(item, _EXTENDED_KEY_TYPES):
                keys.append(item)
            else:
                keys.append(item[0])
                weight[idx] = item[1]
        if restrict_vocab:
            clip_start, clip_end = 0, restrict_vocab
        if not topn or clip_start:
            return self._most_similar_here(keys, weight, topn, clip_start, clip_end)
        if not keys:
            raise ValueError("cannot compute mean with no input")
        terms = [self._term(k, w) for k, w in zip(keys, weight, strict=True)]
        result = self._client.arithmetic(
            self.model, [terms], top_n=int(topn), restrict_vocab=int(clip_end or 0)
        ).results[0]
        return [(h.word, h.score) for h in result.hits]

    def _most_similar_here(
        self, keys: list[Any], weight: np.ndarray, topn: Any, clip_start: int, clip_end: int | None
    ) -> Any:
        """gensim's own computation over the full matrix (all scores, or a window not starting at 0)."""
        from gensim import matutils

        clip_end = clip_end or len(self.vectors)
        mean = self.get_mean_vector(keys, weight, pre_normalize=True, post_normalize=True, ignore_missing=False)
        all_keys = [self.get_index(key) for key in keys if isinstance(key, _KEY_TYPES) and self.has_index_for(key)]
        dists = np.dot(self.vectors[clip_start:clip_end], mean) / self.norms[clip_start:clip_end]
        if not topn:
            return dists
        best = matutils.argsort(dists, topn=topn + len(all_keys), reverse=True)
        result = [
            (self.index_to_key[sim + clip_start], float(dists[sim]))
            for sim in best
            if (sim + clip_start) not in all_keys
        ]
        return result[:topn]

    def most_similar_cosmul(
        self, positive: Any = None, negative: Any = None, topn: Any = 10, restrict_vocab: int | None = None
    ) -> Any:
        """gensim most_similar_cosmul, searched by the server (3CosMul). Unlike gensim, which documents
        `restrict_vocab` but ignores it, the search is restricted to the first `restrict_vocab` words. Vector terms
        and `topn=None` are computed here from the full matrix, exactly as gensim does."""
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive = _ensure_list(positive)
        negative = _ensure_list(negative)
        if not positive:
            raise ValueError("cannot compute similarity with no input")
        if not topn or any(isinstance(t, np.ndarray) for t in positive + negative):
            return KeyedVectors.most_similar_cosmul(self, positive, negative, topn)
        terms = [self._term(k, 1.0) for k in positive] + [self._term(k, -1.0) for k in negative]
        result = self._client.arithmetic(
            self.model, [terms], method="cosmul", top_n=int(topn), restrict_vocab=int(restrict_vocab or 0)
        ).results[0]
        return [(h.word, h.score) for h in result.hits]

    def init_sims(self, replace: bool = False) -> None:
        if replace:
            raise ReadOnlyModelError("init_sims(replace=True): the vectors of a remote model cannot be replaced")

    # ---- gensim's code over fetched vectors ----------------------------------------------------------------------

    def similarity(self, w1: Any, w2: Any) -> Any:
        self._prefetch([w1, w2])
        return KeyedVectors.similarity(self, w1, w2)

    def n_similarity(self, ws1: Sequence[Any], ws2: Sequence[Any]) -> Any:
        self._prefetch(list(ws1) + list(ws2))
        return KeyedVectors.n_similarity(self, ws1, ws2)

    def most_similar_to_given(self, key1: Any, keys_list: Sequence[Any]) -> Any:
        self._prefetch([key1, *keys_list])
        return KeyedVectors.most_similar_to_given(self, key1, keys_list)

    def rank_by_centrality(self, words: Sequence[Any], use_norm: bool = True) -> Any:
        self._prefetch(words)
        return KeyedVectors.rank_by_centrality(self, words, use_norm)

    def distances(self, word_or_vector: Any, other_words: Sequence[Any] = ()) -> np.ndarray:
        """gensim distances: to the given words (fetched in one call), or to the whole vocabulary."""
        if not other_words:
            return KeyedVectors.distances(self, word_or_vector, other_words)
        if isinstance(word_or_vector, _KEY_TYPES):
            self._prefetch([word_or_vector, *other_words])
            input_vector = self.get_vector(word_or_vector)
        else:
            self._prefetch(other_words)
            input_vector = word_or_vector
        other_vectors = np.vstack([self.get_vector(self.get_index(w)) for w in other_words])
        return 1 - self.cosine_similarities(input_vector, other_vectors)

    def evaluate_word_pairs(self, pairs: str | Path, delimiter: str = "\t", encoding: str = "utf8", **kw: Any) -> Any:
        """gensim evaluate_word_pairs (Pearson, Spearman, OOV ratio), with every pair's vectors fetched first."""
        restrict_vocab = kw.get("restrict_vocab", 300000)
        case_insensitive = kw.get("case_insensitive", True)
        ok_keys = self.index_to_key[:restrict_vocab]
        ok_vocab = {(k.upper() if case_insensitive else k): i for i, k in reversed(list(enumerate(ok_keys)))}
        wanted = []
        with utils.open(pairs, encoding=encoding) as fin:
            for line in fin:
                if not line or line.startswith("#"):
                    continue
                parts = line.split(delimiter)
                if len(parts) == 3:
                    wanted += [ok_vocab.get(p.upper() if case_insensitive else p, -1) for p in parts[:2]]
        self._fetch(i for i in wanted if i >= 0)
        return KeyedVectors.evaluate_word_pairs(self, pairs, delimiter, encoding, **kw)

    def evaluate_word_analogies(
        self,
        analogies: str | Path,
        restrict_vocab: int = 300000,
        case_insensitive: bool = True,
        dummy4unknown: bool = False,
        similarity_function: str = "most_similar",
    ) -> tuple[float, list[dict[str, Any]]]:
        """gensim evaluate_word_analogies: the same sections, lists and score, with the questions searched by the
        server in batches (3CosAdd, top 5 each, gensim's rule for picking the prediction)."""
        if similarity_function != "most_similar":
            raise ValueError("similarity_function: only 'most_similar' is served")
        ok_keys = self.index_to_key[:restrict_vocab]
        fold = str.upper if case_insensitive else (lambda w: w)
        ok_vocab = {fold(k): i for i, k in reversed(list(enumerate(ok_keys)))}
        words = self.index_to_key
        oov, quadruplets_no = 0, 0
        sections: list[dict[str, Any]] = []
        # Per section, its questions in file order: the index of the batched search that answers it, or None for an
        # OOV question counted as incorrect (dummy4unknown).
        orders: list[list[tuple[int | None, tuple[str, ...]]]] = []
        questions: list[tuple[str, ...]] = []
        with utils.open(analogies, "rb") as fin:
            for line_no, raw in enumerate(fin):
                line = utils.to_unicode(raw)
                if line.startswith(": "):
                    sections.append({"section": line.lstrip(": ").strip(), "correct": [], "incorrect": []})
                    orders.append([])
                    continue
                if not sections:
                    raise ValueError(f"Missing section header before line #{line_no} in {analogies}")
                parts = tuple(fold(w) for w in line.split())
                if len(parts) != 4:
                    logger.info("Skipping invalid line #%i in %s", line_no, analogies)
                    continue
                quadruplets_no += 1
                if any(w not in ok_vocab for w in parts):
                    oov += 1
                    if dummy4unknown:
                        orders[-1].append((None, parts))
                    continue
                orders[-1].append((len(questions), parts))
                questions.append(parts)
        outcomes: list[bool] = []
        for start in range(0, len(questions), _QUESTIONS_PER_CALL):
            part = questions[start : start + _QUESTIONS_PER_CALL]
            expressions = [
                [(1.0, words[ok_vocab[b]]), (1.0, words[ok_vocab[c]]), (-1.0, words[ok_vocab[a]])]
                for a, b, c, _e in part
            ]
            results = self._client.arithmetic(
                self.model, expressions, top_n=5, restrict_vocab=int(restrict_vocab)
            ).results
            for (a, b, c, expected), result in zip(part, results, strict=True):
                predicted = None
                for hit in result.hits:
                    predicted = fold(hit.word)
                    if predicted in ok_vocab and predicted not in {a, b, c}:
                        break
                outcomes.append(predicted == expected)
        for section, order in zip(sections, orders, strict=True):
            for answer, question in order:
                ok = answer is not None and outcomes[answer]
                section["correct" if ok else "incorrect"].append(question)
        total = {
            "section": "Total accuracy",
            "correct": list(itertools.chain.from_iterable(s["correct"] for s in sections)),
            "incorrect": list(itertools.chain.from_iterable(s["incorrect"] for s in sections)),
        }
        if quadruplets_no:
            logger.info("Quadruplets with out-of-vocabulary words: %.1f%%", float(oov) / quadruplets_no * 100)
        for s in sections:
            self._log_evaluate_word_analogies(s)
        score = self._log_evaluate_word_analogies(total)
        sections.append(total)
        return score, sections

    def vectors_for_all(self, keys: Iterable[Any], allow_inference: bool = True, copy_vecattrs: bool = False) -> Any:
        """A new, local KeyedVectors holding the given keys' vectors (fetched in one call); out-of-vocabulary keys
        are dropped, or built from subwords by a fastText model with `allow_inference`. Vector attributes (counts)
        are not served: `copy_vecattrs` is refused."""
        if copy_vecattrs:
            raise ValueError("copy_vecattrs: vector attributes (such as counts) are not served by embedsvc")
        keys = list(dict.fromkeys(keys))
        known = [k for k in keys if k in self or (allow_inference and self.has_subwords and isinstance(k, str))]
        local = KeyedVectors(self.vector_size, 0, dtype=np.float32)
        if known:
            in_vocab = [self.index_to_key[self.get_index(k)] if k in self else k for k in known]
            found = np.vstack(
                [
                    self._client.embed_words(self.model, in_vocab[i : i + WORDS_PER_CALL]).vectors
                    for i in range(0, len(in_vocab), WORDS_PER_CALL)
                ]
            )
            local.add_vectors(known, found)
        return local

    # ---- what a remote model refuses -----------------------------------------------------------------------------

    add_vector = _read_only("add_vector")
    add_vectors = _read_only("add_vectors")
    __setitem__ = _read_only("__setitem__")
    set_vecattr = _read_only("set_vecattr")
    allocate_vecattrs = _read_only("allocate_vecattrs")
    resize_vectors = _read_only("resize_vectors")
    sort_by_descending_frequency = _read_only("sort_by_descending_frequency")
    unit_normalize_all = _read_only("unit_normalize_all")
    intersect_word2vec_format = _read_only("intersect_word2vec_format")
    save = _read_only("save")
    save_word2vec_format = _read_only("save_word2vec_format")

    def get_vecattr(self, key: Any, attr: str) -> Any:
        raise KeyError(f"vector attribute '{attr}': vector attributes (such as counts) are not served by embedsvc")

    def __reduce__(self) -> Any:
        raise ReadOnlyModelError("RemoteKeyedVectors cannot be pickled: it is a connection to a service")
