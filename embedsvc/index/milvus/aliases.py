"""Collection aliases kept in Milvus (the collection `embedsvc_aliases`), so that every embedsvc replica over the same
Milvus resolves an alias the same way. The same interface as `embedsvc.index.aliases.Aliases`.

Every alias is read on every call that names a collection, so the whole table is cached for `ttl_s` (1 s): a switch
made through one replica is seen by the others within that time, and at once by the replica that made it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from embedsvc.index.milvus.client import Connection, MilvusOptions, ensure_table
from embedsvc.index.milvus.expressions import literal
from embedsvc.index.types import Alias, alias_not_found

ALIASES = "embedsvc_aliases"
MAX_ALIASES = 16_384  # one Milvus query reads them all


class MilvusAliasStore:
    def __init__(
        self, options: MilvusOptions, *, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.options = options
        self.ttl_s = ttl_s
        self._clock = clock  # times the cache (tests pass one they move by hand)
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._aliases: dict[str, Alias] = {}
        self._read_at = -float("inf")

    def _connect(self) -> Connection:
        if self._connection is not None:
            return self._connection
        connection = Connection(self.options)
        ensure_table(connection, ALIASES, "alias", {"collection": 256, "update_time": 64})
        self._connection = connection
        return connection

    def _table(self, *, fresh: bool = False) -> dict[str, Alias]:
        with self._lock:
            if not fresh and self._clock() - self._read_at < self.ttl_s:
                return self._aliases
            connection = self._connect()
            rows = connection.run(
                "aliases",
                connection.client.query,
                ALIASES,
                filter='alias != ""',
                output_fields=["alias", "collection", "update_time"],
                limit=MAX_ALIASES,
            )
            self._aliases = {
                r["alias"]: Alias(r["alias"], r["collection"], datetime.fromisoformat(r["update_time"])) for r in rows
            }
            self._read_at = self._clock()
            return self._aliases

    def refresh(self) -> None:
        self._table(fresh=True)

    def resolve(self, name: str) -> str:
        alias = self._table().get(name)
        return alias.collection if alias is not None else name

    def get(self, name: str) -> Alias | None:
        return self._table(fresh=True).get(name)  # the admin calls that ask this decide on it: no stale answer

    def of(self, collection: str) -> list[str]:
        return sorted(a.alias for a in self._table().values() if a.collection == collection)

    def all(self) -> list[Alias]:
        return sorted(self._table(fresh=True).values(), key=lambda a: a.alias)

    def set(self, alias: str, collection: str) -> Alias:
        entry = Alias(alias, collection, datetime.now(UTC))
        connection = self._connect()
        row = {
            "alias": alias,
            "vector": [0.0, 0.0],
            "collection": collection,
            "update_time": entry.update_time.isoformat(),
        }
        connection.run("aliases", connection.client.upsert, ALIASES, data=[row], write=True)
        self._table(fresh=True)
        return entry

    def delete(self, alias: str) -> None:
        if self.get(alias) is None:
            raise alias_not_found(alias)
        connection = self._connect()
        connection.run("aliases", connection.client.delete, ALIASES, filter=f"alias == {literal(alias)}", write=True)
        self._table(fresh=True)

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
