"""The HTTP gateway speaks the Connect protocol as a real Connect client expects: the `connectrpc` package's client
(JSON and binary codecs, gzip and identity requests) calls the live server's unary RPCs and server streams and reads
its errors with their details; the code table is the protocol's; and raw requests check what that client does not
send (unsupported encodings, decompressed sizes, stream framing)."""

from __future__ import annotations

import gzip
import json
import struct

import grpc
import httpx
import pytest
from connectrpc.client import ConnectClientSync
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from google.rpc import error_details_pb2

from embedsvc.client import Client
from embedsvc.transport.http import api_methods
from embedsvc.transport.http.connect import CODES, error_json
from embedsvc.transport.http.upstream import Failure
from embedsvc.v1 import arithmetic_pb2, words_pb2

# The protocol's table (connectrpc.com/docs/protocol, "Error Codes"): gRPC code -> Connect code and HTTP status.
SPEC = {
    "CANCELLED": ("canceled", 499),
    "UNKNOWN": ("unknown", 500),
    "INVALID_ARGUMENT": ("invalid_argument", 400),
    "DEADLINE_EXCEEDED": ("deadline_exceeded", 504),
    "NOT_FOUND": ("not_found", 404),
    "ALREADY_EXISTS": ("already_exists", 409),
    "PERMISSION_DENIED": ("permission_denied", 403),
    "RESOURCE_EXHAUSTED": ("resource_exhausted", 429),
    "FAILED_PRECONDITION": ("failed_precondition", 400),
    "ABORTED": ("aborted", 409),
    "OUT_OF_RANGE": ("out_of_range", 400),
    "UNIMPLEMENTED": ("unimplemented", 501),
    "INTERNAL": ("internal", 500),
    "UNAVAILABLE": ("unavailable", 503),
    "DATA_LOSS": ("data_loss", 500),
    "UNAUTHENTICATED": ("unauthenticated", 401),
}
CODECS = {"json": google_protobuf_json_codec, "proto": google_protobuf_binary_codec}


def method_info(path: str) -> MethodInfo:
    """What connectrpc's generated client holds for one RPC, built from our descriptors."""
    method = api_methods()[path]
    kind = StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY
    if method.client_streaming:
        kind = StreamType.BIDI_STREAM if method.server_streaming else StreamType.CLIENT_STREAM
    service, name = path.strip("/").split("/")
    return MethodInfo(
        name=name,
        service_name=service,
        input=method.request,
        output=method.response,
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=kind,
    )


@pytest.fixture(params=["json", "proto"])
def connect(request: pytest.FixtureRequest, http_url: str):
    """A real Connect client for each codec; it sends gzip-compressed requests (its default)."""
    with ConnectClientSync(http_url, codec=CODECS[request.param](), timeout_ms=60_000) as client:
        yield client


def test_the_code_table_is_the_protocols():
    assert {code.name: CODES[code] for code in CODES} == SPEC
    assert set(CODES) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    for name, _status in CODES.values():
        Code(name)  # the Connect client knows every code we send
    assert error_json(Failure(grpc.StatusCode.CANCELLED, "gone"))["code"] == "canceled"


def test_unary_calls_equal_grpc(connect: ConnectClientSync, client: Client) -> None:
    request = arithmetic_pb2.ArithmeticRequest(
        model="minilm-static", expressions=[arithmetic_pb2.Expression(text="king - man + woman")], top_n=5
    )
    over_http = connect.execute_unary(request=request, method=method_info("/embedsvc.v1.ArithmeticService/Arithmetic"))
    over_grpc = client._calls.arith.Arithmetic(request, timeout=60)
    assert over_http == over_grpc and over_http.results[0].hits[0].word == "queen"
    pairs = words_pb2.SimilarityRequest(model="minilm-static", pairs=[words_pb2.WordPair(first="tea", second="coffee")])
    similarity = connect.execute_unary(request=pairs, method=method_info("/embedsvc.v1.WordService/Similarity"))
    assert similarity.similarities == pytest.approx(client.similarity("minilm-static", [("tea", "coffee")]))


def test_uncompressed_requests(http_url: str) -> None:
    with ConnectClientSync(http_url, codec=google_protobuf_json_codec(), send_compression=None) as connect:
        request = words_pb2.EmbedWordsRequest(model="minilm-static", words=["tea"])
        answer = connect.execute_unary(request=request, method=method_info("/embedsvc.v1.WordService/EmbedWords"))
    assert len(answer.vectors[0].values) == 256


