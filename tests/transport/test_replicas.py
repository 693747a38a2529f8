"""Two embedsvc replicas over one Milvus server (a real Milvus standalone, from the `milvus` package): whatever one
replica writes, the other finds at once; collections made or dropped through one are made or dropped for both; and
the state beside the collections is shared too: a direction made through one is used through the other, an operation
started on one is seen and cancelled through the other, a snapshot taken through one restores through the other; and
no write through one is lost by a re-embed that the other runs."""

import contextlib
from pathlib import Path

import grpc
import numpy as np

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.text_models import Weighting
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.client import Client, EmbedsvcClientError
from embedsvc.core.collections import reembed as reembed_module
from embedsvc.settings import MilvusSettings, Settings, StorageSettings
from embedsvc.transport.server import create_server
from tests import serve_process
from tests.conftest import GENSIM_DATA
from tests.helpers import FakeClock, assert_refused, wait_for
from tests.transport.reembed_phases import Phases

VAE = Path(__file__).resolve().parents[2] / "models" / "mnist-vae"
MODELS = (
    f'[[models]]\nname = "vae"\nkind = "vae"\npath = "{VAE}"\n'
    f'[[models]]\nname = "lee"\nkind = "word-vectors"\nformat = "word2vec-text"\n'
    f'path = "{GENSIM_DATA / "lee_fasttext.vec"}"\n'
    '[[models]]\nname = "lee-mean"\nkind = "text-encoder"\nformat = "averaged-words"\nwords = "lee"\n'
    '[[models]]\nname = "lee-sif"\nkind = "text-encoder"\nformat = "averaged-words"\nwords = "lee"\n'
    'weighting = "sif"\n'
)


