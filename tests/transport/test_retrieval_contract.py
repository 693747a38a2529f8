"""The hybrid-retrieval fields of v1 answer (tests/transport/test_retrieval_rpc.py tests what they do, and
tests/transport/test_prompts.py the prompts); prompts asked of a collection that cannot apply them are refused."""

import grpc
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


@pytest.mark.parametrize(
    "options",
    [
        collections_pb2.SearchOptions(fusion=retrieval_pb2.Fusion(rrf_k=60)),
        collections_pb2.SearchOptions(group_by="doc"),
        collections_pb2.SearchOptions(diversity=0.0),
        collections_pb2.SearchOptions(diversity=0.5),
        collections_pb2.SearchOptions(keep_inputs=True),
    ],
)
def test_served_search_options_answer(channel, options):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    query = collections_pb2.Query(input="king")
    response = stub.Search(collections_pb2.SearchRequest(collection="docs", query=query, options=options), timeout=30)
    assert response.hits or response.groups
    assert response.retrieval.mode == retrieval_pb2.SEARCH_MODE_DENSE


def test_keyword_search_of_a_word_collection_without_keyword_index_is_a_precondition(channel):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    options = collections_pb2.SearchOptions(mode=retrieval_pb2.SEARCH_MODE_KEYWORD)
    request = collections_pb2.SearchRequest(
        collection="docs", query=collections_pb2.Query(input="king"), options=options
    )
    assert refusal(stub.Search, request) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "KEYWORD_INDEX_MISSING",
        "options.mode",
    )


def test_plain_dense_searches_still_answer(channel):
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    options = collections_pb2.SearchOptions(k=1, mode=retrieval_pb2.SEARCH_MODE_DENSE, include_explanations=True)
    response = stub.Search(
        collections_pb2.SearchRequest(collection="docs", query=collections_pb2.Query(input="king"), options=options),
        timeout=30,
    )
    assert [hit.id for hit in response.hits] == ["b"]  # "king" itself is left out, as before
    assert not response.hits[0].HasField("explanation") and not response.groups


def test_prompts_are_refused_for_collections_not_bound_to_a_text_model(channel):
    """Prompts are served (tests/transport/test_prompts.py); a word model has none to apply, and nothing is created."""
    stub = collections_pb2_grpc.CollectionServiceStub(channel)
    request = collections_pb2.CreateCollectionRequest(
        name="k",
        model="planted",
        metric=collections_pb2.METRIC_COSINE,
        prompts=retrieval_pb2.CollectionPrompts(query_prompt_name="query"),
    )
    assert refusal(stub.CreateCollection, request) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_BINDING", "prompts")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetCollection(collections_pb2.GetCollectionRequest(name="k"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
