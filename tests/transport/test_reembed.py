"""Reembed through a real server, on both collection backends: a model upgrade (a word model reloaded with new
vectors), a switch to another text model while writes go on, items that cannot be re-embedded, cancellation, a
restart in the middle, the minilm-static recipe-2 migration, and bad requests by (code, reason)."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.text_models import Weighting
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.client import Client, EmbedsvcClientError
from embedsvc.core.collections import fence as fence_module
from embedsvc.core.collections import reembed as reembed_module
from embedsvc.index.state import LocalRecords, replica_id
from embedsvc.settings import MilvusSettings, Settings, StorageSettings
from embedsvc.transport.server import Server, create_server
from embedsvc.v1 import collections_pb2, collections_pb2_grpc
from tests.conftest import GENSIM_DATA, planted_vectors, write_word2vec_text
from tests.helpers import assert_refused, reason_of
from tests.transport.reembed_phases import Phases

FAILED = grpc.StatusCode.FAILED_PRECONDITION
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
RETRY_SWITCH = {(UNAVAILABLE, "COLLECTION_NOT_READY"), (UNAVAILABLE, "COLLECTION_SWITCHING")}


def refused(fn):
    with pytest.raises(EmbedsvcClientError) as info:
        fn()
    return info.value


def settings_for(folder: Path, planted: Path) -> Settings:
    lee = GENSIM_DATA / "lee_fasttext.vec"
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=folder,
        embedded_models=False,
        models=(
            ModelSpec("words", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted)),
            ModelSpec("lee", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, lee)),
            ModelSpec("lee-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee")),
            ModelSpec(
                "lee-sif", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee", weighting=Weighting.SIF)
            ),
        ),
        grace_period_s=0.5,
        storage=StorageSettings("faiss", MilvusSettings("milvus.db")),
    )


def serve(settings: Settings) -> Server:
    srv, _ = create_server(settings)
    srv.start()
    srv.wait_until_ready(120)
    return srv


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The planted word model, and its "upgrade": other vectors for the same words, one word fewer."""
    folder = tmp_path_factory.mktemp("reembed-models")
    words, vectors = planted_vectors()
    upgraded = np.random.default_rng(3).normal(size=vectors.shape).astype(np.float32)
    return {
        "v1": write_word2vec_text(folder / "v1.txt", words, vectors),
        "v2": write_word2vec_text(folder / "v2.txt", words[:-1], upgraded[:-1]),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, files: dict[str, Path]) -> Iterator[str]:
    srv = serve(settings_for(tmp_path_factory.mktemp("reembed") / "data", files["v1"]))
    yield f"127.0.0.1:{srv.port}"
    srv.stop(0)


@pytest.fixture
def client(served: str) -> Iterator[Client]:
    with Client(served, timeout=120) as c:
        yield c


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def model_file(path: Path) -> str:
    return f'kind = "word-vectors"\nformat = "word2vec-text"\npath = "{path}"\n'


def lee_sentences(n: int) -> list[str]:
    lines = (GENSIM_DATA / "lee_background.cor").read_text(encoding="latin-1").lower().split(".")
    words = [[w for w in line.split() if w.isalpha()] for line in lines]
    sentences = [" ".join(w[:20]) for w in words if len(w) >= 6]
    return [f"{sentences[i % len(sentences)]} {('the', 'a', 'and')[i % 3]}" for i in range(n)]


def contents(client: Client, name: str) -> dict[str, tuple[str, dict]]:
    return {i["id"]: (i["input"], i["metadata"]) for i in client.export_items(name, batch_size=500)}