@contextlib.contextmanager
def replica(tmp_path, name, uri, *, models="", snapshot_dir=None):
    data = tmp_path / name
    data.mkdir()
    config = data / "replica.toml"
    snapshots = f'snapshot_dir = "{snapshot_dir}"\n' if snapshot_dir is not None else ""
    config.write_text(
        f'[server]\nembedded_models = false\n[storage]\nbackend = "milvus"\n{snapshots}'
        f'[storage.milvus]\nuri = "{uri}"\n{models}'
    )
    # One page-token secret for all replicas: a page token from one is good at the next.
    secret = {"EMBEDSVC_PAGE_TOKEN_KEY": "replicas-share-this-secret"}
    proc, target = serve_process.start("--config", str(config), "--data-dir", str(data), env=secret)
    try:
        with Client(target, timeout=60) as client:
            client.wait_until_serving(120)
            yield client
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_write_through_one_replica_is_found_through_the_other(tmp_path, milvus_server_uri):
    with replica(tmp_path, "a", milvus_server_uri) as a, replica(tmp_path, "b", milvus_server_uri) as b:
        a.create_collection("shared", dimension=8, metric="l2", index="hnsw")
        assert "shared" in [c.name for c in b.list_collections()]
        x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
        a.upsert("shared", [f"i{i}" for i in range(300)], x, [{"even": i % 2 == 0, "i": i} for i in range(300)])
        (hit,) = b.search("shared", vector=x[42], k=1)  # Strong consistency: visible to the next search anywhere
        assert (hit.id, hit.metadata["i"]) == ("i42", 42)
        hits = b.search("shared", vector=x[1], k=5, filter="even = true AND i < 100")
        assert len(hits) == 5 and all(h.metadata["even"] and h.metadata["i"] < 100 for h in hits)
        assert b.delete_items("shared", ["i42"]) == (1, 0)
        assert a.get_items("shared", ["i42"])[1] == ["i42"]
        assert len(list(b.export_items("shared", batch_size=64))) == 299
        assert a.get_collection("shared").count == b.get_collection("shared").count == 299
        a.create_collection("second", dimension=4)
        (page, token) = a._unary(a._calls.list_collections(1, ""))
        (rest, _) = b._unary(b._calls.list_collections(10, token))  # a page token from A, honoured by B
        assert [c.name for c in page + rest] == ["second", "shared"]
        b.delete_collection("second")
        a.create_alias("current", "shared")  # aliases live in Milvus too: every replica resolves them

        def b_resolves_the_alias():
            try:
                return b.search("current", vector=x[7], k=1)[0].id == "i7"
            except EmbedsvcClientError as exc:  # B's alias table is cached (1 s): until then "current" is no name
                assert exc.reason == "COLLECTION_NOT_FOUND", exc
                return False

        wait_for(b_resolves_the_alias, what="replica B to see the alias made through A")
        b.delete_alias("current")
        a.delete_collection("shared")
        assert_refused(lambda: b.search("shared", vector=x[0], k=1), grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


def lee_texts(n):
    lines = (GENSIM_DATA / "lee_background.cor").read_text(encoding="latin-1").lower().split(".")
    words = [[w for w in line.split() if w.isalpha()] for line in lines]
    sentences = [" ".join(w[:20]) for w in words if len(w) >= 6]
    return [f"{sentences[i % len(sentences)]} {i % 13} the" for i in range(n)]


def test_directions_operations_and_snapshots_are_shared_by_the_replicas(tmp_path, milvus_server_uri):
    shared = tmp_path / "shared-snapshots"  # one directory for both, as a network file system would be
    with (
        replica(tmp_path, "a", milvus_server_uri, models=MODELS, snapshot_dir=shared) as a,
        replica(tmp_path, "b", milvus_server_uri, models=MODELS, snapshot_dir=shared) as b,
    ):
        # A direction made through A exists through B, at once, and deleting it through B deletes it for A.
        rng = np.random.default_rng(0)
        made = a.create_direction(
            "vae",
            "thicker",
            from_latents=rng.normal(size=(8, 16)),
            to_latents=rng.normal(size=(8, 16)) + 1.0,
            description="through A",
        )
        (found,) = b.list_directions("vae")
        assert (found.name, found.description) == ("thicker", "through A")
        assert b.list_directions("vae", page_size=1)[0].model_version == made.model_version
        b.delete_direction("vae", "thicker")
        assert a.list_directions("vae") == []

        # An operation started on A: B sees it running (A's replica id, its progress) and cancels it.
        n = 12_000
        a.create_collection("texts", model="lee-mean")
        a.upsert_stream("texts", [f"t{i}" for i in range(n)], inputs=lee_texts(n), batch_size=2000)
        operation = a.reembed("texts", model="lee-sif", target_name="texts-sif")

        def filling_seen_by_b():
            op = b.get_operation(operation.name)
            return op if op.stage == "filling" or op.done else None

        seen = wait_for(filling_seen_by_b, 120, "replica B to see the re-embed filling")
        assert seen.stage == "filling" and seen.replica == a.get_operation(operation.name).replica
        assert seen.replica != "" and operation.name in [o.name for o in b.list_operations("texts")]
        b.cancel_operation(operation.name)
        assert_refused(lambda: b.wait_operation(operation.name, timeout=120), grpc.StatusCode.CANCELLED, "CANCELLED")
        assert "texts-sif" not in [c.name for c in a.list_collections()]  # A removed its partial collection

        # A snapshot taken through A is listed by B and restores through B.
        snapshot = a.create_snapshot("texts", wait=True, timeout=300).result
        assert [s.name for s in b.list_snapshots("texts")] == [snapshot.name]
        restored = b.restore_snapshot(snapshot.name, "texts-copy", wait=True, timeout=600).result
        assert restored.count == n == a.get_collection("texts-copy").count
        sample = [f"t{i}" for i in range(0, n, 997)]
        copied, _ = a.get_items("texts-copy", sample, include_vectors=True)
        original, _ = b.get_items("texts", sample, include_vectors=True)
        assert [(i["id"], i["input"], i["vector"].tolist()) for i in copied] == [
            (i["id"], i["input"], i["vector"].tolist()) for i in original
        ]
        b.delete_snapshot(snapshot.name)
        assert a.list_snapshots() == []
        for name in ("texts", "texts-copy"):
            a.delete_collection(name)


def test_a_snapshot_in_a_directory_another_replica_cannot_see(tmp_path, milvus_server_uri):
    with replica(tmp_path, "a", milvus_server_uri) as a, replica(tmp_path, "b", milvus_server_uri) as b:
        a.create_collection("alone", dimension=4)
        a.upsert("alone", ["x"], np.ones((1, 4), np.float32))
        snapshot = a.create_snapshot("alone", wait=True).result
        assert [s.name for s in b.list_snapshots("alone")] == [snapshot.name]  # the catalogue is shared ...
        error = assert_refused(  # ... but B has its own snapshot directory
            lambda: b.restore_snapshot(snapshot.name, "alone-copy"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "SNAPSHOT_ELSEWHERE",
        )
        assert error.metadata["replica"] == snapshot.replica
        a.delete_snapshot(snapshot.name)
        a.delete_collection("alone")


def in_process_replica(tmp_path, name, uri):
    """A replica in this process (its own data directory, caches, gates and fences; the same Milvus), so that a test
    can hold the re-embed it runs at each step."""
    lee = GENSIM_DATA / "lee_fasttext.vec"
    settings = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / name,
        embedded_models=False,
        models=(
            ModelSpec("lee", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, lee)),
            ModelSpec("lee-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee")),
            ModelSpec(
                "lee-sif", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee", weighting=Weighting.SIF)
            ),
        ),
        grace_period_s=0.5,
        page_token_secret="replicas-share-this-secret",
        storage=StorageSettings("milvus", MilvusSettings(uri)),
    )
    srv, _ = create_server(settings)
    srv.start()
    srv.wait_until_ready(120)
    return srv


