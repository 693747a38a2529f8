"""A collection's write-ahead log: append-only, checksummed, fsync'd in groups.

On disk, each group commit is one frame: the 8-byte MAGIC, u32 payload length, u32 CRC-32 of the payload, then the
payload: its records, each a u32 length then u64 LSN, u8 op, op body. (Logs written before 0.3 hold one frame per
record without MAGIC: u32 length, u32 CRC-32, then the record; they are still read, and new groups are appended after
them.) A write is acknowledged only after its group is written and fsync'd; writers that arrive while a sync is under
way are written and synced together by the next leader. Records are applied to memory by the leader, in LSN order,
after the sync, so nothing a reader sees can be lost.

Reading back: a bad frame (cut short, a checksum mismatch, a damaged length) after which no valid frame follows is a
torn tail: the last group, cut short by a crash before its fsync returned, so never acknowledged; it is truncated
away. A group's checksum covers all of it, so a power loss that kept later pages of the last write but not earlier
ones is still a torn tail. A bad frame followed by any valid frame is corruption: the later group was written only
after the earlier one's fsync, so the damage is to acknowledged data. The caller reports it as DATA_LOSS and keeps the
log as it is, for inspection.
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

import numpy as np

from embedsvc import durable
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index import metadata as stored
from embedsvc.index.types import Delete, Operation, Upsert
from embedsvc.stats import Histogram

log = logging.getLogger(__name__)

MAGIC = b"eSG\xf1\r\n\x1a\n"  # starts every group; as a legacy frame's length it would be over 2**31, which none is
_FRAME = struct.Struct("<II")  # payload length, crc32(payload)
_LEN = struct.Struct("<I")  # a record's length inside a group
_HEAD = struct.Struct("<QB")  # lsn, op
_JSON_LEN = struct.Struct("<I")
OP_UPSERT = 1
OP_DELETE = 2
# How many LSNs past the last good one a search for legacy frames after damage looks for.
_LEGACY_LOOKAHEAD = 16


@dataclass(frozen=True)
class Record:
    lsn: int
    operation: Operation


def encode(lsn: int, operation: Operation) -> bytes:
    """One record in the legacy framing (kept for reading old logs, and for tests that write them)."""
    payload = _record(lsn, operation)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_group(records: list[tuple[int, Operation]]) -> bytes:
    """One group commit's frame."""
    payload = b"".join(_LEN.pack(len(r)) + r for r in (_record(lsn, op) for lsn, op in records))
    return MAGIC + _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _record(lsn: int, operation: Operation) -> bytes:
    if isinstance(operation, Upsert):
        header = stored.dumps(
            {"ids": operation.ids, "metadata": operation.metadata, "inputs": operation.inputs}
        ).encode("utf-8")
        vectors = np.ascontiguousarray(operation.vectors, dtype="<f4").tobytes()
        return _HEAD.pack(lsn, OP_UPSERT) + _JSON_LEN.pack(len(header)) + header + vectors
    return _HEAD.pack(lsn, OP_DELETE) + json.dumps(operation.ids, ensure_ascii=False).encode("utf-8")


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
    corruption: str | None  # set when a bad frame is followed by a valid one


class _Bad(Exception):
    pass


def _frame_at(data: bytes, offset: int, dimension: int) -> tuple[list[Record], int]:
    """The records of the frame at `offset` and where it ends; _Bad says why there is no valid frame there."""
    group = data.startswith(MAGIC, offset)
    head = offset + (len(MAGIC) if group else 0)
    if head + _FRAME.size > len(data):
        raise _Bad("a truncated frame header")
    size, crc = _FRAME.unpack_from(data, head)
    end = head + _FRAME.size + size
    if size < (_LEN.size if group else 0) + _HEAD.size or end > len(data):
        raise _Bad(f"a frame of {size} bytes that does not fit")
    payload = data[head + _FRAME.size : end]
    if zlib.crc32(payload) != crc:
        raise _Bad("a checksum mismatch")
    try:
        if not group:
            return [decode(payload, dimension)], end
        records, at = [], 0
        while at < len(payload):
            (length,) = _LEN.unpack_from(payload, at)
            records.append(decode(payload[at + _LEN.size : at + _LEN.size + length], dimension))
            at += _LEN.size + length
        if at != len(payload):
            raise ValueError("records overrun their group")
        return records, end
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise _Bad(f"an undecodable record ({exc})") from None


