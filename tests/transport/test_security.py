"""Security and observability through a real server: API keys with roles and collection scopes, TLS and mutual TLS,
the audit log, Prometheus metrics, request ids, and no key ever written anywhere."""

import datetime
import json
import logging
import urllib.request

import grpc
import numpy as np
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from embedsvc.api import HEALTH, SERVICES
from embedsvc.client import Client, EmbedsvcClientError, collection_points
from embedsvc.settings import ApiKey, AuthSettings, Role, Settings, TlsSettings
from embedsvc.transport import admission, roles
from embedsvc.transport.auth import key_hash, new_key
from embedsvc.transport.logs import JsonFormatter
from embedsvc.v1 import (
    models_pb2,
)
from tests.helpers import assert_refused

KEYS = {name: new_key() for name in ("admin", "writer", "reader", "scoped")}
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")  # no server reason: the connection failed


@pytest.fixture(scope="module")
def secured(make_server):
    keys = (
        ApiKey("admin", Role.ADMIN, key_hash(KEYS["admin"])),
        ApiKey("writer", Role.WRITE, key_hash(KEYS["writer"])),
        ApiKey("reader", Role.READ, key_hash(KEYS["reader"])),
        ApiKey("scoped", Role.WRITE, key_hash(KEYS["scoped"]), ("docs", "img-*")),
    )
    with make_server(auth=AuthSettings(enabled=True, keys=keys), metrics_port=0) as (srv, target):
        with Client(target, api_key=KEYS["admin"]) as admin:
            for name in ("docs", "img-cats", "secret"):
                admin.create_collection(name, dimension=32, metric="l2")
                admin.upsert(name, [f"{name}-1"], np.ones((1, 32), np.float32), [{"n": 1}])
            admin.create_alias("docs-by-another-name", "secret")
        yield srv, target


def test_every_rpc_has_exactly_one_role():
    services = [s.descriptor for s in (*SERVICES, HEALTH)]
    services += [reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]]
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    undeclared = sorted(m for m in methods if m not in roles.RULES and m not in roles.OPEN)
    assert undeclared == []
    assert not set(roles.RULES) & roles.OPEN
    # The heavy-call cap names real RPCs (a misspelt name silently leaves a heavy call uncapped).
    assert sorted(admission.HEAVY - methods) == []
    assert roles.rule("/embedsvc.v1.NewService/Unknown").role is Role.ADMIN  # fails closed


def test_keys_are_required_and_checked(secured):
    _, target = secured
    with Client(target) as anonymous:
        assert_refused(lambda: anonymous.list_models(), UNAUTHENTICATED, "UNAUTHENTICATED")
        assert anonymous.health() == "SERVING"  # health checks stay open
    with Client(target, api_key="esk_not-a-key") as stranger:
        error = assert_refused(lambda: stranger.list_collections(), UNAUTHENTICATED, "UNAUTHENTICATED")
        assert error.metadata["problem"] == "unknown" and "esk_not-a-key" not in error.message
    channel = grpc.insecure_channel(target)
    stub = models_pb2_grpc_stub(channel)
    for header in ("Basic abc", "Bearer", "Bearer    ", "Bearer " + "x" * 2000, KEYS["admin"]):
        with pytest.raises(grpc.RpcError) as info:
            stub.ListModels(models_pb2.ListModelsRequest(), metadata=[("authorization", header)])
        assert info.value.code() == UNAUTHENTICATED
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as info:
        list(reflection.ServerReflectionInfo(iter([request])))
    assert info.value.code() == UNAUTHENTICATED
    answer = next(
        reflection.ServerReflectionInfo(iter([request]), metadata=[("authorization", f"Bearer {KEYS['reader']}")])
    )
    assert "embedsvc.v1.CollectionService" in [s.name for s in answer.list_services_response.service]
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == 1
    channel.close()


def models_pb2_grpc_stub(channel):
    from embedsvc.v1 import models_pb2_grpc

    return models_pb2_grpc.ModelServiceStub(channel)


