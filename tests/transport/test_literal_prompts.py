"""Literal prompts (EmbedTextsRequest.prompt, sentence-transformers' encode(prompt=...)) through a real server: vectors
equal encode(prompt=...) on the same directory (to 1e-5), including prompt="" (no prompt, not even the model's default)
and a prompt that fills the model's window; their spaces (the plain space, a named prompt's, or ";prompt=sha256:..."
that no collection holds); refusals as (code, reason, field); HTTP/JSON, the stream, the async client and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest

from embedsvc.cli import main
from embedsvc.client import AsyncClient, Client, EmbedsvcClientError, SpaceVector
from embedsvc.core.texts.embedding import Prompt, literal_prompt
from embedsvc.v1 import collections_pb2, collections_pb2_grpc, common_pb2
from tests.conftest import GENSIM_DATA
from tests.prompted import PROMPTS, QUERIES, documents, prompted_dir, prompts_server, reference, target

__all__ = ["documents", "prompted_dir", "prompts_server", "reference", "target"]  # fixtures of tests/prompted.py

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# An instruction that is none of the model's prompts (BGE's query instruction).
INSTRUCTION = "Represent this sentence for searching relevant passages: "


def sha_name(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@pytest.fixture
def client(target: str):
    with Client(target, timeout=120) as c:
        yield c


def refused(call) -> EmbedsvcClientError:
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value


def test_literal_prompts_are_named_as_the_model_names_them_or_by_their_digest():
    def model(prompts: dict[str, str], default: str = "") -> SimpleNamespace:
        return SimpleNamespace(encoder=SimpleNamespace(prompts=prompts, default_prompt_name=default))

    e5 = model({**PROMPTS, "none": ""})
    assert literal_prompt(e5, "") is None  # no prompt at all
    assert literal_prompt(e5, "query: ") == Prompt("query", "query: ")
    assert literal_prompt(e5, "passage: ") == Prompt("document", "passage: ")
    assert literal_prompt(e5, "query:") == Prompt(sha_name("query:"), "query:")  # not the same text
    assert not literal_prompt(e5, "query:").named and literal_prompt(e5, "query: ").named
    # Two names for one text: the default prompt's name, else the first name in order.
    twins = {"search_query": "query: ", "query": "query: ", "classify": "topic: "}
    assert literal_prompt(model(twins), "query: ").name == "query"
    assert literal_prompt(model(twins, "search_query"), "query: ").name == "search_query"
    assert literal_prompt(model({}), INSTRUCTION) == Prompt(sha_name(INSTRUCTION), INSTRUCTION)


def test_embed_texts_with_a_literal_prompt_equals_encode_with_prompt(client, reference, documents):
    space = client.get_model("e5").space
    for literal, tag in (("query: ", ";prompt=query"), ("passage: ", ";prompt=document"), ("", "")):
        got = client.embed_texts("e5", documents, prompt=literal)
        want = reference.encode(documents, prompt=literal)
        np.testing.assert_allclose(got.vectors, want, atol=1e-5, rtol=0)
        assert got.space == space + tag
        # The same vectors as by name, in the same space: a literal equal to a named prompt is that prompt.
        if literal:
            name = tag.removeprefix(";prompt=")
            assert got.provenance.parameters["prompt_name"] == name
            named = client.embed_texts("e5", documents, prompt_name=name).vectors
            np.testing.assert_allclose(got.vectors, named, atol=1e-6, rtol=0)
    other = client.embed_texts("e5", documents, prompt=INSTRUCTION)
    np.testing.assert_allclose(other.vectors, reference.encode(documents, prompt=INSTRUCTION), atol=1e-5, rtol=0)
    assert other.space == f"{space};prompt={sha_name(INSTRUCTION)}"
    assert other.provenance.parameters["prompt"] == sha_name(INSTRUCTION)
    assert "prompt_name" not in other.provenance.parameters
    # Token counts are of what the model reads, the literal prompt's tokens too.
    assert other.token_counts == [len(reference.tokenizer(INSTRUCTION + d)["input_ids"]) for d in documents]
    # The instruction does change the vectors: the comparisons above mean something.
    assert np.abs(other.vectors - client.embed_texts("e5", documents, prompt="").vectors).max() > 1e-2


def test_an_empty_prompt_turns_the_default_prompt_off(client, reference, documents):
    space = client.get_model("e5-default").space
    default = client.embed_texts("e5-default", documents[:6])
    assert default.space == f"{space};prompt=query"
    bare = client.embed_texts("e5-default", documents[:6], prompt="")
    np.testing.assert_allclose(bare.vectors, reference.encode(documents[:6], prompt=""), atol=1e-5, rtol=0)
    assert bare.space == space
    assert "prompt_name" not in bare.provenance.parameters and "prompt" not in bare.provenance.parameters
    assert np.abs(bare.vectors - default.vectors).max() > 1e-2


def test_a_prompt_that_fills_the_window_truncates_as_sentence_transformers_does(client, reference):
    words = " ".join((GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").split()[:400]) + " "
    texts = ["the fire spread overnight", "peace talks resumed"]
    got = client.embed_texts("e5", texts, prompt=words)
    np.testing.assert_allclose(got.vectors, reference.encode(texts, prompt=words), atol=1e-5, rtol=0)
    assert got.truncated == [0, 1]
    # Chunking or keeping the end of a long text would leave no room for any of its tokens: refused, on "prompt".
    long = " ".join(["the dog ran in the park"] * 80)
    for options in ({"long_texts": "chunk"}, {"truncation_direction": "left"}):
        e = refused(lambda options=options: client.embed_texts("e5", [long], prompt=words, **options))
        assert (e.code, e.reason, e.field) == (INVALID, "LIMIT_EXCEEDED", "prompt")
        assert e.metadata["limit"] == "256" and int(e.metadata["actual"]) > 256
    # A short prompt chunks as a named one does: before every window.
    chunked = client.embed_texts("e5", [long], prompt="query: ", long_texts="chunk")
    named = client.embed_texts("e5", [long], prompt_name="query", long_texts="chunk")
    np.testing.assert_allclose(chunked.vectors, named.vectors, atol=1e-6, rtol=0)


def test_literal_prompt_refusals(client):
    e = refused(lambda: client.embed_texts("e5", ["a text"], prompt="", prompt_name="query"))
    assert (e.code, e.reason, e.field) == (INVALID, "INVALID_VALUE", "prompt")
    # The prompt counts toward max_text_chars (100,000 by default): alone, and with each text.
    e = refused(lambda: client.embed_texts("e5", ["a text"], prompt="q" * 100_001))
    assert (e.code, e.reason, e.field) == (INVALID, "LIMIT_EXCEEDED", "prompt")
    assert (e.metadata["limit"], e.metadata["actual"]) == ("100000", "100001")
    e = refused(lambda: client.embed_texts("e5", ["short", "t" * 50_000], prompt="q" * 60_000))
    assert (e.code, e.reason, e.field) == (INVALID, "LIMIT_EXCEEDED", "texts[1]")
    assert (e.metadata["limit"], e.metadata["actual"]) == ("100000", "110000")
    # int8/uint8 are calibrated per named prompt: a prompt of its own has no calibration.
    for dtype in ("int8", "uint8"):
        e = refused(lambda dtype=dtype: client.embed_texts("e5", ["a text"], prompt=INSTRUCTION, dtype=dtype))
        assert (e.code, e.reason, e.field) == (INVALID, "INVALID_VALUE", "prompt")
    # ... while a literal equal to a named prompt is that prompt, calibration included; binary needs none.
    by_text = client.embed_texts("e5", QUERIES, prompt="query: ", dtype="int8")
    by_name = client.embed_texts("e5", QUERIES, prompt_name="query", dtype="int8")
    assert by_text.space == by_name.space  # one calibration: the same codes, give or take a float's rounding
    assert np.abs(by_text.vectors.astype(int) - by_name.vectors.astype(int)).max() <= 1
    bits = client.embed_texts("e5", QUERIES, prompt=INSTRUCTION, dtype="ubinary")
    assert bits.space.endswith(f";prompt={sha_name(INSTRUCTION)}/ubinary")
    # Empty texts stay refused whatever the prompt.
    e = refused(lambda: client.embed_texts("e5", [" "], prompt="query: "))
    assert (e.code, e.reason, e.field) == (INVALID, "INVALID_VALUE", "texts[0]")


def test_a_literal_prompts_vectors_go_where_its_space_goes(client, target, documents):
    """A literal equal to the document prompt makes items of a collection that applies it; a prompt of its own makes
    vectors no collection takes, as items or as queries."""
    client.create_collection("literal-news", metric="cosine", model="e5")
    try:
        with grpc.insecure_channel(target) as channel:
            stub = collections_pb2_grpc.CollectionServiceStub(channel)

            def upsert(tagged):
                vector = common_pb2.Vector(values=tagged.values.tolist(), space=tagged.space)
                item = collections_pb2.Item(id="doc", vector=vector)
                return stub.Upsert(collections_pb2.UpsertRequest(collection="literal-news", items=[item]), timeout=60)

            assert upsert(client.embed_texts("e5", documents[:1], prompt="passage: ")[0]).upserted == 1
            for literal in (INSTRUCTION, "query: ", ""):
                with pytest.raises(grpc.RpcError) as info:
                    upsert(client.embed_texts("e5", ["a query"], prompt=literal)[0])
                assert info.value.code() == INVALID and "SPACE_MISMATCH" in str(info.value.trailing_metadata())
        query = client.embed_texts("e5", QUERIES[:1], prompt="query: ")[0]
        assert [h.id for h in client.search("literal-news", vector=query, k=1)] == ["doc"]
        own = client.embed_texts("e5", QUERIES[:1], prompt=INSTRUCTION)[0]
        e = refused(lambda: client.search("literal-news", vector=SpaceVector(own.values, own.space), k=1))
        assert (e.code, e.reason) == (INVALID, "SPACE_MISMATCH")
    finally:
        client.delete_collection("literal-news")


def test_http_json_the_stream_and_the_async_client_carry_the_literal_prompt(prompts_server, target, client, documents):
    url = f"http://127.0.0.1:{prompts_server.http.port}/embedsvc.v1.TextService/EmbedTexts"
    space = client.get_model("e5-default").space
    for body, tag in (({"prompt": ""}, ""), ({"prompt": "query: "}, ";prompt=query"), ({}, ";prompt=query")):
        got = httpx.post(url, json={"model": "e5-default", "texts": documents[:3], **body}, timeout=60)
        assert got.status_code == 200, got.text
        assert {v["space"] for v in got.json()["vectors"]} == {space + tag}
    bare = client.embed_texts("e5-default", documents[:3], prompt="")
    got = httpx.post(url, json={"model": "e5-default", "texts": documents[:3], "prompt": ""}, timeout=60)
    np.testing.assert_allclose([v["values"] for v in got.json()["vectors"]], bare.vectors, atol=1e-6)
    both = httpx.post(url, json={"model": "e5", "texts": ["a"], "prompt": "", "promptName": "query"}, timeout=60)
    assert both.status_code == 400 and both.json()["reason"] == "INVALID_VALUE"
    streamed = client.embed_texts_stream("e5-default", documents, batch_size=5, prompt="")
    whole = client.embed_texts("e5-default", documents, prompt="").vectors
    np.testing.assert_allclose(streamed.vectors, whole, atol=1e-6, rtol=0)  # batched differently: float rounding
    assert streamed.space == space

    async def embed():
        async with AsyncClient(target) as c:
            return await c.embed_texts("e5", documents[:3], prompt=INSTRUCTION)

    embedded = asyncio.run(embed())
    want = client.embed_texts("e5", documents[:3], prompt=INSTRUCTION).vectors
    np.testing.assert_allclose(embedded.vectors, want, atol=1e-6, rtol=0)
    assert embedded.space.endswith(sha_name(INSTRUCTION))


def test_cli_prompt(capsys, target, client):
    space = client.get_model("e5-default").space
    code = main(
        ["--target", target, "embed", "--model", "e5-default", "--text", "peace talks", "--prompt", "", "--json"]
    )
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["space"] == space
    code = main(
        ["--target", target, "embed", "--model", "e5", "--text", "peace talks", "--prompt", INSTRUCTION, "--json"]
    )
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["provenance"]["parameters"]["prompt"] == sha_name(INSTRUCTION)
    with pytest.raises(SystemExit) as exited:
        main(["--target", target, "embed", "--model", "e5", "--text", "x", "--prompt", "", "--prompt-name", "query"])
    _, err = capsys.readouterr()
    assert exited.value.code == 2 and "not allowed with argument" in err
