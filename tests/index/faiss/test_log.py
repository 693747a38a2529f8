"""The write-ahead log: framing, torn tails at every byte, corruption, group commit, storage failures."""

import errno
import os
import threading

import numpy as np
import pytest

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss import log as wal


def upsert(i, d=4):
    return wal.Upsert([f"id{i}", f"id{i}b"], np.full((2, d), i, np.float32), [{"n": i}, {}], ["", "w"])


def write_records(path, n):
    with open(path, "wb") as fh:
        for i in range(1, n + 1):
            op = upsert(i) if i % 3 else wal.Delete([f"id{i - 1}"])
            fh.write(wal.encode(i, op))


def test_round_trip(tmp_path):
    path = tmp_path / "wal.log"
    write_records(path, 5)
    result = wal.scan(path, 4)
    assert [r.lsn for r in result.records] == [1, 2, 3, 4, 5]
    assert result.records[0].operation.ids == ["id1", "id1b"]
    np.testing.assert_array_equal(result.records[0].operation.vectors, np.full((2, 4), 1, np.float32))
    assert result.records[2].operation == wal.Delete(["id2"])
    assert (result.torn_bytes, result.corruption) == (0, None)


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path):
    path = tmp_path / "wal.log"
    write_records(path, 4)
    full = path.read_bytes()
    last_start = len(full) - len(wal.encode(4, upsert(4)))
    for cut in range(last_start, len(full)):
        path.write_bytes(full[:cut])
        result = wal.scan(path, 4)
        assert [r.lsn for r in result.records] == [1, 2, 3], cut
        assert result.corruption is None
        assert result.valid_bytes == last_start and result.torn_bytes == cut - last_start


def test_zero_filled_tail_is_torn(tmp_path):
    path = tmp_path / "wal.log"
    write_records(path, 2)
    good = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"\0" * 100)
    result = wal.scan(path, 4)
    assert len(result.records) == 2 and result.valid_bytes == good and result.corruption is None


def test_corruption_in_the_middle_is_reported(tmp_path):
    path = tmp_path / "wal.log"
    write_records(path, 5)
    data = bytearray(path.read_bytes())
    data[len(wal.encode(1, upsert(1))) + 12] ^= 0xFF  # a byte inside record 2's payload
    path.write_bytes(bytes(data))
    result = wal.scan(path, 4)
    assert [r.lsn for r in result.records] == [1]
    assert "checksum mismatch" in result.corruption


def test_group_commit_applies_in_order_and_shares_fsyncs(tmp_path, monkeypatch):
    applied = []
    syncs = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(wal.os, "fsync", counting_fsync)
    writer = wal.LogWriter(tmp_path / "wal.log", 1, lambda records: applied.extend(r.lsn for r in records))
    lsns = []

    def work(t):
        for i in range(25):
            lsns.append(writer.commit(wal.Upsert([f"{t}-{i}"], np.zeros((1, 4), np.float32), [{}], [""])))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert sorted(lsns) == list(range(1, 201))
    assert applied == list(range(1, 201))  # applied once each, in LSN order
    assert len(syncs) < 200  # concurrent writers shared fsyncs
    assert [r.lsn for r in wal.scan(tmp_path / "wal.log", 4).records] == list(range(1, 201))


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, Reason.STORAGE_FULL), (errno.EIO, Reason.STORAGE_ERROR)])
def test_a_failed_write_is_not_acknowledged_nor_applied(tmp_path, monkeypatch, code, reason):
    applied = []
    writer = wal.LogWriter(tmp_path / "wal.log", 1, lambda records: applied.extend(r.lsn for r in records))
    writer.commit(upsert(1))
    size = writer.size
    real_write = os.write

    def failing_write(fd, data):
        real_write(fd, data[: len(data) // 2])  # a partial write, then the error
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(wal.os, "write", failing_write)
    with pytest.raises(EmbedsvcError) as info:
        writer.commit(upsert(2))
    assert info.value.reason is reason
    assert applied == [1]
    monkeypatch.setattr(wal.os, "write", real_write)
    assert (tmp_path / "wal.log").stat().st_size == size  # the partial record was cut off
    writer.commit(upsert(3))
    writer.close()
    assert [r.lsn for r in wal.scan(tmp_path / "wal.log", 4).records] == [1, 3]


def test_fsync_failure_is_not_acknowledged(tmp_path, monkeypatch):
    writer = wal.LogWriter(tmp_path / "wal.log", 1, lambda records: None)

    def failing_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(wal.os, "fsync", failing_fsync)
    with pytest.raises(EmbedsvcError) as info:
        writer.commit(upsert(1))
    assert info.value.reason is Reason.STORAGE_ERROR
