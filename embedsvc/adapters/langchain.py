"""LangChain integration: `EmbedsvcEmbeddings` (a text encoder hosted by embedsvc), `EmbedsvcVectorStore` (an
embedsvc collection as a LangChain vector store) and `EmbedsvcRetriever` (its searches as a retriever: dense, keyword
(BM25) or hybrid, with embedsvc's fusion, rerank stage and diversity).

    from embedsvc.adapters.langchain import EmbedsvcEmbeddings, EmbedsvcVectorStore

    store = EmbedsvcVectorStore("localhost:50051", "docs", model="minilm")   # the server embeds the texts
    store.add_texts(["a day at the beach", "a night in the city"], metadatas=[{"year": 2024}, {"year": 2025}])
    store.similarity_search("seaside", k=1, filter={"year": {"$gte": 2024}})
    store.similarity_search("seaside", k=1, mode="hybrid")                  # keyword + dense, fused by the server
    retriever = store.as_retriever(search_type="hybrid", search_kwargs={"k": 4, "rerank": "my-cross-encoder"})

A store either binds its collection to a text encoder on the server (`model=...`: texts are sent as they are, embedded
by the server), or embeds with any LangChain `Embeddings` (`embedding=...`: vectors are sent with their texts). Either
way each text is its item's input, which the collection's keyword index searches (a collection the store creates has
one; stores made before kept the text in the metadata field `text_key`, which is still read). Filters are embedsvc's
filter language (a string) or a dict (`{"genre": "jazz", "year": {"$gte": 1990}}`, operators $eq $ne $gt $gte $lt
$lte $in $nin, and $and / $or / $not). The collection is created on first use when it does not exist. Async methods
run the blocking calls in an executor.

Search modes (`mode=` on any search, or the store's `mode`): "dense" (nearest neighbours; scores are the metric's),
"keyword" (BM25; no embedding call), "hybrid" (both, fused: scores are fused scores), or "" (the collection's
default). Any other embedsvc search option passes through: fusion, rrf_k, dense_weight, candidates, rerank,
rerank_candidates, raw_scores, diversity, diversity_candidates. Relevance scores in [0, 1]
(`similarity_search_with_relevance_scores`) are for dense searches.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field

from embedsvc.adapters._connect import Connection, client, embed_texts, stored_metadata
from embedsvc.client import Client, EmbedsvcClientError, SearchHit

# Items per Upsert call when the server embeds their texts (under limits.max_texts_per_request).
_ITEMS_PER_CALL = 1_000
MODES = ("dense", "keyword", "hybrid")
# embedsvc search options a LangChain search may pass as keyword arguments.
_PASSED_ON = (
    "fusion",
    "rrf_k",
    "dense_weight",
    "candidates",
    "rerank",
    "rerank_candidates",
    "raw_scores",
    "diversity",
    "diversity_candidates",
    "exact",
)


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
        mode: str = "",
        **connection: Any,
    ) -> None:
        """`model` binds a new collection to a text encoder on the server (the server embeds); `embedding` embeds
        here instead. Set one of them. `metric` and `index` apply when the collection is created. `mode`: the
        searches' mode when a search does not name one (dense | keyword | hybrid; "": the collection's default)."""
        if mode and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
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
        self.mode = mode
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
            elif dimension:  # the texts come with the vectors: a keyword index over them
                self._client.create_collection(
                    self.collection, dimension=dimension, metric=self.metric, index=self.index, keyword=True
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
            metadata = [stored_metadata(m) for m in metadatas[part]]
            if self._embedding is None:
                self._ensure()
                self._client.upsert(self.collection, ids[part], metadata=metadata, inputs=texts[part])
            else:
                vectors = np.asarray(self._embedding.embed_documents(texts[part]), dtype=np.float32)
                self._ensure(vectors.shape[1])
                self._client.upsert(self.collection, ids[part], vectors=vectors, metadata=metadata, inputs=texts[part])
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
            kept = str(metadata.pop(self.text_key, ""))  # where stores made before keyword search kept it
            text = text or kept
        return Document(page_content=text, metadata=metadata, id=item_id)

    def _search(
        self,
        vector: np.ndarray | None,
        k: int,
        filter: Any,
        *,
        text: str = "",
        mode: str = "",
        include_vectors: bool = False,
        **kwargs: Any,
    ) -> list[SearchHit]:
        if not self._ensure():
            return []
        options: dict[str, Any] = {"k": k, "include_vectors": include_vectors, "mode": mode}
        options |= {name: kwargs[name] for name in _PASSED_ON if kwargs.get(name) is not None}
        if filter:
            options["filter"] = filter if isinstance(filter, str) else compile_filter(filter)
        if vector is not None:
            options["vector"] = np.asarray(vector, dtype=np.float32)
        return self._client.search(self.collection, keyword_text=text, **options)

    def _mode(self, kwargs: dict[str, Any]) -> str:
        mode = str(kwargs.pop("mode", None) or self.mode)
        if mode and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        return mode

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with their scores: a dense search's are the collection's metric (cosine similarity or inner
        product, higher is closer; squared L2 distance, lower is closer), a keyword search's BM25, a hybrid
        search's the fused score (higher is closer). `mode` and embedsvc's other search options as keywords."""
        mode = self._mode(kwargs)
        vector = None if mode == "keyword" else self._query_vector(query)
        hits = self._search(vector, k, filter, text=query, mode=mode, **kwargs)
        return [(self._document(h.id, h.input, h.metadata), h.score) for h in hits]

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float] | np.ndarray, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = self._search(np.asarray(embedding, dtype=np.float32), k, filter, mode="dense", **kwargs)
        return [(self._document(h.id, h.input, h.metadata), h.score) for h in hits]

    def search(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        """LangChain's search types, and embedsvc's modes: "dense", "keyword", "hybrid"."""
        if search_type in MODES:
            return self.similarity_search(query, mode=search_type, **kwargs)
        return super().search(query, search_type, **kwargs)

    def as_retriever(self, **kwargs: Any) -> Any:
        """LangChain's retriever; with search_type "dense", "keyword" or "hybrid", an EmbedsvcRetriever."""
        if kwargs.get("search_type") in MODES:
            return EmbedsvcRetriever(
                store=self,
                search_type=kwargs.pop("search_type"),
                search_kwargs=kwargs.pop("search_kwargs", {}),
                **kwargs,
            )
        return super().as_retriever(**kwargs)

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
        """LangChain's MMR, run by the server: its `fetch_k` nearest re-ranked for diversity (embedsvc's diversity is
        1 - lambda_mult: the same maximal marginal relevance as langchain_core's)."""
        hits = self._search(
            np.asarray(embedding, dtype=np.float32),
            k,
            filter,
            mode="dense",
            diversity=1.0 - lambda_mult,
            diversity_candidates=max(fetch_k, k),
        )
        return [self._document(h.id, h.input, h.metadata) for h in hits]

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


class EmbedsvcRetriever(BaseRetriever):
    """A retriever over an EmbedsvcVectorStore in one of embedsvc's search modes, with any of its search options:

        retriever = EmbedsvcRetriever(store=store, search_type="hybrid", search_kwargs={"k": 5, "filter": {...}})
        retriever.invoke("seaside holiday")

    (or `store.as_retriever(search_type="hybrid", ...)`). Each document's `metadata["score"]` is its score."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: EmbedsvcVectorStore
    search_type: str = "hybrid"
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        if self.search_type not in MODES:
            raise ValueError(f"search_type must be one of {', '.join(MODES)}, got {self.search_type!r}")
        found = self.store.similarity_search_with_score(query, mode=self.search_type, **self.search_kwargs)
        return [Document(d.page_content, metadata={**d.metadata, "score": score}, id=d.id) for d, score in found]


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
