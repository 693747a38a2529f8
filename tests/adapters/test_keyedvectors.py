"""RemoteKeyedVectors against in-process gensim on the same file: gensim's own KeyedVectors tests (setUp pointed at
the server, nothing else changed), then equality on the calls those tests do not cover."""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors
from gensim.test import test_keyedvectors as upstream

from embedsvc.adapters.keyedvectors import ReadOnlyModelError, RemoteKeyedVectors
from embedsvc.client import EmbedsvcClientError
from embedsvc.core.words import lookups
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits
from tests.conftest import GENSIM_DATA, QUESTIONS_WORDS, gensim_reference

# gensim 4's tests of KeyedVectors that only read: run unmodified against the server.
UPSTREAM_READ_TESTS = [
    "test_most_similar",
    "test_most_similar_vector",
    "test_most_similar_parameter_types",
    "test_most_similar_cosmul_parameter_types",
    "test_vectors_for_all_list",
    "test_most_similar_topn",
    "test_relative_cosine_similarity",
    "test_most_similar_raises_keyerror",
    "test_most_similar_restrict_vocab",
    "test_most_similar_with_vector_input",
    "test_most_similar_to_given",
    "test_similar_by_word",
    "test_similar_by_vector",
    "test_distance",
    "test_similarity",
    "test_closer_than",
    "test_rank",
    "test_get_mean_vector",
]
# Left out, and why: they change the model, save or load files, or read vector attributes (counts) not served.
UPSTREAM_LEFT_OUT = {
    "test_vectors_for_all_with_copy_vecattrs": "reads vector attributes (counts), which are not served",
    "test_vectors_for_all_without_copy_vecattrs": "reads vector attributes (counts), which are not served",
    "test_add_single": "adds vectors",
    "test_add_multiple": "adds vectors",
    "test_add_type": "adds vectors",
    "test_set_item": "sets vectors",
    "test_load_model_and_vocab_file_strict": "loads files",
    "test_load_model_and_vocab_file_replace": "loads files",
    "test_load_model_and_vocab_file_ignore": "loads files",
    "test_save_reload": "saves and loads files",
    "test_no_header": "loads files",
}


def test_the_upstream_test_list_is_complete() -> None:
    names = {n for n in dir(upstream.TestKeyedVectors) if n.startswith("test")}
    assert names == set(UPSTREAM_READ_TESTS) | set(UPSTREAM_LEFT_OUT)


@pytest.fixture(scope="module")
def remote(target: str) -> Iterator[RemoteKeyedVectors]:
    with RemoteKeyedVectors(target, "lee-binary") as kv:
        yield kv


@pytest.fixture(scope="module")
def local() -> KeyedVectors:
    return gensim_reference("lee-binary")


@pytest.mark.parametrize("name", UPSTREAM_READ_TESTS)
def test_gensim_keyedvectors_suite(name: str, target: str) -> None:
    class Remote(upstream.TestKeyedVectors):
        def setUp(self) -> None:
            self.vectors = RemoteKeyedVectors(target, "lee-binary")

        def tearDown(self) -> None:
            self.vectors.close()

    result = unittest.TestResult()
    Remote(name).run(result)
    problems = [text for _, text in result.errors + result.failures]
    assert result.testsRun == 1 and not problems, "\n".join(problems)


