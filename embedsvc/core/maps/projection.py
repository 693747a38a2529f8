"""Maps of a vector space: gathering points from any space the server holds, PCA projections, Gaussian mixtures.

scikit-learn does the statistics (PCA; GaussianMixture fitted by EM; KMeans), so the answers are sklearn's; this module
gathers and validates the points and chooses k by BIC. Plots are drawn by `embedsvc.core.maps.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from embedsvc import calls
from embedsvc.backends.capabilities import Capability
from embedsvc.core.collections.service import Collections
from embedsvc.core.images.codec import ImageInput
from embedsvc.core.images.latents import Latents, TaggedVector
from embedsvc.core.provenance import Provenance
from embedsvc.core.texts import embedding as texts
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid, limit_exceeded, missing
from embedsvc.limits import Limits
from embedsvc.vectors import unit_rows


@dataclass(frozen=True)
class WordSource:
    model: str
    words: tuple[str, ...] = ()
    top_n: int = 0


@dataclass(frozen=True)
class TextSource:
    model: str
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageSource:
    model: str
    images: tuple[ImageInput, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CollectionSource:
    collection: str
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class VectorSource:
    vectors: tuple[TaggedVector, ...] = ()
    labels: tuple[str, ...] = ()


Source = WordSource | TextSource | ImageSource | CollectionSource | VectorSource


@dataclass(frozen=True)
class PointSetIn:
    source: Source | None
    normalize: bool = False
    groups: tuple[str, ...] = ()


@dataclass
class Points:
    """Gathered points: (n, d) float64 vectors, a label each, the space, and per-point metadata (collections)."""

    vectors: np.ndarray
    labels: list[str]
    space: str
    groups: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    # The latent model whose decoder can draw these vectors (a VAE), or the images themselves, for thumbnails.
    vae: str = ""
    images: np.ndarray | None = None


@dataclass(frozen=True)
class Projection:
    coordinates: np.ndarray  # (n, dims)
    transformed: list[np.ndarray]
    explained_variance_ratio: np.ndarray
    explained_variance: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    labels: list[str]
    transformed_labels: list[list[str]]
    space: str


class ClusterMethod(StrEnum):
    GAUSSIAN_MIXTURE = "gaussian-mixture"
    KMEANS = "kmeans"


class Covariance(StrEnum):
    FULL = "full"
    DIAG = "diag"
    SPHERICAL = "spherical"
    TIED = "tied"


@dataclass(frozen=True)
class Clusters:
    k: int
    assignments: np.ndarray
    responsibilities: np.ndarray
    means: np.ndarray
    weights: np.ndarray
    bic: list[tuple[int, float]]
    labels: list[str]
    mean_log_likelihood: float
    provenance: Provenance


class Maps:
    def __init__(self, latents: Latents, collections: Collections, limits: Limits) -> None:
        self.latents = latents
        self.registry = latents.registry
        self.collections = collections
        self.limits = limits

    # ---- points --------------------------------------------------------------------------------------------------

    def points(self, point_set: PointSetIn | None, field: str = "points") -> Points:
        if point_set is None or point_set.source is None:
            raise missing(field, "a point set (words, texts, images, collection or vectors)")
        points = self._gather(point_set.source, field)
        check_count(field, "points", len(points.labels), self.limits.max_map_points)
        values = int(points.vectors.size)
        if values > self.limits.max_map_values:
            raise limit_exceeded(field, "values (points x dimensions)", values, self.limits.max_map_values)
        if point_set.groups:
            if len(point_set.groups) != len(points.labels):
                raise invalid(
                    field + ".groups", f"{len(point_set.groups)} groups for {len(points.labels)} points (one each)"
                )
            points.groups = list(point_set.groups)
        if point_set.normalize:
            points.vectors = unit_rows(points.vectors)
        return points

    def _gather(self, source: Source, field: str) -> Points:
        if isinstance(source, WordSource):
            return self._words(source, field + ".words")
        if isinstance(source, TextSource):
            check_count(field + ".texts.texts", "texts", len(source.texts), self.limits.max_map_points)
            model = self.registry.model(source.model, Capability.TEXTS)
            embedded = texts.embed_texts(model, list(source.texts), self.limits)
            return Points(embedded.vectors.astype(np.float64), list(source.texts), embedded.space)
        if isinstance(source, ImageSource):
            where = field + ".images"
            check_count(where + ".images", "images", len(source.images), self.limits.max_map_points)
            images = self.registry.model(source.model, Capability.IMAGES)
            pixels = np.concatenate(
                [
                    self.latents.images(images, list(source.images[i : i + 256]), where + ".images")
                    for i in range(0, len(source.images), 256)
                ]
            )
            labels = self._labels(source.labels, len(pixels), where + ".labels")
            return Points(images.embed(pixels).astype(np.float64), labels, images.space, images=pixels)
        if isinstance(source, CollectionSource):
            return self._collection(source, field + ".collection")
        return self._vectors(source, field + ".vectors")

    def _words(self, source: WordSource, field: str) -> Points:
        space = self.registry.model(source.model, Capability.WORDS)
        if source.words and source.top_n:
            raise invalid(field, "set either words or top_n, not both")
        if source.top_n:
            if source.top_n < 0:
                raise invalid(field + ".top_n", f"top_n must be positive, got {source.top_n}")
            if source.top_n > self.limits.max_map_points:
                raise limit_exceeded(field + ".top_n", "points", source.top_n, self.limits.max_map_points)
            words = list(space.words[: source.top_n])
        else:
            words = list(source.words)
            check_count(field + ".words", "words", len(words), self.limits.max_map_points)
        indices = space.indices(words, field + ".words")
        vectors = np.stack([space.vector(w, i, norm=False) for w, i in zip(words, indices, strict=True)])
        return Points(vectors.astype(np.float64), words, space.space)

    def _collection(self, source: CollectionSource, field: str) -> Points:
        info = self.collections.info(source.collection)
        if source.ids:
            check_count(field + ".ids", "ids", len(source.ids), self.limits.max_map_points)
            found, missing_ids = self.collections.get_items(source.collection, list(source.ids), with_vectors=True)
            if missing_ids:
                raise EmbedsvcError(
                    Reason.ITEM_NOT_FOUND,
                    f"no item {missing_ids[0]!r} in collection '{source.collection}'",
                    field=field + ".ids",
                )
            items = found
        else:
            if info.count > self.limits.max_map_points:
                raise limit_exceeded(
                    field, "items in the collection (pass ids)", info.count, self.limits.max_map_points
                )
            batches = self.collections.export(source.collection, 1000, stored=True)
            items = [item for batch, _ in batches for item in batch]
        if not items:
            raise invalid(field, f"collection '{source.collection}' has no items")
        config = info.config
        vae = ""
        if config.model and Capability.LATENT_DECODER in self.registry.offers(config.model):
            vae = config.model
        return Points(
            np.stack([i.vector for i in items]).astype(np.float64),
            [i.id for i in items],
            config.space,
            metadata=[i.metadata or {} for i in items],
            vae=vae,
        )

    def _vectors(self, source: VectorSource, field: str) -> Points:
        check_count(field + ".vectors", "vectors", len(source.vectors), self.limits.max_map_points)
        tags = {v.space for v in source.vectors if v.space}
        if len(tags) > 1:
            raise EmbedsvcError(
                Reason.SPACE_MISMATCH,
                f"the vectors come from {len(tags)} spaces: {', '.join(sorted(tags))}",
                field=field,
            )
        dims = {v.values.shape for v in source.vectors}
        if len(dims) > 1 or next(iter(dims)) == (0,):
            raise EmbedsvcError(
                Reason.DIMENSION_MISMATCH, "the vectors must all have the same, non-zero length", field=field
            )
        vectors = np.stack([v.values for v in source.vectors]).astype(np.float64)
        if not np.isfinite(vectors).all():
            raise EmbedsvcError(Reason.NOT_FINITE, "a vector has NaN or infinite components", field=field)
        labels = self._labels(source.labels, len(vectors), field + ".labels")
        return Points(vectors, labels, next(iter(tags), ""))

    @staticmethod
    def _labels(labels: Sequence[str], n: int, field: str) -> list[str]:
        if not labels:
            return [str(i) for i in range(n)]
        if len(labels) != n:
            raise invalid(field, f"{len(labels)} labels for {n} points (one each, or none)")
        return list(labels)

    # ---- PCA -----------------------------------------------------------------------------------------------------

    def project(
        self, point_set: PointSetIn | None, dimensions: int, transform: Sequence[PointSetIn] = ()
    ) -> Projection:
        dimensions = dimensions or 2
        if dimensions not in (2, 3):
            raise invalid("dimensions", f"dimensions must be 2 or 3, got {dimensions}")
        points = self.points(point_set)
        others = [self.points(p, f"transform[{i}]") for i, p in enumerate(transform)]
        return project_points(points, dimensions, others)

    # ---- clusters ------------------------------------------------------------------------------------------------

    def cluster(
        self,
        point_set: PointSetIn | None,
        *,
        k: int,
        max_k: int,
        method: ClusterMethod,
        covariance: Covariance,
        reduce_to: int,
        seed: int,
    ) -> Clusters:
        points = self.points(point_set)
        return cluster_points(
            points,
            k=k,
            max_k=max_k,
            method=method,
            covariance=covariance,
            reduce_to=reduce_to,
            seed=seed,
            limits=self.limits,
        )


def project_points(points: Points, dimensions: int, others: Sequence[Points] = ()) -> Projection:
    """sklearn PCA fitted on `points`; `others` are transformed with that fit (they must share the space)."""
    from sklearn.decomposition import PCA

    n, d = points.vectors.shape
    for i, other in enumerate(others):
        if other.vectors.shape[1] != d:
            raise EmbedsvcError(
                Reason.DIMENSION_MISMATCH,
                f"transform[{i}] has dimension {other.vectors.shape[1]}, the fitted points {d}",
                field=f"transform[{i}]",
            )
        if other.space and points.space and other.space != points.space:
            raise EmbedsvcError(
                Reason.SPACE_MISMATCH,
                f"transform[{i}] is in {other.space}, the fitted points in {points.space}",
                field=f"transform[{i}]",
            )
    components = min(dimensions, n, d)
    if n < 2:
        raise invalid("points", "PCA needs at least 2 points")
    pca = PCA(n_components=components, svd_solver="full").fit(points.vectors)

    def pad(coordinates: np.ndarray) -> np.ndarray:  # fewer points or dimensions than asked: zeros beyond
        return np.pad(coordinates, ((0, 0), (0, dimensions - components)))

    return Projection(
        coordinates=pad(pca.transform(points.vectors)),
        transformed=[pad(pca.transform(o.vectors)) for o in others],
        explained_variance_ratio=pca.explained_variance_ratio_,
        explained_variance=pca.explained_variance_,
        mean=pca.mean_,
        components=pca.components_,
        labels=points.labels,
        transformed_labels=[o.labels for o in others],
        space=points.space,
    )


def cluster_points(
    points: Points,
    *,
    k: int,
    max_k: int,
    method: ClusterMethod,
    covariance: Covariance,
    reduce_to: int,
    seed: int,
    limits: Limits,
) -> Clusters:
    """k-means with k clusters, or a Gaussian mixture with k components (k = 0: the k in 1..max_k of lowest BIC),
    optionally on the points' PCA projection to `reduce_to` dimensions."""
    from sklearn.decomposition import PCA

    max_k = _check_cluster_counts(points, k, max_k, reduce_to, limits)
    _check_cluster_work(points, k, max_k, method, covariance, reduce_to, limits)
    x = points.vectors
    if reduce_to:
        x = PCA(n_components=reduce_to, svd_solver="full").fit_transform(x)
    parameters = {"method": method.value, "seed": str(seed), "reduce_to": str(reduce_to)}
    if method is ClusterMethod.KMEANS:
        return _kmeans(points, x, k, seed, parameters)
    return _gaussian_mixture(points, x, k, max_k, covariance, seed, parameters)


