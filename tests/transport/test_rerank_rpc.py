"""TextService.Rerank through a real server hosting a small CrossEncoder built in code (on ONNX Runtime and on torch):
scores equal sentence-transformers' CrossEncoder.predict on the same weights, TEI's semantics, limits and bad input as
(code, reason), ModelInfo, batching under concurrency; over gRPC, HTTP (Connect), the sync and async clients and the
CLI."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.cross_encoders import CrossEncoderOptions
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.cli import main
from embedsvc.client import AsyncClient, Client, EmbedsvcClientError
from embedsvc.limits import Limits
from embedsvc.settings import Settings
from embedsvc.transport.server import create_server
from embedsvc.v1 import models_pb2
from tests.conftest import GENSIM_DATA

INVALID = grpc.StatusCode.INVALID_ARGUMENT
QUERY = "How did the bushfires near Sydney spread?"


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """Real news text: sentences of gensim's Lee corpus, and whole documents longer than the model reads."""
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for d in docs[:6] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4]
    return sentences[:20]


@pytest.fixture(scope="module")
def long_documents() -> list[str]:
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    return [d for d in docs if len(d.split()) > 150][:3]


@pytest.fixture(scope="module")
def reference(cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


@pytest.fixture(scope="module")
def rerank_server(cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        data_dir=tmp_path_factory.mktemp("rerank-server"),
        embedded_models=False,
        models=(
            ModelSpec("reranker", CrossEncoderOptions(cross_encoder_dir)),
            ModelSpec("reranker-torch", CrossEncoderOptions(cross_encoder_dir, engine="torch", max_batch_size=4)),
            ModelSpec("glove", WordVectorsOptions(WordVectorFormat.GLOVE, GENSIM_DATA / "test_glove.txt")),
            ModelSpec("lee", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, GENSIM_DATA / "lee_fasttext.vec")),
            ModelSpec("lee-mean", TextEncoderOptions(TextEncoderFormat.AVERAGED_WORDS, words="lee")),
        ),
        limits=Limits(max_rerank_texts=40, max_text_chars=5000),
        grace_period_s=2,
    )
    server, _ = create_server(settings)
    server.start()
    server.wait_until_ready(timeout=300)
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def target(rerank_server) -> str:
    return f"127.0.0.1:{rerank_server.port}"


@pytest.fixture
def client(target: str):
    with Client(target, timeout=60) as c:
        yield c


def err(call):
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value.code, info.value.reason