def test_isinstance_and_vocabulary(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    assert isinstance(remote, KeyedVectors)
    assert len(remote) == len(local)
    assert remote.index_to_key == local.index_to_key
    assert remote.key_to_index == local.key_to_index
    assert remote.vector_size == local.vector_size
    assert remote.get_index(3) == 3 and remote.get_index("war") == local.get_index("war")
    assert "war" in remote and "not_in_vocab" not in remote


def test_results_have_gensims_types_and_reprs(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    """What a prompt prints: the same Python and numpy types as gensim's (under numpy 2, similarity prints
    `np.float32(...)` in both), and a line saying what the object is rather than its address."""
    words = ["war", "peace", "conflict"]
    calls = {
        "similarity": lambda kv: kv.similarity("war", "peace"),
        "n_similarity": lambda kv: kv.n_similarity(words[:1], words[1:]),
        "distance": lambda kv: kv.distance("war", "peace"),
        "doesnt_match": lambda kv: kv.doesnt_match(words),
        "most_similar": lambda kv: kv.most_similar("war", topn=2),
        "most_similar_cosmul": lambda kv: kv.most_similar_cosmul(positive=["war"], negative=["peace"], topn=2),
        "rank": lambda kv: kv.rank("war", "peace"),
        "len": len,
    }
    for name, call in calls.items():
        got, want = call(remote), call(local)
        assert type(got) is type(want), name
        if isinstance(want, list):
            assert [tuple(map(type, g)) for g in got] == [tuple(map(type, w)) for w in want], name
        else:
            assert repr(got).split("(")[0] == repr(want).split("(")[0], name
    assert repr(remote) == str(remote) == f"RemoteKeyedVectors<model=lee-binary, vector_size=10, {len(local)} keys>"


def test_vectors_are_gensims(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    assert np.array_equal(remote["war"], local["war"])
    assert np.array_equal(remote[["war", "peace", 3]], local[["war", "peace", 3]])
    assert np.array_equal(remote.get_vector("war", norm=True), local.get_vector("war", norm=True))
    assert np.array_equal(remote.vectors, local.vectors)
    assert np.allclose(remote.get_normed_vectors(), local.get_normed_vectors(), atol=1e-7)
    with pytest.raises(KeyError):
        remote["not_in_vocab"]


@pytest.mark.parametrize(
    "call",
    [
        {"positive": ["war", "peace"], "negative": ["conflict"], "topn": 7},
        {"positive": [("war", 2.0), ("peace", 0.5)], "negative": [("conflict", -0.3)], "topn": 5},
        {"positive": [3, "war"], "topn": 4},
        {"positive": ["war"], "topn": 10, "restrict_vocab": 200},
        {"positive": ["war"], "topn": 6, "clip_end": 300},
        {"positive": ["war"], "topn": 6, "clip_start": 20, "clip_end": 400},
        {"positive": ["war"], "negative": ["peace"], "topn": None},
        {"positive": "war", "negative": "peace", "topn": np.int64(3)},
    ],
)
def test_most_similar_equals_gensim(call: dict[str, object], remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    got, want = remote.most_similar(**call), local.most_similar(**call)
    if call.get("topn", 10) is None:
        assert np.allclose(got, want, atol=1e-6)
        return
    assert [w for w, _ in got] == [w for w, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-6)


def test_vector_terms_equal_gensim(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    vec = local["war"] * 3.0 + local["peace"]
    for kwargs in ({"positive": [vec]}, {"positive": ["war", (vec, 0.5)], "negative": [local["conflict"]]}):
        got, want = remote.most_similar(**kwargs), local.most_similar(**kwargs)
        assert [w for w, _ in got] == [w for w, _ in want]
    assert [w for w, _ in remote.similar_by_vector(vec, topn=4)] == [w for w, _ in local.similar_by_vector(vec, 4)]


def test_cosmul_equals_gensim(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    for kwargs in (
        {"positive": ["war", "peace"], "negative": ["conflict"], "topn": 8},
        {"positive": ["war", local["peace"]], "topn": 5},
    ):
        got, want = remote.most_similar_cosmul(**kwargs), local.most_similar_cosmul(**kwargs)
        assert [w for w, _ in got] == [w for w, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert np.allclose(remote.most_similar_cosmul("war", topn=None), local.most_similar_cosmul("war", topn=None))


def test_pairwise_calls_equal_gensim(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    words = ["war", "peace", "conflict", "israel", "government"]
    assert remote.n_similarity(words[:2], words[2:]) == pytest.approx(local.n_similarity(words[:2], words[2:]))
    assert np.allclose(remote.distances("war", words[1:]), local.distances("war", words[1:]))
    assert np.allclose(remote.distances(local["war"], words), local.distances(local["war"], words))
    assert np.allclose(remote.distances("war"), local.distances("war"))
    assert remote.doesnt_match(words) == local.doesnt_match(words)
    got, want = remote.rank_by_centrality(words), local.rank_by_centrality(words)
    assert [w for _, w in got] == [w for _, w in want]
    assert remote.closer_than("war", "israel") == local.closer_than("war", "israel")
    assert remote.rank("war", "israel") == local.rank("war", "israel")
    assert np.allclose(
        remote.get_mean_vector(words, post_normalize=True), local.get_mean_vector(words, post_normalize=True)
    )


def test_evaluations_equal_gensim(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    for kwargs in ({}, {"restrict_vocab": 500, "dummy4unknown": True}, {"case_insensitive": False}):
        got_score, got_sections = remote.evaluate_word_analogies(QUESTIONS_WORDS, **kwargs)
        want_score, want_sections = local.evaluate_word_analogies(QUESTIONS_WORDS, **kwargs)
        assert got_score == want_score
        assert got_sections == want_sections
    pairs = GENSIM_DATA / "wordsim353.tsv"
    got, want = remote.evaluate_word_pairs(pairs), local.evaluate_word_pairs(pairs)
    assert np.allclose([got[0][0], got[1][0], got[2]], [want[0][0], want[1][0], want[2]])


def test_fasttext_builds_oov_vectors_from_subwords(target: str) -> None:
    local = gensim_reference("lee-fasttext")
    with RemoteKeyedVectors(target, "lee-fasttext") as remote:
        assert remote.has_subwords
        assert np.allclose(remote.get_vector("warfarez"), local.get_vector("warfarez"), atol=1e-6)
        assert "warfarez" not in remote.key_to_index


def test_read_only_and_errors(remote: RemoteKeyedVectors, target: str, tmp_path: Path) -> None:
    with pytest.raises(ReadOnlyModelError, match="read-only"):
        remote.add_vector("new", np.zeros(remote.vector_size, dtype=np.float32))
    with pytest.raises(ReadOnlyModelError):
        remote["war"] = np.zeros(remote.vector_size, dtype=np.float32)
    with pytest.raises(ReadOnlyModelError):
        remote.save(str(tmp_path / "kv"))
    with pytest.raises(ValueError, match="indexer"):
        remote.most_similar("war", indexer=object())
    with pytest.raises(EmbedsvcClientError, match="NOT_FOUND"):
        RemoteKeyedVectors(target, "no-such-model")
    with pytest.raises(ValueError, match="not a word model"):
        RemoteKeyedVectors(target, "tiny")


def test_export_words_is_chunked_and_bounded(remote: RemoteKeyedVectors, local: KeyedVectors) -> None:
    chunks = list(remote._client.export_words("lee-binary", include_vectors=True, start=10, limit=25, batch_size=7))
    assert [c.start for c in chunks] == [10, 17, 24, 31]
    assert sum(len(c.words) for c in chunks) == 25
    assert np.array_equal(np.vstack([c.vectors for c in chunks]), local.vectors[10:35])
    with pytest.raises(EmbedsvcClientError, match="INVALID_ARGUMENT"):
        list(remote._client.export_words("lee-binary", start=10**9))
    with pytest.raises(EmbedsvcClientError, match="LIMIT_EXCEEDED"):
        list(remote._client.export_words("lee-binary", batch_size=10**6))


def test_export_refuses_more_vector_bytes_than_the_limit(spaces: dict[str, object]) -> None:
    space = spaces["lee-binary"]
    limits = Limits(max_word_export_bytes=1000)
    with pytest.raises(EmbedsvcError) as refused:
        next(lookups.export(space, limits, include_vectors=True))  # type: ignore[arg-type]
    assert refused.value.reason is Reason.LIMIT_EXCEEDED
    words_only = list(lookups.export(space, limits))  # type: ignore[arg-type]
    assert sum(len(c.words) for c in words_only) == space.size  # type: ignore[attr-defined]
