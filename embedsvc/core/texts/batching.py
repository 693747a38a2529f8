"""Dynamic batching: concurrent calls to one model merged into batches run by one worker thread.

Callers (gRPC threads) queue jobs and wait; the worker takes the oldest job, waits at most `max_wait_s` for more to
arrive (until the inputs already queued plus as many as its last batch held, the callers it just answered, are there,
or a full `max_batch_size`), drops the jobs whose caller cancelled or whose deadline passed,
sorts the batch's inputs by length so that padded batches stay short, runs the model once, and hands each caller its
own rows in its own order. A call larger than `max_batch_size` is split into several jobs, each checked against the
caller's deadline and cancellation before it runs. With batching off, every job runs alone (the same worker, so the
model still sees one batch at a time). The model never runs on a gRPC thread, and a full queue refuses new work
(OVERLOADED) instead of growing without bound.

The batcher is generic over what it batches: texts for a text encoder (`TextModel`), (query, text) pairs for a
cross-encoder (`PairModel`). Everything it does (queueing, waiting, deadlines, splitting, sorting by
token count, isolating a bad job, statistics) depends only on each input's token count and on the model returning one
row per input, so one implementation serves both; a sibling for pairs would be a copy of this file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from embedsvc import calls
from embedsvc.backends.capabilities import CrossEncoder, TextEncoder
from embedsvc.calls import CallControl
from embedsvc.errors import EmbedsvcError, Reason, limit_exceeded
from embedsvc.stats import Histogram

log = logging.getLogger(__name__)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# What a batcher batches: a text, or a (query, text) pair.
T = TypeVar("T")


class _Wake:
    """Wakes the caller waiting for its job: set once the job is done or its call cancelled (CallControl calls `set`).

    A bare lock, held until set, instead of a threading.Event: an Event is a Condition over a lock, and each wait
    and set goes through its waiter list; a hand-off per call is worth keeping to one lock release.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            with contextlib.suppress(RuntimeError):  # set by two threads at once (done, cancelled): released already
                self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            with contextlib.suppress(RuntimeError):  # a second, concurrent set() released it meanwhile
                self._lock.release()  # stays set for whoever waits next
            return True
        return False


class _Job(Generic[T]):
    __slots__ = ("control", "done", "enqueued", "error", "items", "lengths", "result", "wake")

    def __init__(self, items: list[T], lengths: list[int], control: CallControl, enqueued: float) -> None:
        self.items = items
        self.lengths = lengths
        self.control = control
        self.enqueued = enqueued
        self.done = False
        # Set when the job is done, and when its caller cancels (then `done` stays false).
        self.wake = _Wake()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.done = True
        self.wake.set()


@dataclass
class BatchStats:
    batches: int = 0
    # Inputs (texts or pairs) the model ran.
    texts: int = 0
    dropped_jobs: int = 0
    # Inputs per batch the model ran (for the metrics endpoint).
    sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))