@pytest.mark.parametrize("model", ["reranker", "reranker-torch"])
def test_scores_equal_cross_encoder_predict(client, reference, documents, long_documents, model):
    got = client.rerank(model, QUERY, documents)
    want = reference.predict([(QUERY, d) for d in documents])  # the sigmoid: predict's default for one label
    assert sorted(r.index for r in got.results) == list(range(len(documents)))
    assert [r.score for r in got.results] == sorted((r.score for r in got.results), reverse=True)
    np.testing.assert_allclose([r.score for r in got.results], want[[r.index for r in got.results]], atol=1e-5)
    raw = client.rerank(model, QUERY, documents, raw_scores=True)
    logits = reference.predict([(QUERY, d) for d in documents], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose([r.score for r in raw.results], logits[[r.index for r in raw.results]], atol=1e-5)
    assert raw.token_counts == [len(reference.tokenizer(QUERY, d)["input_ids"]) for d in documents]
    assert got.max_seq_length == 128 and got.truncated == [] and all(r.text == "" for r in got.results)
    # Pairs longer than the model reads, truncated as predict truncates them.
    mixed = [documents[0], *long_documents]
    truncated = client.rerank(model, QUERY, mixed, truncate=True, return_text=True)
    assert truncated.truncated == [1, 2, 3]
    scores = dict((r.index, r.score) for r in truncated.results)
    want = reference.predict([(QUERY, d) for d in mixed])
    np.testing.assert_allclose([scores[i] for i in range(4)], want, atol=1e-5)
    assert all(r.text == mixed[r.index] for r in truncated.results)
    p = truncated.provenance
    assert p.model == model and p.method == "cross-encoder" and p.model_version == client.get_model(model).version
    assert p.parameters == {"raw_scores": "false", "truncate": "true", "top_n": "0", "max_seq_length": "128"}


def test_top_n_and_ties_in_request_order(client, documents):
    best = client.rerank("reranker", QUERY, documents, top_n=3)
    full = client.rerank("reranker", QUERY, documents)
    assert [(r.index, r.score) for r in best.results] == [(r.index, r.score) for r in full.results[:3]]
    twice = client.rerank("reranker", QUERY, [documents[1], documents[0], documents[1]])
    order = [r.index for r in twice.results]
    assert order.index(0) < order.index(2)  # equal texts score alike: request order


def test_bad_input_and_limits(client, documents, long_documents):
    with pytest.raises(EmbedsvcClientError) as info:
        client.rerank("reranker", QUERY, [documents[0], long_documents[0]])
    e = info.value
    assert (e.code, e.reason, e.field, e.metadata["limit"]) == (INVALID, "LIMIT_EXCEEDED", "texts[1]", "128")
    assert int(e.metadata["actual"]) > 128
    too_many = err(lambda: client.rerank("reranker", QUERY, ["a text"] * 41))
    assert too_many == (INVALID, "LIMIT_EXCEEDED")
    with pytest.raises(EmbedsvcClientError) as info:
        client.rerank("reranker", "q" * 5001, ["a text"])
    assert (info.value.reason, info.value.field, info.value.metadata["limit"]) == ("LIMIT_EXCEEDED", "query", "5000")
    assert err(lambda: client.rerank("reranker", "", ["a"])) == (INVALID, "INVALID_VALUE")
    assert err(lambda: client.rerank("reranker", QUERY, [])) == (INVALID, "MISSING_FIELD")
    assert err(lambda: client.rerank("reranker", QUERY, ["a", " "])) == (INVALID, "INVALID_VALUE")
    assert err(lambda: client.rerank("reranker", QUERY, ["a"], top_n=-2)) == (INVALID, "INVALID_VALUE")
    assert err(lambda: client.rerank("glove", QUERY, ["a"])) == (INVALID, "MODEL_KIND_MISMATCH")
    assert err(lambda: client.rerank("nope", QUERY, ["a"])) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
    assert err(lambda: client.embed_texts("reranker", ["a"])) == (INVALID, "MODEL_KIND_MISMATCH")


def test_model_info_says_which_models_rerank(client):
    info = client.get_model("reranker")
    assert info.kind == models_pb2.MODEL_KIND_CROSS_ENCODER and info.reranks and not info.embeds_texts
    assert (info.max_seq_length, info.engine, info.format, info.dimension) == (128, "onnx", "sentence-transformers", 0)
    assert client.get_model("reranker-torch").engine == "torch"
    assert not client.get_model("glove").reranks


def test_concurrent_callers_get_their_own_results_in_merged_batches(target, rerank_server, documents):
    with Client(target, timeout=60) as c:
        want = {n: c.rerank("reranker-torch", documents[n], documents[:6]) for n in range(12)}
    batcher = rerank_server.registry.batchers()["reranker-torch"]
    before = batcher.stats.batches

    def one(n: int):
        with Client(target, timeout=60) as c:
            return c.rerank("reranker-torch", documents[n], documents[:6])

    with ThreadPoolExecutor(12) as pool:
        got = dict(zip(range(12), pool.map(one, range(12)), strict=True))
    for n in range(12):
        assert [r.index for r in got[n].results] == [r.index for r in want[n].results]
        np.testing.assert_allclose([r.score for r in got[n].results], [r.score for r in want[n].results], atol=1e-6)
    assert batcher.stats.batches - before >= 72 / 4  # max_batch_size 4: 72 pairs in batches of at most 4


def test_http_connect_json_equals_grpc(rerank_server, client, documents):
    assert rerank_server.http is not None
    url = f"http://127.0.0.1:{rerank_server.http.port}/embedsvc.v1.TextService/Rerank"
    body = {"model": "reranker", "query": QUERY, "texts": documents[:5], "topN": 2, "returnText": True}
    got = httpx.post(url, json=body, timeout=60)
    assert got.status_code == 200, got.text
    want = client.rerank("reranker", QUERY, documents[:5], top_n=2, return_text=True)
    results = got.json()["results"]
    assert [(r.get("index", 0), r["text"]) for r in results] == [(r.index, r.text) for r in want.results]
    np.testing.assert_allclose([r["score"] for r in results], [r.score for r in want.results], atol=1e-9)
    refused = httpx.post(url, json={"model": "reranker", "query": QUERY, "texts": ["a"] * 41}, timeout=60)
    assert refused.status_code == 400 and refused.json()["reason"] == "LIMIT_EXCEEDED"


def test_async_client_equals_the_sync_client(target, client, documents):
    async def main_():
        async with AsyncClient(target) as c:
            return await c.rerank("reranker", QUERY, documents[:8], top_n=4, raw_scores=True)

    got = asyncio.run(main_())
    want = client.rerank("reranker", QUERY, documents[:8], top_n=4, raw_scores=True)
    assert got.results == want.results and got.token_counts == want.token_counts


def test_cli_rerank(capsys, target, documents, tmp_path):
    code = main(["--target", target, "rerank", "reranker", QUERY, documents[0], documents[1], "--json"])
    out, _ = capsys.readouterr()
    payload = json.loads(out)
    assert code == 0 and sorted(r["index"] for r in payload["results"]) == [0, 1]
    assert payload["results"][0]["text"] == documents[payload["results"][0]["index"]]
    assert payload["provenance"]["method"] == "cross-encoder" and payload["max_seq_length"] == 128
    listing = tmp_path / "texts.txt"
    listing.write_text("\n".join(documents[:5]) + "\n\n", encoding="utf-8")
    code = main(["--target", target, "rerank", "reranker", QUERY, "--file", str(listing), "--top-n", "2"])
    out, _ = capsys.readouterr()
    assert code == 0 and len(out.splitlines()) == 2 and re.match(r"^0\.\d{4}  \[\d\] ", out)
    code = main(["--target", target, "models"])
    out, _ = capsys.readouterr()
    assert re.search(r"^reranker\s+ready\s+pairs\s+rerank\s+max 128", out, re.M), out
    code = main(["--target", target, "rerank", "reranker", QUERY])
    _, err_ = capsys.readouterr()
    assert code == 1 and "no texts" in err_


# ---- the rerank stage of Search, with this kind -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lee_collection(client_module) -> tuple[str, dict[str, str]]:
    """Lee corpus sentences in a collection bound to a text model (averaged fastText words): what the stage reranks."""
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for d in docs[:40] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4][:150]
    texts = {f"s{n}": s for n, s in enumerate(sentences)}
    client_module.create_collection("lee", metric="cosine", model="lee-mean")
    client_module.upsert("lee", list(texts), inputs=list(texts.values()))
    return "lee", texts