def test_a_model_upgrade_reembeds_into_a_new_collection_and_switches_the_alias(client, backend, files):
    client.reload_model("words", model_file(files["v1"]))
    words, _ = planted_vectors()
    source = f"words-v1-{backend}"
    fields = {"w": "string"} if backend == "faiss" else None  # Milvus refuses indexed fields
    client.create_collection(source, model="words", metric="cosine", backend=backend, indexed_fields=fields)
    client.create_alias(f"live-{backend}", source)
    client.upsert(source, [f"id-{w}" for w in words], inputs=words, metadata=[{"w": w} for w in words])
    old_version = client.get_collection(source).model_version
    client.reload_model("words", model_file(files["v2"]))  # the upgrade: new vectors, "noise39" gone
    version = client.get_model("words").version
    assert version != old_version
    assert refused(lambda: client.search(f"live-{backend}", input="king")).reason == "MODEL_VERSION_CHANGED"

    # One word is not in the new vocabulary: refused before anything is switched, and nothing is left behind.
    error = refused(lambda: client.reembed(f"live-{backend}", wait=True))
    assert (error.code, error.reason) == (FAILED, "INPUTS_NOT_STORED")
    assert error.metadata["count"] == "1" and json.loads(error.metadata["sample"]) == ["id-noise39"]
    assert source not in [o.collection for o in client.list_operations() if not o.done]
    assert client.list_aliases(source)[0].alias == f"live-{backend}"
    target = f"{source}-{version.split(':')[1][:8]}"
    assert target not in [c.name for c in client.list_collections()]

    done = client.reembed(f"live-{backend}", drop_unembeddable=True, wait=True)
    result = done.result
    assert (result.source, result.collection.name, list(result.switched_aliases)) == (
        source,
        target,
        [f"live-{backend}"],
    )
    assert (result.reembedded, result.dropped, list(result.dropped_sample)) == (len(words) - 1, 1, ["id-noise39"])
    assert (result.collection.model, result.collection.model_version) == ("words", version)
    assert [f.name for f in result.collection.indexed_fields] == list(fields or [])  # carried over
    assert (done.reembed.target, done.reembed.model_version, done.reembed.unembeddable) == (target, version, 1)
    # The alias now names the new collection, whose vectors are the upgraded model's.
    assert client.search(f"live-{backend}", input="king", k=1)[0].id != "id-king"
    items, _ = client.get_items(f"live-{backend}", ["id-king", "id-paris"], include_vectors=True)
    np.testing.assert_array_equal(
        np.stack([i["vector"] for i in items]), client.embed_words("words", ["king", "paris"]).vectors
    )
    assert {i["metadata"]["w"] for i in items} == {"king", "paris"}
    # The old collection is kept, as it was, until it is deleted.
    old = client.get_collection(source)
    assert (old.count, old.model_version, list(old.aliases)) == (len(words), old_version, [])
    client.delete_alias(f"live-{backend}")
    client.delete_collection(source)
    client.delete_collection(target)
    client.reload_model("words", model_file(files["v1"]))


