"""Keyword and hybrid search, reranking, grouping, diversity and search by example through a real server, on both
collection backends (FAISS, and Milvus Lite started by the server), with the public client; every answer checked
against the pure functions the service is made of (fusion, MMR, examples) run on what the server's own dense and
keyword searches return, and bad input as (code, reason)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gensim
import grpc
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.client import Client, EmbedsvcClientError, ItemRef, search_query
from embedsvc.core.collections import diversity, examples, fusion
from embedsvc.index.types import Metric
from embedsvc.limits import Limits
from embedsvc.settings import MilvusSettings, Settings, StorageSettings
from embedsvc.transport.server import create_server
from tests import toy_kind

DATA = Path(gensim.__file__).parent / "test" / "test_data"
LIMITS = Limits(max_candidates=400, max_rerank_candidates=60, max_examples=8, max_group_size=5, max_text_chars=2000)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def documents() -> list[str]:
    """Real news texts (gensim's Lee corpus), the first 120."""
    return [line.strip() for line in (DATA / "lee_background.cor").read_text().splitlines() if line.strip()][:120]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with toy_kind.registered(toy_kind.CROSS_ENCODER_KIND):
        settings = Settings(
            port=0,
            data_dir=tmp_path_factory.mktemp("retrieval"),
            embedded_models=False,
            models=(
                ModelSpec("lee", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, DATA / "lee_fasttext.vec")),
                ModelSpec("news", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee")),
                ModelSpec("overlap", toy_kind.OverlapOptions()),
            ),
            storage=StorageSettings("faiss", MilvusSettings("milvus.db")),
            limits=LIMITS,
        )
        server, port = create_server(settings)
        server.start()
        try:
            server.wait_until_ready(120)
            with Client(f"127.0.0.1:{port}", timeout=120) as c:
                yield c
        finally:
            server.stop(0)


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def news(request, client) -> Iterator[tuple[str, dict[str, str]]]:
    """A collection bound to the text model (so keyword-indexed, in English, by default): each document in two
    chunks (metadata doc, part), and one item without a doc field."""
    name = f"news-{request.param}"
    client.create_collection(name, model="news", backend=request.param)
    texts: dict[str, str] = {}
    metadata = []
    for n, doc in enumerate(documents()):
        words = doc.split()
        half = len(words) // 2
        for part, chunk in enumerate((" ".join(words[:half]), " ".join(words[half:]))):
            texts[f"d{n}-{part}"] = chunk
            metadata.append({"doc": n, "part": part, "even": n % 2 == 0})
    texts["loose"] = "an unfiled note about the bushfires and the weather"
    metadata.append({"part": 0, "even": True})
    client.upsert(name, list(texts), metadata=metadata, inputs=list(texts.values()))
    yield name, texts
    client.delete_collection(name)


def refused(call) -> tuple[grpc.StatusCode, str, str | None]:
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value.code, info.value.reason, info.value.field


def pairs(hits) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in hits]


def same(a, b) -> bool:
    """The same hits with the same scores, up to float rounding (a batch embeds its texts together)."""
    return [h.id for h in a] == [h.id for h in b] and [h.score for h in a] == pytest.approx([h.score for h in b])


QUERY = "bushfires burning near Sydney"


def test_a_text_collection_has_a_keyword_index_and_search_defaults(client, news):
    name, _ = news
    info = client.get_collection(name)
    assert info.keyword.language == "english" and info.keyword.enabled
    defaults = info.search_defaults
    assert defaults.mode == 1  # dense, unless the collection was created with another
    assert (defaults.fusion.method, defaults.fusion.dense_weight, defaults.fusion.candidates) == (2, 0.5, 200)
    assert defaults.fusion.rrf_k == 60


def test_keyword_search_is_bm25_over_the_texts_with_explanations(client, news):
    name, texts = news
    hits = client.search(name, input=QUERY, mode="keyword", k=10)
    assert hits.retrieval.mode == "keyword" and hits.retrieval.keyword_language == "english"
    assert hits.retrieval.keyword_candidates == 10 and hits.retrieval.dense_candidates == 0
    assert len(hits) == 10 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for rank, hit in enumerate(hits, 1):
        assert hit.input == texts[hit.id]
        assert {"bushfir", "burn", "sydney"} & set(hit.input.lower().replace(",", " ").replace(".", " ").split()) or (
            "bushfire" in hit.input.lower() or "sydney" in hit.input.lower() or "burn" in hit.input.lower()
        )
        assert (hit.explanation.keyword_rank, hit.explanation.keyword_score) == (rank, hit.score)
        assert hit.explanation.dense_rank == 0 and hit.explanation.fused_score is None


