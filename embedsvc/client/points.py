"""Builders for requests whose parts users assemble themselves: the point sets of maps (Project, Cluster, Plot) and
expressions over images, latents and directions.

    from embedsvc.client import Client, word_points
    png = client.plot(word_points("minilm-static", ["cat", "dog", "doctor", "nurse"]), color_by="cluster")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedsvc.client import _requests as req
from embedsvc.client.types import ImageLike, TermLike
from embedsvc.v1 import arithmetic_pb2, maps_pb2


def word_points(
    model: str, words: Sequence[str] = (), *, top_n: int = 0, groups: Sequence[str] = (), normalize: bool = False
) -> maps_pb2.PointSet:
    """Words of a word model, or its first `top_n` words."""
    return maps_pb2.PointSet(
        words=maps_pb2.WordPoints(model=model, words=list(words), top_n=top_n), groups=list(groups), normalize=normalize
    )


def text_points(model: str, texts: Sequence[str], *, groups: Sequence[str] = ()) -> maps_pb2.PointSet:
    return maps_pb2.PointSet(texts=maps_pb2.TextPoints(model=model, texts=list(texts)), groups=list(groups))


def image_points(
    model: str, images: Sequence[ImageLike], *, labels: Sequence[str] = (), groups: Sequence[str] = ()
) -> maps_pb2.PointSet:
    source = maps_pb2.ImagePoints(model=model, images=req.images(images), labels=list(labels))
    return maps_pb2.PointSet(images=source, groups=list(groups))


def collection_points(collection: str, ids: Sequence[str] = (), *, normalize: bool = False) -> maps_pb2.PointSet:
    """A collection's items (all of them, or those ids)."""
    return maps_pb2.PointSet(
        collection=maps_pb2.CollectionPoints(collection=collection, ids=list(ids)), normalize=normalize
    )


def vector_points(vectors: np.ndarray, *, labels: Sequence[str] = (), groups: Sequence[str] = ()) -> maps_pb2.PointSet:
    source = maps_pb2.VectorPoints(vectors=[req.vector(v) for v in np.asarray(vectors)], labels=list(labels))
    return maps_pb2.PointSet(vectors=source, groups=list(groups))


def image_expression(terms: Sequence[TermLike]) -> arithmetic_pb2.Expression:
    """An expression over images, latents (1-D arrays) and DirectionRef, each optionally (weight, value).

    The same as passing the list itself where an expression is expected; kept for code that builds one ahead."""
    return req.expression(terms)
