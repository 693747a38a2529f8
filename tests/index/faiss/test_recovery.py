"""Checkpoints against writes that arrive while one is being written (index/faiss/recovery.py, log.py)."""

import threading

import numpy as np

from embedsvc.index.faiss.collection import Collection
from embedsvc.index.faiss.log import LogWriter, Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.types import CollectionConfig, IndexParams, Metric
from tests.helpers import wait_for


def batch(tag: str, n: int = 5) -> Upsert:
    x = np.random.default_rng(len(tag)).normal(size=(n, 4)).astype(np.float32)
    return Upsert([f"{tag}{i}" for i in range(n)], x, [{}] * n, [""] * n)


def test_inside_exclusive_the_settled_lsn_leaves_out_writes_still_waiting(tmp_path):
    applied = []
    writer = LogWriter(tmp_path / "wal.log", 1, applied.extend)
    writer.commit(batch("a"))
    seen = {}

    def during() -> None:
        thread = threading.Thread(target=writer.commit, args=(batch("b"),))
        thread.start()
        wait_for(lambda: writer.last_lsn == 2, every=0.001)  # b has its LSN, and waits for the exclusive section to end
        seen["settled"], seen["applied"] = writer.settled_lsn, [r.lsn for r in applied]
        seen["thread"] = thread

    writer.exclusive(during)
    seen["thread"].join(30)
    assert seen["settled"] == 1 and seen["applied"] == [1]
    assert [r.lsn for r in applied] == [1, 2] and writer.settled_lsn == 2
    writer.close()


def test_a_write_waiting_for_a_checkpoint_survives_a_restart(tmp_path, monkeypatch):
    """A write that takes its LSN while a checkpoint runs is written to the log after it: the checkpoint must not claim
    that LSN, or recovery would skip the acknowledged write."""
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(CollectionConfig("c", 4, Metric.L2, IndexParams()))
    collection.upsert(batch("a"))
    real_exclusive = LogWriter.exclusive
    late = []

    def exclusive(self, fn):
        def with_a_write_waiting() -> None:
            thread = threading.Thread(target=collection.upsert, args=(batch("late"),))
            thread.start()
            late.append(thread)
            wait_for(lambda: self.last_lsn == 2, every=0.001)
            fn()

        real_exclusive(self, with_a_write_waiting)

    monkeypatch.setattr(LogWriter, "exclusive", exclusive)
    collection.checkpoint()
    monkeypatch.setattr(LogWriter, "exclusive", real_exclusive)
    late[0].join(30)
    assert collection.count == 10  # acknowledged
    store.close_all(checkpoint=False)
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)
    assert reopened.count == 10
    assert [item is not None for item in reopened.get(["late0", "a0"], with_vectors=False)] == [True, True]
    reopened.close()
