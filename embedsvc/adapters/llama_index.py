"""LlamaIndex integration: `EmbedsvcEmbedding`, a `BaseEmbedding` over a text encoder hosted by embedsvc.

    from embedsvc.adapters.llama_index import EmbedsvcEmbedding
    from llama_index.core import Settings

    Settings.embed_model = EmbedsvcEmbedding(target="localhost:50051", model_name="minilm")

Batches go to the server whole (`embed_batch_size` defaults to 2,048, LlamaIndex's maximum and the server's
`limits.max_texts_per_request`); the async methods run the blocking calls in an executor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import Field, PrivateAttr

from embedsvc.adapters._connect import TEXTS_PER_CALL, Connection, client, embed_texts
from embedsvc.client import Client


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
