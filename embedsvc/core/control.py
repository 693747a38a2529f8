"""A call's deadline and cancellation, as domain code sees them: long work checks it between chunks and stops."""

from __future__ import annotations

import threading
import time

from embedsvc.errors import EmbedsvcError, Reason


class CallControl:
    """A call's deadline (time.monotonic(), None for none) and whether it was cancelled, as the transport sees them.

    `cancel()` (the transport calls it when the client goes away) also wakes whoever waits for the call's work, so
    waiting costs nothing until something happens: no polling threads competing with the model for the GIL.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancelled = False
        self._wakers: list[threading.Event] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            wakers, self._wakers = self._wakers, []
        for event in wakers:
            event.set()

    def wake_on_cancel(self, event: threading.Event) -> None:
        with self._lock:
            if self._cancelled:
                event.set()
            else:
                self._wakers.append(event)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self._cancelled:
            raise EmbedsvcError(Reason.CANCELLED, "the call was cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise EmbedsvcError(Reason.DEADLINE_EXCEEDED, "the call's deadline passed before its texts were embedded")
