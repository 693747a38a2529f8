"""The LangChain adapters against a real server: LangChain's own standard suites (langchain-tests) for the embeddings
and for the vector store, the store run both ways (the server embeds into a text-bound collection; LangChain's
embeddings fill a plain vector collection), then what the suites do not cover: filters, MMR, scores, from_texts,
retrievers, errors."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, VectorStoreIntegrationTests

from embedsvc.adapters.langchain import EmbedsvcEmbeddings, EmbedsvcRetriever, EmbedsvcVectorStore, compile_filter
from embedsvc.client import Client, EmbedsvcClientError

_TARGET: dict[str, str] = {}
_names = itertools.count()


@pytest.fixture(autouse=True)
def _server_target(target: str) -> None:
    _TARGET["target"] = target


class TestEmbedsvcEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[EmbedsvcEmbeddings]:
        return EmbedsvcEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"target": _TARGET["target"], "model": "minilm"}


def _store(**kwargs: Any) -> Iterator[EmbedsvcVectorStore]:
    name = f"lc-{next(_names)}"
    store = EmbedsvcVectorStore(_TARGET["target"], name, **kwargs)
    try:
        yield store
    finally:
        with Client(_TARGET["target"]) as c, contextlib.suppress(EmbedsvcClientError):
            c.delete_collection(name)
        store.close()


class TestVectorStoreWithLangChainEmbeddings(VectorStoreIntegrationTests):
    """LangChain embeds (the suite's DeterministicFakeEmbedding) into a plain vector collection."""

    @pytest.fixture()
    def vectorstore(self) -> Iterator[EmbedsvcVectorStore]:  # type: ignore[override]
        yield from _store(embedding=self.get_embeddings())


class TestVectorStoreOnATextBoundCollection(VectorStoreIntegrationTests):
    """The server embeds the texts with minilm into a collection bound to it."""

    @staticmethod
    def get_embeddings() -> Embeddings:
        return EmbedsvcEmbeddings(_TARGET["target"], "minilm")

    @pytest.fixture()
    def vectorstore(self) -> Iterator[EmbedsvcVectorStore]:  # type: ignore[override]
        yield from _store(model="minilm")


@pytest.fixture
def bound() -> Iterator[EmbedsvcVectorStore]:
    yield from _store(model="minilm")


DOCS = [
    Document("A day at the beach with the family", metadata={"year": 2021, "kind": "travel", "tags": ["sea", "sun"]}),
    Document("Swimming in the ocean waves", metadata={"year": 2023, "kind": "sport"}),
    Document("The stock market fell sharply today", metadata={"year": 2023, "kind": "news", "extra": {"a": 1}}),
    Document("Interest rates rise again", metadata={"year": 2024, "kind": "news"}),
]


def test_embeddings_equal_the_client(target: str) -> None:
    texts = ["a day at the beach", "interest rates"] * 3
    with Client(target) as c:
        want = c.embed_texts("minilm", texts).vectors
    got = EmbedsvcEmbeddings(target, "minilm").embed_documents(texts)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


def test_filters_scores_mmr_and_retriever(bound: EmbedsvcVectorStore) -> None:
    ids = bound.add_documents(DOCS, ids=["b", "s", "m", "r"])
    assert ids == ["b", "s", "m", "r"]
    hits = bound.similarity_search_with_score("seaside holiday", k=4)
    assert [d.id for d, _ in hits][:2] == ["b", "s"] and hits[0][1] > hits[-1][1]
    assert hits[0][0].metadata["tags"] == ["sea", "sun"] and hits[0][0].metadata["year"] == 2021
    news = bound.similarity_search("seaside holiday", k=4, filter={"kind": "news", "year": {"$gte": 2024}})
    assert [d.id for d in news] == ["r"]
    assert [d.id for d in bound.similarity_search("money", k=4, filter='kind IN ["sport", "travel"]')] in (
        ["b", "s"],
        ["s", "b"],
    )
    either = bound.similarity_search("money", k=4, filter={"$or": [{"year": 2021}, {"kind": {"$in": ["sport"]}}]})
    assert {d.id for d in either} == {"b", "s"}
    assert {d.id for d in bound.similarity_search("money", k=4, filter={"kind": {"$nin": ["news"]}})} == {"b", "s"}
    assert bound.get_by_ids(["m"])[0].metadata["extra"] == '{"a": 1}'  # nested values are kept as JSON text
    diverse = bound.max_marginal_relevance_search("the sea", k=2, fetch_k=4, lambda_mult=0.1)
    plain = bound.similarity_search("the sea", k=2)
    # MMR keeps the nearest first, then trades similarity for diversity: the second pick leaves the sea topic.
    assert diverse[0].id == plain[0].id and diverse[1].id != plain[1].id and diverse[1].metadata["kind"] == "news"
    relevance = bound.similarity_search_with_relevance_scores("seaside holiday", k=2)
    assert all(0.0 <= s <= 1.0 for _, s in relevance)
    retriever = bound.as_retriever(search_kwargs={"k": 1})
    assert [d.id for d in retriever.invoke("shares and bonds")] in (["m"], ["r"])


async def test_async_variants(bound: EmbedsvcVectorStore) -> None:
    await bound.aadd_documents(DOCS[:2], ids=["b", "s"])
    assert [d.id for d in await bound.asimilarity_search("ocean", k=1)] == ["s"]
    assert [d.id for d in await bound.amax_marginal_relevance_search("ocean", k=1)] == ["s"]
    await bound.adelete(["s"])
    assert [d.id for d in await bound.aget_by_ids(["b", "s"])] == ["b"]


def test_from_texts_and_errors(target: str) -> None:
    store = EmbedsvcVectorStore.from_texts(
        ["alpha", "beta"], EmbedsvcEmbeddings(target, "minilm"), [{"n": 1}, {"n": 2}], target=target, collection="lc-ft"
    )
    try:
        assert store.similarity_search("alpha", k=2)[0].page_content == "alpha"
        with pytest.raises(EmbedsvcClientError, match="INVALID_ARGUMENT"):
            store.similarity_search("alpha", filter="n >>> 1")
    finally:
        Client(target).delete_collection("lc-ft")
    with pytest.raises(ValueError, match="exactly one"):
        EmbedsvcVectorStore(target, "x")
    with pytest.raises(ValueError, match="not supported"):
        compile_filter({"n": {"$regex": "a"}})
    assert compile_filter({"a": "x", "b": {"$lt": 3, "$ne": True}}) == 'a = "x" AND b < 3 AND b != true'


def test_keyword_and_hybrid_search_and_the_retriever(bound: EmbedsvcVectorStore) -> None:
    bound.add_documents(DOCS, ids=["b", "s", "m", "r"])
    with Client(_TARGET["target"]) as c:
        expected = c.search(bound.collection, keyword_text="stock market", mode="keyword", k=4)
        fused = c.search(bound.collection, input="stock market", mode="hybrid", k=4)
    keyword = bound.similarity_search_with_score("stock market", k=4, mode="keyword")
    assert [(d.id, s) for d, s in keyword] == [(h.id, h.score) for h in expected] and keyword[0][0].id == "m"
    hybrid = bound.similarity_search_with_score("stock market", k=4, mode="hybrid")
    assert [d.id for d, _ in hybrid] == [h.id for h in fused]
    assert [s for _, s in hybrid] == pytest.approx([h.score for h in fused])
    assert [d.id for d in bound.search("interest rates", "keyword", k=1)] == ["r"]
    retriever = bound.as_retriever(search_type="hybrid", search_kwargs={"k": 2, "filter": {"kind": "news"}})
    docs = retriever.invoke("stock market")
    assert [d.id for d in docs] == ["m", "r"] and docs[0].metadata["score"] > docs[1].metadata["score"]
    assert [d.id for d in EmbedsvcRetriever(store=bound, search_type="keyword").invoke("ocean")] == ["s"]
    with pytest.raises(ValueError, match="mode must be one of"):
        bound.similarity_search("x", mode="sparse")


def test_a_store_with_langchain_embeddings_is_keyword_searchable() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    for store in _store(embedding=DeterministicFakeEmbedding(size=16)):
        store.add_texts(["red apples", "green pears"], ids=["a", "p"])
        assert [d.page_content for d in store.similarity_search("pears", k=2, mode="keyword")] == ["green pears"]
        assert store.get_by_ids(["a"])[0].page_content == "red apples"
        assert [d.id for d in store.similarity_search("apples", k=1, mode="hybrid")] == ["a"]