def test_roles(secured):
    _, target = secured
    vector = np.zeros(32, np.float32)
    with Client(target, api_key=KEYS["reader"]) as reader:
        assert reader.search("docs", vector=vector, k=1)[0].id == "docs-1"
        assert reader.arithmetic("planted", ["king - man + woman"], top_n=1).results[0].hits[0].word == "queen"
        assert_refused(lambda: reader.upsert("docs", ["x"], np.ones((1, 32), np.float32)), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: reader.delete_items("docs", ["docs-1"]), DENIED, "PERMISSION_DENIED")
    with Client(target, api_key=KEYS["writer"]) as writer:
        writer.upsert("docs", ["w"], np.ones((1, 32), np.float32))
        assert writer.delete_items("docs", ["w"]) == (1, 0)
        assert_refused(lambda: writer.create_collection("mine", dimension=4), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: writer.delete_collection("docs"), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: writer.rebuild("docs"), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: writer.create_alias("a", "docs"), DENIED, "PERMISSION_DENIED")
    with Client(target, api_key=KEYS["admin"]) as admin:
        admin.create_collection("temporary", dimension=4)
        admin.delete_collection("temporary")


def test_collection_scopes(secured):
    _, target = secured
    vector = np.zeros(32, np.float32)
    with Client(target, api_key=KEYS["scoped"]) as scoped:
        assert scoped.search("docs", vector=vector, k=1)[0].id == "docs-1"
        assert scoped.search("img-cats", vector=vector, k=1)[0].id == "img-cats-1"
        scoped.upsert("img-cats", ["new"], np.ones((1, 32), np.float32))
        denied = (DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: scoped.search("secret", vector=vector), *denied)
        assert_refused(lambda: scoped.search("docs-by-another-name", vector=vector), *denied)  # an alias of "secret"
        assert_refused(lambda: scoped.get_items("secret", ["secret-1"]), *denied)
        assert_refused(lambda: scoped.upsert_stream("secret", ["s"], np.ones((1, 32), np.float32)), *denied)
        assert_refused(lambda: scoped.project(collection_points("secret")), *denied)
        assert_refused(lambda: list(scoped.export_items("secret")), *denied)
        assert [c.name for c in scoped.list_collections()] == ["docs", "img-cats"]
        assert scoped.list_aliases() == []  # the alias points outside the scope
        assert (
            assert_refused(lambda: scoped.search("secret", vector=vector), *denied).metadata["collection"] == "secret"
        )


def test_snapshots_are_admin_work_and_keep_to_a_key_s_scope(secured, tmp_path):
    """Download is ADMIN (a backup holds what a collection held then, items deleted since included); a key lists and
    reaches the snapshots of the collections in its scope only."""
    _, target = secured
    with Client(target, api_key=KEYS["admin"]) as admin:
        docs = admin.create_snapshot("docs", wait=True).result
        secret = admin.create_snapshot("secret", wait=True).result
    with Client(target, api_key=KEYS["reader"]) as reader:
        assert {s.name for s in reader.list_snapshots()} == {docs.name, secret.name}
        assert reader.get_snapshot(docs.name).count == 1
        assert_refused(lambda: reader.download_snapshot(docs.name, tmp_path / "d.tar"), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: reader.create_snapshot("docs"), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: reader.restore_snapshot(docs.name, "copy"), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: reader.delete_snapshot(docs.name), DENIED, "PERMISSION_DENIED")
        assert_refused(lambda: reader.reembed("docs", model="planted-mean"), DENIED, "PERMISSION_DENIED")
    with Client(target, api_key=KEYS["scoped"]) as scoped:
        assert [s.name for s in scoped.list_snapshots()] == [docs.name]
        assert_refused(lambda: scoped.get_snapshot(secret.name), DENIED, "PERMISSION_DENIED")
    with Client(target, api_key=KEYS["admin"]) as admin:
        for snapshot in (docs, secret):
            admin.delete_snapshot(snapshot.name)


def test_the_audit_log_records_writes_not_keys(secured):
    srv, target = secured
    with Client(target, api_key=KEYS["writer"]) as writer:
        writer.upsert("docs", ["a1", "a2", "a3"], np.ones((3, 32), np.float32))
        writer.search("docs", vector=np.zeros(32, np.float32))
        assert_refused(lambda: writer.delete_collection("docs"), DENIED, "PERMISSION_DENIED")
    # No flush: a write or admin call is answered only once its line is on disk.
    lines = [json.loads(line) for line in (srv.settings.data_dir / "audit.log").read_text().splitlines()]
    upsert = next(e for e in lines if e["method"].endswith("/Upsert") and e["key"] == "writer" and e["count"] == 3)
    assert upsert["collections"] == ["docs"] and upsert["code"] == "OK" and upsert["peer"].startswith("ipv")
    denied = next(e for e in lines if e["method"].endswith("/DeleteCollection") and e["key"] == "writer")
    assert (denied["code"], denied["reason"]) == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    assert not any(e["method"].endswith("/Search") for e in lines)  # reads are not audited by default
    text = (srv.settings.data_dir / "audit.log").read_text()
    assert not any(key in text for key in KEYS.values())


