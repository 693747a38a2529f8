"""The Milvus connection: one pymilvus client for the server, calls with the current call's deadline, retries with
backoff for idempotent calls, and Milvus's errors mapped into the reason catalogue (never INTERNAL for a condition on
the Milvus side).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from embedsvc import calls
from embedsvc.errors import EmbedsvcError, Reason

log = logging.getLogger(__name__)
T = TypeVar("T")
CONSISTENCY = ("Strong", "Bounded", "Session", "Eventually")
# Seconds allowed to calls that create, drop, load or index a collection (measured: dropping a 100k-vector HNSW
# collection on Milvus Lite took over 30 s); still no longer than the caller's deadline.
DDL_TIMEOUT_S = 600.0
# Milvus Lite (3.2) corrupts its write-ahead log when two threads write to one collection at once: a kill -9 then
# loses every write after the first interleaving (tests/test_crash.py found it). Writes to a Lite file therefore go
# one at a time, in every client of this process; a Milvus server takes concurrent writes.
_LITE_WRITES: dict[str, threading.Lock] = {}
_LITE_WRITES_LOCK = threading.Lock()


def _writes_lock(options: MilvusOptions) -> threading.Lock | None:
    if "://" in options.uri:
        return None
    key = os.path.realpath(options.uri)
    with _LITE_WRITES_LOCK:
        return _LITE_WRITES.setdefault(key, threading.Lock())


# Full-text search (the BM25 function and sparse vectors) came with Milvus 2.5, and is in Milvus Lite from 2.5 on
# (3.2 serves it, though its analyzer only tokenizes and lowercases: embedsvc analyses text itself, see
# collection.py). The `milvus` package's embedded standalone server is 2.3 and refuses a sparse vector field.
FULL_TEXT_SINCE = (2, 5)


def full_text_supported(version: str) -> bool:
    """Whether a Milvus server version ("v2.5.4", "milvus_lite-3.2.2", "v2.3.5-lite") has full-text search."""
    found = re.search(r"(\d+)\.(\d+)", version)
    return found is not None and (int(found.group(1)), int(found.group(2))) >= FULL_TEXT_SINCE


@dataclass(frozen=True)
class MilvusOptions:
    uri: str  # a local file path: Milvus Lite; http(s)://host:19530: a Milvus server or cluster
    token: str = ""
    db_name: str = ""
    consistency: str = "Strong"
    timeout_s: float = 30.0
    retries: int = 3


class Connection:
    def __init__(self, options: MilvusOptions) -> None:
        from pymilvus import MilvusClient

        self.options = options
        self._writes = _writes_lock(options)
        self._version: str | None = None
        kwargs: dict[str, Any] = {"uri": options.uri}
        if options.token:
            kwargs["token"] = options.token
        if options.db_name:
            kwargs["db_name"] = options.db_name
        try:
            self.client = MilvusClient(**kwargs)
        except Exception as exc:
            raise EmbedsvcError(
                Reason.STORAGE_ERROR, f"cannot connect to Milvus at {options.uri}: {_short(exc)}"
            ) from None

    @property
    def version(self) -> str:
        """The server's version, asked once."""
        if self._version is None:
            self._version = str(self.run("version", self.client.get_server_version))
        return self._version

    def full_text_unsupported(self) -> EmbedsvcError | None:
        """BACKEND_UNSUPPORTED naming the version needed when this server has no full-text search, else None."""
        if full_text_supported(self.version):
            return None
        needed = ".".join(map(str, FULL_TEXT_SINCE))
        return EmbedsvcError(
            Reason.BACKEND_UNSUPPORTED,
            f"keyword and hybrid search on Milvus need Milvus {needed} or later (its BM25 full-text search); the "
            f"server at {self.options.uri} is {self.version}. Use a newer Milvus, or a FAISS collection",
            metadata={"backend": "milvus", "needed": f"Milvus {needed}", "actual": self.version},
        )

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing an already broken connection
            log.debug("closing the Milvus client failed", exc_info=True)

    def timeout(self, ddl: bool = False) -> float:
        """The call's remaining time, at most timeout_s (DDL_TIMEOUT_S for `ddl` calls: dropping, loading or indexing
        a large collection takes minutes on Milvus Lite)."""
        limit = max(self.options.timeout_s, DDL_TIMEOUT_S) if ddl else self.options.timeout_s
        control = calls.current()
        remaining = control.remaining() if control is not None else None
        return max(0.01, min(limit, remaining)) if remaining is not None else limit

    def run(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        idempotent: bool = True,
        write: bool = False,
        ddl: bool = False,
        **kwargs: Any,
    ) -> T:
        """fn(*args, timeout=..., **kwargs), mapped errors, retried with backoff (0.1, 0.2, 0.4 s) when idempotent
        and Milvus is unreachable. `write`: one at a time on Milvus Lite."""
        attempt = 0
        while True:
            try:
                with self._writes if write and self._writes is not None else contextlib.nullcontext():
                    return fn(*args, timeout=self.timeout(ddl), **kwargs)
            except EmbedsvcError:
                raise
            except Exception as exc:
                error = map_error(exc, what)
                if idempotent and error.reason is Reason.STORAGE_ERROR and attempt < self.options.retries:
                    attempt += 1
                    calls.check()
                    time.sleep(0.1 * 2 ** (attempt - 1))
                    continue
                raise error from None


def ensure_table(connection: Connection, name: str, key: str, fields: dict[str, int]) -> None:
    """Create (if missing) and load a small bookkeeping collection: a VARCHAR primary key `key`, VARCHAR `fields`
    (name: max bytes) and the 2-dimensional dummy vector Milvus requires. Several replicas may race to create it."""
    from pymilvus import DataType

    client = connection.client
    if not connection.run(name, client.has_collection, name):
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(key, DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        for field, max_length in fields.items():
            schema.add_field(field, DataType.VARCHAR, max_length=max_length)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        try:
            connection.run(
                name,
                client.create_collection,
                name,
                schema=schema,
                index_params=index,
                consistency_level=connection.options.consistency,
                idempotent=False,
                ddl=True,
            )
        except EmbedsvcError:
            if not connection.run(name, client.has_collection, name):  # another replica made it first: fine
                raise
    connection.run(name, client.load_collection, name, ddl=True)  # a reopened Milvus Lite file starts released


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:500]


def map_error(exc: BaseException, what: str) -> EmbedsvcError:
    """A Milvus-side failure as a catalogued reason."""
    message = _short(exc)
    lowered = message.lower()
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None  # a grpc.RpcError's status code
    if (
        "deadline" in lowered
        or "timeout" in lowered
        or "timed out" in lowered
        or str(status).endswith("DEADLINE_EXCEEDED")
    ):
        return EmbedsvcError(Reason.DEADLINE_EXCEEDED, f"{what}: Milvus did not answer in time ({message})")
    if "collection not found" in lowered or "can't find collection" in lowered or code == 100:
        return EmbedsvcError(Reason.COLLECTION_NOT_FOUND, f"{what}: the collection is gone from Milvus ({message})")
    if any(
        s in lowered
        for s in ("exceeds", "exceeded the limit", "too large", "too many", "out of range", "max length", "limit")
    ):
        return EmbedsvcError(Reason.LIMIT_EXCEEDED, f"{what}: over a Milvus limit: {message}")
    return EmbedsvcError(Reason.STORAGE_ERROR, f"{what}: Milvus: {message}")
