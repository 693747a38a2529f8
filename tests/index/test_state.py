"""The shared state's records, one suite for both implementations: files in a data directory, and Milvus (Lite here;
two replicas over a real Milvus server in tests/transport/test_replicas.py)."""

from __future__ import annotations

import pytest

from embedsvc.index.state import LocalRecords, replica_id


@pytest.fixture(params=["local", "milvus"])
def records(request, tmp_path):
    if request.param == "local":
        yield LocalRecords(tmp_path)
        return
    pytest.importorskip("pymilvus")
    from embedsvc.index.milvus.client import MilvusOptions
    from embedsvc.index.milvus.state import MilvusRecords

    found = MilvusRecords(MilvusOptions(str(tmp_path / "state.db")))
    yield found
    found.close()


def test_put_get_list_delete(records):
    assert records.get("directions", "vae/thick") is None
    records.put("directions", "vae/thick", b'{"a": 1}')
    records.put("directions", "vae/thin", b'{"a": 2}')
    records.put("operations", "0001-ab", b'{"b": "\xc3\xa9"}')
    assert records.get("directions", "vae/thick") == b'{"a": 1}'
    assert records.list("directions") == {"vae/thick": b'{"a": 1}', "vae/thin": b'{"a": 2}'}
    assert records.list("operations") == {"0001-ab": '{"b": "é"}'.encode()}
    assert records.list("snapshots") == {}
    records.put("directions", "vae/thick", b'{"a": 3}')  # replaced
    assert records.get("directions", "vae/thick") == b'{"a": 3}'
    assert records.delete("directions", "vae/thick") is True
    assert records.delete("directions", "vae/thick") is False
    assert list(records.list("directions")) == ["vae/thin"]


def test_many_records_list_completely(records):
    for n in range(300):
        records.put("operations", f"{n:05d}", str(n).encode())
    assert records.list("operations") == {f"{n:05d}": str(n).encode() for n in range(300)}


def test_delete_many_removes_those_that_exist_in_bulk(records):
    for n in range(600):
        records.put("reembed-journal", f"op1/{n:05d}", b"[]")
    records.put("reembed-journal", "op2/00000", b"[]")
    records.delete_many("reembed-journal", [f"op1/{n:05d}" for n in range(600)] + ["op1/absent"])
    assert records.list("reembed-journal") == {"op2/00000": b"[]"}
    records.delete_many("reembed-journal", [])
    with pytest.raises(ValueError):
        records.delete_many("reembed-journal", ["../x"])


@pytest.mark.parametrize("key", ["", "../x", "a/../b", ".hidden", "a//b", "a/", "a b", "x" * 201])
def test_keys_are_checked(records, key):
    with pytest.raises(ValueError):
        records.put("operations", key, b"{}")


def test_local_records_are_files_that_survive_a_restart(tmp_path):
    LocalRecords(tmp_path).put("directions", "vae/thick", b"{}")
    assert (tmp_path / "directions" / "vae" / "thick.json").read_bytes() == b"{}"
    (tmp_path / "directions" / "vae" / ".thin.json.tmp").write_bytes(b"half")  # a crash mid-write leaves this
    assert LocalRecords(tmp_path).list("directions") == {"vae/thick": b"{}"}


def test_replica_id_is_made_once_and_kept(tmp_path):
    made = replica_id(tmp_path)
    assert len(made) == 12 and replica_id(tmp_path) == made
    assert replica_id(tmp_path / "other") != made
