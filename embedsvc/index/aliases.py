"""Collection aliases: other names for collections, switched atomically (re-embed into a new collection after a model
upgrade, then point the alias at it with no change on the clients' side).

`Aliases` is where aliases live; `AliasStore` keeps them in one JSON file, `<data_dir>/aliases.json`, rewritten
atomically (temp file, fsync, rename, directory fsync) before a change is acknowledged; `index/milvus/aliases.py` keeps
them in Milvus for replicas that share collections (`index/stores.py` picks one). Aliases and collections share one
namespace; the checks that keep it so are made by `embedsvc.core.collections.service.Collections`, which holds the
lock around both.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from embedsvc.durable import write_atomic
from embedsvc.index.types import Alias, alias_not_found

log = logging.getLogger(__name__)
FILE = "aliases.json"


class Aliases(Protocol):
    """Where aliases live: a file in the data directory (AliasStore), or Milvus for replicas that share collections
    (embedsvc.index.milvus.aliases.MilvusAliasStore)."""

    def resolve(self, name: str) -> str: ...

    def get(self, name: str) -> Alias | None: ...

    def of(self, collection: str) -> list[str]: ...

    def all(self) -> list[Alias]: ...

    def set(self, alias: str, collection: str) -> Alias: ...

    def delete(self, alias: str) -> None: ...

    @property
    def ttl_s(self) -> float:
        """How long `resolve` and `of` may answer from a cache after a switch made through another replica."""
        ...

    def refresh(self) -> None:
        """Read the aliases again now (a cache, if any, is replaced)."""
        ...


class AliasStore:
    """Thread-safe; reads are lock-free lookups in a dict replaced as a whole on every change."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / FILE
        self._lock = threading.Lock()
        self._aliases: dict[str, Alias] = {}
        if self._path.exists():
            data = json.loads(self._path.read_text(encoding="utf-8"))
            self._aliases = {
                name: Alias(name, entry["collection"], datetime.fromisoformat(entry["update_time"]))
                for name, entry in data["aliases"].items()
            }

    @property
    def ttl_s(self) -> float:
        return 0.0  # one server per data directory: its memory is the truth

    def refresh(self) -> None:
        """Nothing to read again: this store's memory is the truth (there is no cache to go stale)."""

    def resolve(self, name: str) -> str:
        """The collection an alias names, or the name itself."""
        alias = self._aliases.get(name)
        return alias.collection if alias is not None else name

    def get(self, name: str) -> Alias | None:
        return self._aliases.get(name)

    def of(self, collection: str) -> list[str]:
        """The aliases pointing at a collection, by name."""
        return sorted(a.alias for a in self._aliases.values() if a.collection == collection)

    def all(self) -> list[Alias]:
        return sorted(self._aliases.values(), key=lambda a: a.alias)

    def set(self, alias: str, collection: str) -> Alias:
        """Create or repoint an alias (the caller has checked both names)."""
        with self._lock:
            entry = Alias(alias, collection, datetime.now(UTC))
            self._save({**self._aliases, alias: entry})
            return entry

    def delete(self, alias: str) -> None:
        with self._lock:
            if alias not in self._aliases:
                raise not_found(alias)
            self._save({name: a for name, a in self._aliases.items() if name != alias})

    def _save(self, aliases: dict[str, Alias]) -> None:
        document = {
            "format": 1,
            "aliases": {
                a.alias: {"collection": a.collection, "update_time": a.update_time.isoformat()}
                for a in aliases.values()
            },
        }
        write_atomic(self._path, json.dumps(document, indent=2).encode("utf-8"))
        self._aliases = aliases  # one assignment: readers see the old dict or the new one


not_found = alias_not_found
