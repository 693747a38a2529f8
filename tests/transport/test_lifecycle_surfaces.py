"""Reembed and snapshots on the surfaces besides the blocking gRPC client: HTTP/JSON (Connect), the asyncio client
and the CLI, each against the session's real server, each ending with the same collections the gRPC calls give."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import numpy as np

from embedsvc.cli import main
from embedsvc.client import AsyncClient, Client
from tests.conftest import GENSIM_DATA
from tests.helpers import assert_refused, wait_for

LINES = (GENSIM_DATA / "lee_background.cor").read_text(encoding="latin-1").lower().split(".")
TEXTS = [" ".join(w for w in line.split() if w.isalpha()) for line in LINES if len(line.split()) >= 8][:60]
IDS = [f"t{i}" for i in range(len(TEXTS))]


def post(url: str, method: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/embedsvc.v1.{method}", json=body, timeout=60)


def finished(url: str, name: str) -> dict:
    def done() -> dict | None:
        op = post(url, "OperationService/GetOperation", {"name": name}).json()["operation"]
        return op if op.get("done") else None

    return wait_for(done, 120, f"{name} to finish over HTTP")


def test_reembed_and_snapshots_over_http(http_url: str, client: Client) -> None:
    client.create_collection("http-life", model="lee-mean")
    client.create_alias("http-life-live", "http-life")
    client.upsert("http-life", IDS, inputs=TEXTS)
    client.create_collection("http-vectors", dimension=4)
    client.upsert("http-vectors", ["v"], np.ones((1, 4), np.float32))
    try:
        started = post(http_url, "CollectionService/Reembed", {"collection": "http-life-live", "model": "lee-sif"})
        assert started.status_code == 200, started.text
        op = finished(http_url, started.json()["operation"]["name"])
        assert "error" not in op, op
        result = op["response"]
        assert (result["source"], result["switchedAliases"], int(result["reembedded"])) == (
            "http-life",
            ["http-life-live"],
            len(TEXTS),
        )
        meta = op["metadata"]
        assert (meta["kind"], meta["stage"], meta["reembed"]["target"]) == (
            "reembed",
            "done",
            result["collection"]["name"],
        )
        new = result["collection"]["name"]
        assert client.get_collection("http-life-live").name == new
        query = client.embed_texts("lee-sif", [TEXTS[7]]).vectors[0]
        (hit,) = client.search("http-life-live", vector=query, k=1)  # searchable through the switched alias
        assert hit.id == "t7" and abs(hit.score - 1) < 1e-5
        items, _ = client.get_items(new, ["t7"], include_vectors=True)
        np.testing.assert_allclose(
            items[0]["vector"], client.embed_texts("lee-sif", [TEXTS[7]]).vectors[0], rtol=1e-5, atol=1e-6
        )

        # Items written as vectors: refused with the reason, as JSON.
        refused = post(http_url, "CollectionService/Reembed", {"collection": "http-vectors", "model": "lee-sif"})
        op = finished(http_url, refused.json()["operation"]["name"])
        assert op["error"]["code"] == 9  # FAILED_PRECONDITION
        reasons = [d.get("reason") for d in op["error"].get("details", [])]
        assert "INPUTS_NOT_STORED" in reasons, op["error"]

        # Snapshot, list, restore, download (a server stream) over HTTP.
        made = post(http_url, "SnapshotService/CreateSnapshot", {"collection": new}).json()["operation"]["name"]
        snapshot = finished(http_url, made)["response"]
        listed = post(http_url, "SnapshotService/ListSnapshots", {"collection": new}).json()["snapshots"]
        assert [s["name"] for s in listed] == [snapshot["name"]] and int(snapshot["count"]) == len(TEXTS)
        body = {"snapshot": snapshot["name"], "name": "http-life-copy"}
        restored = finished(
            http_url, post(http_url, "SnapshotService/RestoreSnapshot", body).json()["operation"]["name"]
        )
        assert int(restored["response"]["count"]) == len(TEXTS)
        assert sorted(i["id"] for i in client.export_items("http-life-copy")) == sorted(IDS)
        lines = post(http_url, "SnapshotService/DownloadSnapshot", {"name": snapshot["name"]}).text.strip().split("\n")
        chunks = [json.loads(line) for line in lines]
        assert "manifest" in chunks[0] and {c["path"] for c in chunks[1:] if "path" in c}
        missing = post(http_url, "SnapshotService/GetSnapshot", {"name": "snapshots/nope"})
        assert (missing.status_code, missing.json()["reason"]) == (404, "SNAPSHOT_NOT_FOUND")
        post(http_url, "SnapshotService/DeleteSnapshot", {"name": snapshot["name"]}).raise_for_status()
    finally:
        client.delete_alias("http-life-live")
        for info in client.list_collections():
            if info.name.startswith("http-life") or info.name == "http-vectors":
                client.delete_collection(info.name)


def test_reembed_and_snapshots_with_the_asyncio_client(target: str, client: Client, tmp_path) -> None:
    client.create_collection("async-life", model="lee-mean")
    client.upsert("async-life", IDS, inputs=TEXTS)

    async def lifecycle():
        async with AsyncClient(target, timeout=120) as c:
            done = await c.reembed("async-life", model="lee-sif", target_name="async-life-2", wait=True)
            snapshot = (await c.create_snapshot("async-life-2", wait=True)).result
            listed = [s.name for s in await c.list_snapshots("async-life-2")]
            manifest = await c.download_snapshot(snapshot.name, tmp_path / "s.tar")
            uploaded = await c.upload_snapshot(tmp_path / "s.tar")
            restored = (await c.restore_snapshot(uploaded.name, "async-life-3", wait=True)).result
            for name in (snapshot.name, uploaded.name):
                await c.delete_snapshot(name)
            return done, snapshot, listed, manifest, uploaded, restored

    done, snapshot, listed, manifest, uploaded, restored = asyncio.run(lifecycle())
    try:
        assert (done.result.collection.name, done.result.reembedded) == ("async-life-2", len(TEXTS))
        assert listed == [snapshot.name] and manifest["count"] == len(TEXTS) == uploaded.count
        assert uploaded.name != snapshot.name and restored.count == len(TEXTS)
        want = {i["id"]: i["vector"].tolist() for i in client.export_items("async-life-2")}
        got = {i["id"]: i["vector"].tolist() for i in client.export_items("async-life-3")}
        assert got == want
        assert_refused(lambda: client.get_snapshot(snapshot.name), grpc.StatusCode.NOT_FOUND, "SNAPSHOT_NOT_FOUND")
    finally:
        for name in ("async-life", "async-life-2", "async-life-3"):
            client.delete_collection(name)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_reembed_and_snapshots_from_the_cli(capsys, target: str, client: Client, tmp_path) -> None:
    client.create_collection("cli-life", model="lee-mean")
    client.create_alias("cli-life-live", "cli-life")
    client.upsert("cli-life", IDS, inputs=TEXTS)
    client.create_collection("cli-vectors", dimension=4)
    client.upsert("cli-vectors", ["v"], np.ones((1, 4), np.float32))
    try:
        code, out, _ = run(
            capsys, "--target", target, "collections", "reembed", "cli-life-live", "--model", "lee-sif",
            "--target-name", "cli-life-2",
        )  # fmt: skip
        assert code == 0 and f"re-embedded {len(TEXTS)} items of cli-life into cli-life-2" in out, out
        assert "switched aliases: cli-life-live" in out
        assert client.get_collection("cli-life-live").name == "cli-life-2"
        code, out, err = run(capsys, "--target", target, "collections", "reembed", "cli-vectors", "--model", "lee-sif")
        assert code != 0 and "INPUTS_NOT_STORED" in err, err

        code, out, _ = run(capsys, "--target", target, "--json", "snapshot", "create", "cli-life-2")
        assert code == 0, out
        snapshot = json.loads(out)["result"]["name"]
        code, out, _ = run(capsys, "--target", target, "snapshot", "list", "--collection", "cli-life-2")
        assert code == 0 and out.startswith(snapshot) and f"{len(TEXTS)} items" in out, out
        code, out, _ = run(capsys, "--target", target, "snapshot", "download", snapshot, "-o", str(tmp_path / "c.tar"))
        assert code == 0 and "every sha256 checked" in out, out
        code, out, _ = run(capsys, "--target", target, "snapshot", "upload", str(tmp_path / "c.tar"))
        assert code == 0 and out.startswith("uploaded "), out
        uploaded = out.split(" as ")[1].split("\n")[0]
        code, out, _ = run(capsys, "--target", target, "snapshot", "restore", uploaded, "cli-life-3")
        assert code == 0 and out.startswith("cli-life-3"), out
        assert client.get_collection("cli-life-3").count == len(TEXTS)
        code, out, err = run(capsys, "--target", target, "snapshot", "restore", uploaded, "cli-life-3")
        assert code != 0 and "COLLECTION_EXISTS" in err, err
        for name in (snapshot, uploaded):
            assert run(capsys, "--target", target, "snapshot", "delete", name)[0] == 0
        assert client.list_snapshots("cli-life-2") == []
    finally:
        client.delete_alias("cli-life-live")
        for name in ("cli-life", "cli-life-2", "cli-life-3", "cli-vectors"):
            if name in [c.name for c in client.list_collections()]:
                client.delete_collection(name)


def test_a_keyword_index_survives_a_reembed_and_a_snapshot_restore(client: Client) -> None:
    """Collections bound to a text model have a keyword index (main's hybrid search): the re-embedded collection and
    a restored one keep it, and answer the same keyword search as the original."""
    client.create_collection("kw-life", model="lee-mean", keyword=True)
    client.upsert("kw-life", IDS, inputs=TEXTS)
    query = " ".join(TEXTS[11].split()[:4])
    want = [h.id for h in client.search("kw-life", input=query, mode="keyword", k=5)]
    assert want and want[0] == "t11"
    try:
        done = client.reembed("kw-life", model="lee-sif", target_name="kw-life-2", wait=True)
        assert done.result.collection.name == "kw-life-2"
        assert [h.id for h in client.search("kw-life-2", input=query, mode="keyword", k=5)] == want
        snapshot = client.create_snapshot("kw-life-2", wait=True).result
        client.restore_snapshot(snapshot.name, "kw-life-3", wait=True)
        client.delete_snapshot(snapshot.name)
        assert [h.id for h in client.search("kw-life-3", input=query, mode="keyword", k=5)] == want
    finally:
        for name in ("kw-life", "kw-life-2", "kw-life-3"):
            if name in [c.name for c in client.list_collections()]:
                client.delete_collection(name)
