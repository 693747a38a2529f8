"""API v1's contracts through a real server: pages and resume tokens, typed metadata, bulk streams, operations,
aliases, server info, and the error contract."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest

import embedsvc
from embedsvc.client import Client, EmbedsvcClientError, UpsertStreamError, collection_points
from embedsvc.index.faiss import collection as faiss_collection
from embedsvc.v1 import collections_pb2, models_pb2
from tests.helpers import assert_refused, reason_of, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def made(client):
    """Collections made by a test, deleted afterwards (aliases first)."""
    names = []

    def make(name, n=0, dimension=4, **options):
        client.create_collection(name, dimension=dimension, metric="l2", **options)
        names.append(name)
        if n:
            x = np.random.default_rng(len(name)).normal(size=(n, dimension)).astype(np.float32)
            client.upsert_stream(name, [f"{name}-{i:04d}" for i in range(n)], x, batch_size=500)
        return name

    yield make
    for alias in client.list_aliases():
        if alias.collection in names:
            client.delete_alias(alias.alias)
    for name in names:
        client.delete_collection(name)


def test_every_list_pages_with_small_pages(client, made):
    for i in range(5):
        made(f"paged-{i}")
    names = [c.name for c in client.list_collections(page_size=2)]
    assert names == sorted(names) and {f"paged-{i}" for i in range(5)} <= set(names)
    assert names == [c.name for c in client.list_collections()]
    models = client.list_models(page_size=1)
    assert [m.name for m in models] == [m.name for m in client.list_models()] and len(models) > 3
    first = client._calls.models.ListModels(models_pb2.ListModelsRequest(page_size=2))
    assert len(first.models) == 2 and first.next_page_token
    for i in range(3):
        client.create_alias(f"paged-alias-{i}", "paged-0")
    aliases = client.list_aliases("paged-0", page_size=1)
    assert [a.alias for a in aliases] == [f"paged-alias-{i}" for i in range(3)]
    assert client.get_collection("paged-0").aliases == [f"paged-alias-{i}" for i in range(3)]


def test_export_resumes_after_a_broken_stream(client, made):
    name = made("export-resume", n=1000)
    expected = [f"{name}-{i:04d}" for i in range(1000)]
    export = client.export_items(name, batch_size=64)
    seen = [next(export)["id"] for _ in range(200)]  # then the consumer stops mid-way (the stream is abandoned)
    token = export.resume_token
    resumed = client.export_items(name, batch_size=100, resume_token=token)
    rest = [item["id"] for item in resumed]
    assert seen[: 3 * 64] + rest == expected  # whole messages consumed before the break are not sent again
    assert sorted(set(seen) | set(rest)) == expected
    assert [i["id"] for i in client.export_items(name, batch_size=7)] == expected  # sorted by id


def test_forged_and_foreign_page_tokens_are_refused(client, made):
    made("tokens-a", n=10)
    made("tokens-b", n=10)
    page = client._calls.collections.ListCollections(collections_pb2.ListCollectionsRequest(page_size=1))
    token = page.next_page_token
    calls = client._calls.collections
    cases = [
        lambda: calls.ListCollections(collections_pb2.ListCollectionsRequest(page_token=token[:-3] + "abc")),
        lambda: calls.ListCollections(collections_pb2.ListCollectionsRequest(page_token="not a token")),
        lambda: calls.ListAliases(collections_pb2.ListAliasesRequest(page_token=token)),
    ]
    export = client.export_items("tokens-a", batch_size=3)
    next(export), next(export), next(export), next(export)
    foreign = export.resume_token
    cases.append(lambda: list(client.export_items("tokens-b", resume_token=foreign)))
    for case in cases:
        with pytest.raises((grpc.RpcError, EmbedsvcClientError)) as info:
            case()
        error = info.value
        reason = error.reason if isinstance(error, EmbedsvcClientError) else reason_of(error)
        code = error.code if isinstance(error, EmbedsvcClientError) else error.code()
        assert (code, reason) == (INVALID, "INVALID_PAGE_TOKEN")


def test_typed_metadata_round_trips_and_filters(client, made):
    name = made("typed")
    big = 2**53 + 1
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    metadata = [
        {"n": big, "year": 2003, "score": 0.5, "ok": True, "tags": ["a", "b"], "at": when},
        {"n": big - 1, "year": 2004, "score": 1.5, "ok": False, "tags": ["b"], "at": datetime(2023, 1, 1, tzinfo=UTC)},
        {"n": -(2**63), "year": 1999, "ok": True, "mixed": [1, "x", 2.5, False]},
    ]
    client.upsert(name, ["a", "b", "c"], np.eye(3, 4, dtype=np.float32), metadata)
    items, _ = client.get_items(name, ["a", "b", "c"])
    assert [i["metadata"] for i in items] == metadata
    assert type(items[0]["metadata"]["year"]) is int and type(items[0]["metadata"]["score"]) is float

    def ids(text):
        return sorted(h.id for h in client.search(name, vector=np.zeros(4, np.float32), k=10, filter=text))

    assert ids(f"n = {big}") == ["a"]  # equal as doubles, distinct as integers
    assert ids("year >= 2003 AND ok = true") == ["a"]
    assert ids('tags IN ["b"]') == ["a", "b"]
    assert ids('at >= timestamp("2024-01-01T00:00:00Z")') == ["a"]
    assert ids(f"n < {-(2**62)}") == ["c"]
    hit = client.search(name, vector=np.eye(3, 4, dtype=np.float32)[0], k=1)[0]
    assert hit.metadata == metadata[0]
    exported = {i["id"]: i["metadata"] for i in client.export_items(name)}
    assert exported["c"] == metadata[2]
    too_big = [{"n": 2**63}]
    with pytest.raises(ValueError, match="64 bits"):
        client.upsert(name, ["d"], np.zeros((1, 4), np.float32), too_big)


def test_upsert_stream_acknowledges_batches_and_resumes(client, made):
    name = made("bulk")
    x = np.random.default_rng(1).normal(size=(1000, 4)).astype(np.float32)
    ids = [f"b{i:04d}" for i in range(1000)]
    broken = np.concatenate([x[:500], np.zeros((500, 4), np.float32)])
    poisoned = [{"ok": True}] * 1000
    poisoned[650] = {"bad": [[1]]}  # batch 6 (items 600-699) is refused: a list inside a list
    acked = []
    with pytest.raises(UpsertStreamError) as info:
        client.upsert_stream(name, ids, broken, poisoned, batch_size=100, progress=acked.append)
    assert info.value.next_batch == 6 and info.value.reason == "INVALID_METADATA" and acked == [100] * 6
    assert info.value.metadata["sequence"] == "6"
    assert client.get_collection(name).count == 600  # batches 0-5 are durable, nothing of batch 6
    result = client.upsert_stream(name, ids, x, batch_size=100, resume_from=info.value.next_batch)
    assert (result.upserted, result.batches, result.count) == (400, 4, 1000)
    items, _ = client.get_items(name, ["b0650", "b0999"], include_vectors=True)
    np.testing.assert_array_equal(items[1]["vector"], x[999])


def test_a_failed_batch_does_not_end_an_embedding_stream(client):
    texts = ["one", "two", " ", "four", "five", "six"]  # the whitespace-only text fails its batch
    assert_refused(
        lambda: client.embed_texts_stream("minilm", texts, batch_size=2), INVALID, "INVALID_VALUE", "texts[0]"
    )
    result = client.embed_texts_stream("minilm", texts, batch_size=2, strict=False)
    assert list(result.errors) == [1] and result.errors[1].reason == "INVALID_VALUE"
    assert np.isnan(result.vectors[2:4]).all() and np.isfinite(result.vectors[[0, 1, 4, 5]]).all()
    expected = client.embed_texts("minilm", ["one", "two", "five", "six"]).vectors
    np.testing.assert_allclose(result.vectors[[0, 1, 4, 5]], expected, atol=1e-6)


@pytest.fixture
def rebuild_gate(monkeypatch):
    """Holds a rebuild after the first chunk of its new index (when it reports its first units done) until the test
    opens the gate: the test's calls then run while the rebuild is under way, by construction, not by luck."""
    from embedsvc.core import operations

    indexing, proceed = threading.Event(), threading.Event()
    real = operations.Progress.units

    def units(self, done_units):
        real(self, done_units)
        if not indexing.is_set():
            indexing.set()
            assert proceed.wait(60), "the test never let the rebuild go on"

    monkeypatch.setattr(faiss_collection, "_REBUILD_CHUNK", 200)
    monkeypatch.setattr(operations.Progress, "units", units)
    yield indexing, proceed
    proceed.set()


