"""Budgets, not just field limits, through a real server: hits per response, response bytes, filter depth, clustering
work, map sizes, and deadlines that stop the work on the server. Each is refused before the work it would cost."""

import threading

import grpc
import numpy as np
import pytest

from embedsvc.calls import CallControl, bound, check
from embedsvc.client import Client, vector_points
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits
from tests.conftest import planted_specs
from tests.helpers import assert_refused

LIMITS = Limits(max_result_hits=500, max_message_bytes=1 << 20, max_cluster_work=10_000_000, max_map_values=50_000)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def over_limit(call, limit: str) -> None:
    """`call` is refused LIMIT_EXCEEDED, naming this limit's value."""
    assert assert_refused(call, INVALID, "LIMIT_EXCEEDED").metadata.get("limit") == limit


@pytest.fixture(scope="module")
def served(make_server, planted_file):
    planted = planted_specs(planted_file)[:1]
    with make_server(models=planted, limits=LIMITS, default_deadline_s=0.05) as (srv, target), Client(target) as client:
        client.create_collection("fat", dimension=4, metric="l2")
        rng = np.random.default_rng(0)
        blob = "x" * 30_000
        for start in range(0, 100, 20):  # 20 x 30 kB per call: under the 1 MiB message limit
            ids = [f"f{i}" for i in range(start, start + 20)]
            client.upsert("fat", ids, rng.normal(size=(20, 4)).astype(np.float32), [{"blob": blob}] * 20)
        client.create_collection("big", dimension=4, metric="l2")
        for start in range(0, 60_000, 2_000):
            client.upsert(
                "big",
                [f"b{i}" for i in range(start, start + 2_000)],
                rng.normal(size=(2_000, 4)).astype(np.float32),
                [{"tags": list(range(i % 50)), "i": i} for i in range(start, start + 2_000)],
            )
        yield srv, target


def test_hits_per_response_are_checked_before_any_work(served):
    _, target = served
    with Client(target) as client:
        queries = np.zeros((20, 4), np.float32)
        over_limit(lambda: client.batch_search("fat", queries, k=30), "500")
        assert len(client.batch_search("fat", queries, k=25, include_metadata=False)) == 20
        words = ["king", "queen", "man", "woman", "boy", "girl"]
        over_limit(lambda: client.nearest_words("planted", words, top_n=100), "500")
        over_limit(lambda: client.arithmetic("planted", ["king - man"] * 6, top_n=100), "500")


def test_response_bytes_are_counted_before_hits_are_built(served):
    _, target = served
    with Client(target) as client:
        over_limit(lambda: client.search("fat", vector=np.zeros(4, np.float32), k=50), str((1 << 20) - 65536))
        hits = client.search("fat", vector=np.zeros(4, np.float32), k=50, include_metadata=False)
        assert len(hits) == 50  # the same hits without their metadata fit


def test_filters_that_nest_too_deep_are_invalid_not_internal(served):
    _, target = served
    with Client(target) as client:
        for text in ("(" * 2000 + "i = 1" + ")" * 2000, "NOT " * 1000 + "i = 1"):
            assert_refused(
                lambda text=text: client.search("fat", vector=np.zeros(4, np.float32), filter=text),
                INVALID,
                "INVALID_FILTER",
            )
        too_many = "i IN [" + ",".join(map(str, range(1025))) + "]"
        assert_refused(
            lambda: client.search("fat", vector=np.zeros(4, np.float32), filter=too_many), INVALID, "INVALID_FILTER"
        )


def test_clustering_work_and_map_size_are_budgeted(served):
    _, target = served
    rng = np.random.default_rng(1)
    with Client(target) as client:
        points = vector_points(rng.normal(size=(2000, 20)).astype(np.float32))
        over_limit(lambda: client.cluster(points, max_k=10, covariance="full"), "10000000")
        assert 1 <= client.cluster(points, max_k=10, covariance="full", reduce_to=2).k <= 10  # reduced: it fits
        large = vector_points(rng.normal(size=(3000, 20)).astype(np.float32))  # 60,000 values
        over_limit(lambda: client.project(large), "50000")


def test_the_server_default_deadline_stops_a_slow_filter(served):
    """No client deadline: the server's default (50 ms here) stops the filter evaluation over 60,000 items."""
    _, target = served
    with Client(target, timeout=None) as client:
        assert_refused(
            lambda: client.search("big", vector=np.zeros(4, np.float32), filter="tags IN [48, 49] AND NOT i = 3"),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "DEADLINE_EXCEEDED",
        )
    with Client(target) as client:  # and the server goes on serving
        assert client.get_collection("big").count == 60_000


def test_check_stops_work_bound_to_a_cancelled_call():
    control = CallControl()
    check()  # no call: never stops
    with bound(control):
        check()
        threading.Thread(target=control.cancel).start()
        control_cancelled = threading.Event()
        control.wake_on_cancel(control_cancelled)
        assert control_cancelled.wait(5)
        with pytest.raises(EmbedsvcError) as info:
            check()
        assert info.value.reason is Reason.CANCELLED
    check()  # unbound again
