"""Property-based fuzzing of the two parsers that read text from requests: metadata filters and vector expressions.

Whatever the text, parsing ends in a result or an INVALID_* / LIMIT_EXCEEDED error (never INTERNAL: no
RecursionError, IndexError, ValueError...), and a compiled filter never raises on any metadata. A short run here; a
long one under `-m slow`.
"""

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedsvc.core.collections.filters import compile_filter
from embedsvc.core.expression import parse_expression
from embedsvc.errors import EmbedsvcError, Reason

FILTER_REASONS = {Reason.INVALID_FILTER, Reason.LIMIT_EXCEEDED}
EXPRESSION_REASONS = {Reason.INVALID_EXPRESSION, Reason.LIMIT_EXCEEDED, Reason.NOT_FINITE}

# Pieces of the filter grammar, glued at random, with junk in between: most texts are nearly valid, which reaches
# deeper into the parser than random characters do.
FILTER_PIECES = st.sampled_from(
    [
        "genre", "year", "tags", '"quoted field"', "a.b-c", " = ", " != ", " < ", " <= ", " > ", " >= ", " IN ",
        " AND ", " OR ", " NOT ", "(", ")", "[", "]", ",", '"jazz"', '"esc\\"aped"', "1990", "-3", "2.5e3", "1e999",
        "true", "false", "timestamp(", '"2024-05-01T00:00:00Z"', '"2024-05-01"', "9" * 40, "1.", ".5", "x1", '"', "\\",
        " ", "\t", "\u00e9", "\x00", "((((", "))))", "NOT NOT NOT ",
    ]
)  # fmt: skip
filter_texts = st.one_of(
    st.lists(FILTER_PIECES, max_size=40).map("".join),
    st.text(max_size=200),
)
metadata_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
        st.just(datetime(2024, 5, 1, tzinfo=UTC)),
    ),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=10,
)
metadata = st.dictionaries(st.sampled_from(["genre", "year", "tags", "quoted field", "a.b-c"]), metadata_values)

EXPRESSION_PIECES = st.sampled_from(
    ["king", "man", "woman", " + ", " - ", "*", "0.5", "-2", "1e400", "nan", "inf", '"a text"', '"unterminated',
     '"esc\\"aped"', "  ", "++", "--", "**", "\\", "\u00e9t\u00e9", "3*", "*3"]
)  # fmt: skip
expression_texts = st.one_of(st.lists(EXPRESSION_PIECES, max_size=30).map("".join), st.text(max_size=200))


def _filter(text, records):
    try:
        predicate = compile_filter(text, 4096)
    except EmbedsvcError as exc:
        assert exc.reason in FILTER_REASONS, (text, exc.reason)
        return
    if predicate is not None:
        for m in records:
            assert predicate(m) in (True, False)


def _expression(text):
    try:
        parse_expression(text, field_name="expressions[0]", max_chars=4096, max_terms=64)
    except EmbedsvcError as exc:
        assert exc.reason in EXPRESSION_REASONS, (text, exc.reason)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_texts, st.lists(metadata, max_size=5))
def test_filters_fail_only_with_invalid_filter(text, records):
    _filter(text, records)


@settings(max_examples=300, deadline=None)
@given(expression_texts)
def test_expressions_fail_only_with_invalid_expression(text):
    _expression(text)


def test_the_reported_filters():
    """Deep nesting and long NOT chains are INVALID_FILTER (they were INTERNAL: RecursionError)."""
    for text in ("(" * 2000 + "n = 1" + ")" * 2000, "NOT " * 1000 + "n = 1", "n = " + "1" * 4000 + "x"):
        with pytest.raises(EmbedsvcError) as info:
            compile_filter(text, 10_000)
        assert info.value.reason is Reason.INVALID_FILTER
    assert compile_filter("(" * 64 + "n = 1" + ")" * 64, 10_000)({"n": 1})
    assert compile_filter("NOT " * 64 + "n = 1", 10_000)({"n": 1})


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_texts, st.lists(metadata, max_size=5))
def test_filters_long(text, records):
    _filter(text, records)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(expression_texts)
def test_expressions_long(text):
    _expression(text)