@pytest.fixture(scope="module")
def client_module(target: str):
    with Client(target, timeout=120) as c:
        yield c


@pytest.mark.parametrize("model", ["reranker", "reranker-torch"])
def test_a_search_with_a_rerank_stage_orders_its_candidates_by_cross_encoder_predict(
    client, reference, lee_collection, model
):
    name, texts = lee_collection
    query = "bushfires near Sydney"
    candidates = client.search(name, input=query, k=20)
    hits = client.search(name, input=query, k=5, rerank=model, rerank_candidates=20)
    want = reference.predict([(query, texts[h.id]) for h in candidates])  # the sigmoid, as Rerank answers
    order = np.argsort(-want, kind="stable")[:5]
    assert [h.id for h in hits] == [candidates[i].id for i in order]
    np.testing.assert_allclose([h.score for h in hits], want[order], atol=1e-5)
    assert all(h.explanation.rerank_score == pytest.approx(h.score) for h in hits)
    version = client.get_model(model).version
    assert hits.retrieval.rerank == {"model": model, "candidates": 20, "raw_scores": False, "model_version": version}
    raw = client.search(name, input=query, k=3, rerank=model, rerank_candidates=20, raw_scores=True)
    logits = reference.predict([(query, texts[h.id]) for h in candidates], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose([h.score for h in raw], np.sort(logits)[::-1][:3], atol=1e-5)
    # The same scores as TextService.Rerank over those candidates.
    reranked = client.rerank(model, query, [texts[h.id] for h in candidates], top_n=5)
    assert [candidates[r.index].id for r in reranked.results] == [h.id for h in hits]


def test_a_rerank_stage_naming_a_model_that_does_not_rerank_is_refused(client, lee_collection):
    name, _ = lee_collection
    with pytest.raises(EmbedsvcClientError) as info:
        client.search(name, input="fires", k=3, rerank="glove")
    assert (info.value.code, info.value.reason) == (INVALID, "MODEL_KIND_MISMATCH")
