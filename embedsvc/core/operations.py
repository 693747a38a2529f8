"""Long-running operations (AIP-151): work that outlives its call, run in the background, observable and cancellable.

Each operation is recorded as a JSON file under `<data_dir>/operations/` (written atomically whenever its stage or
outcome changes), so it survives a restart: one that was still running when the server stopped is reported done with
an INTERRUPTED error when the server starts again, never lost silently. Finished operations are kept for at least
`RETAIN_S` seconds, and at most the newest `RETAIN_COUNT` of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedsvc.calls import CallControl
from embedsvc.durable import fsync_dir, write_atomic
from embedsvc.errors import EmbedsvcError, Reason

log = logging.getLogger(__name__)

RETAIN_S = 24 * 3600
RETAIN_COUNT = 1000
# Never more finished records than this, however recent (memory and disk stay bounded).
MAX_RETAINED = 10 * RETAIN_COUNT
PREFIX = "operations/"


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
    # What a finished operation produced (for a rebuild: the collection's description), as JSON-ready values.
    result: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return PREFIX + self.id

    def to_json(self) -> bytes:
        data = asdict(self)
        for key in ("create_time", "update_time", "end_time"):
            data[key] = data[key].isoformat() if data[key] else None
        return json.dumps(data).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Operation:
        data = json.loads(raw)
        for key in ("create_time", "update_time", "end_time"):
            data[key] = datetime.fromisoformat(data[key]) if data[key] else None
        data["error"] = OperationError(**data["error"]) if data["error"] else None
        return cls(**data)


class Progress:
    """What running work sees: its cancellation, and a way to report its stage and units done."""

    def __init__(self, store: OperationStore, op_id: str, control: CallControl) -> None:
        self._store = store
        self._id = op_id
        self.control = control

    def check(self) -> None:
        """Raise CANCELLED once the operation was cancelled (work calls this between chunks)."""
        self.control.check()

    def stage(self, stage: str, total_units: int = 0) -> None:
        self._store._update(self._id, persist=True, stage=stage, done_units=0, total_units=total_units)

    def units(self, done_units: int) -> None:
        self._store._update(self._id, persist=False, done_units=done_units)


Work = Callable[[Progress], dict[str, Any]]


class OperationStore:
    """Runs operations on a small pool of background threads and keeps their records."""

    def __init__(self, root: Path, *, workers: int = 2) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._operations: dict[str, Operation] = {}
        self._controls: dict[str, CallControl] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="operation")
        self._closing = False
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.glob("*.json")):
            try:
                op = Operation.from_json(path.read_bytes())
            except (ValueError, TypeError, KeyError) as exc:
                log.error("operation record %s is unreadable and was skipped: %s", path, exc)
                continue
            if not op.done:  # it was running when the server stopped
                now = datetime.now(UTC)
                error = OperationError(
                    Reason.INTERRUPTED.value,
                    f"the {op.kind} of '{op.collection}' was interrupted by a server restart; run it again",
                )
                op = replace(op, done=True, error=error, end_time=now, update_time=now, stage="interrupted")
                self._write(op)
            self._operations[op.id] = op
        self._prune()

    # ---- running -------------------------------------------------------------------------------------------------

    def start(self, kind: str, collection: str, work: Work) -> Operation:
        """A new operation running `work`, or the unfinished one of the same kind on the same collection."""
        with self._lock:
            for op in self._operations.values():
                if not op.done and op.kind == kind and op.collection == collection:
                    return op
            now = datetime.now(UTC)
            op = Operation(f"{time.time_ns():020d}-{secrets.token_hex(4)}", kind, collection, now, now)
            control = CallControl()
            self._operations[op.id] = op
            self._controls[op.id] = control
            self._write(op)
        self._prune()
        self._pool.submit(self._run, op.id, work, control)
        return op

    def _run(self, op_id: str, work: Work, control: CallControl) -> None:
        error: OperationError | None = None
        result: dict[str, Any] | None = None
        try:
            control.check()
            result = work(Progress(self, op_id, control))
        except EmbedsvcError as exc:
            if exc.reason is Reason.CANCELLED and self._closing:
                error = OperationError(Reason.INTERRUPTED.value, "interrupted: the server stopped; run it again")
            else:
                message = "cancelled by CancelOperation" if exc.reason is Reason.CANCELLED else exc.message
                error = OperationError(exc.reason.value, message, exc.field or "", exc.metadata)
        except Exception:
            log.exception("operation %s failed unexpectedly", op_id)
            error = OperationError(Reason.INTERNAL.value, "internal error; the server log has the details")
        now = datetime.now(UTC)
        stage = "failed" if error is not None else "done"
        self._update(op_id, persist=True, done=True, error=error, result=result, end_time=now, stage=stage)
        with self._lock:
            self._controls.pop(op_id, None)

    def _update(self, op_id: str, *, persist: bool, **changes: Any) -> None:
        with self._lock:
            op = self._operations.get(op_id)
            if op is None:
                return
            op = replace(op, update_time=datetime.now(UTC), **changes)
            self._operations[op_id] = op
            if persist:
                self._write(op)

    def cancel(self, name: str) -> Operation:
        op = self.get(name)
        with self._lock:
            control = self._controls.get(op.id)
            if control is not None and not op.done:
                op = replace(op, cancel_requested=True, update_time=datetime.now(UTC))
                self._operations[op.id] = op
                self._write(op)
                control.cancel()
        return op

    def close(self, wait: bool = True) -> None:
        """Stop accepting work; stop running operations (they end INTERRUPTED) and wait for them."""
        with self._lock:
            self._closing = True
            controls = list(self._controls.values())
        for control in controls:
            control.cancel()
        self._pool.shutdown(wait=wait)

    # ---- reading -------------------------------------------------------------------------------------------------

    def get(self, name: str) -> Operation:
        if not name:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the operation's name is required", field="name")
        with self._lock:
            op = self._operations.get(name.removeprefix(PREFIX))
        if op is None:
            raise EmbedsvcError(
                Reason.OPERATION_NOT_FOUND, f"no operation named {name!r}", field="name", metadata={"operation": name}
            )
        return op

    def list(self, collection: str = "") -> list[Operation]:
        """Newest first."""
        with self._lock:
            found = [op for op in self._operations.values() if not collection or op.collection == collection]
        return sorted(found, key=lambda op: op.id, reverse=True)

    def running(self, collection: str) -> bool:
        with self._lock:
            return any(not op.done and op.collection == collection for op in self._operations.values())

    # ---- records -------------------------------------------------------------------------------------------------

    def _write(self, op: Operation) -> None:
        write_atomic(self._root / f"{op.id}.json", op.to_json())

    def _prune(self) -> None:
        """Forget finished operations older than RETAIN_S beyond the newest RETAIN_COUNT."""
        cutoff = datetime.now(UTC).timestamp() - RETAIN_S
        with self._lock:
            finished = sorted((op for op in self._operations.values() if op.done), key=lambda op: op.id, reverse=True)
            stale = [op for op in finished[RETAIN_COUNT:] if op.update_time.timestamp() < cutoff]
            stale += [op for op in finished[MAX_RETAINED:] if op not in stale]
            for op in stale:
                del self._operations[op.id]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._root / f"{op.id}.json")
        if stale:
            fsync_dir(self._root)
