"""Storage faults: damage in the middle of the log, torn group commits, failed checkpoints, leftovers, a second server
on the same data directory, and a delete that waits for a checkpoint without stalling the other collections."""

import errno
import threading

import numpy as np
import pytest

from embedsvc import durable
from embedsvc.index.faiss import log as wal
from embedsvc.index.faiss.collection import LOG, Collection, State
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.types import CollectionConfig, IndexParams, Metric
from tests.helpers import wait_for


def batch(b, n=20, d=8):
    ids = [f"b{b}-{i}" for i in range(n)]
    return Upsert(ids, np.full((n, d), b, np.float32), [{"b": b}] * n, [""] * n)


def config(name="c", d=8):
    return CollectionConfig(name, d, Metric.L2, IndexParams().resolved(d))


def test_damaged_length_in_the_middle_is_data_loss_not_a_torn_tail(tmp_path):
    """The reported case: 5 acknowledged batches of 20, the first record's length field damaged to a large value."""
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(config())
    for b in range(5):
        collection.upsert(batch(b))
    store.close_all(checkpoint=False)
    path = tmp_path / "collections" / "c" / LOG
    data = bytearray(path.read_bytes())
    data[len(wal.MAGIC) : len(wal.MAGIC) + 4] = (1 << 30).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)
    assert reopened.state is State.DATA_LOSS
    assert "does not fit at byte 0" in reopened.error and "valid records from byte" in reopened.error
    assert path.read_bytes() == bytes(data)  # kept as it was, for inspection


def write_groups(path, groups):
    with open(path, "wb") as fh:
        lsn = 0
        for size in groups:
            records = []
            for _ in range(size):
                lsn += 1
                records.append((lsn, batch(lsn, n=2)))
            fh.write(wal.encode_group(records))


def test_a_torn_last_group_at_every_byte(tmp_path):
    path = tmp_path / "wal.log"
    write_groups(path, [2, 3, 4])
    full = path.read_bytes()
    last = len(wal.encode_group([(6 + i, batch(6 + i, n=2)) for i in range(4)]))
    start = len(full) - last
    for cut in range(start, len(full)):
        path.write_bytes(full[:cut])
        result = wal.scan(path, 8)
        assert [r.lsn for r in result.records] == [1, 2, 3, 4, 5], cut
        assert result.corruption is None and result.valid_bytes == start


def test_a_last_group_with_later_pages_kept_and_earlier_ones_lost_is_torn(tmp_path):
    """A power loss may keep later pages of the last (unsynced) write and not earlier ones."""
    path = tmp_path / "wal.log"
    write_groups(path, [2, 3])
    full = bytearray(path.read_bytes())
    last = len(wal.encode_group([(3 + i, batch(3 + i, n=2)) for i in range(3)]))
    start = len(full) - last
    full[start + 20 : start + 120] = bytes(100)  # an early page of the last group never reached the disk
    path.write_bytes(bytes(full))
    result = wal.scan(path, 8)
    assert [r.lsn for r in result.records] == [1, 2] and result.corruption is None
    assert result.torn_bytes == last


def test_damage_to_an_earlier_group_is_corruption(tmp_path):
    path = tmp_path / "wal.log"
    write_groups(path, [2, 3, 1])
    data = bytearray(path.read_bytes())
    first = len(wal.encode_group([(1, batch(1, n=2)), (2, batch(2, n=2))]))
    data[first + 40] ^= 0x01  # inside the second group
    path.write_bytes(bytes(data))
    result = wal.scan(path, 8)
    assert [r.lsn for r in result.records] == [1, 2]
    assert "checksum mismatch" in result.corruption


def test_legacy_records_then_groups(tmp_path):
    """A log written before groups (one frame per record) continues with groups after an upgrade."""
    path = tmp_path / "wal.log"
    with open(path, "wb") as fh:
        fh.write(wal.encode(1, batch(1)) + wal.encode(2, batch(2)))
    writer = wal.LogWriter(path, 3, lambda records: None)
    writer.commit(batch(3))
    writer.close()
    assert [r.lsn for r in wal.scan(path, 8).records] == [1, 2, 3]
    data = bytearray(path.read_bytes())
    data[4] ^= 0xFF  # the first legacy record's checksum
    path.write_bytes(bytes(data))
    result = wal.scan(path, 8)
    assert result.records == [] and "checksum mismatch at byte 0" in result.corruption
    data = bytearray(path.read_bytes())
    data[4] ^= 0xFF
    data[0:4] = (1 << 29).to_bytes(4, "little")  # the first legacy record's length, damaged; legacy record 2 follows
    path.write_bytes(bytes(data))
    result = wal.scan(path, 8)
    assert result.records == [] and result.corruption is not None