def test_keyword_ranking_equals_the_keyword_index_in_process(client, news):
    """The FAISS collection's keyword hits are the in-process index's (BM25 of tantivy over the same texts); Milvus
    ranks with its own BM25 statistics, so its best hits only largely agree."""
    from embedsvc.index.keyword.index import KeywordIndex

    name, texts = news
    index = KeywordIndex("english")
    index.build(list(texts), list(texts.values()))
    expected = index.search(QUERY, 20)
    hits = client.search(name, input=QUERY, mode="keyword", k=20)
    if name.endswith("faiss"):
        assert [h.id for h in hits] == expected.ids
        np.testing.assert_allclose([h.score for h in hits], expected.scores, rtol=1e-5)
    else:
        assert len({h.id for h in hits[:10]} & set(expected.ids[:10])) >= 7


def test_hybrid_equals_weighted_fusion_of_the_servers_own_dense_and_keyword_candidates(client, news):
    name, _ = news
    dense = client.search(name, input=QUERY, mode="dense", k=200)
    keyword = client.search(name, input=QUERY, mode="keyword", k=200)
    hybrid = client.search(name, input=QUERY, mode="hybrid", k=10)
    expected = fusion.weighted(pairs(dense), pairs(keyword), 0.5)[:10]
    assert [(h.id, pytest.approx(h.score)) for h in hybrid] == [(f.key, f.score) for f in expected]
    for hit, f in zip(hybrid, expected, strict=True):
        e = hit.explanation
        assert (e.dense_rank, e.keyword_rank) == (f.explanation.dense_rank, f.explanation.keyword_rank)
        assert e.fused_score == pytest.approx(e.dense_contribution + e.keyword_contribution)
    report = hybrid.retrieval
    assert report.mode == "hybrid" and report.fusion == {
        "method": "weighted",
        "rrf_k": 60,
        "dense_weight": 0.5,
        "candidates": 200,
    }
    assert report.dense_candidates == report.keyword_candidates == 200
    assert hybrid.provenance.parameters["mode"] == "hybrid"


def test_rrf_with_its_parameters(client, news):
    name, _ = news
    dense = client.search(name, input=QUERY, mode="dense", k=50)
    keyword = client.search(name, input=QUERY, mode="keyword", k=50)
    hits = client.search(name, input=QUERY, mode="hybrid", fusion="rrf", rrf_k=10, candidates=50, k=10)
    expected = fusion.rrf(pairs(dense), pairs(keyword), 10)[:10]
    assert [(h.id, pytest.approx(h.score)) for h in hits] == [(f.key, f.score) for f in expected]
    assert hits.retrieval.fusion["method"] == "rrf" and hits.retrieval.fusion["dense_weight"] is None


def test_a_query_of_stopwords_is_dense_only_in_hybrid_and_empty_in_keyword(client, news):
    name, _ = news
    keyword = client.search(name, input="the of and", mode="keyword", k=5)
    assert list(keyword) == [] and keyword.retrieval.notices == [(0, "keyword_query_empty")]
    hybrid = client.search(name, input="the of and", mode="hybrid", k=5)
    dense = client.search(name, input="the of and", mode="dense", k=5)
    assert pairs(hybrid) == pairs(dense) and hybrid.retrieval.notices == [(0, "keyword_query_empty")]
    assert all(h.explanation.dense_rank == r and h.explanation.keyword_rank == 0 for r, h in enumerate(hybrid, 1))
    nomatch = client.search(name, input="the xylophones", mode="hybrid", k=3)
    assert nomatch.retrieval.notices == [(0, "no_keyword_match")] and len(nomatch) == 3


def test_filters_apply_to_keyword_and_hybrid_hits(client, news):
    name, _ = news
    for mode in ("keyword", "hybrid"):
        hits = client.search(name, input=QUERY, mode=mode, k=10, filter="even = true AND part = 1")
        assert hits and all(h.metadata["even"] and h.metadata["part"] == 1 for h in hits)
    unfiltered = [h for h in client.search(name, input=QUERY, mode="keyword", k=200) if h.metadata.get("doc") == 7]
    only = client.search(name, input=QUERY, mode="keyword", k=10, filter="doc = 7")
    assert pairs(only) == pairs(unfiltered[:10]) or name.endswith("milvus")  # Milvus's BM25 moves with the filter
    assert {h.id for h in only} == {h.id for h in unfiltered[:10]}


