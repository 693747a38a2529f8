"""The hybrid-retrieval fields of v1 that this server does not act on yet are refused with INVALID_VALUE naming the
field, never ignored: an ignored `mode = KEYWORD` would answer a dense search as if it were a keyword one."""

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from embedsvc.backends.base import ModelSpec
from embedsvc.backends.word_vectors import WordVectorFormat, WordVectorsOptions
from embedsvc.client import Client
from embedsvc.settings import Settings
from embedsvc.transport.server import create_server
from embedsvc.v1 import (
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    retrieval_pb2,
)


@pytest.fixture(scope="module")
def channel(tmp_path_factory, planted_file):
    settings = Settings(
        port=0,
        data_dir=tmp_path_factory.mktemp("contract") / "data",
        embedded_models=False,
        models=(ModelSpec("planted", WordVectorsOptions(WordVectorFormat.WORD2VEC_TEXT, planted_file)),),
        grace_period_s=0.5,
    )
    srv, port = create_server(settings)
    srv.start()
    srv.wait_until_ready(60)
    with Client(f"127.0.0.1:{port}") as client:
        client.create_collection("docs", dimension=32, metric="cosine", model="planted")
        client.upsert("docs", ["a", "b"], inputs=["king", "queen"])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    srv.stop(0)


def refusal(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    error = info.value
    for key, value in error.trailing_metadata():
        if key == "grpc-status-details-bin":
            details = error_details_pb2.ErrorInfo()
            assert status_pb2.Status.FromString(value).details[0].Unpack(details)
            return error.code(), details.reason, details.metadata.get("field")
    raise AssertionError("no ErrorInfo")


BAD = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (collections_pb2.SearchOptions(mode=retrieval_pb2.SEARCH_MODE_KEYWORD), "options.mode"),
        (collections_pb2.SearchOptions(mode=retrieval_pb2.SEARCH_MODE_HYBRID), "options.mode"),
        (collections_pb2.SearchOptions(fusion=retrieval_pb2.Fusion(rrf_k=60)), "options.fusion"),
        (collections_pb2.SearchOptions(rerank=retrieval_pb2.RerankStage(model="planted")), "options.rerank"),
        (collections_pb2.SearchOptions(group_by="doc"), "options.group_by"),
        (collections_pb2.SearchOptions(group_size=2), "options.group_size"),
        (collections_pb2.SearchOptions(diversity=0.5), "options.diversity"),
        (collections_pb2.SearchOptions(diversity=0.0), "options.diversity"),
        (collections_pb2.SearchOptions(diversity_candidates=50), "options.diversity_candidates"),
        (collections_pb2.SearchOptions(keep_inputs=True), "options.keep_inputs"),
    ],
)
def test_unserved_search_options_are_refused(channel, options, field):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    query = collections_pb2.Query(input="king")
    assert refusal(stub.Search, collections_pb2.SearchRequest(collection="docs", query=query, options=options)) == (
        *BAD,
        field,
    )
    batch = collections_pb2.BatchSearchRequest(collection="docs", queries=[query], options=options)
    assert refusal(stub.BatchSearch, batch) == (*BAD, field)


def test_unserved_query_forms_are_refused(channel):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    examples = collections_pb2.Query(examples=retrieval_pb2.Examples(positive_ids=["a"]))
    assert refusal(stub.Search, collections_pb2.SearchRequest(collection="docs", query=examples)) == (
        *BAD,
        "query.examples",
    )
    text = collections_pb2.Query(vector=common_pb2.Vector(values=np.ones(32).tolist()), keyword_text="king")
    batch = collections_pb2.BatchSearchRequest(collection="docs", queries=[collections_pb2.Query(input="king"), text])
    assert refusal(stub.BatchSearch, batch) == (*BAD, "queries[1].keyword_text")


def test_plain_dense_searches_still_answer(channel):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    options = collections_pb2.SearchOptions(k=1, mode=retrieval_pb2.SEARCH_MODE_DENSE, include_explanations=True)
    response = stub.Search(
        collections_pb2.SearchRequest(collection="docs", query=collections_pb2.Query(input="king"), options=options),
        timeout=30,
    )
    assert [hit.id for hit in response.hits] == ["b"]  # "king" itself is left out, as before
    assert not response.hits[0].HasField("explanation") and not response.groups


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            collections_pb2.CreateCollectionRequest(
                name="k", dimension=4, metric=collections_pb2.METRIC_COSINE, keyword=retrieval_pb2.KeywordIndexSpec()
            ),
            "keyword",
        ),
        (
            collections_pb2.CreateCollectionRequest(
                name="k",
                dimension=4,
                metric=collections_pb2.METRIC_COSINE,
                search_defaults=retrieval_pb2.SearchDefaults(mode=retrieval_pb2.SEARCH_MODE_HYBRID),
            ),
            "search_defaults",
        ),
    ],
)
def test_unserved_collection_settings_are_refused(channel, request_, field):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    assert refusal(stub.CreateCollection, request_) == (*BAD, field)
    with pytest.raises(grpc.RpcError) as info:  # and nothing was created
        stub.GetCollection(collections_pb2.GetCollectionRequest(name="k"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_prompts_are_refused_for_collections_not_bound_to_a_text_model(channel):
    """Prompts are served (tests/transport/test_prompts.py); a word model has none to apply."""
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    request = collections_pb2.CreateCollectionRequest(
        name="k",
        model="planted",
        metric=collections_pb2.METRIC_COSINE,
        prompts=retrieval_pb2.CollectionPrompts(query_prompt_name="query"),
    )
    assert refusal(stub.CreateCollection, request) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_BINDING", "prompts")
