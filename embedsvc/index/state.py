"""State that replicas share: every piece of user-visible state that is neither a model file nor a collection's items
(latent directions, long-running operations and their results, the snapshot catalogue), kept as small JSON records
by kind and key.

`Records` is the interface; `LocalRecords` keeps each record as a file, `<data_dir>/<kind>/<key>.json`, written
atomically (temp file, fsync, rename, directory fsync) before a change is acknowledged; `index/milvus/state.py` keeps
them in one Milvus collection, so that every embedsvc replica over the same Milvus reads and writes the same records
(`index/stores.open_state` picks one, as `open_aliases` does for aliases, which keep their own store from before).
Callers own their records' contents (JSON), their keys' shape and their kinds' meaning: `core/operations.py`
(operations, operation-cancels), `core/images/directions.py` (directions), `core/collections/snapshots.py`
(snapshots). Keys are 1-200 characters of letters, digits, `-`, `_`, `.` and `/` (a `/` is a subdirectory in the
local layout), never starting with `.` or containing `..`.

`replica_id` names this server: a random id kept in its data directory, recorded with the operations it runs and the
snapshots it makes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from embedsvc import durable
from embedsvc.errors import EmbedsvcError, Reason

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")
_KIND = re.compile(r"^[a-z][a-z0-9\-]{0,63}$")
REPLICA_FILE = "replica-id"


def check_key(kind: str, key: str) -> None:
    """ValueError for a kind or key outside the shapes above (callers validate user input before this)."""
    if not _KIND.match(kind):
        raise ValueError(f"record kind {kind!r}")
    if not _KEY.match(key) or key.startswith(".") or ".." in key or key.endswith("/") or "//" in key:
        raise ValueError(f"record key {key!r}")
    if any(part.startswith(".") for part in key.split("/")):
        raise ValueError(f"record key {key!r}")


class Records(Protocol):
    """Small JSON records by kind and key. `shared`: other replicas read and write the same records (a reader must not
    trust what it remembers from before: it reads again)."""

    @property
    def shared(self) -> bool: ...

    def get(self, kind: str, key: str) -> bytes | None: ...

    def put(self, kind: str, key: str, value: bytes) -> None:
        """Create or replace a record, durably."""
        ...

    def delete(self, kind: str, key: str) -> bool:
        """Remove a record; False when there was none."""
        ...

    def delete_many(self, kind: str, keys: Collection[str]) -> None:
        """Remove these records (those that exist), in as few steps as the store allows."""
        ...

    def list(self, kind: str) -> dict[str, bytes]:
        """Every record of a kind, by key."""
        ...


class LocalRecords:
    """Records as files under the data directory. Each kind is read once, when first used (a file that cannot be read
    is logged and left out); afterwards memory is authoritative (one server per data directory: a lock file)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._kinds: dict[str, dict[str, bytes]] = {}

    @property
    def shared(self) -> bool:
        return False

    def _kind(self, kind: str) -> dict[str, bytes]:
        """The records of a kind (call with the lock held)."""
        found = self._kinds.get(kind)
        if found is not None:
            return found
        found = {}
        folder = self.root / kind
        if folder.is_dir():
            for path in sorted(folder.rglob("*.json")):
                key = path.relative_to(folder).with_suffix("").as_posix()
                if any(part.startswith(".") for part in key.split("/")):
                    continue  # a write_atomic temp file that a crash left behind
                try:
                    found[key] = path.read_bytes()
                except OSError as exc:
                    log.error("record %s cannot be read and was skipped: %s", path, exc)
        self._kinds[kind] = found
        return found

    def _path(self, kind: str, key: str) -> Path:
        check_key(kind, key)
        return self.root / kind / f"{key}.json"

    def get(self, kind: str, key: str) -> bytes | None:
        check_key(kind, key)
        with self._lock:
            return self._kind(kind).get(key)

    def put(self, kind: str, key: str, value: bytes) -> None:
        path = self._path(kind, key)
        with self._lock:
            records = self._kind(kind)
            durable.write_atomic(path, value)
            records[key] = value

    def delete(self, kind: str, key: str) -> bool:
        path = self._path(kind, key)
        with self._lock:
            records = self._kind(kind)
            if key not in records:
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            durable.fsync_dir(path.parent)
            del records[key]
            return True

    def delete_many(self, kind: str, keys: Collection[str]) -> None:
        for key in keys:
            self.delete(kind, key)

    def list(self, kind: str) -> dict[str, bytes]:
        check_key(kind, "x")
        with self._lock:
            return dict(self._kind(kind))


def too_large(kind: str, key: str, size: int, limit: int) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.LIMIT_EXCEEDED,
        f"the {kind} record {key!r} is {size} bytes, over the {limit} bytes the shared state holds per record",
        metadata={"limit": str(limit), "actual": str(size)},
    )


def replica_id(data_dir: Path) -> str:
    """This server's id: made once (12 hex digits) and kept in `<data_dir>/replica-id`."""
    path = data_dir / REPLICA_FILE
    try:
        found = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        found = ""
    if re.fullmatch(r"[0-9a-f]{12}", found):
        return found
    made = secrets.token_hex(6)
    durable.write_atomic(path, (made + "\n").encode("ascii"))
    return made