def test_a_keyword_text_beside_a_vector_and_batch_search(client, news):
    name, _ = news
    vector = client.embed_texts("news", [QUERY]).vectors[0]
    by_vector = client.search(name, vector=vector, keyword_text=QUERY, mode="hybrid", k=5)
    by_input = client.search(name, input=QUERY, mode="hybrid", k=5)
    assert [h.id for h in by_vector] == [h.id for h in by_input]
    assert [h.score for h in by_vector] == pytest.approx([h.score for h in by_input])
    only_text = client.search(name, keyword_text=QUERY, mode="keyword", k=5)
    assert pairs(only_text) == pairs(client.search(name, input=QUERY, mode="keyword", k=5))
    lists = client.batch_search(name, [QUERY, "the of", "cricket test match"], mode="hybrid", k=4)
    assert [len(hits) for hits in lists] == [4, 4, 4]
    assert lists[0].retrieval.notices == [(1, "keyword_query_empty")]
    assert same(lists[2], client.search(name, input="cricket test match", mode="hybrid", k=4))


def test_group_by_returns_k_documents_with_their_best_chunks(client, news):
    name, _ = news
    hits = client.search(name, input=QUERY, mode="hybrid", k=5, group_by="doc", group_size=2)
    assert list(hits) == [] and len(hits.groups) == 5
    values = [g.value for g in hits.groups]
    assert len(set(values)) == 5
    plain = client.search(name, input=QUERY, mode="hybrid", k=400)
    order = [h.id for h in plain]
    for group in hits.groups:
        assert 1 <= len(group.hits) <= 2
        if group.value is None:  # the item without a doc field is a group of its own
            assert [h.id for h in group.hits] == ["loose"]
            continue
        assert all(h.metadata["doc"] == group.value for h in group.hits)
        chunks = [i for i in order if i.startswith(f"d{group.value}-")]
        assert [h.id for h in group.hits] == chunks[:2]
    firsts = [order.index(g.hits[0].id) for g in hits.groups]
    assert firsts == sorted(firsts)  # groups rank by their best hit


def test_groups_incomplete_is_noticed(client, news):
    name, _ = news
    hits = client.search(name, input=QUERY, mode="keyword", k=5, group_by="doc", group_size=3, filter="doc < 3")
    assert hits.retrieval.notices == [(0, "groups_incomplete")]
    assert all(len(g.hits) <= 2 for g in hits.groups)  # two chunks per document: never three


def test_diversity_is_mmr_over_the_dense_candidates(client, news):
    name, _ = news
    vector = client.embed_texts("news", [QUERY]).vectors[0]
    pool = client.search(name, vector=vector, k=40, include_vectors=True)
    hits = client.search(name, vector=vector, k=6, diversity=0.6, diversity_candidates=40)
    relevance = diversity.relevance_to(vector, np.stack([h.vector for h in pool]))
    order, marginal = diversity.mmr(relevance, np.stack([h.vector for h in pool]), 6, 0.6)
    assert [h.id for h in hits] == [pool[i].id for i in order]
    assert [h.explanation.mmr_score for h in hits] == pytest.approx(marginal)
    assert [h.score for h in hits] == pytest.approx([pool[i].score for i in order])  # hits keep their scores
    assert hits.retrieval.diversity == 0.6 and hits.retrieval.diversity_candidates == 40


def test_search_by_example(client, news):
    name, _ = news
    items, _ = client.get_items(name, ["d3-0", "d3-1", "d40-0"], include_vectors=True)
    vectors = {i["id"]: i["vector"] for i in items}
    average = examples.average_vector(
        np.stack([vectors["d3-0"], vectors["d3-1"]]), vectors["d40-0"][None], Metric.COSINE
    )
    by_average = client.search(name, positive_ids=["d3-0", "d3-1"], negative_ids=["d40-0"], k=5)
    expected = client.search(name, vector=average, k=8)
    assert [h.id for h in by_average] == [h.id for h in expected if h.id not in {"d3-0", "d3-1", "d40-0"}][:5]
    assert by_average.retrieval.example_strategy == "average_vector"
    kept = client.search(name, positive_ids=["d3-0"], k=3, keep_inputs=True)
    assert kept[0].id == "d3-0" and kept[0].is_input and not any(h.is_input for h in kept[1:])
    best = client.search(name, positive_ids=["d3-0"], negative_ids=["d40-0"], strategy="best_score", k=5)
    assert best.retrieval.example_strategy == "best_score" and len(best) == 5
    for hit in best:
        e = hit.explanation
        expected_score = (
            examples.squash(e.best_positive) if e.best_positive > e.best_negative else -examples.squash(e.best_negative)
        )
        assert hit.score == pytest.approx(float(expected_score))
    assert [h.score for h in best] == sorted((h.score for h in best), reverse=True)


