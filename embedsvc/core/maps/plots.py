"""Plots of a map: a 2-D PCA scatter coloured by group, metadata field or cluster, or thumbnails, as PNG bytes.

matplotlib's object API with the Agg canvas (no pyplot, no global figure state), so concurrent calls do not share a
figure. The PNG has exactly the requested width and height.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from embedsvc import calls
from embedsvc.backends.capabilities import Capability
from embedsvc.core.maps.projection import (
    ClusterMethod,
    Covariance,
    Maps,
    Points,
    PointSetIn,
    Projection,
    cluster_points,
    project_points,
)
from embedsvc.errors import EmbedsvcError, Reason, invalid, limit_exceeded

DPI = 100


class ColorBy(StrEnum):
    NOTHING = ""
    GROUP = "group"  # PointSet.groups
    CLUSTER = "cluster"  # a Gaussian mixture's components
    FIELD = "field"  # a metadata field of a collection's items (PlotOptions.color_field)


@dataclass(frozen=True)
class PlotOptions:
    width: int = 800
    height: int = 600
    title: str = ""
    color_by: ColorBy = ColorBy.NOTHING
    color_field: str = ""
    cluster_k: int = 0
    annotate: bool = True
    thumbnails: bool = False


def plot(maps: Maps, point_set: PointSetIn | None, options: PlotOptions) -> tuple[bytes, Projection]:
    limits = maps.limits
    for name, value in (("width", options.width), ("height", options.height)):
        if value < 64:
            raise invalid(name, f"{name} must be at least 64 pixels, got {value}")
        if value > limits.max_plot_pixels_side:
            raise limit_exceeded(name, f"plot {name} in pixels", value, limits.max_plot_pixels_side)
    points = maps.points(point_set)
    projection = project_points(points, 2)
    colours, legend = _colours(points, options, maps)
    thumbnails = None
    if options.thumbnails:
        # At most max_annotated_points pictures, spread evenly over the points (every point keeps its marker); only
        # those are decoded.
        n = len(points.labels)
        chosen = np.unique(np.linspace(0, n - 1, min(n, limits.max_annotated_points)).round().astype(int))
        thumbnails = (chosen, _thumbnails(points, chosen, maps))
    annotate = options.annotate and thumbnails is None
    return _draw(projection, colours, legend, thumbnails, options, annotate, limits.max_annotated_points), projection


def _colours(points: Points, options: PlotOptions, maps: Maps) -> tuple[list[str] | None, str]:
    """The category of each point (None: one colour) and the legend's title."""
    if options.color_by is ColorBy.NOTHING:
        return None, ""
    if options.color_by is ColorBy.GROUP:
        if not points.groups:
            raise invalid("by_group", "colouring by group needs PointSet.groups")
        return points.groups, "group"
    if options.color_by is ColorBy.CLUSTER:
        clusters = cluster_points(
            points,
            k=options.cluster_k,
            max_k=10,
            method=ClusterMethod.GAUSSIAN_MIXTURE,
            covariance=Covariance.DIAG,
            reduce_to=min(10, *points.vectors.shape) if points.vectors.shape[1] > 10 else 0,
            seed=0,
            limits=maps.limits,
        )
        return [f"cluster {a}" for a in clusters.assignments], f"Gaussian mixture, k = {clusters.k}"
    key = options.color_field
    if not key:
        raise invalid("by_metadata_field", "the metadata field's name is required")
    if not points.metadata:
        raise invalid("by_metadata_field", f"colouring by field {key!r}: only a collection's items have metadata")
    values = [m.get(key) for m in points.metadata]
    if all(v is None for v in values):
        raise EmbedsvcError(Reason.INVALID_VALUE, f"no item has a metadata field {key!r}", field="by_metadata_field")
    return [_category(v) for v in values], key


def _category(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # numbers stored as floats by older servers: 7.0 is the digit 7
    return str(value)


def _thumbnails(points: Points, chosen: np.ndarray, maps: Maps) -> np.ndarray:
    """(len(chosen), C, H, W) pictures of those points: the images given, or a VAE-bound collection's vectors
    decoded."""
    if points.images is not None:
        return points.images[chosen]
    if points.vae:
        decoder = maps.registry.model(points.vae, Capability.LATENT_DECODER)
        return decoder.decode(points.vectors[chosen].astype(np.float32))
    raise invalid("style", "thumbnails need images (ImagePoints) or a collection bound to a VAE")


def _draw(
    projection: Projection,
    categories: list[str] | None,
    legend_title: str,
    thumbnails: tuple[np.ndarray, np.ndarray] | None,
    options: PlotOptions,
    annotate: bool,
    max_annotated: int,
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    figure = Figure(figsize=(options.width / DPI, options.height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    xy = projection.coordinates[:, :2]
    ratio = projection.explained_variance_ratio
    axes.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)" if len(ratio) > 0 else "PC1")
    axes.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)" if len(ratio) > 1 else "PC2")
    if options.title:
        axes.set_title(options.title)
    if categories is None:
        axes.scatter(xy[:, 0], xy[:, 1], s=18, color="tab:blue", alpha=0.8)
    else:
        names = sorted(set(categories), key=_natural)
        palette = _palette(len(names))
        for name, colour in zip(names, palette, strict=True):
            mask = np.array([c == name for c in categories])
            axes.scatter(xy[mask, 0], xy[mask, 1], s=18, color=colour, alpha=0.8, label=name)
        if len(names) <= 20:
            axes.legend(title=legend_title, fontsize="small", loc="best", markerscale=1.5)
    if thumbnails is not None:
        chosen, pictures = thumbnails
        zoom = max(0.4, min(1.2, options.width / 1000))
        for (x, y), picture in zip(xy[chosen], pictures, strict=True):
            calls.check()
            array = picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0)
            box = OffsetImage(array, zoom=zoom, cmap="gray" if picture.shape[0] == 1 else None)
            axes.add_artist(AnnotationBbox(box, (x, y), frameon=False))
    if annotate:
        for (x, y), label in list(zip(xy, projection.labels, strict=True))[:max_annotated]:
            axes.annotate(label[:30], (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _natural(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _palette(n: int) -> list[object]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    if n <= 20:
        return [cmap(i) for i in range(n)]
    return [cmap(i / max(1, n - 1)) for i in range(n)]
