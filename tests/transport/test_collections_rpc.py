"""CollectionService through a real server: every RPC, bound collections, and bad input as (code, reason), on each
collection backend (FAISS, and Milvus as Milvus Lite started by the server)."""

import grpc
import numpy as np
import pytest

from embedsvc.client import EmbedsvcClientError
from embedsvc.v1 import collections_pb2
from embedsvc.v1.common_pb2 import Vector
from tests.helpers import assert_refused

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(params=["faiss", "milvus"])
def backend(request):
    return request.param


@pytest.fixture
def vectors_collection(client, backend):
    name = "vecs"
    client.create_collection(name, dimension=8, metric="l2", index="hnsw", m=8, backend=backend)
    assert client.get_collection(name).backend == collections_pb2.Backend.Value(f"BACKEND_{backend.upper()}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    ids = [f"item{i}" for i in range(200)]
    client.upsert(name, ids, x, [{"even": i % 2 == 0, "i": i, "tags": ["t" + str(i % 3)]} for i in range(200)])
    yield name, x
    client.delete_collection(name)


def test_lifecycle_and_read_your_writes(client, vectors_collection):
    name, x = vectors_collection
    info = client.get_collection(name)
    assert (info.count, info.dimension, info.index.m, info.index.ef_search, info.space) == (
        200,
        8,
        8,
        64,
        "collection:vecs",
    )
    assert name in [c.name for c in client.list_collections()]
    client.upsert(name, ["new"], np.full((1, 8), 9.0, np.float32), [{"fresh": True}])
    (hit,) = client.search(name, vector=np.full(8, 9.0, np.float32), k=1)
    assert (hit.id, hit.score, hit.metadata) == ("new", 0.0, {"fresh": True})
    items, missing = client.get_items(name, ["item3", "nope"], include_vectors=True)
    np.testing.assert_array_equal(items[0]["vector"], x[3])
    assert items[0]["metadata"] == {"even": False, "i": 3.0, "tags": ["t0"]} and missing == ["nope"]
    assert client.delete_items(name, ["new", "nope"]) == (1, 1)
    assert client.get_collection(name).count == 200


def test_search_kinds_filters_and_batch(client, vectors_collection):
    name, x = vectors_collection
    hits = client.search(name, item_id="item5", k=3)
    assert "item5" not in [h.id for h in hits] and len(hits) == 3
    hits = client.search(name, vector=x[0], k=5, filter='even = true AND tags IN ["t0", "t1"]', exact=True)
    assert len(hits) == 5 and all(h.metadata["even"] for h in hits) and hits[0].id == "item0"
    lists = client.batch_search(name, x[:4], k=2, include_vectors=True, include_metadata=False)
    assert [lst[0].id for lst in lists] == ["item0", "item1", "item2", "item3"]
    assert lists[0][0].metadata == {} and lists[0][0].vector is not None
    exported = list(client.export_items(name, batch_size=64))
    assert len(exported) == 200 and all(e["vector"] is not None for e in exported)
    info = client.rebuild(name, wait=True).result
    assert info.count == 200 and info.tombstones == 0


def test_packed_batch_equals_query_messages(client, vectors_collection):
    name, x = vectors_collection
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 8)).astype(np.float32)
    packed = client.batch_search(name, q, k=7, exact=True)
    messages = client.batch_search(
        name, [collections_pb2.Query(vector=Vector(values=v.tolist())) for v in q], k=7, exact=True
    )
    assert [[(h.id, h.score, h.metadata) for h in lst] for lst in packed] == [
        [(h.id, h.score, h.metadata) for h in lst] for lst in messages
    ]
    truth = np.argsort(((x[None, :, :] - q[:, None, :]) ** 2).sum(axis=2), axis=1)[:, :7]
    assert [[h.id for h in lst] for lst in packed] == [[f"item{i}" for i in row] for row in truth]


