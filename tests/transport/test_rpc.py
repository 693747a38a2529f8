"""Every RPC through a real server on port 0, a real channel and the public client."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from embedsvc.api import SERVICES
from embedsvc.client import AsyncClient, Client, EmbedsvcClientError
from embedsvc.v1 import arithmetic_pb2, arithmetic_pb2_grpc, common_pb2, models_pb2
from tests.conftest import QUESTIONS_WORDS, gensim_reference, planted_specs
from tests.helpers import assert_refused

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_list_and_get_models(client, server_settings):
    models = client.list_models()
    assert [m.name for m in models] == [m.name for m in server_settings.all_models()]
    minilm = client.get_model("minilm-static")
    assert minilm.state == models_pb2.MODEL_STATE_READY
    assert (minilm.dimension, minilm.kind, minilm.device) == (256, models_pb2.MODEL_KIND_WORD_VECTORS, "cpu")
    assert minilm.vocabulary_size > 20_000 and minilm.version.startswith("sha256:")
    assert client.get_model("lee-fasttext").has_subwords


def test_king_man_woman_is_queen(client):
    result = client.arithmetic("minilm-static", ["king - man + woman"])
    (expr,) = result.results
    assert expr.hits[0].word == "queen"
    assert result.provenance.model == "minilm-static"
    assert result.provenance.method == "3CosAdd"
    assert result.provenance.model_version.startswith("sha256:")
    assert result.provenance.parameters["top_n"] == "10"
    assert [t["weight"] for t in expr.terms] == [1.0, -1.0, 1.0]


def test_arithmetic_batch_equals_gensim(client):
    kv = gensim_reference("lee-binary")
    queries = [("police", "government", "minister"), ("the", "of", "and"), ("year", "day", "week")]
    result = client.arithmetic("lee-binary", [f"{b} - {a} + {c}" for a, b, c in queries], top_n=5)
    for (a, b, c), expr in zip(queries, result.results, strict=True):
        theirs = kv.most_similar(positive=[b, c], negative=[a], topn=5)
        assert [h.word for h in expr.hits] == [w for w, _ in theirs]
        np.testing.assert_allclose([h.score for h in expr.hits], [s for _, s in theirs], atol=1e-5)


def test_structured_terms_vectors_and_options(client):
    emb = client.embed_words("planted", ["woman"])
    result = client.arithmetic(
        "planted",
        [["king", (-1.0, "man"), (1.0, emb.vectors[0])]],
        top_n=3,
        keep_inputs=True,
        return_query_vector=True,
        return_contributions=True,
    )
    (expr,) = result.results
    assert expr.query_vector.shape == (32,)
    assert np.linalg.norm(expr.query_vector) == pytest.approx(1.0, abs=1e-5)
    assert all(len(h.contributions) == 3 for h in expr.hits)
    assert [t["kind"] for t in expr.terms] == ["word", "word", "vector"]
    cosmul = client.arithmetic("planted", ["king - man + woman"], method="cosmul", top_n=1)
    assert cosmul.results[0].hits[0].word == "queen" and cosmul.provenance.method == "3CosMul"


def test_vectors_carry_their_space_and_mixing_spaces_fails(client):
    glove = client.embed_words("glove", ["the"])
    assert glove.space.startswith("model:glove@sha256:")
    assert client.arithmetic("glove", [[glove[0]]], top_n=1).results[0].hits
    lee = client.embed_words("lee-text", ["the"])
    error = assert_refused(
        lambda: client.arithmetic("lee-binary", [[lee[0]]]),
        INVALID,
        "SPACE_MISMATCH",
        "expressions[0].terms[0].vector.space",
    )
    assert error.metadata["actual"] == lee.space
    # a raw stub gets the same answer
    stub = arithmetic_pb2_grpc.ArithmeticServiceStub(client._channel)
    vector = common_pb2.Vector(values=lee.vectors[0].tolist(), space=lee.space)
    request = arithmetic_pb2.ArithmeticRequest(
        model="lee-binary", expressions=[arithmetic_pb2.Expression(terms=[arithmetic_pb2.Term(vector=vector)])]
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Arithmetic(request)
    assert info.value.code() == INVALID


def test_embed_nearest_similarity_doesnt_match(client):
    kv = gensim_reference("glove")
    emb = client.embed_words("glove", ["the", "and"])
    np.testing.assert_array_equal(emb.vectors, np.vstack([kv["the"], kv["and"]]))
    unit = client.embed_words("glove", ["the"], normalize=True)
    assert np.linalg.norm(unit.vectors[0]) == pytest.approx(1.0, abs=1e-6)
    (hits,) = client.nearest_words("glove", ["the"], top_n=4)
    assert [h.word for h in hits] == [w for w, _ in kv.most_similar("the", topn=4)]
    (sim,) = client.similarity("glove", [("the", "and")])
    assert sim == pytest.approx(float(kv.similarity("the", "and")), abs=1e-6)
    odd, ranking = client.doesnt_match("minilm-static", ["breakfast", "cereal", "dinner", "lunch"])
    assert odd == "cereal" and ranking[-1][0] == "cereal"


def test_fasttext_oov_through_the_service(client):
    emb = client.embed_words("lee-fasttext", ["governmentalism"])
    assert emb.in_vocabulary == [False]
    np.testing.assert_allclose(emb.vectors[0], gensim_reference("lee-fasttext")["governmentalism"], atol=1e-6)


def test_evaluate_analogies_equals_gensim(client, minilm):
    report = client.evaluate_analogies("minilm-static", QUESTIONS_WORDS)
    score, sections = minilm.kv.evaluate_word_analogies(str(QUESTIONS_WORDS))
    assert report.total.accuracy == pytest.approx(score)
    assert report.total.correct == len(sections[-1]["correct"])
    assert report.questions == 19544 and report.oov_questions == 19544 - report.total.correct - report.total.incorrect
    assert [s.name for s in report.sections] == [s["section"] for s in sections[:-1]]
    assert report.provenance.parameters["restrict_vocab"] == "300000"


BAD_INPUT = [
    ("empty expression", lambda c: c.arithmetic("planted", [""]), INVALID, "INVALID_EXPRESSION", "expressions[0]"),
    (
        "blank expression",
        lambda c: c.arithmetic("planted", ["  "]),
        INVALID,
        "INVALID_EXPRESSION",
        "expressions[0].text",
    ),
    ("no terms", lambda c: c.arithmetic("planted", ["king", []]), INVALID, "INVALID_EXPRESSION", "expressions[1]"),
    ("no expressions", lambda c: c.arithmetic("planted", []), INVALID, "MISSING_FIELD", "expressions"),
    ("unknown model", lambda c: c.arithmetic("nope", ["king"]), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", "model"),
    ("no model", lambda c: c.embed_words("", ["king"]), INVALID, "MISSING_FIELD", "model"),
    ("oov", lambda c: c.arithmetic("planted", ["king - zzq"]), INVALID, "OUT_OF_VOCABULARY", "expressions[0].terms[1]"),
    (
        "malformed",
        lambda c: c.arithmetic("planted", ["king man"]),
        INVALID,
        "INVALID_EXPRESSION",
        "expressions[0].text",
    ),
    (
        "nan weight",
        lambda c: c.arithmetic("planted", [[(float("nan"), "king")]]),
        INVALID,
        "NOT_FINITE",
        "expressions[0].terms[0].weight",
    ),
    (
        "inf vector",
        lambda c: c.arithmetic("planted", [[np.full(32, np.inf)]]),
        INVALID,
        "NOT_FINITE",
        "expressions[0].terms[0].vector.values",
    ),
    (
        "huge vector",
        lambda c: c.arithmetic("planted", [[np.full(32, 1e20)]]),
        INVALID,
        "LIMIT_EXCEEDED",
        "expressions[0].terms[0].vector.values",
    ),
    (
        "wrong dimension",
        lambda c: c.arithmetic("planted", [[np.ones(3)]]),
        INVALID,
        "DIMENSION_MISMATCH",
        "expressions[0].terms[0].vector.values",
    ),
    ("topn zero", lambda c: c.arithmetic("planted", ["king"], top_n=-1), INVALID, "INVALID_VALUE", "top_n"),
    ("topn over", lambda c: c.arithmetic("planted", ["king"], top_n=5000), INVALID, "LIMIT_EXCEEDED", "top_n"),
    ("batch over", lambda c: c.arithmetic("planted", ["king"] * 4097), INVALID, "LIMIT_EXCEEDED", "expressions"),
    (
        "terms over",
        lambda c: c.arithmetic("planted", [" + ".join(["king"] * 65)]),
        INVALID,
        "LIMIT_EXCEEDED",
        "expressions[0].text",
    ),
    ("cancels", lambda c: c.arithmetic("planted", ["king - king"]), INVALID, "INVALID_EXPRESSION", "expressions[0]"),
    (
        "text term",
        lambda c: c.arithmetic("planted", ['"a sentence" + king']),
        INVALID,
        "TERM_KIND_NOT_SUPPORTED",
        "expressions[0].terms[0]",
    ),
    ("bad method", lambda c: c.arithmetic("planted", ["king"], method=7), INVALID, "INVALID_VALUE", "method"),
    ("empty analogies", lambda c: c.evaluate_analogies("planted", b""), INVALID, "MISSING_FIELD", "analogies"),
    (
        "bad analogies",
        lambda c: c.evaluate_analogies("planted", b"a b c d\n"),
        INVALID,
        "INVALID_ANALOGY_FILE",
        "analogies",
    ),
    (
        "binary analogies",
        lambda c: c.evaluate_analogies("planted", b": s\n\xff\xfe\n"),
        INVALID,
        "INVALID_ANALOGY_FILE",
        "analogies",
    ),
    ("odd one of one", lambda c: c.doesnt_match("planted", ["king"]), INVALID, "INVALID_VALUE", "words"),
    ("oov word", lambda c: c.embed_words("glove", ["zzq", "qqz"]), INVALID, "OUT_OF_VOCABULARY", "words"),
    ("unknown get", lambda c: c.get_model("nope"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", "model"),
]


@pytest.mark.parametrize(("case", "call", "code", "reason", "field"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_gets_code_reason_and_field(client, case, call, code, reason, field):
    error = assert_refused(lambda: call(client), code, reason, field)
    assert error.message
    # and the server keeps serving
    assert client.arithmetic("planted", ["king - man + woman"], top_n=1).results[0].hits[0].word == "queen"


def test_oov_error_lists_every_missing_word(client):
    error = assert_refused(lambda: client.embed_words("glove", ["the", "zzq", "qqz"]), INVALID, "OUT_OF_VOCABULARY")
    assert error.metadata["words"] == "zzq qqz"


def test_analogy_file_over_the_limit(make_server, planted_file):
    from embedsvc.limits import Limits

    limits = Limits(max_analogy_bytes=100, max_expressions=2)
    with make_server(models=planted_specs(planted_file)[:1], limits=limits) as (_srv, target), Client(target) as c:
        error = assert_refused(
            lambda: c.evaluate_analogies("planted", b": s\n" + b"a b c d\n" * 20), INVALID, "LIMIT_EXCEEDED"
        )
        assert error.metadata["limit"] == "100"
        assert_refused(lambda: c.nearest_words("planted", ["king"] * 3), INVALID, "LIMIT_EXCEEDED")


def test_message_size_limit_is_enforced(client):
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED  # refused by gRPC itself: no server reason
    assert_refused(
        lambda: client.evaluate_analogies("planted", b": s\n" + b"x" * (65 * 1024 * 1024)), exhausted, exhausted.name
    )


def test_health_per_service_and_reflection(client, target):
    assert client.health() == "SERVING"
    services = {s.full_name for s in SERVICES}
    for service in services:
        assert client.health(service) == "SERVING"
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in response.list_services_response.service}
    assert services | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_concurrent_callers_get_their_own_answers(client):
    words = ["king", "queen", "man", "woman", "paris", "rome", "italy", "france"]

    def ask(word):
        return word, client.nearest_words("planted", [word], top_n=3)[0]

    expected = dict(ask(w) for w in words)
    with ThreadPoolExecutor(8) as pool:
        for word, hits in pool.map(ask, words * 10):
            assert hits == expected[word]


def test_async_client(target):
    async def main():
        async with AsyncClient(target) as c:
            results = await asyncio.gather(
                c.arithmetic("minilm-static", ["king - man + woman"], top_n=1),
                c.embed_words("planted", ["king"]),
                c.health(),
                c.embed_texts("minilm", ["a day at the beach", "winter"]),
            )
            with pytest.raises(EmbedsvcClientError) as info:
                await c.arithmetic("planted", ["zzq"])
            return results, info.value

    (arith, emb, health, texts), error = asyncio.run(main())
    assert texts.vectors.shape == (2, 384) and texts.provenance.model == "minilm"
    assert arith.results[0].hits[0].word == "queen"
    assert emb.vectors.shape == (1, 32)
    assert health == "SERVING"
    assert error.reason == "OUT_OF_VOCABULARY"


def test_unexpected_errors_are_internal_without_details(client, server, monkeypatch, caplog):
    from embedsvc.core.words import lookups as words

    def boom(*args, **kwargs):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(words, "similarity", boom)
    error = assert_refused(
        lambda: client.similarity("planted", [("king", "queen")]), grpc.StatusCode.INTERNAL, "INTERNAL"
    )
    assert "secret" not in error.message
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_health_is_not_serving_while_loading(server_settings, tmp_path):
    """NOT_SERVING while models load; a model that cannot load is then FAILED with its one-line error, and the
    server serves the others."""
    from dataclasses import replace

    from embedsvc.backends.base import ModelSpec
    from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
    from embedsvc.transport.server import create_server

    bad = tmp_path / "bad.txt"
    bad.write_text("1 3\nking 1 2\n")
    settings = replace(
        server_settings,
        data_dir=tmp_path / "data",
        embedded_models=False,
        models=(
            ModelSpec("bad", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, bad)),
            *(m for m in server_settings.models if m.name == "planted"),
        ),
    )
    srv, port = create_server(settings)
    assert srv.health._server_status["embedsvc.v1.WordService"] == health_pb2.HealthCheckResponse.NOT_SERVING
    srv.start()
    try:
        srv.wait_until_ready(30)
        assert srv.health._server_status["embedsvc.v1.WordService"] == health_pb2.HealthCheckResponse.SERVING
        with Client(f"127.0.0.1:{port}") as c:
            assert c.get_model("bad").error.startswith(f"model 'bad': cannot read {bad}")
            assert c.similarity("planted", [("king", "queen")])[0] > 0.5
    finally:
        srv.stop(0)
