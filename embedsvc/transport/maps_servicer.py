"""MapService: thin adapter over embedsvc.core.maps.projection and embedsvc.core.maps.plots."""

from __future__ import annotations

import grpc
import numpy as np

from embedsvc.core.maps import plots
from embedsvc.core.maps import projection as maps
from embedsvc.errors import invalid
from embedsvc.transport import convert
from embedsvc.transport import images_convert as ic
from embedsvc.v1 import common_pb2, maps_pb2, maps_pb2_grpc

_METHODS = {
    maps_pb2.CLUSTER_METHOD_UNSPECIFIED: maps.ClusterMethod.GAUSSIAN_MIXTURE,
    maps_pb2.CLUSTER_METHOD_GAUSSIAN_MIXTURE: maps.ClusterMethod.GAUSSIAN_MIXTURE,
    maps_pb2.CLUSTER_METHOD_KMEANS: maps.ClusterMethod.KMEANS,
}
_COVARIANCES = {
    maps_pb2.COVARIANCE_TYPE_UNSPECIFIED: maps.Covariance.DIAG,
    maps_pb2.COVARIANCE_TYPE_FULL: maps.Covariance.FULL,
    maps_pb2.COVARIANCE_TYPE_DIAG: maps.Covariance.DIAG,
    maps_pb2.COVARIANCE_TYPE_SPHERICAL: maps.Covariance.SPHERICAL,
    maps_pb2.COVARIANCE_TYPE_TIED: maps.Covariance.TIED,
}


_COLORS = {
    "": plots.ColorBy.NOTHING,
    "by_group": plots.ColorBy.GROUP,
    "by_cluster": plots.ColorBy.CLUSTER,
    "by_metadata_field": plots.ColorBy.FIELD,
}


def point_set(message: maps_pb2.PointSet, present: bool, field: str) -> maps.PointSetIn | None:
    if not present:
        return None
    which = message.WhichOneof("source")
    source: maps.Source | None = None
    if which == "words":
        w = message.words
        source = maps.WordSource(w.model, tuple(w.words), w.top_n)
    elif which == "texts":
        source = maps.TextSource(message.texts.model, tuple(message.texts.texts))
    elif which == "images":
        i = message.images
        source = maps.ImageSource(i.model, tuple(ic.images(i.images, field + ".images.images")), tuple(i.labels))
    elif which == "collection":
        source = maps.CollectionSource(message.collection.collection, tuple(message.collection.ids))
    elif which == "vectors":
        v = message.vectors
        source = maps.VectorSource(tuple(ic.tagged(x) for x in v.vectors), tuple(v.labels))
    return maps.PointSetIn(source, message.normalize, tuple(message.groups))


def _points(coordinates: np.ndarray, labels: list[str]) -> list[maps_pb2.MapPoint]:
    return [
        maps_pb2.MapPoint(label=label, coordinates=row) for label, row in zip(labels, coordinates.tolist(), strict=True)
    ]


def projection_message(p: maps.Projection) -> maps_pb2.ProjectResponse:
    return maps_pb2.ProjectResponse(
        points=_points(p.coordinates, p.labels),
        transformed=[
            maps_pb2.ProjectedSet(points=_points(c, labels))
            for c, labels in zip(p.transformed, p.transformed_labels, strict=True)
        ],
        explained_variance_ratio=p.explained_variance_ratio.tolist(),
        explained_variance=p.explained_variance.tolist(),
        mean=common_pb2.Vector(values=p.mean.tolist(), space=p.space),
        components=[common_pb2.Vector(values=c, space=p.space) for c in p.components.tolist()],
        space=p.space,
    )


class MapServicer(maps_pb2_grpc.MapServiceServicer):
    def __init__(self, maps_: maps.Maps) -> None:
        self._maps = maps_

    def Project(self, request: maps_pb2.ProjectRequest, context: grpc.ServicerContext) -> maps_pb2.ProjectResponse:
        projection = self._maps.project(
            point_set(request.points, request.HasField("points"), "points"),
            request.dimensions,
            [point_set(p, True, f"transform[{i}]") or maps.PointSetIn(None) for i, p in enumerate(request.transform)],
        )
        return projection_message(projection)

    def Cluster(self, request: maps_pb2.ClusterRequest, context: grpc.ServicerContext) -> maps_pb2.ClusterResponse:
        if request.method not in _METHODS:
            raise invalid("method", f"unknown cluster method {request.method}")
        if request.covariance not in _COVARIANCES:
            raise invalid("covariance", f"unknown covariance type {request.covariance}")
        clusters = self._maps.cluster(
            point_set(request.points, request.HasField("points"), "points"),
            k=request.k,
            max_k=request.max_k,
            method=_METHODS[request.method],
            covariance=_COVARIANCES[request.covariance],
            reduce_to=request.reduce_to,
            seed=request.seed,
        )
        return maps_pb2.ClusterResponse(
            k=clusters.k,
            assignments=clusters.assignments.tolist(),
            responsibilities=[maps_pb2.Responsibilities(values=r) for r in clusters.responsibilities.tolist()],
            means=[common_pb2.Vector(values=m) for m in clusters.means.tolist()],
            weights=clusters.weights.tolist(),
            bic=[maps_pb2.BicScore(k=k, bic=b) for k, b in clusters.bic],
            labels=clusters.labels,
            mean_log_likelihood=clusters.mean_log_likelihood,
            provenance=convert.provenance_message(clusters.provenance),
        )

    def Plot(self, request: maps_pb2.PlotRequest, context: grpc.ServicerContext) -> maps_pb2.PlotResponse:
        if request.style not in (
            maps_pb2.PLOT_STYLE_UNSPECIFIED,
            maps_pb2.PLOT_STYLE_SCATTER,
            maps_pb2.PLOT_STYLE_THUMBNAILS,
        ):
            raise invalid("style", f"unknown plot style {request.style}")
        options = plots.PlotOptions(
            width=request.width or 800,
            height=request.height or 600,
            title=request.title,
            color_by=_COLORS[request.WhichOneof("color") or ""],
            color_field=request.by_metadata_field,
            cluster_k=request.by_cluster.k,
            annotate=request.annotate if request.HasField("annotate") else True,
            thumbnails=request.style == maps_pb2.PLOT_STYLE_THUMBNAILS,
        )
        png, projection = plots.plot(
            self._maps, point_set(request.points, request.HasField("points"), "points"), options
        )
        return maps_pb2.PlotResponse(png=png, projection=projection_message(projection))