def test_rebuild_runs_while_searches_and_writes_go_on(client, made, rebuild_gate):
    indexing, proceed = rebuild_gate
    name = made("rebuilding", n=4000, dimension=8, index="ivf-flat", nlist=16)
    # The IVF index trained itself once enough vectors arrived, by a rebuild of its own in the background; a Rebuild
    # asked for meanwhile fails "already rebuilding". Wait for that one to be done.
    wait_for(
        lambda: (c := client.get_collection(name)).trained and c.state == collections_pb2.COLLECTION_STATE_READY,
        what="the background training to finish",
    )
    operation = client.rebuild(name)
    assert not operation.done and operation.name.startswith("operations/")
    assert client.rebuild(name).name == operation.name  # the running one
    assert indexing.wait(60)
    running = client.get_operation(operation.name)
    assert (running.done, running.stage) == (False, "indexing")
    assert client.get_collection(name).state == collections_pb2.COLLECTION_STATE_REBUILDING
    written = []
    rng = np.random.default_rng(5)
    for i in range(5):  # writes and searches while the new index is being built
        vector = rng.normal(size=(1, 8)).astype(np.float32) * 10
        new_id = f"during-{i}"
        client.upsert(name, [new_id], vector)
        assert client.search(name, vector=vector[0], k=1, exact=True)[0].id == new_id
        written.append((new_id, vector[0]))
    proceed.set()
    done = client.wait_operation(operation.name)
    assert done.result.count == 4000 + len(written) and done.result.state == collections_pb2.COLLECTION_STATE_READY
    assert done.stage == "done" and done.end_time is not None
    for new_id, vector in written:  # the writes made during the rebuild are in the new index
        assert client.search(name, vector=vector, k=1, nprobe=16)[0].id == new_id
    assert client.list_operations(name)[0].name == operation.name


