"""Stored metadata keeps its types: exact integers, floats, bools, lists and timestamps, through JSON."""

from datetime import UTC, datetime, timedelta, timezone

from embedsvc.index import metadata


def test_typed_values_round_trip_through_json():
    value = {
        "big": 2**63 - 1,
        "past_double": 2**53 + 1,
        "float": 2003.0,
        "yes": True,
        "tags": ["a", 1, 2.5, False],
        "at": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "local": datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
    }
    back = metadata.loads(metadata.dumps(value))
    assert back == value
    assert type(back["big"]) is int and type(back["float"]) is float and back["local"].utcoffset() == timedelta(0)
    assert metadata.size_bytes({"a": "é"}) == len('{"a":"é"}'.encode())