def _check_cluster_counts(points: Points, k: int, max_k: int, reduce_to: int, limits: Limits) -> int:
    """Validate k, max_k (returned with its default) and reduce_to against the points and the limits."""
    n, d = points.vectors.shape
    if k < 0:
        raise invalid("k", f"k must be 0 (choose by BIC) or positive, got {k}")
    if k > limits.max_clusters:
        raise limit_exceeded("k", "clusters", k, limits.max_clusters)
    if k > n:
        raise invalid("k", f"k = {k} is more than the {n} points")
    max_k = max_k or 10
    if max_k < 1:
        raise invalid("max_k", f"max_k must be positive, got {max_k}")
    if max_k > limits.max_clusters:
        raise limit_exceeded("max_k", "clusters", max_k, limits.max_clusters)
    if reduce_to < 0 or reduce_to > min(n, d):
        raise invalid("reduce_to", f"reduce_to must be 0..{min(n, d)} (points and dimension), got {reduce_to}")
    return max_k


def _check_cluster_work(
    points: Points, k: int, max_k: int, method: ClusterMethod, covariance: Covariance, reduce_to: int, limits: Limits
) -> None:
    """LIMIT_EXCEEDED, before any fit, when the fits would cost more than limits.max_cluster_work: points x
    dimensions x the components of every mixture tried (x dimensions again for full covariance)."""
    n, d = points.vectors.shape
    d = reduce_to or d
    tried = k if k else sum(range(1, min(max_k, n) + 1))
    squared = method is not ClusterMethod.KMEANS and covariance in (Covariance.FULL, Covariance.TIED)
    work = n * d * tried * (d if squared else 1)
    if work > limits.max_cluster_work:
        raise limit_exceeded(
            "k" if k else "max_k",
            "clustering work (points x dimensions x components tried, x dimensions for full covariance; "
            "reduce_to, a smaller max_k or a diagonal covariance make it smaller)",
            work,
            limits.max_cluster_work,
        )


