"""Two embedsvc replicas over one Milvus server (a real Milvus standalone, from the `milvus` package): whatever one
replica writes, the other finds at once; collections made or dropped through one are made or dropped for both."""

import contextlib

import grpc
import numpy as np

from embedsvc.client import Client, EmbedsvcClientError
from tests import serve_process
from tests.helpers import assert_refused, wait_for


@contextlib.contextmanager
def replica(tmp_path, name, uri):
    data = tmp_path / name
    data.mkdir()
    config = data / "replica.toml"
    config.write_text(
        f'[server]\nembedded_models = false\n[storage]\nbackend = "milvus"\n[storage.milvus]\nuri = "{uri}"\n'
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