def _next_frame(data: bytes, start: int, after_lsn: int, dimension: int) -> int | None:
    """The offset of the first valid frame at or after `start` (searched by MAGIC, and for legacy frames by the
    LSNs that could follow `after_lsn`), or None."""
    found = []
    at = data.find(MAGIC, start)
    while at != -1:
        try:
            _frame_at(data, at, dimension)
        except _Bad:
            at = data.find(MAGIC, at + 1)
            continue
        found.append(at)
        break
    for lsn in range(after_lsn + 1, after_lsn + 1 + _LEGACY_LOOKAHEAD):
        pattern = struct.pack("<Q", lsn)
        at = data.find(pattern, start + _FRAME.size)
        while at != -1:
            frame = at - _FRAME.size
            try:
                if not data.startswith(MAGIC, frame):
                    _frame_at(data, frame, dimension)
                    found.append(frame)
                    break
            except _Bad:
                pass
            at = data.find(pattern, at + 1)
    return min(found) if found else None


def scan(path: Path, dimension: int, after_lsn: int = 0) -> Scan:
    """Read every good record; classify what follows the last good one (see the module docstring). `after_lsn` is
    the LSN the log continues from (the checkpoint's), used to recognise legacy frames after damage."""
    data = path.read_bytes() if path.exists() else b""
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        try:
            found, offset = _frame_at(data, offset, dimension)
        except _Bad as bad:
            last = records[-1].lsn if records else after_lsn
            follow = _next_frame(data, offset + 1, last, dimension)
            if follow is None:
                return Scan(records, offset, len(data) - offset, None)
            return Scan(
                records,
                offset,
                0,
                f"{bad} at byte {offset} of {path.name}, with valid records from byte {follow} on",
            )
        records.extend(found)
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
        created = not path.exists()
        self._fd = durable.open_append(path)
        if created:
            durable.fsync_dir(path.parent)  # else a power loss could take the new log's name, with its records
        self._size = os.fstat(self._fd).st_size
        self._cond = threading.Condition()
        self._next_lsn = next_lsn
        self._pending: list[Record] = []
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
        """The last LSN handed out: its record may still wait to be written."""
        return self._next_lsn - 1

    @property
    def settled_lsn(self) -> int:
        """Every record up to this LSN is applied (or failed, and so never acknowledged), and none after it is. Stable
        inside `exclusive`, where a checkpoint takes it: a writer that arrives meanwhile has its LSN already but is
        written to the log only after the checkpoint, so the checkpoint must not claim it."""
        return self._done_lsn

    def commit(self, operation: Operation) -> int:
        """Write, fsync and apply one operation; returns its LSN. Raises STORAGE_FULL / STORAGE_ERROR."""
        with self._cond:
            if self._closed:
                raise EmbedsvcError(Reason.STORAGE_ERROR, "the collection is closing")
            lsn = self._next_lsn
            self._next_lsn += 1
            self._pending.append(Record(lsn, operation))
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
            data = encode_group([(record.lsn, record.operation) for record in batch])
            try:
                durable.write(self._fd, data)
                started = time.perf_counter()
                durable.fsync(self._fd)
                self.fsync_seconds.observe(time.perf_counter() - started)
            except OSError as exc:
                error = storage_error(exc, f"writing {self.path.name}")
                log.error("%s: %s", self.path, error.message)
                self._rewind()
            else:
                self._size += len(data)
                try:
                    self._apply(batch)
                except Exception:
                    # Durable but not applied: memory no longer matches the log. Refuse further writes; a restart
                    # replays the log into a consistent state.
                    log.exception("%s: applying committed records failed", self.path)
                    self._closed = True
                    error = EmbedsvcError(Reason.INTERNAL, "applying the write failed; the server log has details")
        finally:
            self._cond.acquire()
            if error is not None:
                for record in batch:
                    self._failed[record.lsn] = error
            self._done_lsn = batch[-1].lsn
            self._busy = False
            self._cond.notify_all()

    def _rewind(self) -> None:
        """Cut a failed write back off the log, so the next record starts clean."""
        try:
            durable.truncate(self._fd, self._size)
            durable.fsync(self._fd)
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
        durable.truncate(self._fd, 0)
        durable.fsync(self._fd)
        self._size = 0

    def close(self) -> None:
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._closed = True
            os.close(self._fd)