class Batcher(Generic[T]):
    """One worker thread per model; `submit` is thread-safe and blocks its caller until its rows are ready. `run`
    takes a batch of inputs and returns one row per input (a vector, or a score: the rows of a 1-D array)."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_s: float,
        enabled: bool = True,
        max_queued: int = 16_384,
        unit: str = "texts",
    ) -> None:
        self.name = name
        self._run = run
        self.unit = unit
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self.max_queued = max_queued
        self.stats = BatchStats()
        self._queue: deque[_Job[T]] = deque()
        self._queued_texts = 0
        self._last_size = max_batch_size
        self._expected = 1  # texts the worker waits for before it runs a batch (see `_take`)
        self._cond = threading.Condition()
        self._closed = False
        self._draining = False
        self._worker = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._worker.start()

    def submit(self, items: Sequence[T], lengths: Sequence[int], control: CallControl | None = None) -> np.ndarray:
        """The model's rows for these inputs (texts or pairs; `lengths`: their token counts), in order. Raises
        CANCELLED, DEADLINE_EXCEEDED, OVERLOADED or the model's own error."""
        control = control or CallControl()
        control.check()
        step = self.max_batch_size
        now = time.monotonic()
        jobs = [
            _Job(list(items[i : i + step]), list(lengths[i : i + step]), control, now)
            for i in range(0, len(items), step)
        ]
        if len(items) > self.max_queued:  # could never fit, however long the caller waits: not retryable
            raise limit_exceeded("texts", f"{self.unit} in one call to model '{self.name}' (its queue)", len(items),
                                 self.max_queued)  # fmt: skip
        with self._cond:
            if self._closed:
                raise EmbedsvcError(Reason.MODEL_NOT_READY, f"model '{self.name}' is shutting down")
            if self._queued_texts + len(items) > self.max_queued:
                raise EmbedsvcError(
                    Reason.OVERLOADED,
                    f"model '{self.name}' has {self._queued_texts} {self.unit} queued (limit {self.max_queued}); retry "
                    "later",
                    metadata={"model": self.name, "queued": str(self._queued_texts)},
                )
            self._queue.extend(jobs)
            self._queued_texts += len(items)
            # Wake the worker when it waits for a first job or its batch is now as full as it expects; between
            # the two it waits out its time (a wake-up per arriving call cost more than the wait saved).
            if len(self._queue) == len(jobs) or self._queued_texts >= self._expected:
                self._cond.notify()
        parts = []
        for job in jobs:
            control.wake_on_cancel(job.wake)
            while not job.done:
                job.wake.wait(control.remaining())
                if not job.done:
                    control.check()  # cancelled or expired: raise; the worker drops the jobs not yet started
            if job.error is not None:
                raise job.error
            assert job.result is not None
            parts.append(job.result)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def queued(self) -> int:
        """Inputs (texts or pairs) waiting for the model."""
        return self._queued_texts

    def drain(self) -> None:
        """Run what is queued, then stop (a model being replaced: its last callers are answered by it)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=5)
        if self.stats.batches:
            log.info(
                "model %s: %d batches, %d %s (%.1f a batch), %d jobs dropped",
                self.name,
                self.stats.batches,
                self.stats.texts,
                self.unit,
                self.stats.texts / self.stats.batches,
                self.stats.dropped_jobs,
            )

    def _take(self) -> list[_Job[T]] | None:
        """The next batch, after waiting for it to fill; None once closed."""
        with self._cond:
            # The callers the last batch answered tend to come straight back (closed-loop clients): expect them.
            free_at = time.monotonic()
            expected = min(self.max_batch_size, self._queued_texts + self._last_size)
            self._expected = expected if self.enabled else 1
            while not self._queue and not self._closed:
                if self._draining:  # a replaced model: its queue is done, so is the worker
                    self._closed = True
                    return None
                self._cond.wait()
            if self._closed:
                for job in self._queue:
                    job.error = EmbedsvcError(Reason.MODEL_NOT_READY, f"model '{self.name}' is shutting down")
                    job.finish()
                return None
            if self.enabled:
                # Wait until the expected texts are queued, for at most max_wait_s counted from when the worker was
                # free or the oldest text arrived, whichever is later. Counting from arrival alone locks closed-loop
                # clients into half batches: those queued during a batch would start the next one at once, without
                # the callers that batch is about to answer.
                fill_by = max(self._queue[0].enqueued, free_at) + self.max_wait_s
                while self._queued_texts < expected and (left := fill_by - time.monotonic()) > 0:
                    self._cond.wait(left)
            batch = [self._queue.popleft()]
            size = len(batch[0].items)
            while self.enabled and self._queue and size + len(self._queue[0].items) <= self.max_batch_size:
                job = self._queue.popleft()
                batch.append(job)
                size += len(job.items)
            self._queued_texts -= size
            self._last_size = size
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for job in batch:
                try:
                    job.control.check()
                    live.append(job)
                except EmbedsvcError as exc:  # cancelled or expired while queued: never run
                    job.error = exc
                    job.finish()
                    self.stats.dropped_jobs += 1
            if live:
                self._run_batch(live)

    def _run_batch(self, jobs: list[_Job[T]]) -> None:
        items = [t for job in jobs for t in job.items]
        lengths = np.asarray([n for job in jobs for n in job.lengths])
        order = np.argsort(-lengths, kind="stable")  # longest first, as sentence-transformers does
        try:
            rows = self._run([items[i] for i in order])
            out = np.empty_like(rows)
            out[order] = rows
        except BaseException as exc:
            if len(jobs) > 1:  # one caller's bad input must not fail the others: run each job alone
                for job in jobs:
                    self._run_batch([job])
                return
            if not isinstance(exc, EmbedsvcError):
                log.exception("model %s failed on a batch of %d %s", self.name, len(items), self.unit)
            for job in jobs:
                job.error = exc
                job.finish()
            return
        self.stats.batches += 1
        self.stats.texts += len(items)
        self.stats.sizes.observe(len(items))
        start = 0
        for job in jobs:
            job.result = out[start : start + len(job.items)]
            start += len(job.items)
            job.finish()


@dataclass(frozen=True)
class TextModel:
    """A loaded text encoder and the batcher that feeds it: what the registry hands out for `Capability.TEXTS`, so
    that every caller queues its texts for the model's worker instead of running the model on its own thread."""

    encoder: TextEncoder
    batcher: Batcher[str]


@dataclass(frozen=True)
class PairModel:
    """A loaded cross-encoder and the batcher that feeds it: what the registry hands out for `Capability.PAIRS`.

    It honours `capabilities.CrossEncoder` itself, so a caller that only knows the protocol (the rerank stage of a
    search) calls `score(pairs)` and its pairs are queued for the model's worker with the current call's deadline and
    cancellation (`embedsvc.calls.current()`), like every text encoder's texts."""

    encoder: CrossEncoder
    batcher: Batcher[tuple[str, str]]

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def version(self) -> str:
        return self.encoder.version

    @property
    def space(self) -> str:
        return self.encoder.space

    @property
    def max_seq_length(self) -> int:
        return self.encoder.max_seq_length

    @property
    def method(self) -> str:
        return self.encoder.method

    def warm_up(self) -> None:
        self.encoder.warm_up()

    def memory_bytes(self) -> int:
        return self.encoder.memory_bytes()

    def token_counts(self, pairs: list[tuple[str, str]]) -> list[int]:
        return self.encoder.token_counts(pairs)

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The raw scores (logits) of the pairs, through the batcher, under the current call's control."""
        if not pairs:
            return np.empty(0, np.float32)
        return self.scores(pairs, self.encoder.token_counts(pairs), calls.current())

    def scores(self, pairs: list[tuple[str, str]], counts: list[int], control: CallControl | None) -> np.ndarray:
        """`score` for callers that counted the pairs' tokens already (Rerank checks them against the limit)."""
        return np.asarray(self.batcher.submit(pairs, counts, control), dtype=np.float32)
