"""Projections and clusters against their definitions: PCA equals numpy's SVD, planted Gaussians are recovered."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from embedsvc.core.maps.projection import ClusterMethod, Covariance, Points, cluster_points, project_points
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits


def planted(seed: int = 0, k: int = 4, per: int = 60, dim: int = 8) -> tuple[Points, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, dim))
    truth = np.repeat(np.arange(k), per)
    x = centres[truth] + rng.normal(scale=0.5, size=(k * per, dim))
    return Points(x, [str(i) for i in range(len(x))], ""), truth


def test_pca_equals_numpy_svd() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    projection = project_points(Points(x, [str(i) for i in range(200)], ""), 3)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variance = s**2 / (len(x) - 1)
    np.testing.assert_allclose(projection.explained_variance, variance[:3], rtol=1e-10)
    np.testing.assert_allclose(projection.explained_variance_ratio, variance[:3] / variance.sum(), rtol=1e-10)
    # Axes are defined up to sign; coordinates are the centred data on them.
    signs = np.sign(np.sum(projection.components * vt[:3], axis=1))
    np.testing.assert_allclose(projection.components * signs[:, None], vt[:3], atol=1e-10)
    np.testing.assert_allclose(projection.coordinates, centred @ projection.components.T, atol=1e-9)


def test_transform_uses_the_fit() -> None:
    points, _ = planted()
    half = Points(points.vectors[:10], points.labels[:10], "")
    projection = project_points(points, 2, [half])
    np.testing.assert_allclose(projection.transformed[0], projection.coordinates[:10], atol=1e-10)


@pytest.mark.parametrize("covariance", list(Covariance))
def test_gaussian_mixture_recovers_planted_clusters(covariance: Covariance) -> None:
    points, truth = planted()
    clusters = cluster_points(
        points,
        k=4,
        max_k=10,
        method=ClusterMethod.GAUSSIAN_MIXTURE,
        covariance=covariance,
        reduce_to=0,
        seed=0,
        limits=Limits(),
    )
    assert adjusted_rand_score(truth, clusters.assignments) == 1.0
    np.testing.assert_allclose(clusters.responsibilities.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(sorted(clusters.weights), [0.25] * 4, atol=1e-6)


def test_bic_chooses_the_planted_k_and_kmeans_agrees() -> None:
    points, truth = planted(seed=3, k=3)
    clusters = cluster_points(
        points,
        k=0,
        max_k=8,
        method=ClusterMethod.GAUSSIAN_MIXTURE,
        covariance=Covariance.DIAG,
        reduce_to=0,
        seed=0,
        limits=Limits(),
    )
    assert clusters.k == 3 and [k for k, _ in clusters.bic] == list(range(1, 9))
    assert min(clusters.bic, key=lambda b: b[1])[0] == 3
    kmeans = cluster_points(
        points,
        k=3,
        max_k=8,
        method=ClusterMethod.KMEANS,
        covariance=Covariance.DIAG,
        reduce_to=2,
        seed=0,
        limits=Limits(),
    )
    assert adjusted_rand_score(truth, kmeans.assignments) == 1.0 and kmeans.means.shape == (3, 2)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (dict(k=500), "k"),  # over max_clusters
        (dict(k=-1), "k"),
        (dict(k=0, method=ClusterMethod.KMEANS), "k"),
        (dict(reduce_to=100), "reduce_to"),
        (dict(max_k=1000), "max_k"),
    ],
)
def test_bad_cluster_options(options: dict, field: str) -> None:
    points, _ = planted(per=5)
    arguments = dict(k=2, max_k=10, method=ClusterMethod.GAUSSIAN_MIXTURE, covariance=Covariance.DIAG, reduce_to=0)
    with pytest.raises(EmbedsvcError) as info:
        cluster_points(points, **(arguments | options), seed=0, limits=Limits())
    assert info.value.field == field and info.value.reason in (Reason.INVALID_VALUE, Reason.LIMIT_EXCEEDED)
