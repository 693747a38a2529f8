"""The audit log: one JSON line per write or admin action (and per read with `[auth] audit_reads`) in
`<data_dir>/audit.log`: when, the request id, who (key name and peer), what (method, collections, counts) and the
outcome (code and reason). Never the key, the authorization header or the request's content.

Lines are queued by the calls and written by one thread, which fsyncs once per group of lines (so auditing costs a
call no disk wait); the log is rotated past `max_bytes` into audit.log.1 ... audit.log.<files>.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FILE = "audit.log"


class AuditLog:
    def __init__(self, data_dir: Path, *, max_bytes: int, files: int) -> None:
        self.path = data_dir / FILE
        self._max_bytes = max_bytes
        self._files = files
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the server's life, closed in close()
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def record(self, **entry: Any) -> None:
        self._queue.put({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **entry})

    def flush(self) -> None:
        """Wait until every entry recorded so far is on disk."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._fh.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            group = [first]
            stop = False
            while len(group) < 1000:  # everything already queued goes out with this fsync
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    break
                group.append(entry)
            self._write(group)
            for _ in range(len(group) + stop):
                self._queue.task_done()
            if stop:
                return

    def _write(self, group: list[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for e in group)
        try:
            self._fh.write(data)
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