def test_a_failed_checkpoint_never_fails_the_write_and_is_retried(tmp_path, monkeypatch):
    store = CollectionStore(tmp_path, 2000)  # a checkpoint every few writes
    collection = store.create(config())
    real_write_file = durable.write_file
    failing = [True]

    def full_disk(path, data):
        if failing[0] and "checkpoint" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_file(path, data)

    monkeypatch.setattr(durable, "write_file", full_disk)
    for b in range(4):
        assert collection.upsert(batch(b)) == 20 * (b + 1)  # durable in the log: acknowledged
    info = collection.info()
    assert info["checkpoint_error"] == "No space left on device" and info["checkpoint_failures"] == 1
    directory = tmp_path / "collections" / "c"
    assert not list(directory.glob(".checkpoint-*"))  # the unfinished checkpoint was removed
    failing[0] = False
    collection._checkpoint_retry_at = 0.0  # the backoff has passed
    collection.upsert(batch(9))
    assert collection.info()["checkpoint_error"] == ""
    assert list(directory.glob("checkpoint-*")) and collection.log_bytes == 0
    store.close_all(checkpoint=False)
    reopened = Collection.open(directory, 2000)
    assert reopened.count == 100


def test_leftover_checkpoint_directories_are_removed_at_open(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    store.create(config()).upsert(batch(1))
    store.close_all(checkpoint=False)
    leftover = tmp_path / "collections" / "c" / ".checkpoint-7.tmp"
    leftover.mkdir()
    (leftover / "vectors.npy").write_bytes(b"half")
    assert Collection.open(tmp_path / "collections" / "c", 1 << 30).count == 20
    assert not leftover.exists()


def test_delete_waits_for_a_checkpoint_without_stalling_other_collections(tmp_path, monkeypatch):
    store = CollectionStore(tmp_path, 1 << 30)
    slow = store.create(config("slow"))
    store.create(config("other"))
    slow.upsert(batch(1))
    entered, release = threading.Event(), threading.Event()
    real = durable.write_file

    def stalled(path, data):
        if "slow" in str(path) and "checkpoint" in str(path):
            entered.set()
            release.wait(10)
        real(path, data)

    monkeypatch.setattr(durable, "write_file", stalled)
    checkpointing = threading.Thread(target=slow.checkpoint)
    checkpointing.start()
    assert entered.wait(10)
    deleting = threading.Thread(target=store.delete, args=("slow",))
    deleting.start()
    # The delete took the name out of the store and now waits in close() for the stalled checkpoint; calls on the
    # other collection must be answered meanwhile, not wait behind it (if they did, they would wait until `release`).
    answered = {}

    def other_calls():
        wait_for(lambda: store.names() == ["other"], what="the delete to take 'slow' out of the store")
        answered["count"] = store.get("other").count

    asker = threading.Thread(target=other_calls, daemon=True)
    asker.start()
    asker.join(30)
    assert answered == {"count": 0}, "calls on another collection waited behind the delete"
    assert deleting.is_alive()  # still waiting for the checkpoint
    with pytest.raises(Exception, match="exists"):
        store.create(config("slow"))  # the name is not free until its files are gone
    release.set()
    checkpointing.join(10)
    deleting.join(10)
    assert not (tmp_path / "collections" / "slow").exists()
    store.create(config("slow"))
    store.close_all(checkpoint=False)


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path):
    first = durable.DataDirLock(tmp_path)
    with pytest.raises(durable.DataDirInUse, match=r"in use by another embedsvc server \(pid \d+\)"):
        durable.DataDirLock(tmp_path)
    first.release()
    durable.DataDirLock(tmp_path).release()  # free again


def test_serve_refuses_a_data_directory_in_use(tmp_path, capsys, monkeypatch):
    from embedsvc.cli import main
    from embedsvc.transport import logs

    monkeypatch.setattr(logs, "configure", lambda *args: None)  # keep the test process's logging as it is

    held = durable.DataDirLock(tmp_path)
    try:
        assert main(["serve", "--port", "0", "--data-dir", str(tmp_path)]) == 1
    finally:
        held.release()
    assert "is in use by another embedsvc server" in capsys.readouterr().err
