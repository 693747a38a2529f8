"""The audit log: one JSON line per write or admin action (and per read with `[auth] audit_reads`) in
`<data_dir>/audit.log`: when, the request id, who (key name and peer), what (method, collections, counts) and the
outcome (code and reason). Never the key, the authorization header or the request's content.

A write or admin call is answered only once its line is on disk (`record(..., durable=True)`): what a caller saw
acknowledged, or refused, is in the log, even across a crash right after. Such calls commit in groups: one thread
writes everything queued as one group with one fsync, and the calls arriving during that fsync share the next one.
An audited read (`audit_reads`) only appends its entry to a queue (no lock, no wake-up of its own: it costs a call
about a microsecond and no disk wait), written at most `GROUP_WINDOW_S` seconds later, so that a busy server pays one
write and one fsync per window instead of one per call (measured by benchmarks/percall.py). `flush()` waits for
everything recorded before it. The log is rotated past `max_bytes` into audit.log.1 ... audit.log.<files>; a group is
never split across files.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FILE = "audit.log"
# The longest a recorded line waits before the writer takes it (and the shortest time between two fsyncs).
GROUP_WINDOW_S = 0.05
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_STOP = object()


class AuditLog:
    def __init__(self, data_dir: Path, *, max_bytes: int, files: int, window_s: float = GROUP_WINDOW_S) -> None:
        self.path = data_dir / FILE
        self._max_bytes = max_bytes
        self._files = files
        self._window_s = window_s
        # (time.time(), entry) from the calls; a threading.Event from flush(); _STOP from close().
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()
        self._hurry = False  # a flush or close waits: write without waiting out the window
        self._second = -1
        self._stamp = ""
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the server's life, closed in close()
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def record(self, *, durable: bool = False, **entry: Any) -> None:
        """Queue one line (its time is now); thread-safe. Without `durable` it never blocks; with it, it returns once
        the line is on disk (or the writer has stopped)."""
        self._pending.append((time.time(), entry))
        if durable:
            self.flush()
        elif not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Wait until every entry recorded so far is on disk."""
        done = threading.Event()
        self._pending.append(done)
        self._hurry = True
        self._wake.set()
        while not done.wait(1.0):
            if not self._thread.is_alive():
                return

    def close(self) -> None:
        self._pending.append(_STOP)
        self._hurry = True
        self._wake.set()
        self._thread.join(timeout=10)
        self._fh.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._hurry:
                time.sleep(self._window_s)  # let the lines of this window gather: one write and one fsync for all
            self._hurry = False
            self._wake.clear()  # before taking the queue: a line recorded after this sets it again
            group: list[bytes] = []
            waiting: list[threading.Event] = []
            stop = False
            while self._pending:
                item = self._pending.popleft()
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiting.append(item)
                else:
                    group.append(self._line(*item))
            if group:
                self._write(group)
            for event in waiting:
                event.set()
            if stop:
                return

    def _line(self, at: float, entry: dict[str, Any]) -> bytes:
        return _ENCODER.encode({"time": self._time(at), **entry}).encode() + b"\n"

    def _time(self, at: float) -> str:
        """ISO 8601 in UTC with milliseconds, as datetime.isoformat(timespec="milliseconds") writes it."""
        second = int(at)
        if second != self._second:
            self._second, self._stamp = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._stamp}.{int((at - second) * 1000):03d}+00:00"

    def _write(self, group: list[bytes]) -> None:
        try:
            self._fh.write(b"".join(group))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            if self._fh.tell() > self._max_bytes:
                self._rotate()
        except OSError:
            log.exception("cannot write the audit log %s; %d entries lost", self.path, len(group))

    def _rotate(self) -> None:
        self._fh.close()
        for n in range(self._files - 1, 0, -1):
            older = self.path.with_name(f"{FILE}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{FILE}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{FILE}.1"))  # the oldest (.<files>) was replaced above
        self._fh = open(self.path, "ab")  # noqa: SIM115
