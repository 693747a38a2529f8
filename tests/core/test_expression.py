import pytest

from embedsvc.core.expression import TermKind, parse_expression
from embedsvc.errors import EmbedsvcError, Reason


def parse(text: str, max_terms: int = 64):
    return [
        (t.kind, t.weight, t.value)
        for t in parse_expression(text, field_name="f", max_chars=200, max_terms=max_terms).terms
    ]


W = TermKind.WORD


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("king - man + woman", [(W, 1.0, "king"), (W, -1.0, "man"), (W, 1.0, "woman")]),
        ("0.5*sheep + spider", [(W, 0.5, "sheep"), (W, 1.0, "spider")]),
        ("-2 * cold + hot", [(W, -2.0, "cold"), (W, 1.0, "hot")]),
        ("paris -france +italy", [(W, 1.0, "paris"), (W, -1.0, "france"), (W, 1.0, "italy")]),
        ("well-known - c++", [(W, 1.0, "well-known"), (W, -1.0, "c++")]),
        ("1990 + 1e-1*x", [(W, 1.0, "1990"), (W, 0.1, "x")]),
        ("  königin  ", [(W, 1.0, "königin")]),
        ('"a day at the beach" - summer', [(TermKind.TEXT, 1.0, "a day at the beach"), (W, -1.0, "summer")]),
        ('"say \\"hi\\""', [(TermKind.TEXT, 1.0, 'say "hi"')]),
    ],
)
def test_parses(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ("", Reason.INVALID_EXPRESSION, "0"),
        ("   ", Reason.INVALID_EXPRESSION, "0"),
        ("king man", Reason.INVALID_EXPRESSION, "5"),
        ("king - - man", Reason.INVALID_EXPRESSION, "7"),
        ("king -", Reason.INVALID_EXPRESSION, "6"),
        ("x*king", Reason.INVALID_EXPRESSION, "0"),
        ('"open', Reason.INVALID_EXPRESSION, "0"),
        ("2*", Reason.INVALID_EXPRESSION, "2"),
        ("* king", Reason.INVALID_EXPRESSION, "0"),
        ("nan*king", Reason.NOT_FINITE, None),
        ("inf*king + queen", Reason.NOT_FINITE, None),
    ],
)
def test_rejects(text, reason, position):
    with pytest.raises(EmbedsvcError) as info:
        parse(text)
    assert info.value.reason is reason
    assert info.value.field == "f"
    assert info.value.metadata.get("position") == position


def test_limits():
    with pytest.raises(EmbedsvcError) as info:
        parse("a + b + c", max_terms=2)
    assert info.value.reason is Reason.LIMIT_EXCEEDED
    with pytest.raises(EmbedsvcError) as info:
        parse_expression("a" * 201, field_name="f", max_chars=200, max_terms=4)
    assert info.value.reason is Reason.LIMIT_EXCEEDED
    assert info.value.metadata["limit"] == "200"