def test_audit_log_rotation(tmp_path):
    from embedsvc.transport.audit import AuditLog

    audit = AuditLog(tmp_path, max_bytes=2000, files=3)
    for i in range(200):
        audit.record(method="/embedsvc.v1.CollectionService/Upsert", key="writer", count=i, code="OK")
        if i % 10 == 9:
            audit.flush()  # one group per ten lines (a group is never split across files)
    audit.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    kept = [json.loads(line)["count"] for n in reversed(names[1:]) for line in (tmp_path / n).read_text().splitlines()]
    kept += [json.loads(line)["count"] for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert kept == list(range(kept[0], 200))  # the newest lines, in order, none torn


def test_reads_are_audited_on_request(make_server):
    key = new_key()
    auth = AuthSettings(enabled=True, keys=(ApiKey("r", Role.READ, key_hash(key)),), audit_reads=True)
    with make_server(auth=auth) as (srv, target):
        with Client(target, api_key=key) as reader:
            reader.similarity("planted", [("king", "queen")])
        srv.audit.flush()
        lines = [json.loads(line) for line in (srv.settings.data_dir / "audit.log").read_text().splitlines()]
        assert [(e["method"], e["key"], e["code"]) for e in lines] == [
            ("/embedsvc.v1.WordService/Similarity", "r", "OK")
        ]


def test_a_missing_key_is_explained_in_each_surfaces_words(secured, capsys, monkeypatch):
    """gRPC callers read `authorization` metadata, CLI users --api-key or EMBEDSVC_API_KEY: the server sends the hint's
    id (ErrorInfo metadata "hint") and each surface words it (HTTP: tests/transport/test_http.py)."""
    from embedsvc.cli import main

    _, target = secured
    with Client(target) as anonymous, pytest.raises(EmbedsvcClientError) as info:
        anonymous.list_collections()
    assert (info.value.code, info.value.reason) == (UNAUTHENTICATED, "UNAUTHENTICATED")
    assert info.value.metadata == {"problem": "missing", "hint": "send-api-key"}
    assert "metadata `authorization: Bearer <key>`" in info.value.message
    monkeypatch.delenv("EMBEDSVC_API_KEY", raising=False)
    assert main(["--target", target, "collections", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: UNAUTHENTICATED UNAUTHENTICATED: no API key")
    assert "--api-key" in err and "EMBEDSVC_API_KEY" in err and "metadata" not in err
    assert main(["collections", "list", "--target", target, "--api-key", KEYS["reader"], "--json"]) == 0  # after, too
    assert json.loads(capsys.readouterr().out)["collections"]


def test_metrics_request_ids_and_no_key_in_logs_or_metrics(secured, caplog):
    srv, target = secured
    caplog.set_level(logging.DEBUG, logger="embedsvc")
    with Client(target, api_key=KEYS["admin"]) as admin:
        admin.embed_texts("planted-mean", ["king queen", "man woman"])
        admin.search("docs", vector=np.zeros(32, np.float32))
        error = assert_refused(
            lambda: admin.search("nope", vector=np.zeros(32, np.float32)),
            grpc.StatusCode.NOT_FOUND,
            "COLLECTION_NOT_FOUND",
        )
        assert len(error.request_id) == 32
    channel = grpc.insecure_channel(target)
    stub = models_pb2_grpc_stub(channel)
    _, call = stub.ListModels.with_call(
        models_pb2.ListModelsRequest(),
        metadata=[("authorization", f"Bearer {KEYS['reader']}"), ("x-request-id", "trace-me-123")],
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "trace-me-123"
    channel.close()
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    requests = families["embedsvc_requests"].samples
    assert any(
        s.labels == {"service": "embedsvc.v1.CollectionService", "method": "Search", "code": "NOT_FOUND"}
        for s in requests
    )
    assert any(s.labels["method"] == "EmbedTexts" and s.labels["code"] == "OK" and s.value >= 1 for s in requests)
    # Once a method has been called, its shed counter exists at 0, so that rate() alerts see the first refusal.
    shed = [s for s in requests if s.labels["method"] == "EmbedTexts" and s.labels["code"] == "RESOURCE_EXHAUSTED"]
    assert [s.value for s in shed if s.name == "embedsvc_requests_total"] == [0.0]
    assert "embedsvc_request_duration_seconds" in families and "embedsvc_requests_in_flight" in families
    info = {s.labels["model"]: s.labels for s in families["embedsvc_model_info"].samples}
    assert info["planted"]["kind"] == "word-vectors" and info["planted"]["state"] == "ready"
    batches = [s for s in families["embedsvc_batch_texts"].samples if s.name.endswith("_count")]
    assert batches and batches[0].labels["model"] == "planted-mean" and batches[0].value >= 1
    items = {s.labels["collection"]: s.value for s in families["embedsvc_collection_items"].samples}
    assert items["secret"] == 1
    assert "embedsvc_collection_fsync_seconds" in families and "process_cpu_seconds" in families
    logged = "\n".join(r.getMessage() + json.dumps(getattr(r, "call", {})) for r in caplog.records)
    assert "trace-me-123" in logged
    for key in KEYS.values():
        assert key not in body and key not in logged


def test_json_log_lines():
    record = logging.LogRecord("embedsvc.access", logging.INFO, __file__, 1, "%s %s", ("m", "OK"), None)
    record.call = {"request_id": "r1", "method": "/m", "code": "OK", "reason": "", "duration_ms": 1.5, "key": "k"}
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["request_id"], line["key"], line["level"]) == ("m OK", "r1", "k", "INFO")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client@example.com")
    stranger = trustme.CA().issue_cert("client@example.com")
    expired = ca.issue_cert(
        "client@example.com",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    files = {}
    for name, blob in (
        ("ca.pem", ca.cert_pem.bytes()),
        ("server.pem", server_cert.cert_chain_pems[0].bytes()),
        ("server.key", server_cert.private_key_pem.bytes()),
        ("client.pem", client_cert.cert_chain_pems[0].bytes()),
        ("client.key", client_cert.private_key_pem.bytes()),
        ("stranger.pem", stranger.cert_chain_pems[0].bytes()),
        ("stranger.key", stranger.private_key_pem.bytes()),
        ("expired.pem", expired.cert_chain_pems[0].bytes()),
        ("expired.key", expired.private_key_pem.bytes()),
    ):
        (folder / name).write_bytes(blob)
        files[name] = folder / name
    return files


def test_tls_and_mutual_tls(make_server, certificates):
    c = certificates
    tls = TlsSettings(c["server.pem"], c["server.key"], c["ca.pem"])
    with make_server(tls=tls) as (_srv, target):
        with Client(target, timeout=5) as plaintext:
            assert_refused(lambda: plaintext.list_models(), *UNAVAILABLE)
        with Client(target, ca_file=c["ca.pem"], timeout=5) as no_certificate:
            assert_refused(lambda: no_certificate.list_models(), *UNAVAILABLE)
        with Client(
            target, ca_file=c["ca.pem"], cert_file=c["stranger.pem"], key_file=c["stranger.key"], timeout=5
        ) as bad:
            assert_refused(lambda: bad.list_models(), *UNAVAILABLE)
        with Client(
            target, ca_file=c["ca.pem"], cert_file=c["expired.pem"], key_file=c["expired.key"], timeout=5
        ) as expired:
            assert_refused(lambda: expired.list_models(), *UNAVAILABLE)
        with Client(target, ca_file=c["ca.pem"], cert_file=c["client.pem"], key_file=c["client.key"]) as good:
            assert [m.name for m in good.list_models()] == ["planted", "planted-mean"]


def test_the_http_port_serves_https_with_the_same_certificates(make_server, certificates):
    import ssl

    import httpx

    c = certificates
    tls = TlsSettings(c["server.pem"], c["server.key"], c["ca.pem"])
    with make_server(tls=tls, http_port=0) as (srv, _target):
        assert srv.http is not None and srv.http.scheme == "https"
        url = f"https://127.0.0.1:{srv.http.port}/embedsvc.v1.ModelService/ListModels"
        trusted = ssl.create_default_context(cafile=str(c["ca.pem"]))
        with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
            httpx.post(url, json={}, verify=trusted)
        trusted.load_cert_chain(str(c["client.pem"]), str(c["client.key"]))
        answer = httpx.post(url, json={}, verify=trusted)
        assert answer.status_code == 200
        assert [m["name"] for m in answer.json()["models"]] == ["planted", "planted-mean"]
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port
            httpx.post(url.replace("https", "http"), json={})


def test_certificates_are_reloaded_without_a_restart(tmp_path, make_server, certificates):
    folder = tmp_path / "live"
    folder.mkdir()
    first = certificates
    for name in ("server.pem", "server.key"):
        (folder / name).write_bytes(first[name].read_bytes())
    with make_server(tls=TlsSettings(folder / "server.pem", folder / "server.key")) as (_srv, target):
        with Client(target, ca_file=first["ca.pem"]) as old:
            assert old.health() == "SERVING"
        rotated = trustme.CA()
        cert = rotated.issue_cert("127.0.0.1")
        (tmp_path / "new-ca.pem").write_bytes(rotated.cert_pem.bytes())
        (folder / "server.key").write_bytes(cert.private_key_pem.bytes())
        (folder / "server.pem").write_bytes(cert.cert_chain_pems[0].bytes())
        with Client(target, ca_file=tmp_path / "new-ca.pem") as new:
            assert new.health() == "SERVING"  # a new connection gets the new certificate
        with Client(target, ca_file=first["ca.pem"], timeout=5) as stale:
            assert_refused(lambda: stale.health(), *UNAVAILABLE)
        (folder / "server.key").write_bytes(b"not a key")  # a broken file: the current certificate stays
        with Client(target, ca_file=tmp_path / "new-ca.pem") as still:
            assert still.health() == "SERVING"


def test_configuration_errors_name_the_field(tmp_path):
    from embedsvc.settings import ConfigError

    keys_file = tmp_path / "keys.toml"
    cases = [
        ({"auth": {"enabled": True}}, "no keys"),
        ({"auth": {"keys": [{"name": "a", "role": "read", "sha256": "xyz"}]}}, "auth.keys[0].sha256"),
        ({"auth": {"keys": [{"name": "a", "role": "god", "sha256": "a" * 64}]}}, "auth.keys[0].role"),
        ({"auth": {"keys_file": str(tmp_path / "missing.toml")}}, "auth.keys_file: cannot read"),
        ({"auth": {"keys_file": str(keys_file)}}, "auth.keys_file ("),
        ({"server": {"tls": {"cert_file": "/nope.pem"}}}, "server.tls.key_file"),
        ({"server": {"tls": {"cert_file": "/nope.pem", "key_file": "/nope.key"}}}, "server.tls.cert_file"),
        ({"server": {"host": "0.0.0.0"}}, "server.host: 0.0.0.0 can be reached"),
        ({"server": {"log_format": "xml"}}, "server.log_format"),
    ]
    keys_file.write_text('[[keys]]\nname = "x"\nrole = "read"\nsha256 = "not hex"\n')
    for config, message in cases:
        with pytest.raises(ConfigError) as info:
            Settings.from_config(config)
        assert message in str(info.value), config
    keys_file.write_text(f'[[keys]]\nname = "mounted"\nrole = "admin"\nsha256 = "{"b" * 64}"\n')
    settings = Settings.from_config({"auth": {"enabled": True, "keys_file": str(keys_file)}})
    assert [k.name for k in settings.auth.keys] == ["mounted"]
    assert Settings.from_config({"server": {"host": "0.0.0.0"}}, insecure=True).insecure


def test_serving_beyond_loopback_needs_keys_or_insecure(tmp_path, monkeypatch):
    from embedsvc.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)]) == 1
    monkeypatch.setenv("EMBEDSVC_ADMIN_KEY", "esk_from-the-environment")
    from embedsvc.cli import parser
    from embedsvc.cli.serve import settings as read_settings

    args = parser().parse_args(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    settings = read_settings(args)
    assert settings.auth.enabled and settings.auth.keys[0].sha256 == key_hash("esk_from-the-environment")


def test_new_key_command(capsys):
    from embedsvc.cli import main

    assert (
        main(["auth", "new-key", "--name", "search-frontend", "--role", "read", "--collections", "docs", "img-*"]) == 0
    )
    out = capsys.readouterr().out
    key = out.splitlines()[0].removeprefix("key: ")
    assert key.startswith("esk_") and len(key) >= 4 + 43  # 256 random bits
    assert f'sha256 = "{key_hash(key)}"' in out and 'collections = ["docs", "img-*"]' in out
    import tomllib

    block = tomllib.loads(out[out.index("[[auth.keys]]") :])["auth"]["keys"][0]
    assert (block["name"], block["role"]) == ("search-frontend", "read")


def test_cli_sends_the_key(secured, capsys, monkeypatch):
    from embedsvc.cli import main

    _, target = secured
    assert main(["--target", target, "models"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("EMBEDSVC_API_KEY", KEYS["reader"])
    assert main(["--target", target, "models"]) == 0
    assert "planted" in capsys.readouterr().out
