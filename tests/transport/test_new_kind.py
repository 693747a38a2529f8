"""A new model kind needs its module and a table entry, nothing else: the throwaway "linear-ae" kind (tests/toy_kind.py,
a plain autoencoder: encoder and decoder, no prior, no likelihood) served by a real server. Every latent RPC that its
parts allow works over gRPC, the image collections bind to it, and the ones it lacks the parts for are refused as
FAILED_PRECONDITION / OPERATION_NOT_SUPPORTED without a line of core or transport knowing the kind. (ListModels would
also need its `ModelKind` value in models.proto: the fourth file a real kind touches.)"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.client import Client, EmbedsvcClientError, image_expression
from embedsvc.settings import Settings
from embedsvc.transport.server import create_server
from tests import toy_kind
from tests.toy_kind import LinearAEOptions, LinearAutoencoder

MODEL = "ae"
SEED = 3


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with toy_kind.registered():
        settings = Settings(
            port=0,
            data_dir=tmp_path_factory.mktemp("new-kind"),
            embedded_models=False,
            models=(ModelSpec(MODEL, LinearAEOptions(seed=SEED)),),
        )
        server, port = create_server(settings)
        server.start()
        try:
            server.wait_until_ready(60)
            with Client(f"127.0.0.1:{port}") as client:
                yield client
        finally:
            server.stop(0)


@pytest.fixture(scope="module")
def model() -> LinearAutoencoder:
    return LinearAutoencoder(MODEL, SEED)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Six 8x8 grey images in [0, 1] as (N, H, W) float32."""
    return np.random.default_rng(0).uniform(0.0, 1.0, (6, 8, 8)).astype(np.float32)


def refused(call):
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value.code, info.value.reason


def test_encode_embed_decode_and_reconstruct(client, model, images):
    means, log_variances = client.encode_images(MODEL, list(images))
    want = model.encode(images[:, None])[0]
    np.testing.assert_allclose(means, want, atol=1e-5)
    assert log_variances.size == 0  # an autoencoder has no posterior
    embedded = client.embed_images(MODEL, list(images))
    np.testing.assert_allclose(embedded.vectors, want, atol=1e-5)
    assert embedded.provenance.method == "linear-mean" and embedded.space == model.space
    decoded = client.decode_latents(MODEL, want)
    np.testing.assert_allclose([d.array() for d in decoded], model.decode(want)[:, 0], atol=1 / 255)
    reconstructed = client.reconstruct(MODEL, list(images))
    np.testing.assert_allclose([r.latent for r in reconstructed], want, atol=1e-5)
    assert reconstructed[0].space == model.space


def test_interpolate_directions_and_traverse(client, model, images):
    frames = client.interpolate(MODEL, images[0], model.encode(images[1:2, None])[0][0], steps=3)
    ends = model.encode(images[:2, None])[0]
    np.testing.assert_allclose([f.latent for f in frames], [ends[0], ends.mean(axis=0), ends[1]], atol=1e-5)
    direction = client.create_direction(MODEL, "brighter", from_images=list(images[:3]), to_images=list(images[3:]))
    step = model.encode(images[3:, None])[0].mean(axis=0) - model.encode(images[:3, None])[0].mean(axis=0)
    np.testing.assert_allclose(direction.vector.values, step, atol=1e-5)
    moved = client.traverse(MODEL, images[0], "brighter", [0.0, 1.0])
    np.testing.assert_allclose(moved[1].latent - moved[0].latent, step, atol=1e-5)


def test_what_it_lacks_is_a_failed_precondition(client, images):
    lacking = (grpc.StatusCode.FAILED_PRECONDITION, "OPERATION_NOT_SUPPORTED")
    assert refused(lambda: client.sample(MODEL, 2, seed=0)) == lacking  # no prior
    assert refused(lambda: client.anomaly_scores(MODEL, list(images[:2]))) == lacking  # no likelihood
    mask = np.zeros((8, 8), np.float32)
    mask[4:] = 1.0
    assert refused(lambda: client.inpaint(MODEL, images[0], mask, steps=5)) == lacking
    # Not a latent model's operation at all: the wrong kind of model.
    mismatch = (grpc.StatusCode.INVALID_ARGUMENT, "MODEL_KIND_MISMATCH")
    assert refused(lambda: client.similarity(MODEL, [("king", "queen")])) == mismatch


def test_an_image_collection_binds_to_it(client, model, images):
    client.create_collection("toys", model=MODEL, metric="l2")
    client.upsert("toys", [f"t{i}" for i in range(len(images))], images=list(images))
    hits = client.search("toys", image=images[4], k=2)
    assert hits[0].id == "t4"
    by_expression = client.search("toys", expression=image_expression([images[4]]), k=1)
    assert by_expression[0].id == "t4"
    client.delete_collection("toys")
