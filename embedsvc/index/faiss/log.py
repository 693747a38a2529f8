"""A collection's write-ahead log: append-only, length-framed, checksummed records, fsync'd in groups.

Record on disk: u32 payload length, u32 CRC-32 of the payload, then the payload: u64 LSN, u8 op, op body.
A write is acknowledged only after its record is written and fsync'd; writers that arrive while a sync is under way
are written and synced together by the next leader (group commit). Records are applied to memory by the leader, in
LSN order, after the sync, so nothing a reader sees can be lost.

Reading back: a bad record whose declared end lies past the end of the file, or that is followed only by zeros, is a
torn tail (a write cut short by a crash, never acknowledged) and is truncated away; any other bad record is
corruption in the middle, which the caller reports as DATA_LOSS.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index import metadata as stored
from embedsvc.stats import Histogram

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")  # payload length, crc32(payload)
_HEAD = struct.Struct("<QB")  # lsn, op
_JSON_LEN = struct.Struct("<I")
OP_UPSERT = 1
OP_DELETE = 2
MAX_RECORD_BYTES = 1 << 31


@dataclass(frozen=True)
class Upsert:
    ids: list[str]
    vectors: np.ndarray  # (n, d) float32
    metadata: list[dict[str, Any]]
    inputs: list[str]


@dataclass(frozen=True)
class Delete:
    ids: list[str]


Operation = Upsert | Delete


@dataclass(frozen=True)
class Record:
    lsn: int
    operation: Operation


def encode(lsn: int, operation: Operation) -> bytes:
    if isinstance(operation, Upsert):
        header = stored.dumps(
            {"ids": operation.ids, "metadata": operation.metadata, "inputs": operation.inputs}
        ).encode("utf-8")
        vectors = np.ascontiguousarray(operation.vectors, dtype="<f4").tobytes()
        payload = _HEAD.pack(lsn, OP_UPSERT) + _JSON_LEN.pack(len(header)) + header + vectors
    else:
        payload = _HEAD.pack(lsn, OP_DELETE) + json.dumps(operation.ids, ensure_ascii=False).encode("utf-8")
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes, dimension: int) -> Record:
    lsn, op = _HEAD.unpack_from(payload)
    body = payload[_HEAD.size :]
    if op == OP_UPSERT:
        (size,) = _JSON_LEN.unpack_from(body)
        header = stored.loads(body[_JSON_LEN.size : _JSON_LEN.size + size])
        raw = body[_JSON_LEN.size + size :]
        vectors = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(len(header["ids"]), dimension)
        return Record(lsn, Upsert(header["ids"], vectors, header["metadata"], header["inputs"]))
    if op == OP_DELETE:
        return Record(lsn, Delete(json.loads(body)))
    raise ValueError(f"unknown operation {op}")


@dataclass(frozen=True)
class Scan:
    records: list[Record]
    valid_bytes: int  # everything before this offset is good
    torn_bytes: int  # bytes after valid_bytes that are a torn tail (to truncate)
    corruption: str | None  # set when a bad record is followed by more data


def scan(path: Path, dimension: int) -> Scan:
    """Read every good record; classify what follows the last good one (see the module docstring)."""
    data = path.read_bytes() if path.exists() else b""
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        problem = None
        if offset + _FRAME.size > len(data):
            problem = "a truncated frame header"
        else:
            size, crc = _FRAME.unpack_from(data, offset)
            end = offset + _FRAME.size + size
            if size < _HEAD.size or end > len(data):
                problem = f"a record of {size} bytes that does not fit"
            else:
                payload = data[offset + _FRAME.size : end]
                if zlib.crc32(payload) != crc:
                    problem = "a checksum mismatch"
                else:
                    try:
                        records.append(decode(payload, dimension))
                    except (ValueError, KeyError, TypeError, struct.error) as exc:
                        problem = f"an undecodable record ({exc})"
                    else:
                        offset = end
                        continue
        rest = data[offset:]
        declared_end = offset + _FRAME.size + (_FRAME.unpack_from(data, offset)[0] if len(rest) >= _FRAME.size else 0)
        if declared_end > len(data) or not rest.strip(b"\0"):
            return Scan(records, offset, len(rest), None)
        return Scan(records, offset, 0, f"{problem} at byte {offset} of {path.name}, with data after it")
    return Scan(records, offset, 0, None)


def storage_error(exc: OSError, what: str) -> EmbedsvcError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EmbedsvcError(Reason.STORAGE_FULL, f"{what}: the disk is full; the write was not applied")
    return EmbedsvcError(Reason.STORAGE_ERROR, f"{what}: {exc.strerror or exc}; the write was not applied")


class LogWriter:
    """Appends records durably with group commit and applies them, in LSN order, once they are on disk."""

    def __init__(self, path: Path, next_lsn: int, apply: Callable[[list[Record]], None]) -> None:
        self.path = path
        self._apply = apply
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._cond = threading.Condition()
        self._next_lsn = next_lsn
        self._pending: list[tuple[Record, bytes]] = []
        self._done_lsn = next_lsn - 1  # every record up to this one is settled (applied or failed)
        self._failed: dict[int, EmbedsvcError] = {}
        self._busy = False  # a leader is writing, or an exclusive operation runs
        self._closed = False
        # Durations of the group commits' fsyncs, for the metrics endpoint.
        self.fsync_seconds = Histogram()

    @property
    def size(self) -> int:
        return self._size

    @property
    def last_lsn(self) -> int:
        return self._next_lsn - 1

    def commit(self, operation: Operation) -> int:
        """Write, fsync and apply one operation; returns its LSN. Raises STORAGE_FULL / STORAGE_ERROR."""
        with self._cond:
            if self._closed:
                raise EmbedsvcError(Reason.STORAGE_ERROR, "the collection is closing")
            lsn = self._next_lsn
            self._next_lsn += 1
            self._pending.append((Record(lsn, operation), encode(lsn, operation)))
            while self._done_lsn < lsn:
                if self._busy:
                    self._cond.wait()
                    continue
                self._lead()
            error = self._failed.pop(lsn, None)
        if error is not None:
            raise error
        return lsn

    def _lead(self) -> None:
        """Called with the lock held: write and sync everything pending, then apply it."""
        batch, self._pending = self._pending, []
        self._busy = True
        self._cond.release()
        error: EmbedsvcError | None = None
        try:
            data = b"".join(raw for _, raw in batch)
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                started = time.perf_counter()
                os.fsync(self._fd)
                self.fsync_seconds.observe(time.perf_counter() - started)
            except OSError as exc:
                error = storage_error(exc, f"writing {self.path.name}")
                log.error("%s: %s", self.path, error.message)
                self._rewind()
            else:
                self._size += len(data)
                try:
                    self._apply([record for record, _ in batch])
                except Exception:
                    # Durable but not applied: memory no longer matches the log. Refuse further writes; a restart
                    # replays the log into a consistent state.
                    log.exception("%s: applying committed records failed", self.path)
                    self._closed = True
                    error = EmbedsvcError(Reason.INTERNAL, "applying the write failed; the server log has details")
        finally:
            self._cond.acquire()
            if error is not None:
                for record, _ in batch:
                    self._failed[record.lsn] = error
            self._done_lsn = batch[-1][0].lsn
            self._busy = False
            self._cond.notify_all()

    def _rewind(self) -> None:
        """Cut a failed write back off the log, so the next record starts clean."""
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError as exc:  # the log may end in garbage: recovery treats it as a torn tail
            log.error("%s: cannot truncate a failed write: %s", self.path, exc)

    def exclusive(self, fn: Callable[[], None]) -> None:
        """Run fn while no write is in flight (for checkpoints); later writers wait."""
        with self._cond:
            while self._busy or self._pending:
                if self._busy:
                    self._cond.wait()
                else:
                    self._lead()
            self._busy = True
        try:
            fn()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def truncate(self) -> None:
        """Empty the log (after a checkpoint holds everything in it); call inside `exclusive`."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self._size = 0

    def close(self) -> None:
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._closed = True
            os.close(self._fd)
