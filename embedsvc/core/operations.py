"""Long-running operations (AIP-151): work that outlives its call, run in the background, observable and cancellable.

Each operation is a record of the state replicas share (`index/state.Records`, kind "operations": a JSON file under
`<data_dir>/operations/`, or a row in Milvus when replicas share collections there), written whenever its stage or
outcome changes (and, when shared, its progress at most once a second), so any replica answers for it. An operation
runs on the replica that started it (its `replica`). After that server stops or dies, an operation of a resumable
kind (one registered with `resume`, a re-embed) continues when the server starts again, from its record's
parameters; any other kind is reported done with an INTERRUPTED error, never lost silently. CancelOperation through
any replica works: on another replica it leaves a record (kind "operation-cancels") that the running one reads
between steps, at most once a second. Finished operations are kept for at least `RETAIN_S` seconds, and at most the
newest `RETAIN_COUNT` of them.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from embedsvc.calls import CallControl
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.state import Records

log = logging.getLogger(__name__)

RETAIN_S = 24 * 3600
RETAIN_COUNT = 1000
# Never more finished records than this, however recent (memory and disk stay bounded).
MAX_RETAINED = 10 * RETAIN_COUNT
PREFIX = "operations/"
KIND = "operations"
CANCELS = "operation-cancels"
# Seconds between reads of the shared state by a running operation (a cancel from another replica), and between
# writes of its progress there.
POLL_S = 1.0


@dataclass(frozen=True)
class OperationError:
    """Why an operation failed, as a failed call would say it."""

    reason: str
    message: str
    request_field: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def as_error(self) -> EmbedsvcError:
        return EmbedsvcError(
            Reason(self.reason), self.message, field=self.request_field or None, metadata=self.metadata
        )


@dataclass(frozen=True)
class Operation:
    id: str  # time-ordered: sorting ids sorts by creation
    kind: str
    collection: str
    create_time: datetime
    update_time: datetime
    stage: str = "queued"
    done_units: int = 0
    total_units: int = 0
    end_time: datetime | None = None
    cancel_requested: bool = False
    done: bool = False
    error: OperationError | None = None
    # What a finished operation produced (for a rebuild: the collection's name), as JSON-ready values.
    result: dict[str, Any] | None = None
    # What it was asked to do, as JSON-ready values: enough to resume it after a restart.
    params: dict[str, Any] = field(default_factory=dict)
    # Its kind's own progress (a re-embed's target, the items it cannot re-embed), as JSON-ready values.
    details: dict[str, Any] = field(default_factory=dict)
    # The replica running it.
    replica: str = ""
    # When the current stage began, and its units per second so far.
    stage_time: datetime | None = None
    rate: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return PREFIX + self.id

    @property
    def eta_s(self) -> float:
        """Seconds until the stage ends at its rate so far (0 when unknown)."""
        if self.done or self.rate <= 0 or self.total_units <= self.done_units:
            return 0.0
        return (self.total_units - self.done_units) / self.rate

    def to_json(self) -> bytes:
        data = asdict(self)
        for key in ("create_time", "update_time", "end_time", "stage_time"):
            data[key] = data[key].isoformat() if data[key] else None
        data["warnings"] = list(self.warnings)
        return json.dumps(data).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Operation:
        data = json.loads(raw)
        for key in ("create_time", "update_time", "end_time", "stage_time"):
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        data["error"] = OperationError(**data["error"]) if data.get("error") else None
        data["warnings"] = tuple(data.get("warnings", ()))
        return cls(**data)


class Progress:
    """What running work sees: its cancellation, and ways to report its stage, units, details and warnings."""

    def __init__(self, store: OperationStore, op_id: str, control: CallControl) -> None:
        self._store = store
        self._id = op_id
        self.control = control

    @property
    def operation(self) -> Operation:
        return self._store.get(PREFIX + self._id)

    def check(self) -> None:
        """Raise CANCELLED once the operation was cancelled, here or through another replica (work calls this
        between chunks)."""
        self._store._poll_cancel(self._id, self.control)
        self.control.check()

    def stage(self, stage: str, total_units: int = 0) -> None:
        now = datetime.now(UTC)
        self._store._update(
            self._id, persist=True, stage=stage, done_units=0, total_units=total_units, stage_time=now, rate=0.0
        )

    def units(self, done_units: int, total_units: int | None = None) -> None:
        self._store._units(self._id, done_units, total_units)

    def details(self, persist: bool = False, **values: Any) -> None:
        """Merge values into the operation's details (`persist`: write the record now)."""
        self._store._details(self._id, values, persist)

    def warn(self, message: str) -> None:
        op = self.operation
        self._store._update(self._id, persist=True, warnings=(*op.warnings, message))


