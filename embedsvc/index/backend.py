"""The collection backend interface: what `embedsvc.core.collections` needs of a store of collections and of one
collection. Two implementations: `index/faiss` (embedded, the default) and `index/milvus` (a Milvus server or cluster,
or Milvus Lite). `Stores` routes each collection to the backend that holds it.

Contract, for every backend (the parametrised collection tests check it): writes are durable and visible to the next
search once acknowledged; FLAT searches are exact; scores are cosine similarity, inner product or squared L2 distance;
filters mean what `embedsvc.index.filtering` says; a search returns k hits whenever k items match; export returns
every item once, in id order.

Keyword search (BM25 over the items' `input`), for a collection created with a keyword language: an acknowledged
write is keyword-searchable at once, a replaced or deleted item is never found again, a filter applies to keyword
hits exactly as to vector hits, and excluded ids are left out before the k best are taken (k hits whenever k allowed
items match a query term). Both backends analyse text with `embedsvc.index.keyword.analyzer` (the same terms), and
score with their engine's BM25.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.filtering import Filter
from embedsvc.index.snapshot_files import Manifest, Taken
from embedsvc.index.types import Backend, CollectionConfig, KeywordHits, Searched, State, StoredItem, Upsert
from embedsvc.stats import Histogram

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(name: str, field: str = "name") -> None:
    if not name:
        raise EmbedsvcError(Reason.MISSING_FIELD, "the collection name is required", field=field)
    if not NAME.match(name):
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"collection name {name!r}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
            field=field,
        )


class VectorCollection(Protocol):
    config: CollectionConfig
    state: State
    error: str

    def check_ready(self) -> None: ...

    @property
    def checkpoint_error(self) -> str: ...

    @property
    def checkpoint_failures(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def tombstones(self) -> int: ...

    @property
    def log_bytes(self) -> int: ...

    @property
    def rebuilding(self) -> bool: ...

    @property
    def fsync_seconds(self) -> Histogram | None: ...

    @property
    def checkpoint_seconds(self) -> Histogram | None: ...

    def stage(self, op: Upsert) -> Any:
        """Everything of a write that can be done before it (checks, the backend's own form of the items); nothing
        is written. `commit(stage(op))` is `upsert(op)`."""
        ...

    def commit(self, staged: Any) -> int: ...

    def upsert(self, op: Upsert) -> int:
        """Durably add or replace items; the live count afterwards, or -1 where counting costs a scan (Milvus)."""
        ...

    def delete(self, ids: Sequence[str]) -> tuple[int, int]:
        """(deleted, not found)."""
        ...

    def get(self, ids: Sequence[str], *, with_vectors: bool) -> list[StoredItem | None]: ...

    def ids_with_inputs(self, inputs: set[str]) -> set[str]: ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        ef_search: int = 0,
        nprobe: int = 0,
        oversample: int = 0,
        target_recall: float = 0.0,
        exact: bool = False,
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> Searched:
        """(hits, exact) and the effective parameters; a backend refuses with OPERATION_NOT_SUPPORTED what it cannot
        honour (target_recall, oversample)."""
        ...

    @property
    def keyword_language(self) -> str:
        """The keyword index's analyzer language; "" when the collection has no keyword index."""
        ...

    def require_keyword_index(self) -> None:
        """Raise why keyword search is impossible here: KEYWORD_INDEX_MISSING (created without one), or
        BACKEND_UNSUPPORTED (the backend's engine cannot do it); nothing when it can."""
        ...

    def keyword_search(
        self,
        texts: Sequence[str],
        k: int,
        *,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> list[KeywordHits]:
        """The best k items by BM25 for each text, among live items matching the filter, minus each query's
        excluded ids (`require_keyword_index` first)."""
        ...

    def export(self, batch_size: int, after: str | None = None) -> Iterator[list[StoredItem]]: ...

    def rebuild(
        self,
        stage: Callable[[str, int], None] = ...,
        units: Callable[[int], None] = ...,
        check: Callable[[], None] = ...,
    ) -> None: ...

    def snapshot(self, dest: Path, check: Callable[[], None] = ..., units: Callable[[int], None] = ...) -> Taken:
        """Write the collection's items into `dest` (an empty directory) as a snapshot's files (snapshot_files.py);
        `check()` between steps may stop it by raising."""
        ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# The items of a snapshot, in id order, each file checked against its manifest first (a fresh iterator per call).
SnapshotItems = Callable[[], Iterator[list[StoredItem]]]


class CollectionBackend(Protocol):
    def recover_all(self) -> None: ...

    def names(self) -> list[str]: ...

    def has(self, name: str) -> bool: ...

    def get(self, name: str) -> VectorCollection: ...

    def create(self, config: CollectionConfig) -> VectorCollection: ...

    def delete(self, name: str) -> None: ...

    def restore(
        self,
        config: CollectionConfig,
        snapshot: str,
        source: Path,
        manifest: Manifest,
        items: SnapshotItems,
        check: Callable[[], None],
        units: Callable[[int], None],
        *,
        replace: bool = False,
    ) -> VectorCollection:
        """A new collection `config.name` holding a snapshot's items (its files in `source`), built apart and
        published in one step; COLLECTION_EXISTS when the name is taken, unless `replace`."""
        ...

    def close_all(self, *, checkpoint: bool) -> None: ...

    def keyword_unsupported(self) -> EmbedsvcError | None:
        """Why this backend cannot hold keyword indexes (BACKEND_UNSUPPORTED: the version needed), or None."""
        ...


class Stores:
    """Every configured backend as one store: names from all of them, each collection from the one that holds it, new
    collections in the backend their configuration names (the server's default when it names none)."""

    def __init__(self, backends: dict[Backend, CollectionBackend], default: Backend) -> None:
        if default not in backends:
            raise ValueError(f"the default backend {default.value} is not configured")
        self.backends = backends
        self.default = default

    def recover_all(self) -> None:
        for backend in self.backends.values():
            backend.recover_all()

    def names(self) -> list[str]:
        return sorted({n for b in self.backends.values() for n in b.names()})

    def has(self, name: str) -> bool:
        return any(b.has(name) for b in self.backends.values())

    def _holder(self, name: str) -> CollectionBackend:
        for backend in self.backends.values():
            if backend.has(name):
                return backend
        return self.backends[self.default]  # its get/delete raise COLLECTION_NOT_FOUND (or NOT_READY) with context

    def get(self, name: str) -> VectorCollection:
        return self._holder(name).get(name)

    def rescoring(self, backend: Backend) -> bool:
        """Whether collections of this backend rescore quantised candidates and calibrate recall (the defaults of
        oversample and target_recall apply); the others refuse those options."""
        return bool(getattr(self.backends.get(backend), "rescoring", False))

    def create(self, config: CollectionConfig) -> VectorCollection:
        backend = self._backend(config.backend)
        for other in self.backends.values():
            if other is not backend and other.has(config.name):
                raise EmbedsvcError(
                    Reason.COLLECTION_EXISTS,
                    f"a collection named '{config.name}' exists",
                    field="name",
                    metadata={"collection": config.name},
                )
        return backend.create(config)

    def delete(self, name: str) -> None:
        self._holder(name).delete(name)

    def restore(
        self,
        config: CollectionConfig,
        snapshot: str,
        source: Path,
        manifest: Manifest,
        items: SnapshotItems,
        check: Callable[[], None],
        units: Callable[[int], None],
        *,
        replace: bool = False,
    ) -> VectorCollection:
        """Restore into the backend `config.backend` names (see CollectionBackend.restore); a name held by another
        backend is never replaced."""
        backend = self._backend(config.backend)
        for other in self.backends.values():
            if other is not backend and other.has(config.name):
                raise EmbedsvcError(
                    Reason.COLLECTION_EXISTS,
                    f"a collection named '{config.name}' exists in backend "
                    f"{next(k.value for k, v in self.backends.items() if v is other)}; a restore replaces a collection "
                    "of its own backend only",
                    field="name",
                    metadata={"collection": config.name},
                )
        return backend.restore(config, snapshot, source, manifest, items, check, units, replace=replace)

    def _backend(self, which: Backend) -> CollectionBackend:
        backend = self.backends.get(which)
        if backend is None:
            configured = ", ".join(b.value for b in self.backends)
            raise EmbedsvcError(
                Reason.INVALID_VALUE,
                f"backend {which.value} is not configured on this server (configured: {configured}; see "
                "[storage] in the configuration)",
                field="backend",
            )
        return backend

    def keyword_unsupported(self, backend: Backend | None) -> EmbedsvcError | None:
        """Why a new collection of that backend (None: the default) cannot have a keyword index, or None."""
        chosen = self.backends.get(backend or self.default)
        return chosen.keyword_unsupported() if chosen is not None else None

    def close_all(self, *, checkpoint: bool) -> None:
        for backend in self.backends.values():
            backend.close_all(checkpoint=checkpoint)
