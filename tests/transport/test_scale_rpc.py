"""The large-collection options over gRPC (issue 30): quantisation, oversampling, recall targets and indexed metadata
fields, as a client sets them, and every refusal as (code, reason, field) on each backend."""

import grpc
import numpy as np
import pytest

from embedsvc.v1 import collections_pb2, collections_pb2_grpc
from tests.helpers import assert_refused, reason_of, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
LIMIT = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION


def test_a_quantised_collection_reports_its_settings_and_searches_to_its_target(client):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    info = client.create_collection(
        "q8", dimension=16, metric="l2", index="ivf-flat", quantization="int8", nlist=16, target_recall=0.9
    )
    try:
        assert info.index.target_recall == pytest.approx(0.9)
        client.upsert_stream("q8", [f"i{i}" for i in range(len(x))], x, batch_size=1000)
        # Trained, then calibrated in the background: the collection's info shows the measured series.
        calibration = wait_for(
            lambda: (info := client.get_collection("q8")).calibration.points and info.calibration,
            timeout=300,
            what="the recall calibration",
        )
        assert calibration.knob == "nprobe" and len(calibration.points) > 0
        # Its training: on all it held then (at least 39 x 16), trained again at 4x that (a full sample is 100,000).
        training = client.get_collection("q8").training
        assert 624 <= training.count <= 3000 and training.sample == training.count
        assert training.retrain_at == 4 * training.count
        hits = client.search("q8", vector=x[7], k=5, target_recall=0.99, oversample=4)
        assert hits[0].id == "i7"
        parameters = dict(hits.provenance.parameters)
        assert parameters["oversample"] == "4" and parameters["target_recall"] == "0.99"
        assert float(parameters["estimated_recall"]) >= 0.95
    finally:
        client.delete_collection("q8")


@pytest.mark.parametrize(
    ("index", "params", "field"),
    [
        ("ivf-flat", {"oversample": 101}, "index.oversample"),
        ("ivf-flat", {"target_recall": 1.5}, "index.target_recall"),
        ("ivf-flat", {"target_recall": -0.1}, "index.target_recall"),
        ("hnsw", {"rabitq_bits": 1}, "index.quantization"),
        ("ivf-pq", {"pq_m": 4, "quantization": "int8"}, "index.quantization"),
        ("ivf-flat", {"rabitq_bits": 9}, "index.rabitq_bits"),
    ],
)
def test_bad_index_options_are_invalid_and_name_their_field(client, index, params, field):
    params = dict(params)
    quantization = params.pop("quantization", "rabitq" if "rabitq_bits" in params else "int8")
    if index == "ivf-pq" and "quantization" not in params and field != "index.quantization":
        quantization = ""
    assert_refused(
        lambda: client.create_collection(
            "bad", dimension=16, metric="l2", index=index, quantization=quantization, **params
        ),
        INVALID,
        "INVALID_VALUE",
        field,
    )
    assert "bad" not in [c.name for c in client.list_collections()]


def test_search_time_recall_options_are_checked(client):
    client.create_collection("s", dimension=4, metric="l2", index="ivf-flat", nlist=2, quantization="int8")
    try:
        client.upsert("s", ["a", "b"], np.eye(2, 4, dtype=np.float32))
        vector = np.ones(4, np.float32)
        assert_refused(lambda: client.search("s", vector=vector, target_recall=2.0), INVALID, "INVALID_VALUE")
        assert_refused(lambda: client.search("s", vector=vector, oversample=-1), INVALID, "INVALID_VALUE")
    finally:
        client.delete_collection("s")


def test_indexed_fields_are_limited_and_typed(client, target):
    channel = grpc.insecure_channel(target)
    limit = client.get_server_info().limits["max_indexed_fields"]
    assert limit > 0
    too_many = {f"f{i}": "string" for i in range(limit + 1)}
    assert_refused(
        lambda: client.create_collection("f", dimension=4, indexed_fields=too_many),
        LIMIT,
        "LIMIT_EXCEEDED",
        "indexed_fields",
    )
    for field in (
        collections_pb2.IndexedField(name="kind"),  # no type
        collections_pb2.IndexedField(name="kind", type=99),  # a type this server does not know
        collections_pb2.IndexedField(name="$kind", type=collections_pb2.FIELD_TYPE_STRING),
    ):
        request = collections_pb2.CreateCollectionRequest(name="f", dimension=4, indexed_fields=[field])
        with pytest.raises(grpc.RpcError) as refused:
            collections_pb2_grpc.CollectionServiceStub(channel).CreateCollection(request, timeout=30)
        assert (refused.value.code(), reason_of(refused.value)) == (INVALID, "INVALID_VALUE"), refused.value.details()
    channel.close()
    info = client.create_collection("f", dimension=4, indexed_fields={"kind": "string", "year": "integer"})
    try:
        client.upsert("f", ["a", "b"], np.eye(2, 4, dtype=np.float32), [{"kind": "x", "year": 1}, {"kind": "y"}])
        hits = client.search("f", vector=np.eye(1, 4, dtype=np.float32)[0], k=5, filter='kind == "y"')
        assert [h.id for h in hits] == ["b"]
        assert sorted(f.name for f in info.indexed_fields) == ["kind", "year"]
    finally:
        client.delete_collection("f")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"index": "flat", "quantization": "int8"}, "index.quantization"),
        ({"index": "ivf-flat", "nlist": 4, "target_recall": 0.9}, "index.target_recall"),
        ({"index": "ivf-flat", "nlist": 4, "quantization": "int8", "oversample": 4}, "index.oversample"),
        ({"index": "ivf-flat", "nlist": 4, "indexed_fields": {"kind": "string"}}, "indexed_fields"),
    ],
)
def test_milvus_refuses_what_it_has_no_equivalent_of(client, options, field):
    options = dict(options)
    assert_refused(
        lambda: client.create_collection("m", dimension=8, metric="l2", backend="milvus", **options),
        FAILED,
        "OPERATION_NOT_SUPPORTED",
        field,
    )
    assert "m" not in [c.name for c in client.list_collections()]
