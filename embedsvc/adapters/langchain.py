"""LangChain integration: `EmbedsvcEmbeddings` (a text encoder hosted by embedsvc) and `EmbedsvcVectorStore` (an
embedsvc collection as a LangChain vector store).

    from embedsvc.adapters.langchain import EmbedsvcEmbeddings, EmbedsvcVectorStore

    store = EmbedsvcVectorStore("localhost:50051", "docs", model="minilm")   # the server embeds the texts
    store.add_texts(["a day at the beach", "a night in the city"], metadatas=[{"year": 2024}, {"year": 2025}])
    store.similarity_search("seaside", k=1, filter={"year": {"$gte": 2024}})

A store either binds its collection to a text encoder on the server (`model=...`: texts are sent as they are, embedded
by the server, and kept as each item's input), or embeds with any LangChain `Embeddings` (`embedding=...`: vectors are
sent, the text is kept in the metadata field `text_key`). Filters are embedsvc's filter language (a string) or a dict
(`{"genre": "jazz", "year": {"$gte": 1990}}`, operators $eq $ne $gt $gte $lt $lte $in $nin, and $and / $or / $not).
The collection is created on first use when it does not exist. Async methods run the blocking calls in an executor.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from embedsvc.adapters._connect import Connection, client, embed_texts
from embedsvc.client import Client, EmbedsvcClientError, SearchHit

# Items per Upsert call when the server embeds their texts (under limits.max_texts_per_request).
_ITEMS_PER_CALL = 1_000


class EmbedsvcEmbeddings(Embeddings):
    """LangChain `Embeddings` over an embedsvc text encoder: one EmbedTexts call per 2,048 texts."""

    def __init__(
        self,
        target: str | Client = "localhost:50051",
        model: str = "minilm",
        *,
        normalize: bool = False,
        **connection: Any,
    ) -> None:
        self._client, self._owns_client = client(target, Connection(**connection))  # type: ignore[typeddict-item]
        self.model = model
        self.normalize = normalize

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return embed_texts(self._client, self.model, texts, normalize=self.normalize).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(None, self.embed_query, text)


class EmbedsvcVectorStore(VectorStore):
    """A LangChain vector store over one embedsvc collection (see the module's docstring)."""

    def __init__(
        self,
        target: str | Client = "localhost:50051",
        collection: str = "",
        *,
        embedding: Embeddings | None = None,
        model: str = "",
        metric: str = "cosine",
        index: str = "flat",
        text_key: str = "page_content",
        **connection: Any,
    ) -> None:
        """`model` binds a new collection to a text encoder on the server (the server embeds); `embedding` embeds
        here instead. Set one of them. `metric` and `index` apply when the collection is created."""
        if not collection:
            raise ValueError("collection: a collection name is required")
        if (embedding is None) == (not model):
            raise ValueError("set exactly one of model (the server embeds) and embedding (LangChain embeds)")
        self._client, self._owns_client = client(target, Connection(**connection))  # type: ignore[typeddict-item]
        self.collection = collection
        self._embedding = embedding
        self.model = model
        self.metric = metric
        self.index = index
        self.text_key = text_key
        self._ready = False
        self._query_prompt: str | None = None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding

    # ---- the collection --------------------------------------------------------------------------------------------

    def _ensure(self, dimension: int = 0) -> bool:
        """True when the collection exists (creating it when there is enough to create it with)."""
        if self._ready:
            return True
        try:
            self._client.get_collection(self.collection)
        except EmbedsvcClientError as exc:
            if exc.reason != "COLLECTION_NOT_FOUND":
                raise
            if self.model:
                self._client.create_collection(self.collection, model=self.model, metric=self.metric, index=self.index)
            elif dimension:
                self._client.create_collection(
                    self.collection, dimension=dimension, metric=self.metric, index=self.index
                )
            else:
                return False
        self._ready = True
        return True

    def _query_vector(self, query: str) -> np.ndarray:
        if self._embedding is not None:
            return np.asarray(self._embedding.embed_query(query), dtype=np.float32)
        if self._query_prompt is None:  # the collection's query prompt, as its own text searches apply it
            prompts = self._client.get_collection(self.collection).prompts if self._ensure() else None
            self._query_prompt = prompts.query_prompt_name if prompts is not None else ""
        return self._client.embed_texts(self.model, [query], prompt_name=self._query_prompt).vectors[0]

    # ---- writing ---------------------------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Upsert the texts (an existing id is replaced); returns their ids (new UUIDs where none are given)."""
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = [i or str(uuid.uuid4()) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in texts]
        if not len(texts) == len(metadatas) == len(ids):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids: they must match")
        if not texts:
            return []
        for start in range(0, len(texts), _ITEMS_PER_CALL):
            part = slice(start, start + _ITEMS_PER_CALL)
            metadata = [_stored_metadata(m) for m in metadatas[part]]
            if self._embedding is None:
                self._ensure()
                self._client.upsert(self.collection, ids[part], metadata=metadata, inputs=texts[part])
            else:
                vectors = np.asarray(self._embedding.embed_documents(texts[part]), dtype=np.float32)
                self._ensure(vectors.shape[1])
                for m, text in zip(metadata, texts[part], strict=True):
                    m[self.text_key] = text
                self._client.upsert(self.collection, ids[part], vectors=vectors, metadata=metadata)
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the items with these ids (missing ids are not an error)."""
        if ids is None:
            raise ValueError("ids: give the ids to delete (deleting a whole collection is DeleteCollection's job)")
        if not ids or not self._ensure():
            return True
        for start in range(0, len(ids), _ITEMS_PER_CALL):
            self._client.delete_items(self.collection, ids[start : start + _ITEMS_PER_CALL])
        return True

    # ---- reading ---------------------------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        if not ids or not self._ensure():
            return []
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), _ITEMS_PER_CALL):
            found += self._client.get_items(self.collection, list(ids[start : start + _ITEMS_PER_CALL]))[0]
        return [self._document(item["id"], item["input"], item["metadata"]) for item in found]

    def _document(self, item_id: str, text: str, metadata: dict[str, Any]) -> Document:
        metadata = dict(metadata)
        if self._embedding is not None:
            text = str(metadata.pop(self.text_key, ""))
        return Document(page_content=text, metadata=metadata, id=item_id)

    def _search(self, vector: np.ndarray, k: int, filter: Any, include_vectors: bool = False) -> list[SearchHit]:
        if not self._ensure():
            return []
        options: dict[str, Any] = {"k": k, "include_vectors": include_vectors}
        if filter:
            options["filter"] = filter if isinstance(filter, str) else compile_filter(filter)
        return self._client.search(self.collection, vector=np.asarray(vector, dtype=np.float32), **options)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with the collection's score: cosine similarity or inner product (higher is closer), or squared
        L2 distance (lower is closer)."""
        return self.similarity_search_with_score_by_vector(self._query_vector(query), k, filter=filter)

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float] | np.ndarray, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = self._search(np.asarray(embedding, dtype=np.float32), k, filter)
        return [(self._document(h.id, h.input, h.metadata), h.score) for h in hits]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter=filter)]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._query_vector(query).tolist(), k, fetch_k, lambda_mult, **kwargs
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The server's `fetch_k` nearest (with their vectors), re-ranked here for diversity (LangChain's MMR)."""
        query = np.asarray(embedding, dtype=np.float32)
        hits = self._search(query, fetch_k, filter, include_vectors=True)
        if not hits:
            return []
        chosen = maximal_marginal_relevance(
            query,
            [h.vector.tolist() for h in hits if h.vector is not None],
            lambda_mult=lambda_mult,
            k=min(k, len(hits)),
        )
        return [self._document(hits[i].id, hits[i].input, hits[i].metadata) for i in chosen]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores to [0, 1] relevance: cosine (s + 1) / 2; squared L2 through the Euclidean distance; inner product
        as LangChain scores it."""
        if self.metric == "cosine":
            return lambda s: (s + 1.0) / 2.0
        if self.metric == "l2":
            return lambda d: self._euclidean_relevance_score_fn(float(np.sqrt(max(d, 0.0))))
        return self._max_inner_product_relevance_score_fn

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        target: str | Client = "localhost:50051",
        collection: str = "",
        **kwargs: Any,
    ) -> EmbedsvcVectorStore:
        store = cls(target, collection, embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _stored_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """LangChain metadata as embedsvc stores it: scalars and lists of scalars as they are; anything else (a nested
    dict, say) as its JSON text."""
    stored: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if value is None or isinstance(value, (str, bool, int, float)):
            stored[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
            stored[key] = list(value)
        else:
            stored[key] = json.dumps(value, sort_keys=True, default=str)
    return {k: v for k, v in stored.items() if v is not None}


_COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise ValueError(f"filter value {value!r}: strings, numbers and booleans are supported")


def compile_filter(spec: dict[str, Any]) -> str:
    """A LangChain-style metadata filter dict as embedsvc's filter language (fields joined by AND)."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"filter: a non-empty dict is expected, got {spec!r}")
    parts = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"filter {key}: a non-empty list of filters is expected")
            joined = f" {key[1:].upper()} ".join(f"({compile_filter(v)})" for v in value)
            parts.append(f"({joined})")
        elif key == "$not":
            parts.append(f"NOT ({compile_filter(value)})")
        elif key.startswith("$"):
            raise ValueError(f"filter operator {key} is not supported here")
        elif isinstance(value, dict):
            for op, operand in value.items():
                parts.append(_comparison(key, op, operand))
        else:
            parts.append(f"{key} = {_literal(value)}")
    return " AND ".join(parts)


def _comparison(field: str, op: str, operand: Any) -> str:
    if op in _COMPARISONS:
        return f"{field} {_COMPARISONS[op]} {_literal(operand)}"
    if op in ("$in", "$nin"):
        if not isinstance(operand, (list, tuple)):
            raise ValueError(f"filter {field} {op}: a list is expected")
        values = ", ".join(_literal(v) for v in operand)
        return f"{field} IN [{values}]" if op == "$in" else f"NOT {field} IN [{values}]"
    raise ValueError(f"filter operator {op} on {field} is not supported (use {', '.join(_COMPARISONS)}, $in, $nin)")
