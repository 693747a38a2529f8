"""OpenAI's embeddings API against a live server, through the real clients: the `openai` package (float and base64,
dimensions, aliases, errors as its exception classes), LangChain's OpenAIEmbeddings and LlamaIndex's
OpenAILikeEmbedding, each equal to EmbedTexts; with keys and TLS; the error table; the OpenAPI description."""

from __future__ import annotations

import base64

import grpc
import httpx
import httpx2
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from llama_index.embeddings.openai_like import OpenAILikeEmbedding

from embedsvc.client import Client
from embedsvc.errors import Reason
from embedsvc.transport.http.openai import failure_response
from embedsvc.transport.http.upstream import Failure
from tests.transport.http.conftest import MESSAGE_LIMIT, READER, SLOW, Secure

SENTENCES = [
    "The cat sits outside.",
    "A man is playing the guitar on a street corner while people walk past.",
    "Interest rates rose for the third month in a row.",
    "Déjà vu: the same dream again, in French and in English.",
    "I love pizza! 🍕",
]


def reference(client: Client, model: str = "minilm", **options: object) -> np.ndarray:
    """What the gRPC API gives: EmbedTexts, unit-normalised as OpenAI's vectors are."""
    return client.embed_texts(model, SENTENCES, normalize=True, **options).vectors  # type: ignore[arg-type]


