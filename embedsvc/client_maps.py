"""The maps half of the Python client: Project, Cluster and Plot over point sets built with the helpers below.

from embedsvc.client_maps import word_points
png = client.plot(word_points("minilm-static", ["cat", "dog", "doctor", "nurse"]), color_by="cluster")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedsvc.client_images import ImageLike, image_input
from embedsvc.client_messages import _vector
from embedsvc.v1 import maps_pb2

CLUSTER_METHODS = {"gmm": maps_pb2.CLUSTER_METHOD_GAUSSIAN_MIXTURE, "kmeans": maps_pb2.CLUSTER_METHOD_KMEANS}
COVARIANCES = {
    "full": maps_pb2.COVARIANCE_TYPE_FULL,
    "diag": maps_pb2.COVARIANCE_TYPE_DIAG,
    "spherical": maps_pb2.COVARIANCE_TYPE_SPHERICAL,
    "tied": maps_pb2.COVARIANCE_TYPE_TIED,
}


def word_points(
    model: str, words: Sequence[str] = (), *, top_n: int = 0, groups: Sequence[str] = (), normalize: bool = False
) -> maps_pb2.PointSet:
    return maps_pb2.PointSet(
        words=maps_pb2.WordPoints(model=model, words=list(words), top_n=top_n), groups=list(groups), normalize=normalize
    )


def text_points(model: str, texts: Sequence[str], *, groups: Sequence[str] = ()) -> maps_pb2.PointSet:
    return maps_pb2.PointSet(texts=maps_pb2.TextPoints(model=model, texts=list(texts)), groups=list(groups))


def image_points(
    model: str, images: Sequence[ImageLike], *, labels: Sequence[str] = (), groups: Sequence[str] = ()
) -> maps_pb2.PointSet:
    source = maps_pb2.ImagePoints(model=model, images=[image_input(i) for i in images], labels=list(labels))
    return maps_pb2.PointSet(images=source, groups=list(groups))


def collection_points(collection: str, ids: Sequence[str] = (), *, normalize: bool = False) -> maps_pb2.PointSet:
    return maps_pb2.PointSet(
        collection=maps_pb2.CollectionPoints(collection=collection, ids=list(ids)), normalize=normalize
    )


def vector_points(vectors: np.ndarray, *, labels: Sequence[str] = (), groups: Sequence[str] = ()) -> maps_pb2.PointSet:
    source = maps_pb2.VectorPoints(vectors=[_vector(v) for v in np.asarray(vectors)], labels=list(labels))
    return maps_pb2.PointSet(vectors=source, groups=list(groups))


@dataclass(frozen=True)
class Projection:
    coordinates: np.ndarray  # (n, 2 or 3)
    labels: list[str]
    explained_variance_ratio: np.ndarray
    explained_variance: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    transformed: list[np.ndarray]


@dataclass(frozen=True)
class Clustering:
    k: int
    assignments: np.ndarray
    responsibilities: np.ndarray
    means: np.ndarray
    weights: np.ndarray
    bic: dict[int, float]
    labels: list[str]
    mean_log_likelihood: float


def _projection(r: maps_pb2.ProjectResponse) -> Projection:
    def coords(points: Any) -> np.ndarray:
        return np.array([list(p.coordinates) for p in points], dtype=np.float64)

    return Projection(
        coordinates=coords(r.points),
        labels=[p.label for p in r.points],
        explained_variance_ratio=np.array(list(r.explained_variance_ratio)),
        explained_variance=np.array(list(r.explained_variance)),
        mean=np.array(list(r.mean.values), dtype=np.float32),
        components=np.array([list(c.values) for c in r.components], dtype=np.float32),
        transformed=[coords(t.points) for t in r.transformed],
    )


def _clustering(r: maps_pb2.ClusterResponse) -> Clustering:
    return Clustering(
        k=r.k,
        assignments=np.array(list(r.assignments), dtype=np.int64),
        responsibilities=np.array([list(x.values) for x in r.responsibilities]),
        means=np.array([list(m.values) for m in r.means]),
        weights=np.array(list(r.weights)),
        bic={b.k: b.bic for b in r.bic},
        labels=list(r.labels),
        mean_log_likelihood=r.mean_log_likelihood,
    )


class MapClientMixin:
    """Methods `Client` gains for maps; relies on `_run` and `_calls`."""

    _calls: Any

    # Provided by Client: sends (rpc, request, parse) and raises EmbedsvcClientError on failure.
    _run: Callable[[Any], Any]

    def project(
        self, points: maps_pb2.PointSet, *, dimensions: int = 2, transform: Sequence[maps_pb2.PointSet] = ()
    ) -> Projection:
        request = maps_pb2.ProjectRequest(points=points, dimensions=dimensions, transform=list(transform))
        return self._run((self._calls.maps.Project, request, _projection))

    def cluster(
        self,
        points: maps_pb2.PointSet,
        *,
        k: int = 0,
        max_k: int = 10,
        method: str = "gmm",
        covariance: str = "diag",
        reduce_to: int = 0,
        seed: int = 0,
    ) -> Clustering:
        """k = 0 chooses k by BIC (Gaussian mixture); method "gmm" or "kmeans"; covariance full|diag|spherical|tied."""
        request = maps_pb2.ClusterRequest(
            points=points,
            k=k,
            max_k=max_k,
            method=CLUSTER_METHODS[method],
            covariance=COVARIANCES[covariance],
            reduce_to=reduce_to,
            seed=seed,
        )
        return self._run((self._calls.maps.Cluster, request, _clustering))

    def plot(
        self,
        points: maps_pb2.PointSet,
        *,
        width: int = 800,
        height: int = 600,
        title: str = "",
        color_by: str = "",
        cluster_k: int = 0,
        annotate: bool = True,
        thumbnails: bool = False,
    ) -> bytes:
        """PNG bytes of the 2-D PCA map. color_by: "", "group", "cluster" or a collection metadata field."""
        style = maps_pb2.PLOT_STYLE_THUMBNAILS if thumbnails else maps_pb2.PLOT_STYLE_SCATTER
        request = maps_pb2.PlotRequest(
            points=points,
            width=width,
            height=height,
            title=title,
            color_by=color_by,
            cluster_k=cluster_k,
            annotate=annotate,
            style=style,
        )
        return self._run((self._calls.maps.Plot, request, lambda r: r.png))