def _kmeans(points: Points, x: np.ndarray, k: int, seed: int, parameters: dict[str, str]) -> Clusters:
    from sklearn.cluster import KMeans

    if k == 0:
        raise invalid("k", "k-means needs k (BIC applies to Gaussian mixtures)")
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    assignments = km.labels_.astype(np.int64)
    return Clusters(
        k=k,
        assignments=assignments,
        responsibilities=np.eye(k)[assignments],
        means=km.cluster_centers_,
        weights=np.bincount(assignments, minlength=k) / len(x),
        bic=[],
        labels=points.labels,
        mean_log_likelihood=0.0,
        provenance=Provenance("", "", "sklearn KMeans", parameters | {"k": str(k)}),
    )


def _gaussian_mixture(
    points: Points,
    x: np.ndarray,
    k: int,
    max_k: int,
    covariance: Covariance,
    seed: int,
    parameters: dict[str, str],
) -> Clusters:
    from sklearn.mixture import GaussianMixture

    # A component must not collapse onto a single point (its likelihood, and so BIC, would run away on the small sets
    # maps are often drawn of): the variance floor is 1% of the data's mean variance per dimension.
    reg_covar = max(1e-6, 0.01 * float(x.var(axis=0).mean()))
    bic: list[tuple[int, float]] = []
    best: Any = None
    for components in [k] if k else range(1, min(max_k, len(x)) + 1):
        calls.check()  # between fits: stops when the caller's deadline passes or it goes away
        model = GaussianMixture(
            n_components=components, covariance_type=covariance.value, n_init=3, random_state=seed, reg_covar=reg_covar
        ).fit(x)
        bic.append((components, float(model.bic(x))))
        if best is None or bic[-1][1] < min(b for _, b in bic[:-1]):  # keep only the best mixture so far
            best = model
    responsibilities = best.predict_proba(x)
    chosen = int(best.n_components)
    return Clusters(
        k=chosen,
        assignments=responsibilities.argmax(axis=1).astype(np.int64),
        responsibilities=responsibilities,
        means=best.means_,
        weights=best.weights_,
        bic=bic,
        labels=points.labels,
        mean_log_likelihood=float(best.score(x)),
        provenance=Provenance(
            "",
            "",
            "sklearn GaussianMixture",
            parameters
            | {
                "k": str(chosen),
                "covariance": covariance.value,
                "chosen_by": "given" if k else "BIC",
                "reg_covar": f"{reg_covar:.3g}",
            },
        ),
    )
