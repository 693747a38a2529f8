"""All collections of a server, under `<data_dir>/collections/<name>/`.

Creating writes the directory under a temporary name and renames it into place; deleting renames it aside before
removing it; either way a crash leaves a whole collection or none. Restoring a snapshot builds the collection's files
in a temporary directory (`.restore-...`), checked against the snapshot's manifest, and renames it into place the same
way; restoring over an existing collection renames the old one to `.replacing-<name>` first and removes it once the
new one is in place, and a start after a crash between those two renames puts the old one back. Index files are only
ever read from here.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from embedsvc import durable
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.backend import NAME, check_name  # noqa: F401 - check_name re-exported
from embedsvc.index.faiss import heap, snapshots
from embedsvc.index.faiss.collection import CONFIG, Collection, State
from embedsvc.index.snapshot_files import FAISS, Manifest
from embedsvc.index.types import CollectionConfig, IndexParams, Metric, StoredItem, Upsert

log = logging.getLogger(__name__)
_REPLACING = ".replacing-"


class CollectionStore:
    # Quantised candidates are rescored and recall is calibrated here (Stores.rescoring).
    rescoring = True

    def __init__(self, data_dir: Path, checkpoint_bytes: int) -> None:
        heap.map_large_allocations()
        self.root = data_dir / "collections"
        self.checkpoint_bytes = checkpoint_bytes
        self._lock = threading.Lock()
        self._collections: dict[str, Collection] = {}
        self._recovering: set[str] = set()
        self._deleting: set[str] = set()  # names whose files are being removed: not free for create yet
        self._restoring: set[str] = set()  # names a restore will publish: not free either

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._collections or name in self._recovering or name in self._busy()

    def _busy(self) -> set[str]:
        return self._deleting | self._restoring

    def recover_all(self) -> None:
        """Open every collection on disk; damaged ones are kept, in state DATA_LOSS, and the others serve."""
        durable.ensure_dir(self.root)
        for aside in self.root.glob(f"{_REPLACING}*"):
            name = aside.name.removeprefix(_REPLACING)
            if not (self.root / name).exists():  # a restore over it stopped between its two renames: put it back
                log.warning("collection %s: a restore over it did not finish; the old collection is back", name)
                durable.replace(aside, self.root / name)
                durable.fsync_dir(self.root)
        for leftover in self.root.glob(".*"):
            durable.remove_tree(leftover)  # half-created, half-restored or half-deleted collections
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
            if config.name in self._collections or config.name in self._recovering or config.name in self._busy():
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

    def restore(
        self,
        config: CollectionConfig,
        snapshot: str,
        source: Path,
        manifest: Manifest,
        items: Callable[[], Iterator[list[StoredItem]]],
        check: Callable[[], None],
        units: Callable[[int], None],
        *,
        replace: bool = False,
    ) -> Collection:
        """A new collection named `config.name` holding a snapshot's items: a "faiss" snapshot's files placed (hard
        links, the log copied), any other written item by item; built and checked in a temporary directory, then
        renamed into place. With `replace`, an existing collection of that name is swapped out in the same step (see
        the module docstring). COLLECTION_EXISTS when the name is taken and not `replace`."""
        name = config.name
        with self._lock:
            exists = name in self._collections
            if (exists and not replace) or name in self._recovering or name in self._busy():
                raise EmbedsvcError(
                    Reason.COLLECTION_EXISTS,
                    f"a collection named '{name}' exists (set replace_existing to restore over it)",
                    field="name",
                    metadata={"collection": name},
                )
            self._restoring.add(name)
        tmp = self.root / f".restore-{name}-{uuid.uuid4().hex[:8]}"
        try:
            durable.ensure_dir(self.root)
            durable.mkdir(tmp)
            if manifest.format == FAISS:
                snapshots.place(snapshot, source, manifest, tmp, check)
                durable.write_atomic(tmp / CONFIG, config.to_json())
                units(manifest.count)
            else:
                self._write_items(tmp, config, items, check, units)
            return self._publish(tmp, name)
        except BaseException:
            durable.remove_tree(tmp)
            raise
        finally:
            with self._lock:
                self._restoring.discard(name)

    def _write_items(
        self,
        tmp: Path,
        config: CollectionConfig,
        items: Callable[[], Iterator[list[StoredItem]]],
        check: Callable[[], None],
        units: Callable[[int], None],
    ) -> None:
        durable.write_atomic(tmp / CONFIG, config.to_json())
        collection = Collection.open(tmp, self.checkpoint_bytes)
        try:
            collection.check_ready()
            done = 0
            for batch in items():
                check()
                vectors = np.stack([i.vector for i in batch]).astype(np.float32)
                ids, metadata, inputs = [i.id for i in batch], [i.metadata for i in batch], [i.input for i in batch]
                collection.upsert(Upsert(ids, vectors, metadata, inputs))
                done += len(batch)
                units(done)
            collection.checkpoint()
        finally:
            collection.close()

    def _publish(self, tmp: Path, name: str) -> Collection:
        """Rename a restored collection's directory into place (swapping out an open collection of that name)."""
        final = self.root / name
        with self._lock:
            old = self._collections.pop(name, None)
            if old is not None:
                self._recovering.add(name)  # calls meanwhile: COLLECTION_NOT_READY, retry
        aside = self.root / f"{_REPLACING}{name}"
        try:
            if old is not None:
                old.close()
                durable.remove_tree(aside)
                durable.replace(final, aside)
                durable.fsync_dir(self.root)
            durable.replace(tmp, final)
            durable.fsync_dir(self.root)
        except BaseException:
            if old is not None:  # put the old collection back, as a restart would
                if aside.exists() and not final.exists():
                    durable.replace(aside, final)
                    durable.fsync_dir(self.root)
                reopened = Collection.open(final, self.checkpoint_bytes)
                with self._lock:
                    self._collections[name] = reopened
                    self._recovering.discard(name)
            raise
        if old is not None:
            durable.remove_tree(aside)
        collection = Collection.open(final, self.checkpoint_bytes)
        with self._lock:
            self._collections[name] = collection
            self._recovering.discard(name)
        return collection

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
