"""The LangChain and LlamaIndex embeddings give queries the model's query prompt and documents its document prompt, as
sentence-transformers' encode_query and encode_document do (equal to 1e-5 on the same directory), the default prompt
never; the names are configurable ("" for none). Against a real server hosting a model with prompts
(tests/prompted.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedsvc.adapters.langchain import EmbedsvcEmbeddings, EmbedsvcVectorStore
from embedsvc.adapters.llama_index import EmbedsvcEmbedding
from embedsvc.client import Client
from tests.prompted import QUERIES, documents, prompted_dir, prompts_server, reference, target

__all__ = ["documents", "prompted_dir", "prompts_server", "reference", "target"]  # fixtures of tests/prompted.py

ATOL = 1e-5


@pytest.fixture(scope="module")
def defaulted(prompted_dir):
    """The same directory with the default prompt "query", as e5-default is served."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompted_dir), device="cpu", local_files_only=True, default_prompt_name="query")


@pytest.mark.parametrize("model", ["e5", "e5-default"])
def test_langchain_embeddings_equal_encode_query_and_encode_document(target, reference, defaulted, documents, model):
    st = defaulted if model == "e5-default" else reference
    embeddings = EmbedsvcEmbeddings(target, model)
    try:
        np.testing.assert_allclose(embeddings.embed_documents(documents), st.encode_document(documents), atol=ATOL)
        np.testing.assert_allclose(embeddings.embed_query(QUERIES[0]), st.encode_query(QUERIES[0]), atol=ATOL)

        async def both():
            return await embeddings.aembed_documents(documents[:3]), await embeddings.aembed_query(QUERIES[1])

        docs, query = asyncio.run(both())
        np.testing.assert_allclose(docs, st.encode_document(documents[:3]), atol=ATOL)
        np.testing.assert_allclose(query, st.encode_query(QUERIES[1]), atol=ATOL)
        # The prompts differ, so the sides do: a query embedded as a document is another vector.
        assert (
            np.abs(np.subtract(embeddings.embed_documents(QUERIES[:1])[0], embeddings.embed_query(QUERIES[0]))).max()
            > 1e-2
        )
    finally:
        embeddings.close()


def test_langchain_prompt_names_are_configurable(target, reference, documents):
    with Client(target, timeout=120) as c:
        swapped = EmbedsvcEmbeddings(c, "e5-default", query_prompt_name="", document_prompt_name="query")
        np.testing.assert_allclose(swapped.embed_query(QUERIES[0]), reference.encode(QUERIES[0], prompt=""), atol=ATOL)
        want = reference.encode(documents[:4], prompt_name="query")
        np.testing.assert_allclose(swapped.embed_documents(documents[:4]), want, atol=ATOL)
        # A model without prompts: both sides alike, no prompt.
        plain = EmbedsvcEmbeddings(c, "plain")
        np.testing.assert_allclose(plain.embed_query(QUERIES[0]), reference.encode(QUERIES[0], prompt=""), atol=ATOL)
        np.testing.assert_allclose(plain.embed_documents(QUERIES), reference.encode(QUERIES, prompt=""), atol=ATOL)


def test_a_langchain_store_with_the_embeddings_ranks_as_sentence_transformers_does(target, reference, documents):
    """LangChain embeds (documents with the document prompt, queries with the query prompt) into a plain collection."""
    with Client(target, timeout=120) as c:
        store = EmbedsvcVectorStore(c, "lc-prompted", embedding=EmbedsvcEmbeddings(c, "e5"))
        ids = [f"d{n}" for n in range(len(documents))]
        store.add_texts(documents, ids=ids)
        docs = reference.encode_document(documents, normalize_embeddings=True)
        for query in QUERIES:
            scores = docs @ reference.encode_query(query, normalize_embeddings=True)
            got = store.similarity_search_with_score(query, k=5)
            assert [d.id for d, _ in got] == [ids[n] for n in np.argsort(-scores, kind="stable")[:5]]
            np.testing.assert_allclose([s for _, s in got], np.sort(scores)[::-1][:5], atol=ATOL)
        c.delete_collection("lc-prompted")


def test_a_langchain_store_on_a_collection_without_a_query_prompt_sends_no_default_prompt(target, documents):
    """The collection applies no query prompt; the model has a default one, which its query vectors must not get."""
    with Client(target, timeout=120) as c:
        c.create_collection("lc-no-query-prompt", metric="cosine", model="e5-default", query_prompt="", keyword=True)
        store = EmbedsvcVectorStore(c, "lc-no-query-prompt", model="e5-default")
        store.add_texts(documents, ids=[f"d{n}" for n in range(len(documents))])
        for query in QUERIES:
            got = [(d.id, score) for d, score in store.similarity_search_with_score(query, k=5, mode="dense")]
            want = [(h.id, h.score) for h in c.search("lc-no-query-prompt", input=query, k=5, mode="dense")]
            assert [i for i, _ in got] == [i for i, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=ATOL)
        c.delete_collection("lc-no-query-prompt")


@pytest.mark.parametrize("model", ["e5", "e5-default"])
def test_llama_index_query_and_text_embeddings_equal_encode_query_and_encode_document(
    target, reference, defaulted, documents, model
):
    st = defaulted if model == "e5-default" else reference
    embed = EmbedsvcEmbedding(target, model)
    try:
        want = st.encode_document(documents)
        np.testing.assert_allclose(embed.get_text_embedding_batch(documents), want, atol=ATOL)
        np.testing.assert_allclose(embed.get_text_embedding(documents[0]), want[0], atol=ATOL)
        np.testing.assert_allclose(embed.get_query_embedding(QUERIES[0]), st.encode_query(QUERIES[0]), atol=ATOL)

        async def both():
            return await embed.aget_text_embedding(documents[1]), await embed.aget_query_embedding(QUERIES[1])

        text, query = asyncio.run(both())
        np.testing.assert_allclose(text, want[1], atol=ATOL)
        np.testing.assert_allclose(query, st.encode_query(QUERIES[1]), atol=ATOL)
    finally:
        embed.close()


def test_llama_index_prompt_names_are_configurable(target, reference, documents):
    embed = EmbedsvcEmbedding(target, "e5-default", query_prompt_name="", document_prompt_name="query")
    try:
        assert (embed.query_prompt_name, embed.document_prompt_name) == ("", "query")
        np.testing.assert_allclose(
            embed.get_query_embedding(QUERIES[0]), reference.encode(QUERIES[0], prompt=""), atol=ATOL
        )
        want = reference.encode(documents[:4], prompt_name="query")
        np.testing.assert_allclose(embed.get_text_embedding_batch(documents[:4]), want, atol=ATOL)
    finally:
        embed.close()
