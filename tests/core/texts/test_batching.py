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
from tests.helpers import wait_for


class Recorder:
    """A fake encoder: row i is [hash-like id of the text, its length]; remembers every batch it ran. With `gate`,
    each batch waits for the gate to open after it is recorded, so a test can hold the worker busy while callers
    queue."""

    def __init__(self, fail_on: str = "", gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.batches.append(list(texts))
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fail_on and self.fail_on in texts:
            raise EmbedsvcError(Reason.UNEMBEDDABLE_INPUT, "bad text")
        return np.asarray([[float(t.split(":")[1].rstrip("x")), len(t)] for t in texts], np.float32)

    def ran(self) -> int:
        """Texts in the batches started so far."""
        with self.lock:
            return sum(len(b) for b in self.batches)


def texts_of(caller: int, n: int) -> list[str]:
    return [f"c{caller}:{caller * 1000 + i}" + "x" * ((caller * 7 + i) % 13) for i in range(n)]


def in_thread(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def test_concurrent_callers_get_their_own_rows_in_order_and_are_merged():
    gate = threading.Event()
    enc = Recorder(gate=gate)
    batcher = Batcher("fake", enc, max_batch_size=64, max_wait_s=0.01)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = {
                c: pool.submit(lambda c=c: batcher.submit(texts_of(c, 3), [len(t) for t in texts_of(c, 3)]))
                for c in range(16)
            }
            # The worker is held in its first batch until every caller's texts are running or queued behind it.
            wait_for(lambda: len(enc.batches) == 1 and enc.ran() + batcher.queued == 48, what="all 48 texts queued")
            gate.set()
            results = {c: f.result(30) for c, f in futures.items()}
    finally:
        gate.set()
        batcher.close()
    for c, rows in results.items():
        assert rows[:, 0].tolist() == [c * 1000 + i for i in range(3)]
    assert sum(len(b) for b in enc.batches) == 48
    # Merged: the first batch took whoever had arrived, and what queued while the model ran became one batch.
    assert len(enc.batches) <= 2
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
    gate = threading.Event()
    enc = Recorder(gate=gate)
    batcher = Batcher("fake", enc, max_batch_size=64, max_wait_s=0.05, enabled=False)
    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(batcher.submit, texts_of(c, 2), [1, 1]) for c in range(8)]
            # Seven calls wait together while the first runs: batching on would merge them.
            wait_for(lambda: len(enc.batches) == 1 and batcher.queued == 14, what="seven calls queued")
            gate.set()
            for future in futures:
                future.result(30)
    finally:
        gate.set()
        batcher.close()
    assert sorted(len(b) for b in enc.batches) == [2] * 8


def test_cancelled_and_expired_work_is_dropped_before_it_runs():
    gate = threading.Event()
    enc = Recorder(gate=gate)
    batcher = Batcher("fake", enc, max_batch_size=1, max_wait_s=0.0)
    try:
        blocker = in_thread(batcher.submit, ["a:1"], [1])
        wait_for(lambda: enc.batches == [["a:1"]], what="the worker to be busy with a:1")
        cancelled, late = CallControl(), CallControl(deadline=time.monotonic() + 3600)
        errors = {}

        def call(name: str, control: CallControl) -> None:
            try:
                batcher.submit([f"{name}:2"], [1], control)
            except EmbedsvcError as exc:
                errors[name] = exc.reason

        callers = [in_thread(call, "cancel", cancelled), in_thread(call, "late", late)]
        wait_for(lambda: batcher.queued == 2, what="both calls queued behind a:1")
        cancelled.cancel()
        late.deadline = time.monotonic()  # its deadline passes while it is queued
        gate.set()  # the worker finishes a:1, then reaches (and drops) the queued jobs
        for thread in (*callers, blocker):
            thread.join(30)
        wait_for(lambda: batcher.stats.dropped_jobs == 2, what="the worker to drop both queued jobs")
    finally:
        gate.set()
        batcher.close()
    assert errors == {"cancel": Reason.CANCELLED, "late": Reason.DEADLINE_EXCEEDED}
    ran = [t for b in enc.batches for t in b]
    assert ran == ["a:1"]  # neither dropped job reached the model


def test_one_callers_bad_text_does_not_fail_the_others():
    gate = threading.Event()
    enc = Recorder(fail_on="bad:9", gate=gate)
    batcher = Batcher("fake", enc, max_batch_size=64, max_wait_s=0.05)
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.submit, ["ok:0"], [1])
            wait_for(lambda: len(enc.batches) == 1, what="the worker to be busy with ok:0")
            good = [first, *(pool.submit(batcher.submit, [f"ok:{i}"], [1]) for i in (1, 2))]
            bad = pool.submit(batcher.submit, ["bad:9"], [1])
            wait_for(lambda: batcher.queued == 3, what="three calls queued together")
            gate.set()
            assert [f.result(30)[0, 0] for f in good] == [0.0, 1.0, 2.0]
            with pytest.raises(EmbedsvcError) as info:
                bad.result(30)
    finally:
        gate.set()
        batcher.close()
    assert info.value.reason is Reason.UNEMBEDDABLE_INPUT
    assert sorted(enc.batches[1]) == ["bad:9", "ok:1", "ok:2"]  # the bad text was in a merged batch, which failed...
    assert ["bad:9"] in enc.batches[2:]  # ...and was run again alone, job by job


def test_a_full_queue_refuses_new_work():
    gate = threading.Event()
    enc = Recorder(gate=gate)
    batcher = Batcher("fake", enc, max_batch_size=4, max_wait_s=0.0, max_queued=4)
    try:
        running = in_thread(batcher.submit, ["a:1"] * 4, [1] * 4)
        wait_for(lambda: len(enc.batches) == 1, what="the worker to be busy with a")
        queued = in_thread(batcher.submit, ["b:1"] * 4, [1] * 4)
        wait_for(lambda: batcher.queued == 4, what="b's 4 texts queued")
        with pytest.raises(EmbedsvcError) as info:
            batcher.submit(["c:1"], [1])
        assert info.value.reason is Reason.OVERLOADED
        gate.set()
        running.join(30)
        queued.join(30)
        assert enc.batches == [["a:1"] * 4, ["b:1"] * 4]  # the refused call never queued
    finally:
        gate.set()
        batcher.close()
