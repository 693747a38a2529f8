"""All collections of a server, under `<data_dir>/collections/<name>/`.

Creating writes the directory under a temporary name and renames it into place; deleting renames it aside before
removing it; either way a crash leaves a whole collection or none. Index files are only ever read from here.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

from embedsvc import durable
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.backend import NAME, check_name  # noqa: F401 - check_name re-exported
from embedsvc.index.faiss.collection import CONFIG, Collection, State
from embedsvc.index.types import CollectionConfig, IndexParams, Metric

log = logging.getLogger(__name__)


class CollectionStore:
    # Quantised candidates are rescored and recall is calibrated here (Stores.rescoring).
    rescoring = True

    def __init__(self, data_dir: Path, checkpoint_bytes: int) -> None:
        self.root = data_dir / "collections"
        self.checkpoint_bytes = checkpoint_bytes
        self._lock = threading.Lock()
        self._collections: dict[str, Collection] = {}
        self._recovering: set[str] = set()
        self._deleting: set[str] = set()  # names whose files are being removed: not free for create yet

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._collections or name in self._recovering or name in self._deleting

    def recover_all(self) -> None:
        """Open every collection on disk; damaged ones are kept, in state DATA_LOSS, and the others serve."""
        durable.ensure_dir(self.root)
        for leftover in self.root.glob(".*"):
            durable.remove_tree(leftover)  # half-created or half-deleted collections
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))
        with self._lock:
            self._recovering.update(names)
        for name in names:
            try:
                collection = Collection.open(self.root / name, self.checkpoint_bytes)
            except Exception as exc:  # an unreadable collection.json: keep the name, refuse its calls
                log.exception("collection %s cannot be opened", name)
                config = CollectionConfig(name, 1, Metric.L2, IndexParams())
                collection = Collection(self.root / name, config, self.checkpoint_bytes)
                collection.state, collection.error = State.DATA_LOSS, f"{CONFIG} unreadable: {exc}"
            with self._lock:
                self._collections[name] = collection
                self._recovering.discard(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def get(self, name: str) -> Collection:
        with self._lock:
            collection = self._collections.get(name)
            recovering = name in self._recovering
        if collection is None:
            if recovering:
                raise EmbedsvcError(
                    Reason.COLLECTION_NOT_READY,
                    f"collection '{name}' is replaying its log; retry shortly",
                    metadata={"collection": name},
                )
            raise EmbedsvcError(
                Reason.COLLECTION_NOT_FOUND,
                f"no collection named '{name}'",
                field="collection",
                metadata={"collection": name},
            )
        return collection

    def create(self, config: CollectionConfig) -> Collection:
        with self._lock:
            if config.name in self._collections or config.name in self._recovering or config.name in self._deleting:
                raise EmbedsvcError(
                    Reason.COLLECTION_EXISTS,
                    f"a collection named '{config.name}' exists",
                    field="name",
                    metadata={"collection": config.name},
                )
            durable.ensure_dir(self.root)
            tmp = self.root / f".new-{config.name}-{uuid.uuid4().hex[:8]}"
            durable.mkdir(tmp)
            durable.write_atomic(tmp / CONFIG, config.to_json())
            final = self.root / config.name
            durable.replace(tmp, final)
            durable.fsync_dir(self.root)
            collection = Collection.open(final, self.checkpoint_bytes)
            self._collections[config.name] = collection
            return collection

    def delete(self, name: str) -> None:
        with self._lock:
            collection = self._collections.pop(name, None)
            if collection is None:
                raise EmbedsvcError(
                    Reason.COLLECTION_NOT_FOUND,
                    f"no collection named '{name}'",
                    field="name",
                    metadata={"collection": name},
                )
            self._deleting.add(name)
        # Outside the store's lock: closing waits for the collection's running write or checkpoint, which must not
        # stall every other collection's calls.
        try:
            collection.close()
            aside = self.root / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
            durable.replace(self.root / name, aside)
            durable.fsync_dir(self.root)
        finally:
            with self._lock:
                self._deleting.discard(name)
        durable.remove_tree(aside)

    def keyword_unsupported(self) -> None:
        """Every embedded collection can have a keyword index."""
        return None

    def close_all(self, *, checkpoint: bool) -> None:
        """At shutdown: checkpoint (so the next start replays nothing) and close every collection."""
        with self._lock:
            collections = list(self._collections.values())
        for collection in collections:
            try:
                if checkpoint and collection.state is State.READY:
                    collection.checkpoint()
            except Exception:
                log.exception("checkpoint of %s at shutdown failed; the log still holds every write", collection)
            collection.close()
