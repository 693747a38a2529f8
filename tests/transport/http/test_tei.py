"""text-embeddings-inference's API against a live server: TEI's documented requests (docs/source/en/quick_tour.md and
the examples of its openapi.json) with plain HTTP calls and with huggingface_hub's InferenceClient (the client TEI's
docs recommend), answers equal to EmbedTexts and TokenizeTexts, TEI's error format and statuses, keys and TLS."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient

from embedsvc.client import Client, EmbedsvcClientError
from embedsvc.transport.http.tei import TeiError, ranks
from embedsvc.v1 import text_pb2
from tests.transport.http.conftest import READER, Secure


def post(url: str, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120, **kwargs)  # type: ignore[arg-type]


def error(answer: httpx.Response) -> tuple[int, str]:
    body = answer.json()
    assert set(body) == {"error", "error_type"} and body["error"], body
    return answer.status_code, body["error_type"]


def test_embed_answers_teis_documented_requests(http_url: str, client: Client) -> None:
    one = post(http_url, "/embed", {"inputs": "What is Deep Learning?"})
    assert one.status_code == 200 and one.headers["content-type"] == "application/json"
    want = client.embed_texts("minilm", ["What is Deep Learning?"], normalize=True)
    np.testing.assert_allclose(np.array(one.json(), dtype=np.float32), want.vectors, atol=1e-6)
    assert int(one.headers["x-compute-tokens"]) == want.token_counts[0]
    assert int(one.headers["x-compute-characters"]) == len("What is Deep Learning?")

    batch = ["Today is a nice day", "I like you"]
    two = post(http_url, "/embed", {"inputs": batch})
    np.testing.assert_allclose(
        np.array(two.json()), client.embed_texts("minilm", batch, normalize=True).vectors, atol=1e-6
    )
    raw = post(http_url, "/embed", {"inputs": batch, "normalize": False, "truncate": None, "prompt_name": None})
    np.testing.assert_allclose(np.array(raw.json()), client.embed_texts("minilm", batch).vectors, atol=1e-6)


def test_huggingface_hub_inference_client(http_url: str, client: Client) -> None:
    hub = InferenceClient(model=f"{http_url}/embed")
    got = hub.feature_extraction("What is deep learning?")
    want = client.embed_texts("minilm", ["What is deep learning?"], normalize=True).vectors
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32).reshape(1, -1), want, atol=1e-6)

    long_text = "the dog ran in the park " * 40 + "rain fell on the cold sea " * 40
    left = hub.feature_extraction(long_text, truncate=True, truncation_direction="left")
    want_left = client.embed_texts("minilm", [long_text], normalize=True, truncation_direction="left").vectors
    np.testing.assert_allclose(np.asarray(left, dtype=np.float32).reshape(1, -1), want_left, atol=1e-6)


def test_long_inputs_are_refused_unless_truncate(http_url: str) -> None:
    long_text = "word " * 400
    assert error(post(http_url, "/embed", {"inputs": long_text})) == (422, "Validation")
    assert post(http_url, "/embed", {"inputs": long_text, "truncate": True}).status_code == 200
    right = post(http_url, "/embed", {"inputs": long_text + " end", "truncate": True, "truncation_direction": "Right"})
    assert right.status_code == 200


def test_embed_refusals_have_teis_types(http_url: str) -> None:
    assert error(post(http_url, "/embed", {"inputs": []})) == (400, "Empty")
    assert error(post(http_url, "/embed", {"inputs": "x", "prompt_name": "query"})) == (422, "Validation")
    assert error(post(http_url, "/embed", {"inputs": "x", "dimensions": 128})) == (422, "Validation")
    assert error(post(http_url, "/embed", {"inputs": "x", "dimensions": 0})) == (422, "Validation")
    assert error(post(http_url, "/embed", {"inputs": [101, 2023, 102]})) == (422, "Validation")
    assert error(post(http_url, "/embed", {"inputs": "x", "truncation_direction": "middle"})) == (422, "Validation")
    assert error(post(http_url, "/embed", {"inputs": "   "})) == (422, "Validation")
    garbage = httpx.post(f"{http_url}/embed", content=b"{nope", timeout=60)
    assert error(garbage) == (422, "Validation")


def test_tokenize_gives_teis_tokens_with_byte_offsets(http_url: str, client: Client) -> None:
    answer = post(http_url, "/tokenize", {"inputs": "test"})
    assert answer.json() == [
        [
            {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None},
            {"id": 3231, "text": "test", "special": False, "start": 0, "stop": 4},
            {"id": 102, "text": "[SEP]", "special": True, "start": None, "stop": None},
        ]
    ]
    text = "Déjà vu, naïve café"
    (tokens,) = post(http_url, "/tokenize", {"inputs": [text], "add_special_tokens": False}).json()
    ours = client.tokenize_texts("minilm", [text], add_special_tokens=False)[0]
    assert [t["id"] for t in tokens] == [t.id for t in ours]
    encoded = text.encode("utf-8")
    for token in tokens:
        assert not token["special"] and encoded[token["start"] : token["stop"]].decode() == token["text"]
    assert tokens[0] == {"id": ours[0].id, "text": "Dé", "special": False, "start": 0, "stop": 3}  # "de", "##ja"
    assert error(post(http_url, "/tokenize", {"inputs": []})) == (400, "Empty")


def test_rerank_of_a_model_that_is_not_a_cross_encoder_is_teis_424(http_url: str) -> None:
    # tei_rerank_model unset: /rerank goes to tei_model (minilm), which Rerank refuses as MODEL_KIND_MISMATCH; TEI
    # answers an embedding model's /rerank so. tests/transport/http/test_tei_rerank.py serves a cross-encoder.
    documented = {"query": "What is Deep Learning?", "texts": ["Deep Learning is not...", "Deep learning is..."]}
    answer = post(http_url, "/rerank", {**documented, "raw_scores": False})
    assert error(answer) == (424, "Backend") and "not a re-ranker model" in answer.json()["error"]
    assert error(post(http_url, "/rerank", {"query": "q", "texts": []})) == (400, "Empty")
    assert error(post(http_url, "/rerank", {"query": 1, "texts": ["a"]})) == (422, "Validation")


def test_ranks_are_teis_shape_in_reranks_order() -> None:
    results = [text_pb2.RerankResult(index=1, score=0.9, text="b"), text_pb2.RerankResult(index=0, score=0.1, text="a")]
    assert ranks(results, False) == [{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}]
    assert ranks(results, True)[0] == {"index": 1, "text": "b", "score": 0.9}
    with pytest.raises(TeiError):
        ranks([text_pb2.RerankResult(index=0, score=float("nan"))], False)


def test_info_and_health(http_url: str, client: Client) -> None:
    info = httpx.get(f"{http_url}/info").json()
    model = client.get_model("minilm")
    assert info["model_id"] == info["served_model_name"] == "minilm"
    assert info["model_sha"] == model.version.removeprefix("sha256:")
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["model_dtype"] == "float32"
    assert info["max_input_length"] == 256 and info["auto_truncate"] is False
    assert info["max_client_batch_size"] == client.get_server_info().limits["max_texts_per_request"]
    assert info["version"] == client.get_server_info().server_version
    health = httpx.get(f"{http_url}/health")
    assert health.status_code == 200 and health.content == b""


def test_keys_and_tls(secure: Secure) -> None:
    key = {"authorization": f"Bearer {READER}"}
    verify = {"verify": secure.context}
    anonymous = post(secure.url, "/embed", {"inputs": "x"}, **verify)
    assert error(anonymous) == (401, "Unauthorized")
    wrong = post(
        secure.url, "/embed", {"inputs": "x"}, headers={"authorization": "Bearer nope-0123456789abcd"}, **verify
    )
    assert wrong.status_code == 401
    answer = post(secure.url, "/embed", {"inputs": ["x", "y"]}, headers=key, **verify)
    with secure.client() as grpc_client:
        want = grpc_client.embed_texts("minilm", ["x", "y"], normalize=True).vectors
    np.testing.assert_allclose(np.array(answer.json()), want, atol=1e-6)
    assert httpx.get(f"{secure.url}/health", **verify).status_code == 200  # TEI's health needs no key
    assert httpx.get(f"{secure.url}/info", **verify).status_code == 401
    assert httpx.get(f"{secure.url}/info", headers=key, **verify).json()["model_id"] == "minilm"


def test_openapi_describes_the_tei_routes(http_url: str) -> None:
    spec = httpx.get(f"{http_url}/openapi.json").json()
    assert {"/embed", "/rerank", "/tokenize", "/info", "/health"} <= set(spec["paths"])
    assert spec["paths"]["/embed"]["post"]["responses"]["424"]
    properties = spec["components"]["schemas"]["tei.EmbedRequest"]["properties"]
    assert {"inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"} == set(properties)


def test_tokenize_answers_that_would_not_fit_a_message_are_refused(secure: Secure) -> None:
    texts = ["a " * 15_000] * 28  # 840 kB asked (under the 1 MiB limit); 420,000 tokens would not fit in the answer
    with secure.client() as grpc_client:
        with pytest.raises(EmbedsvcClientError) as refused:
            grpc_client.tokenize_texts("minilm", texts)
        assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LIMIT_EXCEEDED")
        assert len(grpc_client.tokenize_texts("minilm", texts[:1])[0]) == 15_002
    key = {"authorization": f"Bearer {READER}"}
    answer = post(secure.url, "/tokenize", {"inputs": texts}, headers=key, verify=secure.context)
    assert error(answer) == (422, "Validation")
