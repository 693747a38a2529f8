"""Milvus-only behaviour: anything a caller writes reaches Milvus escaped or encoded (property-tested against Milvus
Lite), and Milvus-side conditions come back as catalogued reasons, never as INTERNAL."""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedsvc.core.collections.filters import parse_filter
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.types import Backend, CollectionConfig, IndexKind, IndexParams, Metric, Upsert
from tests.helpers import FakeClock

pytest.importorskip("pymilvus")

from embedsvc.index.milvus.client import MilvusOptions
from embedsvc.index.milvus.store import MilvusStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = MilvusStore(MilvusOptions(str(tmp_path_factory.mktemp("milvus") / "m.db")))
    s.recover_all()
    yield s
    s.close_all(checkpoint=False)


@pytest.fixture(scope="module")
def collection(store):
    config = CollectionConfig(
        "props", 4, Metric.L2, IndexParams(IndexKind.FLAT).resolved(4, rescoring=False), backend=Backend.MILVUS
    )
    return store.create(config)


def quote(text):
    """A string in the filter language."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Ids and texts of any Unicode but NUL and lone surrogates (which protobuf strings cannot carry either).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=TEXT, other=TEXT)
def test_any_string_is_found_by_id_input_and_filter_and_nothing_else(collection, value, other):
    ids = [value, value + "\x01", other + "'"]
    collection.upsert(
        Upsert(ids, np.eye(4, dtype=np.float32)[:3], [{"s": value}, {"s": other}, {"s": [value, other]}], ids)
    )
    try:
        got = collection.get([value], with_vectors=False)[0]
        assert got is not None and got.id == value and got.metadata == {"s": value}
        assert collection.ids_with_inputs({value}) == {value}
        for text in (f"s = {quote(value)}", f"s IN [{quote(value)}]"):
            where = parse_filter(text, 100)
            hits, _ = collection.search(np.zeros((1, 4), np.float32), 10, where=where)
            expected = {ids[0], ids[2]} | ({ids[1]} if other == value else set())
            assert {h.id for h in hits[0]} == expected, text
    finally:
        collection.delete(ids)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False)),
        min_size=2,
        max_size=6,
    ),
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
)
def test_numbers_compare_as_the_python_reference_does(collection, values, op):
    ids = [f"n{i}" for i in range(len(values))]
    collection.upsert(Upsert(ids, np.zeros((len(ids), 4), np.float32), [{"x": v} for v in values], [""] * len(ids)))
    try:
        for probe in values:
            where = parse_filter(f"x {op} {probe!r}", 100)
            hits, _ = collection.search(np.zeros((1, 4), np.float32), 10, where=where)
            expected = {i for i, v in zip(ids, values, strict=True) if where.matches({"x": v})}
            assert {h.id for h in hits[0]} == expected, (op, probe, values)
    finally:
        collection.delete(ids)


def test_a_collection_dropped_behind_our_back_is_not_found(store):
    config = CollectionConfig(
        "gone", 4, Metric.L2, IndexParams(IndexKind.FLAT).resolved(4, rescoring=False), backend=Backend.MILVUS
    )
    collection = store.create(config)
    store.connection.client.drop_collection(collection.name)
    with pytest.raises(EmbedsvcError) as info:
        collection.search(np.zeros((1, 4), np.float32), 1)
    assert info.value.reason is Reason.COLLECTION_NOT_FOUND
    store.delete("gone")  # the catalog entry goes too; the name is free again
    assert not store.has("gone")


def test_an_unreachable_milvus_is_a_storage_error_after_retries_with_backoff():
    options = MilvusOptions("http://127.0.0.1:9", timeout_s=0.5, retries=2)  # nothing listens on port 9
    store = MilvusStore(options)
    store.recover_all()  # logs and carries on: the server starts without Milvus
    started = time.monotonic()
    with pytest.raises(EmbedsvcError) as info:
        store.names()
    assert info.value.reason is Reason.STORAGE_ERROR and "127.0.0.1:9" in str(info.value)
    assert time.monotonic() - started < 30
    assert not store.has("anything")


def test_items_over_milvus_field_limits_are_limit_exceeded(collection):
    with pytest.raises(EmbedsvcError) as info:
        collection.upsert(Upsert(["big"], np.zeros((1, 4), np.float32), [{}], ["x" * 70_000]))
    assert info.value.reason is Reason.LIMIT_EXCEEDED and collection.get(["big"], with_vectors=False) == [None]


def test_aliases_in_milvus_are_shared_by_every_store_over_it(tmp_path):
    from embedsvc.index.milvus.aliases import MilvusAliasStore

    clock = FakeClock()
    options = MilvusOptions(str(tmp_path / "aliases.db"))
    one, other = MilvusAliasStore(options, ttl_s=1.0, clock=clock), MilvusAliasStore(options, ttl_s=1.0, clock=clock)
    assert one.resolve("music") == "music" and one.all() == []
    assert other.resolve("music") == "music"  # read, and cached for ttl_s
    one.set("music", "docs")
    assert one.resolve("music") == "docs"  # at once on the store that made the change
    clock.advance(0.9)
    assert other.resolve("music") == "music"  # the others answer from their cache for up to ttl_s...
    clock.advance(0.1)
    assert other.resolve("music") == "docs" and other.of("docs") == ["music"]  # ...and then read the change
    other.set("music", "docs-v2")
    assert one.get("music").collection == "docs-v2"  # get reads fresh: the admin calls decide on it
    one.delete("music")
    with pytest.raises(EmbedsvcError) as info:
        other.delete("music")
    assert info.value.reason is Reason.ALIAS_NOT_FOUND
    one.close()
    other.close()


def test_milvus_errors_map_to_reasons_by_what_they_say():
    from embedsvc.index.milvus.client import map_error

    class RpcError(Exception):
        def __init__(self, text, code):
            super().__init__(text)
            self._code = code

        def code(self):
            return self._code

    cases = [
        (RpcError("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), Reason.DEADLINE_EXCEEDED),
        (Exception("collection not found[collection=es_61]"), Reason.COLLECTION_NOT_FOUND),
        (Exception("the length (70000) of varchar field exceeds max length (65535)"), Reason.LIMIT_EXCEEDED),
        (RpcError("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), Reason.STORAGE_ERROR),
    ]
    for exc, reason in cases:
        assert map_error(exc, "search").reason is reason, exc


def test_column_built_writes_store_what_pymilvus_rows_store(store):
    from embedsvc.index.milvus import bulk

    assert bulk.available()  # the pinned pymilvus has every piece: the fast path is the one in use
    config = CollectionConfig(
        "paths", 4, Metric.L2, IndexParams(IndexKind.FLAT).resolved(4, rescoring=False), backend=Backend.MILVUS
    )
    collection = store.create(config)
    x = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    meta = [{"s": 'qu"ote', "n": 2**62, "f": 0.5, "l": ["a", 1, True]}, {}, {"t": [1.5]}]
    inputs = ["é\\n", "", "line\nbreak"]
    assert collection._fast_writes
    collection.upsert(Upsert(["a", "b", "c"], x, meta, inputs))
    collection._fast_writes = False
    collection.upsert(Upsert(["A", "B", "C"], x, meta, inputs))
    fast = collection.get(["a", "b", "c"], with_vectors=True)
    rows = collection.get(["A", "B", "C"], with_vectors=True)
    for f, r in zip(fast, rows, strict=True):
        assert (f.metadata, f.input) == (r.metadata, r.input)
        np.testing.assert_array_equal(f.vector, r.vector)
    assert [f.metadata for f in fast] == meta and [f.input for f in fast] == inputs
    where = parse_filter('s = "qu\\"ote" AND l = true', 100)
    hits, _ = collection.search(x[:1], 10, where=where)
    assert {h.id for h in hits[0]} == {"a", "A"}
    store.delete("paths")