Work = Callable[[Progress], dict[str, Any]]
Operations = list[Operation]  # (the store's `list` method hides the builtin inside its class)
# Builds the work that continues an operation after a restart, from its record.
Resume = Callable[[Operation], Work]


class OperationStore:
    """Runs operations on a small pool of background threads and keeps their records in `records`.

    `resumable`: the kinds whose unfinished operations continue after a restart (once `resume(kind, ...)` is called,
    when what they need is ready); this replica's unfinished operations of other kinds are reported INTERRUPTED at
    once."""

    def __init__(
        self, records: Records, replica: str = "", *, workers: int = 2, resumable: Collection[str] = ()
    ) -> None:
        self._records = records
        self.replica = replica
        self._resumable = frozenset(resumable)
        self._lock = threading.Lock()
        # Operations running (or finishing) in this process: memory is authoritative for them.
        self._running: dict[str, Operation] = {}
        self._controls: dict[str, CallControl] = {}
        self._persisted: dict[str, float] = {}  # time.monotonic() of each running operation's last write
        self._polled: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="operation")
        self._closing = False
        self._dirty: set[str] = set()  # running operations whose progress the records do not have yet
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def recover(self) -> None:
        """At start (once the records can be read): report this replica's operations that a stop interrupted and
        that cannot resume as INTERRUPTED, and forget old finished ones."""
        for op in self._all():
            if op.done or not self._mine(op) or op.kind in self._resumable:
                continue
            now = datetime.now(UTC)  # it was running when this server stopped
            error = OperationError(
                Reason.INTERRUPTED.value,
                f"the {op.kind} of '{op.collection}' was interrupted by a server restart; run it again",
            )
            self._write(replace(op, done=True, error=error, end_time=now, update_time=now, stage="interrupted"))
        self._prune()

    @property
    def closing(self) -> bool:
        """The server is stopping (running operations are being stopped)."""
        return self._closing

    @property
    def shared(self) -> bool:
        """Other replicas read and write these records (and run operations of their own)."""
        return self._records.shared

    def _mine(self, op: Operation) -> bool:
        return not op.replica or op.replica == self.replica

    # ---- running -------------------------------------------------------------------------------------------------

    def start(self, kind: str, collection: str, work: Work, params: dict[str, Any] | None = None) -> Operation:
        """A new operation running `work`, or the unfinished one of the same kind on the same collection (on any
        replica)."""
        with self._lock:
            for op in self._all_locked():
                if not op.done and op.kind == kind and op.collection == collection:
                    return op
            now = datetime.now(UTC)
            op = Operation(
                f"{time.time_ns():020d}-{secrets.token_hex(4)}",
                kind,
                collection,
                now,
                now,
                params=dict(params or {}),
                replica=self.replica,
                stage_time=now,
            )
            self._write(op)
            control = self._track(op)
        self._prune()
        self._pool.submit(self._run, op.id, work, control)
        return op

    def resume(self, kind: str, build: Resume) -> Operations:
        """Continue this replica's unfinished operations of `kind` (after a restart), each with `build(record)`."""
        resumed = []
        for op in self._all():
            if op.done or op.kind != kind or not self._mine(op):
                continue
            with self._lock:
                if op.id in self._running:
                    continue
                op = replace(op, stage="resuming", update_time=datetime.now(UTC), replica=self.replica)
                self._write(op)
                control = self._track(op)
            log.info("resuming operation %s (%s of %s)", op.name, op.kind, op.collection)
            try:
                work = build(op)
            except EmbedsvcError as exc:
                work = _failing(exc)
            self._pool.submit(self._run, op.id, work, control)
            resumed.append(op)
        return resumed

    def _track(self, op: Operation) -> CallControl:
        """Remember a running operation (call with the lock held)."""
        if self._records.shared and self._flusher is None:
            self._flusher = threading.Thread(target=self._flush, name="operation-progress", daemon=True)
            self._flusher.start()
        control = CallControl()
        self._running[op.id] = op
        self._controls[op.id] = control
        self._persisted[op.id] = time.monotonic()
        self._polled[op.id] = 0.0
        return control

    def _run(self, op_id: str, work: Work, control: CallControl) -> None:
        error: OperationError | None = None
        result: dict[str, Any] | None = None
        try:
            # The work checks for cancellation itself (between its steps), so that it can clean up first.
            result = work(Progress(self, op_id, control))
        except EmbedsvcError as exc:
            if exc.reason is Reason.CANCELLED and self._closing:
                kind = self._running[op_id].kind
                if kind in self._resumable:  # stays unfinished: it continues when the server starts again
                    self._update(op_id, persist=True, stage="paused")
                    self._forget(op_id)
                    return
                error = OperationError(Reason.INTERRUPTED.value, "interrupted: the server stopped; run it again")
            else:
                message = "cancelled by CancelOperation" if exc.reason is Reason.CANCELLED else exc.message
                error = OperationError(exc.reason.value, message, exc.field or "", exc.metadata)
        except Exception:
            log.exception("operation %s failed unexpectedly", op_id)
            error = OperationError(Reason.INTERNAL.value, "internal error; the server log has the details")
        if self._records.shared or control.cancelled:
            try:
                self._records.delete(CANCELS, op_id)
            except EmbedsvcError as exc:  # the shared state is down: a stale cancel record is harmless
                log.warning("operation %s: cannot remove its cancel record: %s", op_id, exc.message)
        now = datetime.now(UTC)
        stage = "failed" if error is not None else "done"
        self._update(op_id, persist=True, done=True, error=error, result=result, end_time=now, stage=stage)
        self._forget(op_id)

    def _forget(self, op_id: str) -> None:
        with self._lock:
            self._dirty.discard(op_id)
            self._running.pop(op_id, None)
            self._controls.pop(op_id, None)
            self._persisted.pop(op_id, None)
            self._polled.pop(op_id, None)

    def _update(self, op_id: str, *, persist: bool, **changes: Any) -> None:
        with self._lock:
            op = self._running.get(op_id)
            if op is None:
                return
            op = replace(op, update_time=datetime.now(UTC), **changes)
            self._running[op_id] = op
            if persist:
                self._write(op)
                self._persisted[op_id] = time.monotonic()

    def _units(self, op_id: str, done: int, total: int | None) -> None:
        with self._lock:
            op = self._running.get(op_id)
            if op is None:
                return
            now = datetime.now(UTC)
            elapsed = (now - op.stage_time).total_seconds() if op.stage_time else 0.0
            rate = done / elapsed if elapsed > 0 else 0.0
            op = replace(op, update_time=now, done_units=done, rate=rate)
            if total is not None:
                op = replace(op, total_units=total)
            self._running[op_id] = op
            # Progress reaches the records at most once a second (the flusher writes the last of it), and only when
            # other replicas read them.
            if self._records.shared:
                if time.monotonic() - self._persisted.get(op_id, 0.0) >= POLL_S:
                    self._write(op)
                    self._persisted[op_id] = time.monotonic()
                    self._dirty.discard(op_id)
                else:
                    self._dirty.add(op_id)

    def _flush(self) -> None:
        """Every second, write the progress of running operations that the records lack (shared records only)."""
        while not self._stop.wait(POLL_S):
            with self._lock:
                pending = [self._running[i] for i in self._dirty if i in self._running]
                self._dirty.clear()
            for op in pending:
                try:
                    with self._lock:
                        if op.id in self._running:
                            self._write(self._running[op.id])
                            self._persisted[op.id] = time.monotonic()
                except EmbedsvcError as exc:
                    log.warning("operation %s: cannot write its progress: %s", op.id, exc.message)

    def _details(self, op_id: str, values: dict[str, Any], persist: bool) -> None:
        with self._lock:
            op = self._running.get(op_id)
        if op is not None:
            self._update(op_id, persist=persist, details={**op.details, **values})

    def _poll_cancel(self, op_id: str, control: CallControl) -> None:
        """Cancel the operation when a CancelOperation through another replica (or before a restart) left a record."""
        now = time.monotonic()
        with self._lock:
            if control.cancelled or now - self._polled.get(op_id, now) < POLL_S:
                return
            self._polled[op_id] = now
        try:
            requested = self._records.get(CANCELS, op_id) is not None
        except EmbedsvcError as exc:
            log.warning("operation %s: cannot read the shared state: %s", op_id, exc.message)
            return
        if requested:
            self._update(op_id, persist=True, cancel_requested=True)
            control.cancel()

    def cancel(self, name: str) -> Operation:
        op = self.get(name)
        if op.done:
            return op
        with self._lock:
            control = self._controls.get(op.id)
            if control is not None:
                op = replace(self._running[op.id], cancel_requested=True, update_time=datetime.now(UTC))
                self._running[op.id] = op
                self._write(op)
        if control is not None:
            control.cancel()
            return op
        # Running on another replica, or waiting to resume here: it reads this record between steps.
        self._records.put(CANCELS, op.id, b"{}")
        op = replace(op, cancel_requested=True, update_time=datetime.now(UTC))
        self._write(op)
        return op

    def close(self, wait: bool = True) -> None:
        """Stop accepting work; stop running operations (resumable kinds stay unfinished, the others end INTERRUPTED)
        and wait for them."""
        with self._lock:
            self._closing = True
            controls = list(self._controls.values())
        for control in controls:
            control.cancel()
        self._pool.shutdown(wait=wait)
        self._stop.set()

    # ---- reading -------------------------------------------------------------------------------------------------

    def get(self, name: str) -> Operation:
        if not name:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the operation's name is required", field="name")
        op_id = name.removeprefix(PREFIX)
        with self._lock:
            op = self._running.get(op_id)
        if op is None and _valid_id(op_id):
            raw = self._records.get(KIND, op_id)
            op = _parse(raw, op_id) if raw is not None else None
        if op is None:
            raise EmbedsvcError(
                Reason.OPERATION_NOT_FOUND, f"no operation named {name!r}", field="name", metadata={"operation": name}
            )
        return op

    def list(self, collection: str = "") -> Operations:
        """Newest first."""
        found = [op for op in self._all() if not collection or op.collection == collection]
        return sorted(found, key=lambda op: op.id, reverse=True)

    def running(self, collection: str) -> bool:
        return any(not op.done and op.collection == collection for op in self._all())

    def _all(self) -> Operations:
        with self._lock:
            return self._all_locked()

    def _all_locked(self) -> Operations:
        """Every record, with this process's running operations as memory has them."""
        found = {}
        for key, raw in self._records.list(KIND).items():
            op = _parse(raw, key)
            if op is not None:
                found[op.id] = op
        found.update(self._running)
        return list(found.values())

    # ---- records -------------------------------------------------------------------------------------------------

    def _write(self, op: Operation) -> None:
        self._records.put(KIND, op.id, op.to_json())

    def _prune(self) -> None:
        """Forget finished operations older than RETAIN_S beyond the newest RETAIN_COUNT."""
        cutoff = datetime.now(UTC).timestamp() - RETAIN_S
        finished = sorted((op for op in self._all() if op.done), key=lambda op: op.id, reverse=True)
        stale = [op for op in finished[RETAIN_COUNT:] if op.update_time.timestamp() < cutoff]
        stale += [op for op in finished[MAX_RETAINED:] if op not in stale]
        for op in stale:
            self._records.delete(KIND, op.id)


def _valid_id(op_id: str) -> bool:
    return bool(op_id) and all(c.isascii() and (c.isalnum() or c == "-") for c in op_id) and len(op_id) <= 64


def _parse(raw: bytes, key: str) -> Operation | None:
    try:
        return Operation.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        log.error("operation record %s is unreadable and was skipped: %s", key, exc)
        return None


def _failing(error: EmbedsvcError) -> Work:
    def work(progress: Progress) -> dict[str, Any]:
        raise error

    return work
