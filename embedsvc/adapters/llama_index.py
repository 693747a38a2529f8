"""LlamaIndex integration: `EmbedsvcEmbedding`, a `BaseEmbedding` over a text encoder hosted by embedsvc, and
`EmbedsvcVectorStore`, an embedsvc collection as a vector store with dense, keyword (sparse) and hybrid queries.

    from embedsvc.adapters.llama_index import EmbedsvcEmbedding
    from llama_index.core import Settings

    Settings.embed_model = EmbedsvcEmbedding(target="localhost:50051", model_name="minilm")

Batches go to the server whole (`embed_batch_size` defaults to 2,048, LlamaIndex's maximum and the server's
`limits.max_texts_per_request`); the async methods run the blocking calls in an executor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from pydantic import Field, PrivateAttr

from embedsvc.adapters._connect import TEXTS_PER_CALL, Connection, client, embed_texts, stored_metadata
from embedsvc.client import Client, EmbedsvcClientError

# Nodes per Upsert call.
_ITEMS_PER_CALL = 1_000


class EmbedsvcEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from an embedsvc text encoder."""

    target: str = Field(default="localhost:50051", description="The embedsvc server, host:port.")
    normalize: bool = Field(default=False, description="Return unit-length vectors.")
    embed_batch_size: int = Field(default=TEXTS_PER_CALL, gt=0, le=2048)
    _client: Client = PrivateAttr()
    _owns_client: bool = PrivateAttr()

    def __init__(
        self,
        target: str | Client = "localhost:50051",
        model_name: str = "minilm",
        *,
        normalize: bool = False,
        connection: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """`connection`: the client's options (`api_key`, `tls`, `ca_file`, `cert_file`, `key_file`, `timeout`)."""
        shown = target if isinstance(target, str) else "client"
        super().__init__(target=shown, model_name=model_name, normalize=normalize, **kwargs)  # type: ignore[call-arg]
        self._client, self._owns_client = client(target, Connection(**(connection or {})))  # type: ignore[typeddict-item]

    @classmethod
    def class_name(cls) -> str:
        return "EmbedsvcEmbedding"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        rows: list[list[float]] = embed_texts(self._client, self.model_name, texts, normalize=self.normalize).tolist()
        return rows

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embeddings([query])[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.get_running_loop().run_in_executor(None, self._get_text_embeddings, texts)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._aget_text_embeddings([query]))[0]


class EmbedsvcVectorStore(BasePydanticVectorStore):
    """An embedsvc collection as a LlamaIndex vector store, with embedsvc's search modes as LlamaIndex query modes:
    DEFAULT (dense), SPARSE and TEXT_SEARCH (keyword: BM25 over the nodes' text), HYBRID (both, fused by the server;
    `alpha`, when given, is the dense side's weight) and MMR (the server's diversity, 1 - mmr_threshold).

        store = EmbedsvcVectorStore(target="localhost:50051", collection="notes")
        index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                                embed_model=EmbedsvcEmbedding(target="localhost:50051"))
        index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=5).retrieve("seaside")

    Each node is one item: its embedding the vector, its text the item's input (keyword-indexed: the collection is
    created with a keyword index on first use), and LlamaIndex's node record in the metadata (`_node_content`,
    `_node_type`, `doc_id`, `ref_doc_id`, and the node's own metadata, nested values as JSON text). Metadata filters
    (MetadataFilters: ==, !=, >, >=, <, <=, in, nin, with AND / OR) become embedsvc filters."""

    stores_text: bool = True
    flat_metadata: bool = False
    target: str = Field(default="localhost:50051", description="The embedsvc server, host:port.")
    collection: str = Field(description="The collection's name.")
    metric: str = Field(default="cosine", description="The metric of a collection created here.")
    index: str = Field(default="flat", description="The index kind of a collection created here.")
    _client: Client = PrivateAttr()
    _owns_client: bool = PrivateAttr()
    _ready: bool = PrivateAttr(default=False)

    def __init__(
        self,
        target: str | Client = "localhost:50051",
        collection: str = "",
        *,
        metric: str = "cosine",
        index: str = "flat",
        connection: dict[str, Any] | None = None,
    ) -> None:
        if not collection:
            raise ValueError("collection: a collection name is required")
        shown = target if isinstance(target, str) else "client"
        super().__init__(target=shown, collection=collection, metric=metric, index=index)  # type: ignore[call-arg]
        self._client, self._owns_client = client(target, Connection(**(connection or {})))  # type: ignore[typeddict-item]

    @classmethod
    def class_name(cls) -> str:
        return "EmbedsvcVectorStore"

    @property
    def client(self) -> Client:
        return self._client

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _ensure(self, dimension: int = 0) -> bool:
        if self._ready:
            return True
        try:
            self._client.get_collection(self.collection)
        except EmbedsvcClientError as exc:
            if exc.reason != "COLLECTION_NOT_FOUND":
                raise
            if not dimension:
                return False
            self._client.create_collection(
                self.collection, dimension=dimension, metric=self.metric, index=self.index, keyword=True
            )
        self._ready = True
        return True

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        if not nodes:
            return []
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        self._ensure(vectors.shape[1])
        ids = [node.node_id for node in nodes]
        texts = [node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes]
        metadata = [stored_metadata(node_to_metadata_dict(node, remove_text=True)) for node in nodes]
        for start in range(0, len(nodes), _ITEMS_PER_CALL):
            part = slice(start, start + _ITEMS_PER_CALL)
            self._client.upsert(self.collection, ids[part], vectors[part], metadata[part], texts[part])
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the nodes of a document: found by a filtered search (`ref_doc_id`), a round of at most
        limits.max_k at a time."""
        if not self._ensure():
            return
        dimension = self._client.get_collection(self.collection).dimension
        probe = np.ones(dimension, np.float32)
        where = f"ref_doc_id = {json.dumps(ref_doc_id)}"
        while True:
            hits = self._client.search(self.collection, vector=probe, k=1000, filter=where, include_metadata=False)
            if not hits:
                return
            self._client.delete_items(self.collection, [h.id for h in hits])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.node_ids:
            raise ValueError("node_ids: this store filters by metadata, not by node id")
        if not self._ensure():
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        mode = _MODES.get(query.mode)
        if mode is None:
            raise ValueError(
                f"query mode {query.mode.value} is not served; use one of {', '.join(m.value for m in _MODES)}"
            )
        options: dict[str, Any] = {"k": query.hybrid_top_k or query.similarity_top_k, "mode": mode}
        if query.mode is VectorStoreQueryMode.MMR:
            options["diversity"] = 1.0 - (query.mmr_threshold if query.mmr_threshold is not None else 0.5)
        if query.mode is VectorStoreQueryMode.HYBRID and query.alpha is not None:
            options["dense_weight"] = query.alpha
        where = [compile_filters(query.filters)] if query.filters is not None and query.filters.filters else []
        if query.doc_ids:
            where.append("ref_doc_id IN [" + ", ".join(json.dumps(i) for i in query.doc_ids) + "]")
        if where:
            options["filter"] = " AND ".join(f"({w})" for w in where)
        vector = None if mode == "keyword" or query.query_embedding is None else np.asarray(query.query_embedding)
        if mode != "keyword" and vector is None:
            raise ValueError(f"a {query.mode.value} query needs the query's embedding")
        if mode != "dense" and not query.query_str:
            raise ValueError(f"a {query.mode.value} query needs the query's text")
        hits = self._client.search(self.collection, vector=vector, keyword_text=query.query_str or "", **options)
        nodes = []
        for hit in hits:
            node = metadata_dict_to_node(hit.metadata, text=hit.input)
            nodes.append(node)
        return VectorStoreQueryResult(nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits])


_MODES = {
    VectorStoreQueryMode.DEFAULT: "dense",
    VectorStoreQueryMode.MMR: "dense",
    VectorStoreQueryMode.SPARSE: "keyword",
    VectorStoreQueryMode.TEXT_SEARCH: "keyword",
    VectorStoreQueryMode.HYBRID: "hybrid",
}
_OPERATORS = {
    FilterOperator.EQ: "=",
    FilterOperator.NE: "!=",
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}


def compile_filters(filters: MetadataFilters) -> str:
    """LlamaIndex MetadataFilters as embedsvc's filter language."""
    parts = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            parts.append(f"({compile_filters(item)})")
            continue
        value = item.value
        if item.operator in _OPERATORS:
            parts.append(f"{item.key} {_OPERATORS[item.operator]} {json.dumps(value)}")
        elif item.operator in (FilterOperator.IN, FilterOperator.NIN):
            values = ", ".join(json.dumps(v) for v in (value if isinstance(value, list) else [value]))
            clause = f"{item.key} IN [{values}]"
            parts.append(clause if item.operator is FilterOperator.IN else f"NOT {clause}")
        else:
            raise ValueError(f"filter operator {item.operator.value} is not supported here")
    joiner = " OR " if filters.condition is FilterCondition.OR else " AND "
    return joiner.join(parts)
