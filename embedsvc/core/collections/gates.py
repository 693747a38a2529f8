"""The gate every write to a collection passes on its way to storage, so that long work over a collection (a re-embed)
can see which items are written while it runs, and can hold writes back for the moment it switches aliases.

Each collection has a `Gate`: a readers-writer lock whose read side every write holds from its last check to the end
of its commit (`Gates.writing`), with the `Watch` of the work that observes the collection, if any. Installing or
removing a watch, and a re-embed's final catch-up and alias switch, take the write side: no write is half-way then,
every write before it is finished (and, while watched, its ids are recorded), and every write after it sees the new
state. A write addressed through an alias checks, under the read side, that the alias still names the collection it
resolved: one switched meanwhile makes the write fail with UNAVAILABLE / COLLECTION_NOT_READY (retry: it then lands
in the alias's new collection), never land in the old one unseen.

Every write also passes the re-embed fence (fence.py) under the read side: a re-embed that another replica runs needs
its ids in the shared journal before it commits, and a fenced or switched collection refuses it. The fence reads the
shared records at most once per lease; the gate's lock covers the writes in flight on this replica, the fence's lease
those on the others.

Embedding happens before the gate (in `Collections.prepare_upsert`): the gate is held only while the backend commits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from embedsvc.core.collections.fence import Fences
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.rwlock import RWLock

# Called once the write's commit succeeded: records its ids, and confirms it against the re-embed fence (which may
# still refuse it: COLLECTION_SWITCHING).
Committed = Callable[[], None]


class Watch:
    """The ids written to a collection since the watch began (what a re-embed must copy again)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._touched: set[str] = set()

    def touch(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._touched.update(ids)

    def take(self) -> set[str]:
        """The ids written since the last take (and forget them)."""
        with self._lock:
            taken, self._touched = self._touched, set()
            return taken

    def pending(self) -> int:
        with self._lock:
            return len(self._touched)


class Gate:
    def __init__(self) -> None:
        self.lock = RWLock()
        self.watch: Watch | None = None


class Gates:
    """One gate per collection name (made on first use)."""

    def __init__(self, resolve: Callable[[str], str], fences: Fences | None = None) -> None:
        self._resolve = resolve
        self.fences = fences if fences is not None else Fences()
        self._lock = threading.Lock()
        self._gates: dict[str, Gate] = {}

    def gate(self, collection: str) -> Gate:
        with self._lock:
            gate = self._gates.get(collection)
            if gate is None:
                gate = self._gates[collection] = Gate()
            return gate

    @contextmanager
    def writing(self, collection: str, addressed: str, ids: Sequence[str]) -> Iterator[Committed]:
        """Hold the collection's gate for one write's commit (of these ids) and pass the re-embed fence; yields the
        function to call once the commit succeeded."""
        gate = self.gate(collection)
        with gate.lock.read():
            if addressed != collection:
                now = self._resolve(addressed)
                if now != collection:
                    raise EmbedsvcError(
                        Reason.COLLECTION_NOT_READY,
                        f"alias '{addressed}' was switched from collection '{collection}' to '{now}' during this "
                        "call; nothing was written: retry and the write goes to the new collection",
                        metadata={"collection": collection, "alias": addressed},
                    )
            watch = gate.watch
            admission = self.fences.admit(collection, addressed, list(ids), watched=watch is not None)

            def committed() -> None:
                if watch is not None:
                    watch.touch(ids)
                self.fences.confirm(admission)

            yield committed

    @contextmanager
    def watching(self, collection: str, owner: str) -> Iterator[Watch]:
        """Record the ids written to a collection while the block runs (installed once no write is half-way)."""
        gate = self.gate(collection)
        watch = Watch(owner)
        with gate.lock.write():
            if gate.watch is not None:
                raise EmbedsvcError(
                    Reason.INVALID_VALUE,
                    f"collection '{collection}' is already being re-embedded ({gate.watch.owner})",
                    field="collection",
                )
            gate.watch = watch
        try:
            yield watch
        finally:
            with gate.lock.write():
                gate.watch = None

    @contextmanager
    def held(self, collection: str) -> Iterator[None]:
        """No write commits to the collection while the block runs (every one before it has finished)."""
        with self.gate(collection).lock.write():
            yield