def test_item_terms_in_expressions(client, news):
    name, _ = news
    (item,), _ = client.get_items(name, ["d5-0"], include_vectors=True)
    unit = item["vector"] / np.linalg.norm(item["vector"])
    by_item = client.search(name, expression=[ItemRef(name, "d5-0"), (-0.5, "fire")], k=5)
    by_vector = client.search(name, expression=[unit, (-0.5, "fire")], k=6)
    assert [h.id for h in by_item] == [h.id for h in by_vector if h.id != "d5-0"][:5]
    code, reason, _ = refused(lambda: client.search(name, expression=[ItemRef(name, "nope")], k=3))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND")


def test_keep_inputs_marks_the_query_s_own_items(client, news):
    name, texts = news
    text = texts["d9-1"]
    hits = client.search(name, input=text, mode="hybrid", k=3, keep_inputs=True)
    assert hits[0].id == "d9-1" and hits[0].is_input
    assert "d9-1" not in [h.id for h in client.search(name, input=text, mode="hybrid", k=3)]


def test_bad_input(client, news):
    name, _ = news
    q = {"input": QUERY}
    cases = [
        ({"mode": 7}, (INVALID, "INVALID_VALUE", "options.mode")),
        ({"mode": "hybrid", "fusion": 9}, (INVALID, "INVALID_VALUE", "options.fusion.method")),
        ({"mode": "hybrid", "candidates": 401}, (INVALID, "LIMIT_EXCEEDED", "options.fusion.candidates")),
        ({"mode": "hybrid", "k": 20, "candidates": 10}, (INVALID, "INVALID_VALUE", "options.fusion.candidates")),
        ({"mode": "hybrid", "dense_weight": 1.5}, (INVALID, "INVALID_VALUE", "options.fusion.dense_weight")),
        ({"rerank": "overlap", "rerank_candidates": 61}, (INVALID, "LIMIT_EXCEEDED", "options.rerank.candidates")),
        ({"group_by": "doc", "group_size": 6}, (INVALID, "LIMIT_EXCEEDED", "options.group_size")),
        ({"diversity": 0.5, "diversity_candidates": 401}, (INVALID, "LIMIT_EXCEEDED", "options.diversity_candidates")),
        ({"diversity": 1.5}, (INVALID, "INVALID_VALUE", "options.diversity")),
        ({"rerank": "news"}, (INVALID, "MODEL_KIND_MISMATCH", None)),
    ]
    for options, expected in cases:
        got = refused(lambda options=options: client.search(name, **q, **options))
        assert got[:2] == expected[:2] and (expected[2] is None or got[2] == expected[2]), (options, got)
    too_long = "word " * 401
    assert refused(lambda: client.search(name, input=too_long, mode="keyword"))[:2] == (INVALID, "LIMIT_EXCEEDED")
    nine = [f"d{i}-0" for i in range(9)]
    assert refused(lambda: client.search(name, positive_ids=nine))[:2] == (INVALID, "LIMIT_EXCEEDED")
    assert refused(lambda: client.search(name, positive_ids=["d1-0"], mode="hybrid"))[:2] == (INVALID, "INVALID_VALUE")
    vector = np.ones(client.get_collection(name).dimension, np.float32)
    assert refused(lambda: client.search(name, vector=vector, mode="keyword"))[:2] == (INVALID, "MISSING_FIELD")
    packed = np.ones((2, len(vector)), np.float32)
    assert refused(lambda: client.batch_search(name, packed, mode="hybrid"))[:2] == (INVALID, "INVALID_VALUE")


def test_keyword_search_of_a_collection_without_text_is_refused(client):
    client.create_collection("plain", dimension=4, metric="l2")
    try:
        got = refused(lambda: client.search("plain", keyword_text="anything", mode="keyword"))
        assert got == (PRECONDITION, "KEYWORD_INDEX_MISSING", "options.mode")
        got = refused(lambda: client.search("plain", vector=np.ones(4, np.float32), keyword_text="x", mode="hybrid"))
        assert got[:2] == (PRECONDITION, "KEYWORD_INDEX_MISSING")
    finally:
        client.delete_collection("plain")