@pytest.fixture
def oai(http_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{http_url}/v1", api_key="unused", max_retries=0)


def test_openai_client_float_and_base64_equal_embed_texts(oai: openai.OpenAI, client: Client) -> None:
    want = reference(client)
    floats = oai.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float")
    got = np.array([d.embedding for d in floats.data], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [d.index for d in floats.data] == list(range(len(SENTENCES)))
    assert floats.model == "minilm" and floats.object == "list" and floats.data[0].object == "embedding"
    counts = client.embed_texts("minilm", SENTENCES).token_counts
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(counts)

    # The client's default: it asks for base64 and decodes the little-endian float32 bytes itself.
    default = oai.embeddings.create(model="minilm", input=SENTENCES)
    np.testing.assert_allclose(np.array([d.embedding for d in default.data], dtype=np.float32), want, atol=1e-6)
    explicit = oai.embeddings.create(model="minilm", input=SENTENCES[:1], encoding_format="base64")
    raw = np.frombuffer(base64.b64decode(explicit.data[0].embedding), "<f4")  # type: ignore[arg-type]
    np.testing.assert_allclose(raw, want[0], atol=1e-6)

    single = oai.embeddings.create(model="minilm", input=SENTENCES[1])
    np.testing.assert_allclose(single.data[0].embedding, want[1], atol=1e-6)


def test_long_texts_are_truncated_and_usage_counts_what_the_model_read(oai: openai.OpenAI, client: Client) -> None:
    text = "word " * 400
    answer = oai.embeddings.create(model="minilm", input=[text, "short"], encoding_format="float")
    want = client.embed_texts("minilm", [text, "short"], normalize=True)
    np.testing.assert_allclose(np.array([d.embedding for d in answer.data]), want.vectors, atol=1e-6)
    assert want.token_counts[0] > 256 and answer.usage.prompt_tokens == 256 + want.token_counts[1]


def test_langchain_openai_embeddings_equal_embed_texts(http_url: str, client: Client) -> None:
    embeddings = OpenAIEmbeddings(
        model="minilm",
        base_url=f"{http_url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,  # type: ignore[arg-type]
    )
    want = reference(client)
    np.testing.assert_allclose(np.array(embeddings.embed_documents(SENTENCES)), want, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(SENTENCES[0]), want[0], atol=1e-6)


def test_llama_index_openai_like_embedding_equals_embed_texts(http_url: str, client: Client) -> None:
    embedding = OpenAILikeEmbedding(model_name="minilm", api_base=f"{http_url}/v1", api_key="unused", max_retries=0)
    want = reference(client)
    np.testing.assert_allclose(np.array(embedding.get_text_embedding_batch(SENTENCES)), want, atol=1e-6)
    np.testing.assert_allclose(embedding.get_query_embedding(SENTENCES[2]), want[2], atol=1e-6)


def test_models_list_the_ready_text_models(oai: openai.OpenAI, client: Client) -> None:
    listed = {m.id for m in oai.models.list()}
    texts = {m.name for m in client.list_models() if m.embeds_texts}
    assert listed == texts and {"minilm", "minilm-static", "lee-mean"} <= listed and "glove" not in listed
    one = oai.models.retrieve("minilm")
    assert (one.id, one.object, one.owned_by) == ("minilm", "model", "embedsvc") and one.created > 0
    with pytest.raises(openai.NotFoundError) as missing:
        oai.models.retrieve("glove")  # a word model: not a text model OpenAI's API could use
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


def body(error: openai.APIStatusError) -> dict[str, object]:
    assert isinstance(error.body, dict)
    return error.body


def test_errors_have_openais_shape_and_status(oai: openai.OpenAI, http_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="no-such-model", input="x")
    assert body(missing.value)["code"] == "model_not_found" and body(missing.value)["param"] == "model"
    assert body(missing.value)["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as kind:
        oai.embeddings.create(model="glove", input="x")
    assert body(kind.value)["code"] == "model_kind_mismatch"

    with pytest.raises(openai.BadRequestError) as ids:
        oai.embeddings.create(model="minilm", input=[[101, 2023, 102]])
    assert body(ids.value)["code"] == "token_ids_not_supported" and body(ids.value)["param"] == "input"

    with pytest.raises(openai.BadRequestError) as blank:
        oai.embeddings.create(model="minilm", input=["fine", "   "])
    assert body(blank.value)["param"] == "input[1]" and body(blank.value)["code"] == "invalid_value"

    with pytest.raises(openai.BadRequestError) as dims:
        oai.embeddings.create(model="minilm", input="x", dimensions=128)
    assert body(dims.value)["code"] == "dimensions_not_supported" and body(dims.value)["param"] == "dimensions"

    for bad in ({"model": "minilm", "input": []}, {"model": "minilm"}, {"input": "x"}):
        answer = httpx.post(f"{http_url}/v1/embeddings", json=bad, timeout=60)
        assert answer.status_code == 400 and set(answer.json()["error"]) == {"message", "type", "param", "code"}
    wrong = httpx.post(f"{http_url}/v1/embeddings", json={"model": "minilm", "input": "x", "encoding_format": "int"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "encoding_format"
    garbage = httpx.post(f"{http_url}/v1/embeddings", content=b"{not json", timeout=60)
    assert garbage.status_code == 400 and "JSON" in garbage.json()["error"]["message"]
    # Unknown fields are ignored (clients written for other servers send some), and `user` is accepted.
    extra = {"model": "minilm", "input": "x", "user": "u-1", "truncate": "END", "encoding_format": "float"}
    assert httpx.post(f"{http_url}/v1/embeddings", json=extra, timeout=60).status_code == 200


@pytest.mark.parametrize(
    ("code", "reason", "status", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_VALUE, 400, "invalid_request_error"),
        (grpc.StatusCode.UNAUTHENTICATED, Reason.UNAUTHENTICATED, 401, "invalid_request_error"),
        (grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED, 403, "invalid_request_error"),
        (grpc.StatusCode.NOT_FOUND, Reason.MODEL_NOT_FOUND, 404, "invalid_request_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.LIMIT_EXCEEDED, 413, "invalid_request_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.OVERLOADED, 429, "requests"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED, 429, "requests"),
        (grpc.StatusCode.INTERNAL, Reason.INTERNAL, 500, "server_error"),
        (grpc.StatusCode.UNAVAILABLE, Reason.MODEL_NOT_READY, 503, "server_error"),
    ],
)
def test_error_table(code: grpc.StatusCode, reason: str, status: int, kind: str) -> None:
    retry = {"retry-after": "1"} if status in (429, 503) else {}
    response = failure_response(Failure(code, "why", reason, {"field": "texts[2]"}, headers=retry))
    import json

    error = json.loads(bytes(response.body))["error"]
    assert response.status_code == status and error["type"] == kind and error["message"] == "why"
    assert error["param"] == "input[2]" and response.headers.get("retry-after") == retry.get("retry-after")


# ---- keys, TLS, aliases, dimensions, limits ------------------------------------------------------------------------


def secure_client(secure: Secure, key: str = READER, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{secure.url}/v1",
        api_key=key,
        max_retries=retries,
        http_client=httpx2.Client(verify=secure.context),
    )


def test_keys_and_tls(secure: Secure) -> None:
    with secure.client() as grpc_client:
        want = reference(grpc_client)
    answer = secure_client(secure).embeddings.create(model="minilm", input=SENTENCES)
    np.testing.assert_allclose(np.array([d.embedding for d in answer.data]), want, atol=1e-6)
    with pytest.raises(openai.AuthenticationError) as bad_key:
        secure_client(secure, "not-a-key-0123456789").embeddings.create(model="minilm", input="x")
    assert body(bad_key.value)["code"] == "invalid_api_key"
    anonymous = httpx.post(f"{secure.url}/v1/embeddings", json={"model": "minilm", "input": "x"}, verify=secure.context)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        secure_client(secure, "not-a-key-0123456789").models.list()
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
        httpx.post(secure.url.replace("https", "http") + "/v1/embeddings", json={"model": "minilm", "input": "x"})


def test_langchain_and_llama_index_with_keys_and_tls(secure: Secure) -> None:
    with secure.client() as grpc_client:
        want = reference(grpc_client)
    langchain = OpenAIEmbeddings(
        model="minilm",
        base_url=f"{secure.url}/v1",
        api_key=READER,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        http_client=httpx2.Client(verify=secure.context),
    )
    np.testing.assert_allclose(np.array(langchain.embed_documents(SENTENCES)), want, atol=1e-6)
    llama = OpenAILikeEmbedding(
        model_name="minilm",
        api_base=f"{secure.url}/v1",
        api_key=READER,
        max_retries=0,
        http_client=httpx2.Client(verify=secure.context),  # type: ignore[arg-type]
    )
    np.testing.assert_allclose(np.array(llama.get_text_embedding_batch(SENTENCES)), want, atol=1e-6)


def test_aliases_and_dimensions(secure: Secure) -> None:
    oai = secure_client(secure)
    with secure.client() as grpc_client:
        want = reference(grpc_client)
        want_128 = reference(grpc_client, "mrl", dimensions=128)
    aliased = oai.embeddings.create(model="text-embedding-3-small", input=SENTENCES)
    assert aliased.model == "text-embedding-3-small"
    np.testing.assert_allclose(np.array([d.embedding for d in aliased.data]), want, atol=1e-6)
    assert {"minilm", "mrl", "text-embedding-3-small"} <= {m.id for m in oai.models.list()}
    assert oai.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"

    for encoding in ("float", "base64"):
        shortened = oai.embeddings.create(model="mrl", input=SENTENCES, dimensions=128, encoding_format=encoding)  # type: ignore[arg-type]
        rows = [
            np.frombuffer(base64.b64decode(d.embedding), "<f4") if encoding == "base64" else d.embedding  # type: ignore[arg-type]
            for d in shortened.data
        ]
        np.testing.assert_allclose(np.array(rows, dtype=np.float32), want_128, atol=1e-6)
    with pytest.raises(openai.BadRequestError) as too_few:
        oai.embeddings.create(model="mrl", input="x", dimensions=64)
    assert body(too_few.value)["code"] == "dimensions_not_supported"


def test_limits_over_http(secure: Secure) -> None:
    big = {"model": "minilm", "input": ["x" * 1000] * (MESSAGE_LIMIT // 1000 + 10)}
    headers = {"authorization": f"Bearer {READER}"}
    answer = httpx.post(f"{secure.url}/v1/embeddings", json=big, headers=headers, verify=secure.context, timeout=60)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "limit_exceeded"
    # A key over its rate: 429 with Retry-After, which the openai client reads (here: told not to retry).
    slow = secure_client(secure, SLOW)
    slow.embeddings.create(model="minilm", input="the one call this key's bucket holds")
    with pytest.raises(openai.RateLimitError) as limited:
        slow.embeddings.create(model="minilm", input="one too many")
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert body(limited.value)["code"] == "rate_limit_exceeded"


def test_openapi_describes_the_openai_routes(http_url: str) -> None:
    spec = httpx.get(f"{http_url}/openapi.json").json()
    assert {"/v1/embeddings", "/v1/models", "/v1/models/{model}"} <= set(spec["paths"])
    post = spec["paths"]["/v1/embeddings"]["post"]
    assert {"400", "401", "403", "404", "413", "429", "500", "503"} <= set(post["responses"])
    request = spec["components"]["schemas"]["openai.EmbeddingsRequest"]
    assert {"input", "model", "dimensions", "encoding_format", "user"} == set(request["properties"])
