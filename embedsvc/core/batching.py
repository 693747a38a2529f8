"""Dynamic batching: concurrent calls to one encoder merged into batches run by one worker thread.

Callers (gRPC threads) queue jobs and wait; the worker takes the oldest job, waits at most `max_wait_s` for more to
arrive (or until `max_batch_size` texts are queued), drops the jobs whose caller cancelled or whose deadline passed,
sorts the batch's texts by length so that padded batches stay short, runs the encoder once, and hands each caller its
own rows in its own order. A call larger than `max_batch_size` is split into several jobs. With batching off, every
job runs alone (the same worker, so the model still sees one batch at a time). The model never runs on a gRPC
thread, and a full queue refuses new work (OVERLOADED) instead of growing without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason

log = logging.getLogger(__name__)

# How often a waiting caller checks whether it was cancelled.
_POLL_S = 0.05


@dataclass(frozen=True)
class CallControl:
    """A call's deadline (time.monotonic(), None for none) and its cancellation flag, as the transport sees them."""

    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise EmbedsvcError(Reason.CANCELLED, "the call was cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise EmbedsvcError(Reason.DEADLINE_EXCEEDED, "the call's deadline passed before its texts were embedded")


@dataclass
class _Job:
    texts: list[str]
    lengths: list[int]
    control: CallControl
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    dropped_jobs: int = 0


class Batcher:
    """One worker thread per encoder; `submit` is thread-safe and blocks its caller until its rows are ready."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[str]], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_s: float,
        enabled: bool = True,
        max_queued: int = 16_384,
    ) -> None:
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self.max_queued = max_queued
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._worker.start()

    def submit(self, texts: Sequence[str], lengths: Sequence[int], control: CallControl | None = None) -> np.ndarray:
        """The encoder's rows for these texts, in order. Raises CANCELLED, DEADLINE_EXCEEDED, OVERLOADED or the
        encoder's own error."""
        control = control or CallControl()
        control.check()
        step = self.max_batch_size
        now = time.monotonic()
        jobs = [
            _Job(list(texts[i : i + step]), list(lengths[i : i + step]), control, now)
            for i in range(0, len(texts), step)
        ]
        with self._cond:
            if self._closed:
                raise EmbedsvcError(Reason.MODEL_NOT_READY, f"model '{self.name}' is shutting down")
            if self._queued_texts + len(texts) > self.max_queued:
                raise EmbedsvcError(
                    Reason.OVERLOADED,
                    f"model '{self.name}' has {self._queued_texts} texts queued (limit {self.max_queued}); retry later",
                    metadata={"model": self.name, "queued": str(self._queued_texts)},
                )
            self._queue.extend(jobs)
            self._queued_texts += len(texts)
            self._cond.notify()
        parts = []
        for job in jobs:
            while not job.done.wait(_POLL_S):
                if control.cancelled.is_set() or (
                    control.deadline is not None and time.monotonic() >= control.deadline
                ):
                    control.check()  # the worker will drop the jobs that have not started
            if job.error is not None:
                raise job.error
            assert job.result is not None
            parts.append(job.result)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=5)

    def _take(self) -> list[_Job] | None:
        """The next batch, after waiting for it to fill; None once closed."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                for job in self._queue:
                    job.error = EmbedsvcError(Reason.MODEL_NOT_READY, f"model '{self.name}' is shutting down")
                    job.done.set()
                return None
            if self.enabled:
                fill_by = self._queue[0].enqueued + self.max_wait_s
                while self._queued_texts < self.max_batch_size and (left := fill_by - time.monotonic()) > 0:
                    self._cond.wait(left)
            batch = [self._queue.popleft()]
            size = len(batch[0].texts)
            while self.enabled and self._queue and size + len(self._queue[0].texts) <= self.max_batch_size:
                job = self._queue.popleft()
                batch.append(job)
                size += len(job.texts)
            self._queued_texts -= size
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
                    job.done.set()
                    self.stats.dropped_jobs += 1
            if live:
                self._run_batch(live)

    def _run_batch(self, jobs: list[_Job]) -> None:
        texts = [t for job in jobs for t in job.texts]
        lengths = np.asarray([n for job in jobs for n in job.lengths])
        order = np.argsort(-lengths, kind="stable")  # longest first, as sentence-transformers does
        try:
            rows = self._run([texts[i] for i in order])
            out = np.empty_like(rows)
            out[order] = rows
        except BaseException as exc:
            if len(jobs) > 1:  # one caller's bad input must not fail the others: run each job alone
                for job in jobs:
                    self._run_batch([job])
                return
            if not isinstance(exc, EmbedsvcError):
                log.exception("model %s failed on a batch of %d texts", self.name, len(texts))
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        self.stats.batches += 1
        self.stats.texts += len(texts)
        start = 0
        for job in jobs:
            job.result = out[start : start + len(job.texts)]
            start += len(job.texts)
            job.done.set()