def test_any_collection_with_a_keyword_index_takes_text_beside_vectors(client):
    """An unbound collection created with `keyword`: items carry their vectors and their text (not embedded)."""
    client.create_collection(
        "tagged", dimension=3, metric="cosine", keyword="english", search_defaults={"mode": "hybrid"}
    )
    try:
        x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
        client.upsert("tagged", ["a", "b", "c"], x, inputs=["red apples", "green pears", "red cherries"])
        hits = client.search("tagged", vector=np.array([0, 0.1, 1], np.float32), keyword_text="red fruit", k=3)
        assert hits.retrieval.mode == "hybrid" and hits[0].id == "c" and hits[-1].id == "b"
        info = client.get_collection("tagged")
        assert info.search_defaults.mode == 3 and info.keyword.language == "english"
        got = refused(lambda: client.create_collection("bad", dimension=3, search_defaults={"mode": "keyword"}))
        assert got == (PRECONDITION, "KEYWORD_INDEX_MISSING", "search_defaults.mode")
        got = refused(lambda: client.create_collection("bad", dimension=3, keyword="klingon"))
        assert got[:3] == (INVALID, "INVALID_VALUE", "keyword.language")
    finally:
        client.delete_collection("tagged")


def test_rerank_stage_reorders_the_best_candidates_by_the_cross_encoder(client, news):
    name, texts = news
    query = "fire near the city of Sydney"
    hybrid = client.search(name, input=query, mode="hybrid", k=30)
    hits = client.search(name, input=query, mode="hybrid", k=5, rerank="overlap", rerank_candidates=30)
    raw = np.array([toy_kind.WordOverlap.raw(query, texts[h.id]) for h in hybrid])
    order = np.argsort(-raw, kind="stable")[:5]
    assert [h.id for h in hits] == [hybrid[i].id for i in order]
    assert [h.score for h in hits] == pytest.approx(1 / (1 + np.exp(-raw[order])))
    for hit in hits:
        assert hit.explanation.rerank_score == pytest.approx(hit.score)
        assert hit.explanation.candidate_rank == [h.id for h in hybrid].index(hit.id) + 1
        assert hit.explanation.fused_score is not None
    report = hits.retrieval
    assert report.rerank == {"model": "overlap", "candidates": 30, "raw_scores": False, "model_version": "overlap-1"}
    raw_hits = client.search(name, input=query, k=3, rerank="overlap", rerank_candidates=30, raw_scores=True)
    assert raw_hits[0].score == pytest.approx(raw.max()) or raw_hits[0].score > 1


def test_rerank_ranks_candidates_without_text_last(client):
    client.create_collection("mixed", dimension=2, metric="cosine", keyword=True)
    try:
        x = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2]], np.float32)
        client.upsert("mixed", ["a", "b", "c"], x, inputs=["", "apple tart", "apple pie with apple"])
        hits = client.search("mixed", vector=np.array([1, 0], np.float32), keyword_text="apple pie", rerank="overlap")
        assert [h.id for h in hits] == ["c", "b", "a"] and hits[2].score == 0.0
        assert hits[2].explanation.rerank_score is None
        assert hits.retrieval.notices == [(0, "rerank_missing_text")]
        got = refused(lambda: client.search("mixed", vector=np.array([1, 0], np.float32), rerank="overlap"))
        assert got[:2] == (INVALID, "MISSING_FIELD")
    finally:
        client.delete_collection("mixed")


def test_batch_of_query_messages_with_examples_and_texts(client, news):
    name, _ = news
    queries = [search_query(keyword_text=QUERY), search_query(input="cricket")]
    lists = client.batch_search(name, queries, mode="keyword", k=3)
    assert [len(hits) for hits in lists] == [3, 3]


def test_item_terms_in_arithmetic_are_their_items_unit_vectors(client, news):
    name, _ = news
    client.create_collection("lee-words", model="lee")
    try:
        client.upsert("lee-words", ["w-fire", "w-police"], inputs=["fire", "police"])
        by_item = client.arithmetic("lee", [[ItemRef("lee-words", "w-fire"), (-1.0, ItemRef("lee-words", "w-police"))]])
        by_word = client.arithmetic("lee", ["fire - police"], keep_inputs=True)
        assert [h.word for h in by_item.results[0].hits] == [h.word for h in by_word.results[0].hits]
        assert [h.score for h in by_item.results[0].hits] == pytest.approx([h.score for h in by_word.results[0].hits])
        got = refused(lambda: client.arithmetic("lee", [[ItemRef(name, "d1-0")]]))
        assert got[:2] == (INVALID, "SPACE_MISMATCH")
        got = refused(lambda: client.arithmetic("lee", [[ItemRef("lee-words", "nope")]]))
        assert got == (grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND", "expressions[0].terms[0].item.id")
    finally:
        client.delete_collection("lee-words")
