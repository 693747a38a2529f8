"""The shared state's records (`embedsvc.index.state.Records`) in Milvus: one collection, `embedsvc_state`, with a
row per record (`key` = "<kind>/<key>", `kind`, `value`: the record's JSON), so that every embedsvc replica over the
same Milvus sees the same directions, operations and snapshot catalogue.

Every read asks Milvus (Strong consistency by default, as configured): a record written through one replica is read
by the next call on any other. A record holds at most `MAX_VALUE` bytes (Milvus's VARCHAR); the records kept here
are small (an operation, a direction's vector in base64, a snapshot's manifest).
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from embedsvc.index.milvus.client import Connection, MilvusOptions, ensure_table
from embedsvc.index.milvus.expressions import literal
from embedsvc.index.state import check_key, too_large

STATE = "embedsvc_state"
MAX_VALUE = 65_535
_PAGE = 4096  # records per query when listing a kind
_DELETE_CHUNK = 256  # keys per delete expression (its length stays far below Milvus's limits)


class MilvusRecords:
    def __init__(self, options: MilvusOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    @property
    def shared(self) -> bool:
        return True

    def _connect(self) -> Connection:
        with self._lock:
            if self._connection is None:
                connection = Connection(self.options)
                ensure_table(connection, STATE, "key", {"kind": 64, "value": MAX_VALUE})
                self._connection = connection
            return self._connection

    def get(self, kind: str, key: str) -> bytes | None:
        check_key(kind, key)
        connection = self._connect()
        rows = connection.run(
            "state",
            connection.client.query,
            STATE,
            filter=f"key == {literal(f'{kind}/{key}')}",
            output_fields=["value"],
        )
        return rows[0]["value"].encode("utf-8") if rows else None

    def put(self, kind: str, key: str, value: bytes) -> None:
        check_key(kind, key)
        text = value.decode("utf-8")
        if len(value) > MAX_VALUE:
            raise too_large(kind, key, len(value), MAX_VALUE)
        connection = self._connect()
        row = {"key": f"{kind}/{key}", "vector": [0.0, 0.0], "kind": kind, "value": text}
        connection.run("state", connection.client.upsert, STATE, data=[row], write=True)

    def delete(self, kind: str, key: str) -> bool:
        check_key(kind, key)
        if self.get(kind, key) is None:
            return False
        connection = self._connect()
        connection.run(
            "state", connection.client.delete, STATE, filter=f"key == {literal(f'{kind}/{key}')}", write=True
        )
        return True

    def delete_many(self, kind: str, keys: Collection[str]) -> None:
        keys = sorted(keys)
        for key in keys:
            check_key(kind, key)
        connection = self._connect()
        for start in range(0, len(keys), _DELETE_CHUNK):
            chunk = ", ".join(literal(f"{kind}/{k}") for k in keys[start : start + _DELETE_CHUNK])
            connection.run("state", connection.client.delete, STATE, filter=f"key in [{chunk}]", write=True)

    def list(self, kind: str) -> dict[str, bytes]:
        check_key(kind, "x")
        connection = self._connect()
        found: dict[str, bytes] = {}
        last = ""
        while True:
            expression = f"kind == {literal(kind)}" + (f" and key > {literal(last)}" if last else "")
            # Pages in primary-key order (as collection.export reads them): `key > last` then continues the listing.
            rows = connection.run(
                "state",
                connection.client.query,
                STATE,
                filter=expression,
                output_fields=["key", "value"],
                limit=_PAGE,
                iterator="True",
                reduce_stop_for_best="True",
            )
            if not rows:
                return found
            for row in rows:
                found[row["key"].removeprefix(f"{kind}/")] = row["value"].encode("utf-8")
            last = max(r["key"] for r in rows)

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
