"""Indexed metadata fields: random filters answered through the fields' entries equal the Python reference
(embedsvc.index.filtering) in every state of the store (rows in the tail, in segments, with tombstones, compacted);
the reference predicate runs only on what the index let through; values of the wrong type are refused."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index import filtering
from embedsvc.index.faiss import planning
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.filtering import All, AnyOf, Compare, Filter, Member, Not
from embedsvc.index.types import CollectionConfig, FieldType, IndexedField, IndexParams, Metric

D = 8
N = 700
BASE = datetime(2024, 1, 1, tzinfo=UTC)
FIELDS = (
    IndexedField("g", FieldType.INTEGER),
    IndexedField("name", FieldType.STRING),
    IndexedField("when", FieldType.TIMESTAMP),
)
NAMES = ["alpha", "beta", "é", "", 'qu"ote', "zeta", "Beta"]


def metadata(i, rng):
    meta = {}
    if rng.random() < 0.85:
        meta["g"] = int(rng.integers(-3, 6)) if rng.random() < 0.8 else [int(v) for v in rng.integers(-3, 6, 2)]
    if i % 7 == 0:
        meta["g"] = 2**62 + int(rng.integers(0, 3))
    if rng.random() < 0.9:
        meta["name"] = NAMES[int(rng.integers(len(NAMES)))] if rng.random() < 0.8 else list(rng.choice(NAMES, 2))
    if rng.random() < 0.8:
        meta["when"] = BASE + timedelta(days=int(rng.integers(0, 30)), microseconds=int(rng.integers(0, 3)))
    meta["x"] = float(rng.integers(0, 8)) / 2  # not indexed
    if i % 3 == 0:
        meta["tags"] = ["a", 1, True][i % 3 :]  # not indexed, mixed kinds
    return meta


def value(rng, field):
    """A filter value: mostly of the field's kind, sometimes another (matching nothing, or everything with !=)."""
    roll = rng.random()
    if roll < 0.1:
        return [True, "3", 2.5, 1.0, BASE, 2**62 + 1, 2**70, -2.0][int(rng.integers(8))]
    if field == "g":
        return int(rng.integers(-4, 7)) if rng.random() < 0.7 else float(rng.integers(-8, 14)) / 2
    if field == "name":
        return NAMES[int(rng.integers(len(NAMES)))] if rng.random() < 0.8 else "b"
    return BASE + timedelta(days=int(rng.integers(-1, 31)), microseconds=int(rng.integers(0, 3)))


def atom(rng):
    field = ["g", "name", "when", "x", "tags", "missing"][int(rng.integers(6))]
    if field in ("x", "tags", "missing"):
        return Compare(field, ["=", "!=", ">"][int(rng.integers(3))], [1, 1.5, "a"][int(rng.integers(3))])
    if rng.random() < 0.2:
        return Member(field, tuple(value(rng, field) for _ in range(int(rng.integers(1, 4)))))
    return Compare(field, ["=", "!=", "<", "<=", ">", ">="][int(rng.integers(6))], value(rng, field))


def tree(rng, depth=0):
    roll = rng.random()
    if depth >= 2 or roll < 0.4:
        return atom(rng)
    if roll < 0.55:
        return Not(tree(rng, depth + 1))
    parts = tuple(tree(rng, depth + 1) for _ in range(int(rng.integers(2, 4))))
    return All(parts) if roll < 0.8 else AnyOf(parts)


def as_filter(node):
    return Filter("random", node, filtering.predicate(node))


@pytest.fixture
def collection(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    config = CollectionConfig("f", D, Metric.L2, IndexParams().resolved(D), indexed_fields=FIELDS)
    yield store.create(config)
    store.close_all(checkpoint=False)


def check_random_filters(collection, metas, alive, rng, rounds):
    q = np.zeros((1, D), np.float32)
    for _ in range(rounds):
        node = tree(rng)
        where = as_filter(node)
        expected = {str(i) for i in range(len(metas)) if alive[i] and where.matches(metas[i])}
        hits, _ = collection.search(q, len(metas), where=where)
        assert {h.id for h in hits[0]} == expected, node


def test_random_filters_equal_the_reference_in_every_state_of_the_store(collection):
    rng = np.random.default_rng(7)
    metas = [metadata(i, rng) for i in range(N)]
    x = rng.normal(size=(N, D)).astype(np.float32)
    alive = np.ones(N, bool)

    def load(a, b):
        collection.upsert(Upsert([str(i) for i in range(a, b)], x[a:b], metas[a:b], [""] * (b - a)))

    load(0, 300)
    check_random_filters(collection, metas[:300], alive[:300], rng, 60)  # the tail only
    collection.checkpoint()
    load(300, 500)
    check_random_filters(collection, metas[:500], alive[:500], rng, 60)  # a segment and the tail
    collection.checkpoint()
    gone = rng.choice(500, 80, replace=False)
    collection.delete([str(i) for i in gone])
    alive[gone] = False
    replaced = [i for i in range(0, 500, 9) if alive[i]]
    for i in replaced:
        metas[i] = metadata(i + 1, rng)
    collection.upsert(
        Upsert([str(i) for i in replaced], x[replaced], [metas[i] for i in replaced], [""] * len(replaced))
    )
    load(500, N)
    check_random_filters(collection, metas, alive, rng, 80)  # segments, tombstones, replacements, the tail
    collection.checkpoint(compact=True)
    check_random_filters(collection, metas, alive, rng, 60)  # compacted: renumbered, one segment


def test_the_reference_predicate_runs_only_on_what_the_index_lets_through(collection, monkeypatch):
    rng = np.random.default_rng(3)
    metas = [metadata(i, rng) for i in range(N)]
    x = rng.normal(size=(N, D)).astype(np.float32)
    collection.upsert(Upsert([str(i) for i in range(N)], x, metas, [""] * N))
    collection.checkpoint()
    calls = []
    real = filtering.predicate

    def counting(node):
        inner = real(node)

        def counted(meta):
            calls.append(1)
            return inner(meta)

        return counted

    monkeypatch.setattr(planning.filtering, "predicate", counting)
    indexed = Compare("g", "=", 2)
    matching = sum(1 for m in metas if 2 in (m.get("g") if isinstance(m.get("g"), list) else [m.get("g")]))

    def whole(meta):
        calls.append("whole")
        return filtering.predicate(indexed)(meta)

    q = np.zeros((1, D), np.float32)
    hits, _ = collection.search(q, N, where=Filter("g = 2", indexed, whole))
    assert len(hits[0]) == matching and calls == []  # answered by the index alone
    both = All((indexed, Compare("x", ">", 1.0)))
    hits, _ = collection.search(q, N, where=Filter("g = 2 AND x > 1", both, real(both)))
    assert len(calls) == matching  # the rest of the filter, on the slots with g = 2 only
    assert {h.id for h in hits[0]} == {str(i) for i, m in enumerate(metas) if real(both)(m)}


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"g": "1"}, "g"),
        ({"g": True}, "g"),
        ({"g": [1, 2.5]}, "g"),
        ({"name": 3}, "name"),
        ({"when": "2024-01-01"}, "when"),
    ],
)
def test_a_value_of_another_type_than_its_indexed_field_is_refused(collection, meta, field):
    with pytest.raises(EmbedsvcError) as info:
        collection.upsert(Upsert(["a"], np.zeros((1, D), np.float32), [meta], [""]))
    assert info.value.reason is Reason.INVALID_METADATA and info.value.field == f"items[0].metadata.{field}"
    assert collection.count == 0
