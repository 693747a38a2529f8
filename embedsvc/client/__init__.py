"""The Python client of embedsvc: `Client` (blocking) and `AsyncClient` (asyncio) with the same methods, numpy in and
numpy out, and the result types they return.

    from embedsvc.client import Client

    with Client("localhost:50051") as c:
        hits = c.arithmetic("minilm-static", ["king - man + woman"]).results[0].hits

Failures raise `EmbedsvcClientError` with the gRPC code, the machine-readable reason, the offending field and the
metadata from the server's google.rpc.Status details. This package needs grpcio, protobuf, numpy and Pillow only.
"""

from embedsvc.client._requests import query as search_query
from embedsvc.client.aio import AsyncClient, AsyncExport
from embedsvc.client.points import (
    collection_points,
    image_expression,
    image_points,
    text_points,
    vector_points,
    word_points,
)
from embedsvc.client.sync import Client, Export
from embedsvc.client.types import (
    Alias,
    AnalogyReport,
    ArithmeticResult,
    Clustering,
    DirectionRef,
    Embeddings,
    EmbedsvcClientError,
    ExpressionLike,
    ExpressionResult,
    GeneratedImage,
    Hit,
    HitExplanation,
    HitGroup,
    ImageLike,
    ItemRef,
    LatentLike,
    Operation,
    PackedHits,
    Projection,
    Provenance,
    Reranked,
    RerankResult,
    RetrievalReport,
    Sampled,
    SearchHit,
    SearchHits,
    SectionScore,
    ServerInfo,
    SpaceVector,
    TermLike,
    TextEmbeddings,
    Token,
    UpsertStreamError,
    UpsertStreamResult,
    WordChunk,
)

__all__ = [
    "Alias",
    "AnalogyReport",
    "ArithmeticResult",
    "AsyncClient",
    "AsyncExport",
    "Client",
    "Clustering",
    "DirectionRef",
    "Embeddings",
    "EmbedsvcClientError",
    "Export",
    "ExpressionLike",
    "ExpressionResult",
    "GeneratedImage",
    "Hit",
    "HitExplanation",
    "HitGroup",
    "ImageLike",
    "ItemRef",
    "LatentLike",
    "Operation",
    "PackedHits",
    "Projection",
    "Provenance",
    "RerankResult",
    "Reranked",
    "RetrievalReport",
    "Sampled",
    "SearchHit",
    "SearchHits",
    "SectionScore",
    "ServerInfo",
    "SpaceVector",
    "TermLike",
    "TextEmbeddings",
    "Token",
    "UpsertStreamError",
    "UpsertStreamResult",
    "WordChunk",
    "collection_points",
    "image_expression",
    "image_points",
    "search_query",
    "text_points",
    "vector_points",
    "word_points",
]
