"""Grouping hits by a metadata field: k groups of their best hits, items lacking the field alone, list fields in
several groups, values grouped by type and value."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from embedsvc.core.collections.grouping import group_hits, metadata_value


@dataclass
class H:
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


def grouped(hits, k, size):
    return group_hits(hits, metadata_value("doc"), k, size, own_key=lambda h: h.id)


def ids(result):
    return [(g.value, [h.id for h in g.hits]) for g in result.groups]


CHUNKS = [H("c1", {"doc": "A"}), H("c2", {"doc": "A"}), H("c3", {"doc": "B"}), H("c4"), H("c5", {"doc": "C"})]


def test_k_documents_with_their_best_chunks():
    result = grouped(CHUNKS, k=2, size=2)
    assert ids(result) == [("A", ["c1", "c2"]), ("B", ["c3"])]
    assert not result.complete  # B has one chunk only among these candidates


def test_an_item_lacking_the_field_is_a_group_of_its_own():
    result = grouped(CHUNKS, k=3, size=1)
    assert ids(result) == [("A", ["c1"]), ("B", ["c3"]), (None, ["c4"])]
    assert result.complete
    assert ids(grouped([H("x", {"doc": []}), H("y")], k=5, size=2)) == [(None, ["x"]), (None, ["y"])]


def test_values_group_by_type_and_value():
    when = datetime(2024, 5, 1, tzinfo=UTC)
    hits = [
        H("int", {"doc": 1}),
        H("float", {"doc": 1.0}),
        H("bool", {"doc": True}),
        H("str", {"doc": "1"}),
        H("big", {"doc": 2**53 + 1}),
        H("big-1", {"doc": 2**53}),
        H("t1", {"doc": when}),
        H("t2", {"doc": when}),
    ]
    assert [h for _, h in ids(grouped(hits, k=10, size=5))] == [
        ["int", "float"],
        ["bool"],
        ["str"],
        ["big"],
        ["big-1"],
        ["t1", "t2"],
    ]


def test_a_list_field_puts_an_item_in_the_group_of_each_distinct_value():
    hits = [H("a", {"doc": ["x", "y", "x"]}), H("b", {"doc": "y"})]
    assert ids(grouped(hits, k=5, size=5)) == [("x", ["a"]), ("y", ["a", "b"])]


@given(
    docs=st.lists(st.one_of(st.none(), st.integers(0, 5)), max_size=40),
    k=st.integers(1, 6),
    size=st.integers(1, 4),
)
def test_groups_are_the_first_k_values_with_their_first_hits(docs, k, size):
    hits = [H(f"h{i}", {} if d is None else {"doc": d}) for i, d in enumerate(docs)]
    result = grouped(hits, k, size)
    first_seen = []
    for h in hits:
        key = h.metadata.get("doc", ("own", h.id))
        if key not in first_seen:
            first_seen.append(key)
    assert [g.value if g.value is not None else ("own", g.hits[0].id) for g in result.groups] == first_seen[:k]
    for g in result.groups:
        members = [
            h
            for h in hits
            if h.metadata.get("doc", ("own", h.id)) == (g.value if g.value is not None else ("own", g.hits[0].id))
        ]
        assert g.hits == members[:size]
    assert result.complete == (len(result.groups) == k and all(len(g.hits) == size for g in result.groups))
