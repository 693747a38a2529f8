"""The call being served, as every layer sees it: its deadline and cancellation.

The transport binds a CallControl to each call (a context variable, so nothing has to pass it down); long work calls
`check()` between chunks (filter evaluation, search batches, analogy evaluation, clustering, plots, frames, inpainting
steps, exports) and stops with DEADLINE_EXCEEDED or CANCELLED once the caller's deadline has passed or the caller has
gone. Work outside a call (startup, tests) has no control and never stops. Work handed to other threads (the text
batcher, operations) carries its control explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from embedsvc.errors import EmbedsvcError, Reason


class Waker(Protocol):
    """What `wake_on_cancel` sets: a threading.Event, or any object with `set()`."""

    def set(self) -> None: ...


class CallControl:
    """A call's deadline (time.monotonic(), None for none) and whether it was cancelled, as the transport sees them.

    `cancel()` (the transport calls it when the client goes away) also wakes whoever waits for the call's work, so
    waiting costs nothing until something happens: no polling threads competing with the model for the GIL.

    The transport may instead hand over `alive` (is the call still going?) and `watch` (register a function to run
    when the call ends; False when it has already ended): then checks ask `alive`, and `watch` is used only once
    something waits (`wake_on_cancel`), so that a call nobody waits on costs no end-of-call callback.
    """

    def __init__(
        self,
        deadline: float | None = None,
        *,
        alive: Callable[[], bool] | None = None,
        watch: Callable[[Callable[[], None]], bool] | None = None,
    ) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancelled = False
        self._wakers: list[Waker] = []
        self._alive = alive
        self._watch = watch

    @property
    def cancelled(self) -> bool:
        if not self._cancelled and self._alive is not None and not self._alive():
            self._cancelled = True
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            wakers, self._wakers = self._wakers, []
        for event in wakers:
            event.set()

    def wake_on_cancel(self, event: Waker) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None and not watch(self.cancel):  # the call has already ended
            self.cancel()
        with self._lock:
            if self._cancelled:
                event.set()
            else:
                self._wakers.append(event)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self.cancelled:
            raise EmbedsvcError(Reason.CANCELLED, "the call was cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise EmbedsvcError(Reason.DEADLINE_EXCEEDED, "the call's deadline passed; its work was stopped")


_CURRENT: ContextVar[CallControl | None] = ContextVar("embedsvc_call", default=None)


def current() -> CallControl | None:
    """The control of the call this thread serves, if any."""
    return _CURRENT.get()


def check() -> None:
    """Raise CANCELLED or DEADLINE_EXCEEDED if the current call should stop; free when there is no call."""
    control = _CURRENT.get()
    if control is not None:
        control.check()


@contextmanager
def bound(control: CallControl) -> Iterator[CallControl]:
    """Make `control` the current call's for the duration (the transport does this for every call)."""
    token = _CURRENT.set(control)
    try:
        yield control
    finally:
        _CURRENT.reset(token)