def test_server_streams(connect: ConnectClientSync) -> None:
    request = words_pb2.ExportWordsRequest(model="minilm-static", limit=5, batch_size=2)
    chunks = list(
        connect.execute_server_stream(request=request, method=method_info("/embedsvc.v1.WordService/ExportWords"))
    )
    assert [len(c.words) for c in chunks] == [2, 2, 1]
    assert [c.start for c in chunks] == [0, 2, 4]


def test_errors_carry_code_message_and_details(connect: ConnectClientSync) -> None:
    request = arithmetic_pb2.ArithmeticRequest(
        model="minilm-static", expressions=[arithmetic_pb2.Expression(text="qqqzzzq")]
    )
    with pytest.raises(ConnectError) as failed:
        connect.execute_unary(request=request, method=method_info("/embedsvc.v1.ArithmeticService/Arithmetic"))
    assert failed.value.code is Code.INVALID_ARGUMENT and "qqqzzzq" in failed.value.message
    details = {d.type_name: d.message_bytes for d in failed.value.details}
    info = error_details_pb2.ErrorInfo.FromString(details["google.rpc.ErrorInfo"])
    assert info.reason == "OUT_OF_VOCABULARY" and info.metadata["field"] == "expressions[0].terms[0]"
    assert error_details_pb2.BadRequest.FromString(details["google.rpc.BadRequest"]).field_violations

    missing = words_pb2.EmbedWordsRequest(model="no-such-model", words=["a"])
    with pytest.raises(ConnectError) as not_found:
        connect.execute_unary(request=missing, method=method_info("/embedsvc.v1.WordService/EmbedWords"))
    assert not_found.value.code is Code.NOT_FOUND


def test_stream_errors_arrive_in_the_end_of_stream(connect: ConnectClientSync) -> None:
    export = method_info("/embedsvc.v1.WordService/ExportWords")
    with pytest.raises(ConnectError) as before_any:
        list(connect.execute_server_stream(request=words_pb2.ExportWordsRequest(model="no-such-model"), method=export))
    assert before_any.value.code is Code.NOT_FOUND
    details = {d.type_name: d.message_bytes for d in before_any.value.details}
    assert error_details_pb2.ErrorInfo.FromString(details["google.rpc.ErrorInfo"]).reason == "MODEL_NOT_FOUND"


def test_client_streams_are_unimplemented(connect: ConnectClientSync) -> None:
    method = method_info("/embedsvc.v1.CollectionService/UpsertStream")
    with pytest.raises(ConnectError) as failed:
        connect.execute_client_stream(request=iter(()), method=method)
    assert failed.value.code is Code.UNIMPLEMENTED


def test_encodings_and_framing(http_url: str) -> None:
    url = f"{http_url}/embedsvc.v1.WordService"
    body = json.dumps({"model": "minilm-static", "words": ["tea"]}).encode()
    zipped = httpx.post(
        f"{url}/EmbedWords",
        content=gzip.compress(body),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert zipped.status_code == 200 and len(zipped.json()["vectors"][0]["values"]) == 256
    brotli = httpx.post(
        f"{url}/EmbedWords", content=body, headers={"content-type": "application/json", "content-encoding": "br"}
    )
    assert brotli.status_code == 501 and brotli.json()["code"] == "unimplemented" and "gzip" in brotli.json()["message"]
    bomb = gzip.compress(b" " * (64 * 1024 * 1024 + 1))
    inflated = httpx.post(
        f"{url}/EmbedWords", content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert inflated.status_code == 429 and inflated.json()["reason"] == "LIMIT_EXCEEDED"
    version = httpx.post(
        f"{url}/EmbedWords", content=body, headers={"content-type": "application/json", "connect-protocol-version": "2"}
    )
    assert version.status_code == 400 and version.json()["code"] == "invalid_argument"
    assert (
        httpx.post(f"{url}/EmbedWords", content=body, headers={"content-type": "application/connect+json"}).status_code
        == 415
    )

    # A stream's errors arrive in its end-of-stream message, with status 200, also when the gateway refuses the call.
    request = json.dumps({"model": "minilm-static"}).encode()
    two = struct.pack(">BI", 0, len(request)) + request
    framed = httpx.post(f"{url}/ExportWords", content=two + two, headers={"content-type": "application/connect+json"})
    assert framed.status_code == 200 and framed.headers["content-type"] == "application/connect+json"
    flags, size = struct.unpack(">BI", framed.content[:5])
    assert flags == 2 and json.loads(framed.content[5 : 5 + size])["error"]["code"] == "invalid_argument"