def test_packed_results_equal_hit_messages(client, vectors_collection):
    """The columns of packed_results carry the same ids, scores (exactly) and vectors as SearchHit messages, with a
    filter that leaves some queries short of k; metadata is refused in that form, not silently dropped."""
    name, _x = vectors_collection
    q = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    for options in (
        {"k": 7, "exact": True},
        {"k": 5, "include_vectors": True},
        {"k": 150, "filter": "i < 40 AND even = true", "include_vectors": True},
    ):
        hits = client.batch_search(name, q, include_metadata=False, **options)
        packed = client.batch_search_packed(name, q, **options)
        assert len(packed) == len(hits) and packed.counts.tolist() == [len(lst) for lst in hits]
        assert packed.ids == [h.id for lst in hits for h in lst]
        assert packed.scores.tolist() == [h.score for lst in hits for h in lst]
        for i, lst in enumerate(hits):
            assert packed.query(i)[0] == [h.id for h in lst]
        if options.get("include_vectors"):
            np.testing.assert_array_equal(packed.vectors, np.stack([h.vector for lst in hits for h in lst]))
            assert packed.space == "collection:vecs"
        else:
            assert packed.vectors is None
    assert client.batch_search_packed(name, q[:3], k=3, filter="i < 0").counts.tolist() == [0, 0, 0]
    assert_refused(
        lambda: client.batch_search_packed(name, q[:2], include_metadata=True),
        INVALID,
        "INVALID_VALUE",
        "options.include_metadata",
    )


def test_async_batch_search_sends_packed_queries(target, vectors_collection):
    import asyncio

    from embedsvc.client import AsyncClient

    name, x = vectors_collection

    async def main():
        async with AsyncClient(target) as c:
            return await c.batch_search(name, x[:3], k=1, exact=True)

    assert [lst[0].id for lst in asyncio.run(main())] == ["item0", "item1", "item2"]


def test_packed_and_listed_queries_together_are_refused(client, vectors_collection):
    name, x = vectors_collection
    request = collections_pb2.BatchSearchRequest(
        collection=name,
        queries=[collections_pb2.Query(vector=Vector(values=x[0].tolist()))],
        packed_queries=x[:1].tobytes(),
    )
    with pytest.raises(grpc.RpcError) as info:
        client._calls.collections.BatchSearch(request)
    assert info.value.code() == INVALID and "packed_queries" in info.value.details()


def test_stream_upsert(client, backend):
    client.create_collection("stream", dimension=4, metric="ip", backend=backend)
    try:
        x = np.arange(4000, dtype=np.float32).reshape(1000, 4)
        seen = []
        response = client.upsert_stream(
            "stream", [str(i) for i in range(1000)], x, batch_size=300, progress=seen.append
        )
        count = 1000 if backend == "faiss" else -1  # Milvus counts by scanning: not on every write
        assert (response.upserted, response.batches, response.count) == (1000, 4, count)
        assert client.get_collection("stream").count == 1000
        assert sum(seen) == 1000
    finally:
        client.delete_collection("stream")


def test_bound_collection_of_words(client, backend):
    client.create_collection("animals", metric="cosine", model="planted", backend=backend)
    try:
        words = ["king", "queen", "man", "woman", "paris", "rome", "italy", "france"]
        client.upsert("animals", words, inputs=words)
        hits = client.search("animals", expression="king - man + woman", k=2)
        assert hits[0].id == "queen" and hits[0].input == "queen"
        assert {"king", "man", "woman"}.isdisjoint(h.id for h in hits)
        assert "paris" not in [h.id for h in client.search("animals", input="paris", k=3)]  # like most_similar
        emb = client.embed_words("planted", ["rome"])
        assert client.search("animals", vector=emb[0], k=1)[0].id == "rome"  # the model's space is the collection's
        other = client.embed_words("glove", ["the"])
        with pytest.raises(EmbedsvcClientError) as info:
            client.search("animals", vector=other[0], k=1)
        assert info.value.reason in ("SPACE_MISMATCH", "DIMENSION_MISMATCH")
        assert_refused(lambda: client.upsert("animals", ["x"], inputs=["zzqq"]), INVALID, "OUT_OF_VOCABULARY")
    finally:
        client.delete_collection("animals")