def test_writes_during_the_fill_are_neither_lost_nor_brought_back(client, served, backend, monkeypatch):
    """Writers change, add and delete items through the alias while the fill runs: afterwards the new collection holds
    exactly the last acknowledged state of every item, each embedded by the new model."""
    n = 1500 if backend == "faiss" else 600
    source, alias = f"docs-{backend}", f"docs-live-{backend}"
    client.create_collection(source, model="lee-mean", metric="cosine", backend=backend)
    client.create_alias(alias, source)
    texts = lee_sentences(n)
    client.upsert_stream(source, [f"doc-{i}" for i in range(n)], inputs=texts, metadata=[{"v": 0}] * n)
    expected: dict[str, tuple[str, dict] | None] = {f"doc-{i}": (texts[i], {"v": 0}) for i in range(n)}
    monkeypatch.setattr(reembed_module, "BATCH", 16)  # many small steps: the writers overlap with the fill
    lock, stop, switched = threading.Lock(), threading.Event(), threading.Event()
    acknowledged = {"during": 0, "after": 0}
    refusals = {"COLLECTION_NOT_READY": 0, "COLLECTION_SWITCHING": 0}

    def writer(k: int) -> None:
        rng = random.Random(k)
        mine = [f"doc-{i}" for i in range(k, n, 4)] + [f"new-{k}-{i}" for i in range(20)]
        with Client(served, timeout=60) as c:
            while not stop.is_set():
                item = rng.choice(mine)
                try:
                    if rng.random() < 0.3:
                        c.delete_items(alias, [item])
                        state = None
                    else:
                        text, meta = texts[rng.randrange(n)], {"v": rng.randrange(1000), "by": k}
                        c.upsert(alias, [item], inputs=[text], metadata=[meta])
                        state = (text, meta)
                except EmbedsvcClientError as exc:
                    # The switch holds writes back (fenced), or raced this one: not written, retry.
                    assert (exc.code, exc.reason) in RETRY_SWITCH, exc
                    with lock:
                        refusals[exc.reason] += 1
                    continue
                with lock:
                    expected[item] = state
                    acknowledged["after" if switched.is_set() else "during"] += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        done = client.reembed(alias, model="lee-sif", wait=True, timeout=600)
        switched.set()
        while acknowledged["after"] < 20:  # writes go on after the switch, through the alias, into the new collection
            stop.wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert done.reembed.caught_up > 0 and acknowledged["during"] > 0  # writes really came during the re-embed
    target = done.result.collection.name
    want = {i: s for i, s in expected.items() if s is not None}
    assert contents(client, alias) == want  # nothing lost, nothing deleted brought back
    sample = sorted(want)[:: max(1, len(want) // 50)]
    items, _ = client.get_items(alias, sample, include_vectors=True)
    got = np.stack([i["vector"] for i in items])
    np.testing.assert_allclose(
        got, client.embed_texts("lee-sif", [want[i][0] for i in sample]).vectors, rtol=1e-5, atol=1e-6
    )
    client.delete_alias(alias)
    client.delete_collection(source)
    client.delete_collection(target)


def slow_fill(monkeypatch: pytest.MonkeyPatch, started: threading.Event, release: threading.Event) -> None:
    """Hold the fill after its first step until `release` (the test has seen it running and acted)."""
    agree = reembed_module.Reembedder._agree

    def held(self, *args, **kwargs):
        agree(self, *args, **kwargs)
        started.set()
        release.wait(60)

    monkeypatch.setattr(reembed_module.Reembedder, "_agree", held)


def test_a_write_in_every_phase_of_a_reembed_ends_in_the_new_collection(client, served, backend, monkeypatch):
    """One replica: writes through the alias while the re-embed fills, catches up, holds writes back for the switch
    (refused, retryable, nothing written) and after the switch; afterwards the new collection holds every
    acknowledged write, embedded by the new model."""
    source, alias = f"phases-{backend}", f"phases-live-{backend}"
    texts = lee_sentences(120)
    client.create_collection(source, model="lee-mean", metric="cosine", backend=backend)
    client.create_alias(alias, source)
    client.upsert(source, [f"d{i}" for i in range(100)], inputs=texts[:100], metadata=[{"v": 0}] * 100)
    expected = {f"d{i}": (texts[i], {"v": 0}) for i in range(100)}
    monkeypatch.setattr(reembed_module, "BATCH", 20)
    phases = Phases(monkeypatch)

    def write(item: str, text: str, v: int) -> None:
        client.upsert(alias, [item], inputs=[text], metadata=[{"v": v}])
        expected[item] = (text, {"v": v})

    operation = client.reembed(alias, model="lee-sif", target_name=f"{source}-sif")
    with phases.at("filling"):
        write("d90", texts[100], 1)  # not read by the fill yet
        write("d0", texts[101], 1)  # read by the fill already
        write("fill-new", texts[102], 1)
        client.delete_items(alias, ["d1"])
        del expected["d1"]
    with phases.at("catching-up"):
        write("d2", texts[103], 2)
        write("catch-new", texts[104], 2)
        client.delete_items(alias, ["d3"])
        del expected["d3"]
    with phases.at("fenced"), grpc.insecure_channel(served) as channel:
        stub = collections_pb2_grpc.CollectionServiceStub(channel)
        for call in (
            lambda: stub.DeleteItems(collections_pb2.DeleteItemsRequest(collection=alias, ids=["d4"])),
            lambda: stub.DeleteItems(collections_pb2.DeleteItemsRequest(collection=source, ids=["d4"])),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            trailers = dict(info.value.trailing_metadata())
            assert (info.value.code(), reason_of(info.value)) == (UNAVAILABLE, "COLLECTION_SWITCHING")
            assert trailers["grpc-retry-pushback-ms"] == "1000"
        error = assert_refused(lambda: write("d5", texts[105], 3), UNAVAILABLE, "COLLECTION_SWITCHING")
        assert error.metadata["state"] == "fenced" and error.metadata["target"] == f"{source}-sif"
        assert error.metadata["operation"] == operation.name
    with phases.at("switched"):
        write("d5", texts[105], 3)  # the retry of the refused write: through the alias, to the new collection
        write("switched-new", texts[106], 3)
        client.delete_items(alias, ["d4"])
        del expected["d4"]
    done = client.wait_operation(operation.name, timeout=300)
    assert done.result.collection.name == f"{source}-sif" and list(done.result.switched_aliases) == [alias]
    assert contents(client, alias) == expected
    assert contents(client, source)["d5"] == (texts[5], {"v": 0})  # the refused write did not reach the old one
    changed = ["d90", "d0", "fill-new", "d2", "catch-new", "d5", "switched-new"]
    items, missing = client.get_items(alias, changed, include_vectors=True)
    assert missing == []
    np.testing.assert_allclose(
        np.stack([i["vector"] for i in items]),
        client.embed_texts("lee-sif", [expected[i][0] for i in changed]).vectors,
        rtol=1e-5,
        atol=1e-6,
    )
    # The fence is released: the old collection takes writes again (by its own name).
    client.upsert(source, ["after"], inputs=[texts[107]])
    client.delete_alias(alias)
    client.delete_collection(source)
    client.delete_collection(f"{source}-sif")


def test_cancel_removes_the_partial_collection_and_leaves_the_old_one(client, backend, monkeypatch):
    source = f"cancelled-{backend}"
    client.create_collection(source, model="lee-mean", backend=backend)
    client.create_alias(f"{source}-live", source)
    texts = lee_sentences(300)
    client.upsert(source, [f"d{i}" for i in range(300)], inputs=texts)
    before = contents(client, source)
    started, release = threading.Event(), threading.Event()
    slow_fill(monkeypatch, started, release)
    monkeypatch.setattr(reembed_module, "BATCH", 50)
    operation = client.reembed(f"{source}-live", model="lee-sif", target_name=f"{source}-new")
    assert started.wait(60)
    running = client.get_operation(operation.name)
    assert (running.stage, running.kind, running.collection) == ("filling", "reembed", source)
    assert running.total_units == 300 and running.reembed.target == f"{source}-new"
    assert client.reembed(source).name == operation.name  # one re-embed of a collection at a time
    client.cancel_operation(operation.name)
    release.set()
    error = refused(lambda: client.wait_operation(operation.name, timeout=120))
    assert (error.code, error.reason) == (grpc.StatusCode.CANCELLED, "CANCELLED")
    assert f"{source}-new" not in [c.name for c in client.list_collections()]
    assert client.list_aliases(source)[0].alias == f"{source}-live" and contents(client, source) == before
    client.delete_alias(f"{source}-live")
    client.delete_collection(source)


def test_a_reembed_continues_after_a_restart(tmp_path, files, monkeypatch):
    settings = settings_for(tmp_path / "data", files["v1"])
    srv = serve(settings)
    texts = lee_sentences(400)
    started, release = threading.Event(), threading.Event()
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=60) as c:
            c.create_collection("docs", model="lee-mean")
            c.create_alias("docs-live", "docs")
            c.upsert("docs", [f"d{i}" for i in range(400)], inputs=texts)
            c.create_collection("other", model="lee-mean")
            slow_fill(monkeypatch, started, release)
            monkeypatch.setattr(reembed_module, "BATCH", 50)
            operation = c.reembed("docs-live", model="lee-sif", target_name="docs-sif")
            assert started.wait(60)
    finally:
        stopping = threading.Thread(target=srv.stop, args=(0,))
        stopping.start()  # the stop cancels the operation, which waits in the held step until released
        release.set()
        stopping.join(60)
    monkeypatch.undo()
    # As a kill -9 in the fenced window would leave them: fences in force, of this re-embed and of one whose
    # operation is gone. Neither may hold writes back once the server is up again.
    records, replica = LocalRecords(settings.data_dir), replica_id(settings.data_dir)
    for source, op_id in (("docs", operation.name.removeprefix("operations/")), ("other", "00000000000000000001-dead")):
        fenced = fence_module.Record(source, f"{source}-new", op_id, replica, fence_module.State.FENCED, "t", 4e9)
        records.put(fence_module.KIND, fence_module.source_key(source), fenced.to_json())
    started, release = threading.Event(), threading.Event()
    slow_fill(monkeypatch, started, release)  # the resumed fill holds after its first batch
    srv = serve(settings)  # the same data directory: the operation resumes from its record
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=60) as c:
            assert started.wait(60)
            c.upsert("docs-live", ["d0", "new"], inputs=[texts[1], texts[2]])  # not fenced: journaled by the gate
            c.upsert("other", ["o"], inputs=[texts[3]])
            release.set()
            done = c.wait_operation(operation.name, timeout=300)
            assert done.result.collection.name == "docs-sif" and list(done.result.switched_aliases) == ["docs-live"]
            assert done.result.reembedded == 401 and contents(c, "docs-live") == contents(c, "docs")
            items, _ = c.get_items("docs-live", ["d0", "d399", "new"], include_vectors=True)
            np.testing.assert_allclose(
                np.stack([i["vector"] for i in items]),
                c.embed_texts("lee-sif", [texts[1], texts[399], texts[2]]).vectors,
                rtol=1e-5,
                atol=1e-6,
            )
            for source in ("docs", "other"):
                assert srv.reembedder.fences.view(source).record.state is fence_module.State.DONE
    finally:
        release.set()
        srv.stop(0)


def test_by_its_own_name_every_alias_is_switched_and_without_one_none(client):
    client.create_collection("plain", model="lee-mean")
    client.upsert("plain", ["a", "b"], inputs=["the fire spread", "rain fell"])
    done = client.reembed("plain", model="lee-sif", wait=True)
    assert list(done.result.switched_aliases) == [] and done.result.collection.name.startswith("plain-")
    client.delete_collection(done.result.collection.name)
    client.create_alias("plain-a", "plain")
    client.create_alias("plain-b", "plain")
    done = client.reembed("plain", model="lee-sif", target_name="plain-2", wait=True)
    assert sorted(done.result.switched_aliases) == ["plain-a", "plain-b"]
    assert {a.alias: a.collection for a in client.list_aliases()}.items() >= {
        "plain-a": "plain-2",
        "plain-b": "plain-2",
    }.items()
    for alias in ("plain-a", "plain-b"):
        client.delete_alias(alias)
    client.delete_collection("plain-2")
    client.delete_collection("plain")


def test_bad_requests(client):
    client.create_collection("unbound", dimension=4)
    client.upsert("unbound", ["v"], np.ones((1, 4), np.float32))
    client.create_collection("bound", model="lee-mean")
    cases = [
        (lambda: client.reembed("unbound"), FAILED, "MODEL_BINDING"),
        (lambda: client.reembed("nope", model="lee-sif"), grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND"),
        (lambda: client.reembed("bound", model="nope"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
        (lambda: client.reembed("bound", target_name="unbound"), grpc.StatusCode.ALREADY_EXISTS, "COLLECTION_EXISTS"),
        (lambda: client.reembed("bound", target_name="bound"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE"),
        (lambda: client.reembed("bound", target_name="bad name"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE"),
    ]
    for call, code, reason in cases:
        error = refused(call)
        assert (error.code, error.reason) == (code, reason), error
    # Every item written as a vector: nothing to re-embed them from.
    error = refused(lambda: client.reembed("unbound", model="lee-sif", wait=True))
    assert (error.code, error.reason, error.metadata["count"]) == (FAILED, "INPUTS_NOT_STORED", "1")
    client.delete_collection("unbound")
    client.delete_collection("bound")


def test_a_collection_of_a_recipe_2_minilm_static_cache_moves_to_the_version_served_now(client_of_session, server):
    """Caches distilled before the reproducible identity (recipe 2) reported a byte digest as minilm-static's version;
    collections bound then hold that version. After the cache is rebuilt they answer MODEL_VERSION_CHANGED, and
    Reembed moves them to the version served now (the natural migration)."""
    c = client_of_session
    c.create_collection("old-minilm", model="minilm-static")
    c.create_alias("old-minilm-live", "old-minilm")
    words = ["king", "queen", "paris", "france", "apple"]
    c.upsert("old-minilm", words, inputs=words)
    collection = server.store.get("old-minilm")  # as made with a recipe-2 cache: the version is its bytes' digest
    collection.config = dataclasses.replace(collection.config, model_version="sha256:0ddc8c26b4d12084")
    (collection.directory / "collection.json").write_bytes(collection.config.to_json())
    assert refused(lambda: c.search("old-minilm-live", input="king")).reason == "MODEL_VERSION_CHANGED"
    done = c.reembed("old-minilm-live", wait=True)
    served_version = c.get_model("minilm-static").version
    assert done.result.collection.model_version == served_version != "sha256:0ddc8c26b4d12084"
    assert c.search("old-minilm-live", input="queen", k=1)[0].id == "king"
    c.delete_alias("old-minilm-live")
    c.delete_collection("old-minilm")
    c.delete_collection(done.result.collection.name)


@pytest.fixture
def client_of_session(target: str) -> Iterator[Client]:
    with Client(target, timeout=120) as c:
        yield c
