"""Filters against a Python reference over random metadata."""

import random

import pytest

from embedsvc.core.collections.filters import compile_filter
from embedsvc.errors import EmbedsvcError, Reason

GENRES = ["jazz", "rock", "pop"]


def random_items(n, seed=0):
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        m = {"genre": rng.choice(GENRES), "year": rng.randint(1950, 2020), "live": rng.random() < 0.3}
        if rng.random() < 0.5:
            m["tags"] = rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))
        if rng.random() < 0.2:
            del m["year"]
        items.append(m)
    return items


CASES = [
    ('genre = "jazz"', lambda m: m["genre"] == "jazz"),
    ("year >= 1990", lambda m: "year" in m and m["year"] >= 1990),
    ('genre = "jazz" AND year < 1970', lambda m: m["genre"] == "jazz" and m.get("year", 9999) < 1970),
    ('genre IN ["rock", "pop"] OR live = true', lambda m: m["genre"] in ("rock", "pop") or m["live"]),
    ('NOT tags IN ["a"]', lambda m: "a" not in m.get("tags", [])),
    (
        'tags = "b" and not (year > 2000 or year < 1960)',
        lambda m: "b" in m.get("tags", []) and not ("year" in m and not 1960 <= m["year"] <= 2000),
    ),
    ("year != 1990", lambda m: m.get("year") != 1990),
    ('not genre != "pop"', lambda m: m["genre"] == "pop"),
    ('genre == "rock" or year == 1990', lambda m: m["genre"] == "rock" or m.get("year") == 1990),  # == is =
]


@pytest.mark.parametrize(("text", "reference"), CASES, ids=[c[0] for c in CASES])
def test_filters_match_reference(text, reference):
    predicate = compile_filter(text, 1000)
    for m in random_items(500):
        assert predicate(m) == reference(m), (text, m)


def test_empty_filter_is_none():
    assert compile_filter("  ", 10) is None


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("genre =", "7"),
        ("genre === 1", "8"),
        ("(a = 1", "6"),
        ("a = 1 b", "6"),
        ("a IN 1", "5"),
        ("= 3", "0"),
        ("a ~ 1", "2"),
    ],
)
def test_syntax_errors_have_positions(text, position):
    with pytest.raises(EmbedsvcError) as info:
        compile_filter(text, 1000)
    assert info.value.reason is Reason.INVALID_FILTER
    assert info.value.metadata["position"] == position


@pytest.mark.parametrize(
    ("text", "position"), [("genre = rock", "8"), ("tags IN [a, b]", "9"), ("genre != rock and x = 1", "9")]
)
def test_a_bare_word_value_hints_at_quotes(text, position):
    with pytest.raises(EmbedsvcError) as info:
        compile_filter(text, 1000)
    assert info.value.reason is Reason.INVALID_FILTER
    value = text[int(position) :].split()[0].rstrip(",]")
    assert info.value.metadata == {"position": position, "hint": "quote-strings", "value": value}
    assert f'"{value}"' in info.value.message


def test_length_limit():
    with pytest.raises(EmbedsvcError) as info:
        compile_filter('a = "' + "x" * 100 + '"', 50)
    assert info.value.reason is Reason.LIMIT_EXCEEDED


def test_integers_compare_exactly_and_timestamps_as_timestamps():
    from datetime import UTC, datetime

    big = 2**53 + 1
    item = {"n": big, "f": 2.5, "at": datetime(2024, 5, 1, 12, tzinfo=UTC), "flags": [1, 2]}
    assert compile_filter(f"n = {big}", 4096)(item)
    assert not compile_filter(f"n = {big - 1}", 4096)(item)  # as doubles these two are equal
    assert compile_filter("f > 2 AND f < 3 AND flags IN [2]", 4096)(item)
    assert compile_filter(
        'at >= timestamp("2024-05-01T00:00:00Z") AND at < timestamp("2024-05-02T00:00:00+00:00")', 4096
    )(item)
    assert not compile_filter('at = "2024-05-01T12:00:00Z"', 4096)(item)  # a string is not a timestamp
    assert not compile_filter('n > timestamp("2024-05-01T00:00:00Z")', 4096)(item)
    for bad in ('at > timestamp("yesterday")', 'at > timestamp("2024-05-01")', "at > timestamp(5)"):
        with pytest.raises(EmbedsvcError) as info:
            compile_filter(bad, 4096)
        assert info.value.reason is Reason.INVALID_FILTER