V8 = np.zeros((1, 8), np.float32)
BAD = [
    (
        "unknown collection",
        lambda c: c.search("nope", vector=np.zeros(8)),
        (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND"),
    ),
    (
        "duplicate create",
        lambda c: c.create_collection("vecs", dimension=8, metric="l2"),
        (grpc.StatusCode.ALREADY_EXISTS, "COLLECTION_EXISTS"),
    ),
    ("bad name", lambda c: c.create_collection("a/b", dimension=8), (INVALID, "INVALID_VALUE")),
    ("no dimension", lambda c: c.create_collection("d0", metric="l2"), (INVALID, "MISSING_FIELD")),
    ("bad pq_m", lambda c: c.create_collection("pq", dimension=10, index="ivf-pq", pq_m=3), (INVALID, "INVALID_VALUE")),
    (
        "wrong dimension",
        lambda c: c.upsert("vecs", ["a"], np.zeros((1, 3), np.float32)),
        (INVALID, "DIMENSION_MISMATCH"),
    ),
    ("nan vector", lambda c: c.upsert("vecs", ["a"], np.full((1, 8), np.nan, np.float32)), (INVALID, "NOT_FINITE")),
    ("inf query", lambda c: c.search("vecs", vector=np.full(8, np.inf)), (INVALID, "NOT_FINITE")),
    ("nan packed", lambda c: c.batch_search("vecs", np.full((3, 8), np.nan, np.float32)), (INVALID, "NOT_FINITE")),
    # Finite but huge: FAISS's float32 distances overflow and its k-means aborts the process (vectors.MAX_COMPONENT).
    ("huge vector", lambda c: c.upsert("vecs", ["a"], np.full((1, 8), 1e30, np.float32)), (INVALID, "LIMIT_EXCEEDED")),
    ("huge query", lambda c: c.search("vecs", vector=np.full(8, -3e18)), (INVALID, "LIMIT_EXCEEDED")),
    ("huge packed", lambda c: c.batch_search("vecs", np.full((3, 8), 2e15, np.float32)), (INVALID, "LIMIT_EXCEEDED")),
    ("ragged packed", lambda c: c.batch_search("vecs", np.zeros((3, 3), np.float32)), (INVALID, "DIMENSION_MISMATCH")),
    ("packed over", lambda c: c.batch_search("vecs", np.zeros((1025, 8), np.float32)), (INVALID, "LIMIT_EXCEEDED")),
    ("no queries", lambda c: c.batch_search("vecs", []), (INVALID, "MISSING_FIELD")),
    ("empty id", lambda c: c.upsert("vecs", [""], V8), (INVALID, "MISSING_FIELD")),
    ("long id", lambda c: c.upsert("vecs", ["x" * 300], V8), (INVALID, "LIMIT_EXCEEDED")),
    ("duplicate id", lambda c: c.upsert("vecs", ["a", "a"], np.zeros((2, 8), np.float32)), (INVALID, "DUPLICATE_ID")),
    ("nested metadata", lambda c: c.upsert("vecs", ["a"], V8, [{"x": [[1]]}]), (INVALID, "INVALID_METADATA")),
    ("bad filter", lambda c: c.search("vecs", vector=np.zeros(8), filter="i >"), (INVALID, "INVALID_FILTER")),
    ("k zero", lambda c: c.search("vecs", vector=np.zeros(8), k=-1), (INVALID, "INVALID_VALUE")),
    ("k over", lambda c: c.search("vecs", vector=np.zeros(8), k=5000), (INVALID, "LIMIT_EXCEEDED")),
    ("unknown item", lambda c: c.search("vecs", item_id="nope"), (grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND")),
    ("input unbound", lambda c: c.search("vecs", input="king"), (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_BINDING")),
    ("no items", lambda c: c.upsert("vecs", []), (INVALID, "MISSING_FIELD")),
    (
        "too many",
        lambda c: c.upsert("vecs", [str(i) for i in range(10_001)], np.zeros((10_001, 8), np.float32)),
        (INVALID, "LIMIT_EXCEEDED"),
    ),
]


@pytest.mark.parametrize(("case", "call", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_leaves_the_collection_unchanged(client, vectors_collection, case, call, expected):
    name, _ = vectors_collection
    assert_refused(lambda: call(client), *expected)
    assert client.get_collection(name).count == 200
    assert client.health("embedsvc.v1.CollectionService") == "SERVING"
