"""The API over HTTP/JSON (Connect protocol) against the real server: every unary RPC is reachable, results equal
gRPC's on the tour's calls, errors map to JSON with code, reason and message, streams stream, keys are enforced."""

from __future__ import annotations

import base64
import json
import struct

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format

from embedsvc.client import Client
from embedsvc.settings import ApiKey, AuthSettings, Role
from embedsvc.transport.auth import key_hash
from embedsvc.transport.http import api_methods
from embedsvc.v1 import arithmetic_pb2, words_pb2

JSON = {"content-type": "application/json"}


def post(url: str, method: str, body: dict | None = None, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{url}/embedsvc.v1.{method}", json=body or {}, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_every_unary_rpc_is_reachable_with_json(http_url: str) -> None:
    """An empty request reaches each servicer: it answers, or refuses with an error from the catalogue (never a 404
    or a transport error)."""
    unary = [m for m in api_methods().values() if not m.client_streaming and not m.server_streaming]
    assert len(unary) >= 40
    for method in unary:
        response = httpx.post(http_url + method.path, content=b"{}", headers=JSON, timeout=60)
        assert response.headers["content-type"].startswith("application/json"), method.path
        body = response.json()
        if response.status_code == 200:
            json_format.ParseDict(body, method.response())  # a well-formed response message
        else:
            assert response.status_code in (400, 404, 409, 429, 503), (method.path, response.status_code, body)
            assert body["code"] and body["message"], method.path
            assert body.get("reason"), (method.path, body)


def test_tour_calls_equal_grpc(http_url: str, client: Client) -> None:
    body = {"model": "minilm-static", "expressions": [{"text": "king - man + woman"}], "topN": 5}
    got = post(http_url, "ArithmeticService/Arithmetic", body).json()
    want = client.arithmetic("minilm-static", ["king - man + woman"], top_n=5).results[0].hits
    assert [h["word"] for h in got["results"][0]["hits"]] == [h.word for h in want]
    assert got["results"][0]["hits"][0]["word"] == "queen"
    assert np.allclose([h["score"] for h in got["results"][0]["hits"]], [h.score for h in want])

    texts = ["a day at the beach", "interest rates rise"]
    embedded = post(http_url, "TextService/EmbedTexts", {"model": "minilm", "texts": texts}).json()
    vectors = np.array([v["values"] for v in embedded["vectors"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, client.embed_texts("minilm", texts).vectors, atol=1e-6)

    sims = post(
        http_url, "WordService/Similarity", {"model": "minilm-static", "pairs": [{"first": "tea", "second": "coffee"}]}
    )
    assert sims.json()["similarities"][0] == pytest.approx(client.similarity("minilm-static", [("tea", "coffee")])[0])

    sampled = post(http_url, "LatentService/Sample", {"model": "mnist-vae", "n": 2, "seed": "3"}).json()
    assert base64.b64decode(sampled["images"][0]["png"]).startswith(b"\x89PNG")
    assert sampled["images"][0]["png"] == base64.b64encode(client.sample("mnist-vae", 2, seed=3).images[0].png).decode()


def test_collections_over_http(http_url: str) -> None:
    created = post(
        http_url,
        "CollectionService/CreateCollection",
        {"name": "http-notes", "model": "minilm", "metric": "METRIC_COSINE"},
    )
    assert created.status_code == 200, created.text
    items = [
        {"id": "cat", "input": "The cat sat on the mat", "metadata": {"year": {"intValue": "2023"}}},
        {"id": "stocks", "input": "Stocks fell sharply", "metadata": {"year": {"intValue": "2024"}}},
    ]
    assert post(http_url, "CollectionService/Upsert", {"collection": "http-notes", "items": items}).status_code == 200
    hits = post(
        http_url,
        "CollectionService/Search",
        {"collection": "http-notes", "query": {"input": "kittens"}, "options": {"k": 2, "filter": "year >= 2023"}},
    ).json()["hits"]
    assert [h["id"] for h in hits] == ["cat", "stocks"] and hits[0]["metadata"]["year"] == {"intValue": "2023"}
    bad = post(
        http_url,
        "CollectionService/Search",
        {"collection": "http-notes", "query": {"input": "x"}, "options": {"filter": "year >"}},
    )
    assert bad.status_code == 400 and bad.json()["reason"] == "INVALID_FILTER"
    hybrid = post(
        http_url,
        "CollectionService/Search",
        {"collection": "http-notes", "query": {"input": "stocks"}, "options": {"k": 2, "mode": "SEARCH_MODE_HYBRID"}},
    ).json()
    assert hybrid["hits"][0]["id"] == "stocks" and hybrid["hits"][0]["explanation"]["keywordRank"] == 1
    assert hybrid["retrieval"]["mode"] == "SEARCH_MODE_HYBRID"
    assert hybrid["retrieval"]["fusion"] == {
        "method": "FUSION_METHOD_WEIGHTED",
        "rrfK": 60,
        "denseWeight": 0.5,
        "candidates": 200,
    }
    unknown = post(
        http_url,
        "CollectionService/Search",
        {"collection": "http-notes", "query": {"input": "x"}, "options": {"mode": 9}},
    )
    assert unknown.status_code == 400 and unknown.json()["reason"] == "INVALID_VALUE"
    assert "SEARCH_MODE_HYBRID" in unknown.json()["metadata"]["choices"]
    assert post(http_url, "CollectionService/DeleteCollection", {"name": "http-notes"}).status_code == 200


def test_errors_are_json_with_code_reason_and_message(http_url: str) -> None:
    oov = post(
        http_url, "ArithmeticService/Arithmetic", {"model": "minilm-static", "expressions": [{"text": "qqqzzzq"}]}
    )
    assert oov.status_code == 400
    body = oov.json()
    assert body["code"] == "invalid_argument" and body["reason"] == "OUT_OF_VOCABULARY" and "qqqzzzq" in body["message"]
    assert body["metadata"]["field"] == "expressions[0].terms[0]"
    assert body["details"][0]["type"] == "google.rpc.ErrorInfo"
    missing = post(http_url, "WordService/EmbedWords", {"model": "no-such-model", "words": ["a"]})
    assert missing.status_code == 404 and missing.json()["reason"] == "MODEL_NOT_FOUND"
    malformed = httpx.post(f"{http_url}/embedsvc.v1.WordService/EmbedWords", content=b"{not json", headers=JSON)
    assert malformed.status_code == 400 and malformed.json()["reason"] == "INVALID_ENCODING"
    unknown_field = post(http_url, "WordService/EmbedWords", {"model": "minilm-static", "wurds": ["a"]})
    assert unknown_field.status_code == 400 and unknown_field.json()["reason"] == "INVALID_ENCODING"
    assert post(http_url, "NoService/Nothing").status_code == 501
    stream_only = post(http_url, "CollectionService/UpsertStream")
    assert stream_only.status_code == 501 and "gRPC" in stream_only.json()["message"]
    text = httpx.post(
        f"{http_url}/embedsvc.v1.WordService/EmbedWords", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415
    huge = httpx.post(
        f"{http_url}/embedsvc.v1.WordService/EmbedWords",
        content=b" " * (64 * 1024 * 1024 + 1),
        headers=JSON,
        timeout=120,
    )
    assert huge.status_code == 429 and huge.json()["reason"] == "LIMIT_EXCEEDED"
    timeout = post(
        http_url,
        "ArithmeticService/Arithmetic",
        {"model": "minilm-static"},
        headers={**JSON, "connect-timeout-ms": "x"},
    )
    assert timeout.status_code == 400


def test_server_streams_as_ndjson_and_connect(http_url: str) -> None:
    body = {"model": "minilm-static", "limit": 5, "batchSize": 2}
    lines = post(http_url, "WordService/ExportWords", body).text.strip().split("\n")
    chunks = [json.loads(line) for line in lines]
    assert [len(c["words"]) for c in chunks] == [2, 2, 1]
    envelope = json.dumps(body).encode()
    response = httpx.post(
        f"{http_url}/embedsvc.v1.WordService/ExportWords",
        content=struct.pack(">BI", 0, len(envelope)) + envelope,
        headers={"content-type": "application/connect+json"},
    )
    assert response.headers["content-type"] == "application/connect+json"
    data, frames = response.content, []
    while data:
        flags, size = struct.unpack(">BI", data[:5])
        frames.append((flags, json.loads(data[5 : 5 + size])))
        data = data[5 + size :]
    assert [f for f, _ in frames] == [0, 0, 0, 2] and frames[-1][1] == {}
    frames_of = post(
        http_url,
        "LatentService/Interpolate",
        {
            "model": "mnist-vae",
            "start": {"latent": {"values": [0.0] * 16}},
            "end": {"latent": {"values": [1.0] * 16}},
            "steps": 4,
        },
    )
    assert len(frames_of.text.strip().split("\n")) == 4
    refused = post(http_url, "WordService/ExportWords", {"model": "minilm-static", "batchSize": 10**6})
    assert refused.status_code == 400 and refused.json()["reason"] == "LIMIT_EXCEEDED"


def test_openapi_describes_every_reachable_rpc(http_url: str) -> None:
    spec = httpx.get(f"{http_url}/openapi.json").json()
    reachable = {p for p, m in api_methods().items() if not m.client_streaming}
    assert {p for p in spec["paths"] if p.startswith(("/embedsvc.", "/grpc."))} == reachable
    # The other dialects' paths (tests/transport/http/), nothing else.
    dialects = {
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model}",
        "/embed",
        "/rerank",
        "/tokenize",
        "/info",
        "/health",
    }
    assert set(spec["paths"]) - reachable == dialects
    arithmetic = spec["paths"]["/embedsvc.v1.ArithmeticService/Arithmetic"]["post"]
    ref = arithmetic["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    props = spec["components"]["schemas"][ref]["properties"]
    assert {"model", "expressions", "topN", "method"} <= set(props)
    assert props["method"]["enum"][1] == "METHOD_COSADD"
    assert httpx.get(f"{http_url}/", follow_redirects=False).headers["location"] == "/explorer/"
    assert "embedsvc explorer" in httpx.get(f"{http_url}/explorer/").text


def test_keys_tls_and_cors_apply_over_http(make_server) -> None:
    reader = "r-key-0123456789abcdef"
    with make_server(
        embedded_models=True,
        models=(),
        http_port=0,
        http_cors_origins=("https://app.example",),
        auth=AuthSettings(enabled=True, keys=(ApiKey("reader", Role.READ, key_hash(reader)),)),
    ) as (srv, _target):
        assert srv.http is not None
        url = f"http://127.0.0.1:{srv.http.port}"
        body = {"model": "minilm-static", "words": ["king"]}
        anonymous = post(url, "WordService/EmbedWords", body)
        assert anonymous.status_code == 401 and anonymous.json()["reason"] == "UNAUTHENTICATED"
        # The next step in HTTP's words: a header (the hint's id is in the metadata for other clients to word).
        assert anonymous.json()["metadata"]["hint"] == "send-api-key" and "header" in anonymous.json()["message"]
        ok = post(url, "WordService/EmbedWords", body, headers={"authorization": f"Bearer {reader}"})
        assert ok.status_code == 200 and len(ok.json()["vectors"][0]["values"]) == 256
        denied = post(
            url,
            "CollectionService/CreateCollection",
            {"name": "x", "dimension": 2},
            headers={"authorization": f"Bearer {reader}"},
        )
        assert denied.status_code == 403 and denied.json()["reason"] == "PERMISSION_DENIED"
        preflight = httpx.options(
            f"{url}/embedsvc.v1.WordService/EmbedWords",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(
            f"{url}/embedsvc.v1.WordService/EmbedWords",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_grpc_and_http_share_admission_and_metrics_paths(http_url: str, target: str) -> None:
    """A call over HTTP is a gRPC call inside: the gRPC status of the same bad request matches."""
    request = arithmetic_pb2.ArithmeticRequest(model="minilm-static")
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            "/embedsvc.v1.ArithmeticService/Arithmetic",
            request_serializer=arithmetic_pb2.ArithmeticRequest.SerializeToString,
            response_deserializer=arithmetic_pb2.ArithmeticResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub(request, timeout=30)
    http = post(http_url, "ArithmeticService/Arithmetic", json_format.MessageToDict(request))
    assert refused.value.code().name.lower() == http.json()["code"]
    assert refused.value.details() == http.json()["message"]
    assert words_pb2.DESCRIPTOR.services_by_name["WordService"].methods_by_name["ExportWords"].server_streaming