def test_no_write_through_another_replica_misses_the_reembedded_collection(tmp_path, milvus_server_uri, monkeypatch):
    """Replica A re-embeds; writes go through replica B in every step of it: while A fills, while it catches up, in
    the fenced window (refused, retryable) and right after the switch while B's alias cache still names the old
    collection (refused, and the retry lands in the new one). Every write B acknowledged is in the new collection,
    embedded by the new model."""
    srv_a = in_process_replica(tmp_path, "a", milvus_server_uri)
    srv_b = in_process_replica(tmp_path, "b", milvus_server_uri)
    texts = lee_texts(160)
    try:
        with Client(f"127.0.0.1:{srv_a.port}", timeout=60) as a, Client(f"127.0.0.1:{srv_b.port}", timeout=60) as b:
            a.create_collection("fence-docs", model="lee-mean", metric="cosine")
            a.create_alias("fence-live", "fence-docs")
            a.upsert("fence-docs", [f"d{i}" for i in range(100)], inputs=texts[:100], metadata=[{"v": 0}] * 100)
            expected = {f"d{i}": (texts[i], {"v": 0}) for i in range(100)}
            # B's alias cache names the old collection for as long as the test says (the worst its 1 s can do).
            srv_b.aliases._clock = FakeClock()
            srv_b.aliases.refresh()
            assert b.get_items("fence-live", ["d0"])[0][0]["id"] == "d0"
            monkeypatch.setattr(reembed_module, "BATCH", 20)
            phases = Phases(monkeypatch)
            refusals: list[str] = []

            def write(item, text, v):
                b.upsert("fence-live", [item], inputs=[text], metadata=[{"v": v}])
                expected[item] = (text, {"v": v})

            def retried(item, text, v):
                try:
                    write(item, text, v)
                    return True
                except EmbedsvcClientError as exc:
                    assert (exc.code, exc.reason) == (grpc.StatusCode.UNAVAILABLE, "COLLECTION_SWITCHING"), exc
                    refusals.append(exc.metadata["state"])
                    return False

            operation = a.reembed("fence-live", model="lee-sif", target_name="fence-sif")
            with phases.at("filling"):
                write("d90", texts[100], 1)
                write("d0", texts[101], 1)
                write("b-fill", texts[102], 1)
                b.delete_items("fence-live", ["d1"])
                del expected["d1"]
            with phases.at("catching-up"):
                write("d2", texts[103], 2)
                write("b-catch", texts[104], 2)
                b.delete_items("fence-live", ["d3"])
                del expected["d3"]
            with phases.at("fenced"):
                error = assert_refused(
                    lambda: write("d4", texts[105], 3), grpc.StatusCode.UNAVAILABLE, "COLLECTION_SWITCHING"
                )
                assert (error.metadata["state"], error.metadata["target"]) == ("fenced", "fence-sif")
                assert_refused(
                    lambda: b.delete_items("fence-docs", ["d5"]), grpc.StatusCode.UNAVAILABLE, "COLLECTION_SWITCHING"
                )
            with phases.at("switched"):
                assert srv_b.aliases.resolve("fence-live") == "fence-docs"  # B's alias cache is stale
                wait_for(lambda: retried("d4", texts[105], 3), 30, "B's write to land once B sees the switch")
                assert "switched" in refusals  # refused through the stale alias, which B then read again
                write("b-switched", texts[106], 3)
            done = a.wait_operation(operation.name, timeout=300)
            assert done.result.collection.name == "fence-sif" and list(done.result.switched_aliases) == ["fence-live"]
            assert done.reembed.caught_up > 0
            target = {i["id"]: (i["input"], i["metadata"]) for i in a.export_items("fence-sif", batch_size=500)}
            assert target == expected  # every write B acknowledged, in every step
            assert {i["id"]: i["input"] for i in b.export_items("fence-docs")}["d4"] == texts[4]  # refused: not written
            changed = ["d90", "d0", "b-fill", "d2", "b-catch", "d4", "b-switched"]
            items, missing = a.get_items("fence-sif", changed, include_vectors=True)
            assert missing == []
            np.testing.assert_allclose(
                np.stack([i["vector"] for i in items]),
                a.embed_texts("lee-sif", [expected[i][0] for i in changed]).vectors,
                rtol=1e-5,
                atol=1e-6,
            )
            b.upsert("fence-docs", ["after"], inputs=[texts[107]])  # the fence is released: the old one takes writes
            a.delete_alias("fence-live")
            for name in ("fence-docs", "fence-sif"):
                a.delete_collection(name)
    finally:
        srv_b.stop(0)
        srv_a.stop(0)
