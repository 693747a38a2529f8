"""Dynamic batching: each caller gets its own rows in order, batches merge concurrent calls, and cancelled or expired
work is dropped before it runs."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedsvc.calls import CallControl
from embedsvc.core.texts.batching import Batcher
from embedsvc.errors import EmbedsvcError, Reason


class Recorder:
    """A fake encoder: row i is [hash-like id of the text, its length]; remembers every batch it ran."""

    def __init__(self, delay: float = 0.0, fail_on: str = "") -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.batches.append(list(texts))
        if self.fail_on and self.fail_on in texts:
            raise EmbedsvcError(Reason.UNEMBEDDABLE_INPUT, "bad text")
        time.sleep(self.delay)
        return np.asarray([[float(t.split(":")[1].rstrip("x")), len(t)] for t in texts], np.float32)


def texts_of(caller: int, n: int) -> list[str]:
    return [f"c{caller}:{caller * 1000 + i}" + "x" * ((caller * 7 + i) % 13) for i in range(n)]


def test_concurrent_callers_get_their_own_rows_in_order_and_are_merged():
    enc = Recorder(delay=0.02)
    batcher = Batcher("fake", enc, max_batch_size=64, max_wait_s=0.01)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = {
                c: pool.submit(lambda c=c: batcher.submit(texts_of(c, 3), [len(t) for t in texts_of(c, 3)]))
                for c in range(16)
            }
            results = {c: f.result() for c, f in futures.items()}
    finally:
        batcher.close()
    for c, rows in results.items():
        assert rows[:, 0].tolist() == [c * 1000 + i for i in range(3)]
    assert sum(len(b) for b in enc.batches) == 48
    assert len(enc.batches) < 16  # merged: fewer model calls than callers
    assert all(len(b) <= 64 for b in enc.batches)
    for batch in enc.batches:  # sorted longest first, to limit padding
        assert [len(t) for t in batch] == sorted((len(t) for t in batch), reverse=True)


def test_a_call_larger_than_the_batch_is_split_and_reassembled():
    enc = Recorder()
    batcher = Batcher("fake", enc, max_batch_size=8, max_wait_s=0.0)
    try:
        texts = texts_of(1, 30)
        rows = batcher.submit(texts, [len(t) for t in texts])
    finally:
        batcher.close()
    assert rows[:, 0].tolist() == [1000 + i for i in range(30)]
    assert max(len(b) for b in enc.batches) <= 8 and sum(len(b) for b in enc.batches) == 30


def test_batching_off_runs_each_call_alone():
    enc = Recorder(delay=0.01)
    batcher = Batcher("fake", enc, max_batch_size=64, max_wait_s=0.05, enabled=False)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: batcher.submit(texts_of(c, 2), [1, 1]), range(8)))
    finally:
        batcher.close()
    assert sorted(len(b) for b in enc.batches) == [2] * 8


def test_cancelled_and_expired_work_is_dropped_before_it_runs():
    enc = Recorder(delay=0.3)
    batcher = Batcher("fake", enc, max_batch_size=1, max_wait_s=0.0)
    try:
        blocker = threading.Thread(target=lambda: batcher.submit(["a:1"], [1]))
        blocker.start()
        time.sleep(0.05)  # the worker is busy with "a:1"
        cancelled = CallControl()
        errors = {}

        def call(name: str, control: CallControl) -> None:
            try:
                batcher.submit([f"{name}:2"], [1], control)
            except EmbedsvcError as exc:
                errors[name] = exc.reason

        t1 = threading.Thread(target=call, args=("cancel", cancelled))
        t2 = threading.Thread(target=call, args=("late", CallControl(deadline=time.monotonic() + 0.1)))
        t1.start()
        t2.start()
        time.sleep(0.05)
        cancelled.cancel()
        t1.join(2)
        t2.join(2)
        blocker.join(2)
        time.sleep(0.4)  # let the worker reach (and drop) the queued jobs
    finally:
        batcher.close()
    assert errors == {"cancel": Reason.CANCELLED, "late": Reason.DEADLINE_EXCEEDED}
    ran = [t for b in enc.batches for t in b]
    assert ran == ["a:1"]  # neither dropped job reached the model
    assert batcher.stats.dropped_jobs == 2


def test_one_callers_bad_text_does_not_fail_the_others():
    enc = Recorder(delay=0.02, fail_on="bad:9")
    batcher = Batcher("fake", enc, max_batch_size=64, max_wait_s=0.05)
    try:
        with ThreadPoolExecutor(4) as pool:
            good = [pool.submit(batcher.submit, [f"ok:{i}"], [1]) for i in range(3)]
            bad = pool.submit(batcher.submit, ["bad:9"], [1])
            assert [f.result()[0, 0] for f in good] == [0.0, 1.0, 2.0]
            with pytest.raises(EmbedsvcError) as info:
                bad.result()
    finally:
        batcher.close()
    assert info.value.reason is Reason.UNEMBEDDABLE_INPUT


def test_a_full_queue_refuses_new_work():
    enc = Recorder(delay=0.3)
    batcher = Batcher("fake", enc, max_batch_size=4, max_wait_s=0.0, max_queued=4)
    try:
        threading.Thread(target=lambda: batcher.submit(["a:1"] * 4, [1] * 4), daemon=True).start()
        time.sleep(0.05)
        threading.Thread(target=lambda: batcher.submit(["b:1"] * 4, [1] * 4), daemon=True).start()
        time.sleep(0.05)
        with pytest.raises(EmbedsvcError) as info:
            batcher.submit(["c:1"], [1])
        assert info.value.reason is Reason.OVERLOADED
    finally:
        time.sleep(0.7)
        batcher.close()