def test_cancelling_a_rebuild(client, made, rebuild_gate):
    indexing, proceed = rebuild_gate
    name = made("cancelled-rebuild", n=2000, dimension=8)
    operation = client.rebuild(name)
    assert indexing.wait(60)  # under way: the cancel lands mid-rebuild
    client.cancel_operation(operation.name)
    proceed.set()
    assert_refused(lambda: client.wait_operation(operation.name, timeout=60), grpc.StatusCode.CANCELLED, "CANCELLED")
    assert client.get_operation(operation.name).cancel_requested
    assert client.get_collection(name).state == collections_pb2.COLLECTION_STATE_READY
    assert client.get_collection(name).count == 2000
    assert_refused(lambda: client.get_operation("operations/none"), grpc.StatusCode.NOT_FOUND, "OPERATION_NOT_FOUND")


def test_alias_switch_under_concurrent_searches(client, made, target):
    old, new = made("alias-old", n=50), made("alias-new", n=50)
    client.create_alias("live", old)
    query = np.zeros(4, np.float32)
    stop = threading.Event()
    seen = [[] for _ in range(4)]  # what each searcher saw, in order

    def search(mine):
        with Client(target) as c:
            while not stop.is_set():
                ids = {h.id.split("-")[1] for h in c.search("live", vector=query, k=20)}
                mine.append(ids)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(search, mine) for mine in seen]
        try:
            wait_for(lambda: all(seen), what="every searcher to search before the switch")
            alias, previous = client.update_alias("live", new)
            marks = [len(mine) for mine in seen]
            # Two more searches each: the second began after the switch, whatever the first did.
            wait_for(
                lambda: all(len(mine) >= mark + 2 for mine, mark in zip(seen, marks, strict=True)),
                what="every searcher to search after the switch",
            )
        finally:
            stop.set()
            for f in futures:
                f.result()
    assert (alias.collection, previous) == (new, old)
    for mine in seen:  # every search saw one collection, never a mix; old until the switch, new after, never back
        assert all(ids in ({"old"}, {"new"}) for ids in mine)
        assert mine[0] == {"old"} and mine[-1] == {"new"}
        switched = mine.index({"new"})
        assert all(ids == {"new"} for ids in mine[switched:])
    assert client.get_collection("live").name == new
    assert_refused(lambda: client.delete_collection(new), grpc.StatusCode.FAILED_PRECONDITION, "COLLECTION_HAS_ALIASES")
    assert_refused(lambda: client.create_alias("live", old), grpc.StatusCode.ALREADY_EXISTS, "ALIAS_EXISTS")
    assert_refused(lambda: client.create_alias(old, new), grpc.StatusCode.ALREADY_EXISTS, "ALIAS_EXISTS")
    assert_refused(
        lambda: client.create_collection("live", dimension=4), grpc.StatusCode.ALREADY_EXISTS, "COLLECTION_EXISTS"
    )
    assert_refused(lambda: client.update_alias("nope", new), grpc.StatusCode.NOT_FOUND, "ALIAS_NOT_FOUND")
    assert_refused(lambda: client.create_alias("other", "missing"), grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")
    client.delete_alias("live")
    assert_refused(lambda: client.search("live", vector=query), grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


def test_server_info_and_create_times(client, server, made):
    info = client.get_server_info()
    assert (info.server_version, info.api_version) == (embedsvc.__version__, "v1")
    assert info.limits["max_k"] == server.settings.limits.max_k and info.limits["max_page_size"] == 1000
    assert info.start_time is not None and info.start_time <= datetime.now(UTC)
    before = datetime.now(UTC).timestamp()
    made("timed")
    created = client.get_collection("timed").create_time.ToDatetime(tzinfo=UTC).timestamp()
    assert before - 1 <= created <= time.time() + 1


def test_plots_can_colour_by_fields_named_group_or_cluster(client, made):
    name = made("coloured")
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    client.upsert(name, [str(i) for i in range(20)], x, [{"group": i % 2, "cluster": "c"} for i in range(20)])
    png = client.plot(collection_points(name), color_field="group", width=200, height=200)
    assert png.startswith(b"\x89PNG")
    assert_refused(lambda: client.plot(collection_points(name), color_by="group"), INVALID, "INVALID_VALUE")


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_a_changed_model_version_is_its_own_reason(tmp_path, backend, make_server):
    """A collection bound to a model that changed since is MODEL_VERSION_CHANGED (re-embed), not MODEL_BINDING; on
    both backends, across a restart of the server."""
    from embedsvc.backends.base import ModelSpec
    from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
    from embedsvc.settings import MilvusSettings, StorageSettings
    from tests.conftest import planted_vectors, write_word2vec_text

    storage = StorageSettings(backend, MilvusSettings("milvus.db") if backend == "milvus" else None)

    def serve(seed):
        words, vectors = planted_vectors(seed)
        path = write_word2vec_text(tmp_path / f"w{seed}.txt", words, vectors)
        spec = ModelSpec("w", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, path))
        return make_server(data_dir=tmp_path / "data", models=(spec,), storage=storage)

    with serve(7) as (_srv, target), Client(target) as c:
        c.create_collection("bound", model="w")
        c.upsert("bound", ["king"], inputs=["king"])
        c.create_collection("plain", dimension=32)
    with serve(8) as (_srv, target), Client(target) as c:  # the same name, other vectors: another version
        error = assert_refused(
            lambda: c.search("bound", input="queen"), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_VERSION_CHANGED"
        )
        assert error.metadata["expected"] != error.metadata["actual"]
        assert c.search("bound", item_id="king", k=1) == []  # vectors already stored still serve
        assert c.get_collection("bound").backend == collections_pb2.Backend.Value(f"BACKEND_{backend.upper()}")
        assert_refused(lambda: c.search("plain", input="queen"), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_BINDING")
