"""The slot store: a collection's items in memory, one row ("slot") per stored item, kept as columns.

Columns, each indexed by slot: `ids`, `meta` (metadata dicts), `inputs` (raw inputs), `vectors` (float32, as given),
`unit` (the rows as the index sees them: unit length for cosine, `vectors` itself otherwise), `live` (False for a
replaced or deleted row: a tombstone until a compaction renumbers the slots) and `sizes` (per slot, the bytes of its
id and input, and of its metadata as JSON: what a hit adds to a response). `slot_of` maps each live id to its slot.
Slots [0, n) are in use; the arrays are allocated ahead, doubling.

The store is a plain data structure: no lock, no log, no index. `contents.py` holds the collection's lock around it
and feeds its new rows to the indexes; `recovery.py` builds it from a checkpoint (`from_snapshot`) and the log
(`append`, `remove`) and writes checkpoints from it (`snapshot`); `planning.py` reads its columns; `training.py` builds
indexes over its rows.

The seam for other column layouts (issue 30: vectors memory-mapped from the checkpoint, ids and metadata in columnar
form instead of one Python object per item): recovery, planning and training use exactly this class's public surface,
and never allocate, grow or write a column themselves. That surface is
- building: `SlotStore(dimension, metric)`, `from_snapshot(snapshot, ...)`, `append(upsert) -> new slots`,
  `remove(delete)`; `snapshot(lsn)` (the live rows, in slot order, for a checkpoint);
- reading by slot: `ids[s]`, `meta[s]`, `inputs[s]` (any sequence indexable by an int slot), `vectors[rows]` and
  `unit[rows]` (numpy indexing by an int, a slice or an array of slots), `live[:n]` and `sizes[rows]` (numpy);
- the rest: `n`, `count`, `tombstones`, `slot_of` (a mapping id -> slot), `live_slots()`, `items(ids)`,
  `ids_with_inputs(inputs)`, `memory_bytes()`.
A store with another layout replaces this module alone, so long as those reads keep their meaning. Readers may hold
the columns they read outside the lock (the planner's filter pass does): a column's entries below `n` are never
changed in place, only appended after; anything that renumbers slots builds a new store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedsvc.index import metadata as stored
from embedsvc.index.faiss.checkpoint import Snapshot
from embedsvc.index.types import Delete, Metric, StoredItem, Upsert
from embedsvc.vectors import unit_rows

# Bytes a slot costs in memory beyond its vectors (its id, metadata and input as Python objects, the maps): an
# estimate for `info`.
_SLOT_OVERHEAD = 200


def index_form(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Vectors as the index compares them: unit length for cosine, as given otherwise."""
    if metric is not Metric.COSINE:
        return vectors
    return unit_rows(vectors.astype(np.float32, copy=False))


class SlotStore:
    """The items in memory, one slot per stored row; not thread-safe (the collection's lock guards it)."""

    def __init__(self, dimension: int, metric: Metric, capacity: int = 0) -> None:
        self.dimension = dimension
        self.metric = metric
        self.n = 0
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self.inputs: list[str] = []
        self.vectors = np.empty((max(capacity, 16), dimension), np.float32)
        self.unit = self.vectors if metric is not Metric.COSINE else np.empty_like(self.vectors)
        self.live = np.zeros(max(capacity, 16), bool)
        self.sizes = np.zeros((max(capacity, 16), 2), np.int64)
        self.slot_of: dict[str, int] = {}

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, dimension: int, metric: Metric) -> SlotStore:
        """A store holding a checkpoint's items, in its order (slots 0 .. count - 1, no tombstones)."""
        store = cls(dimension, metric, len(snapshot.ids))
        if snapshot.ids:
            store.append(Upsert(snapshot.ids, snapshot.vectors, snapshot.metadata, snapshot.inputs))
        return store

    @property
    def count(self) -> int:
        """Live items."""
        return len(self.slot_of)

    @property
    def tombstones(self) -> int:
        return self.n - self.count

    def _grow(self, extra: int) -> None:
        need = self.n + extra
        if need <= len(self.live):
            return
        capacity = max(need, 2 * len(self.live))
        vectors = np.empty((capacity, self.dimension), np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        if self.unit is self.vectors:
            self.vectors = self.unit = vectors
        else:
            unit = np.empty_like(vectors)
            unit[: self.n] = self.unit[: self.n]
            self.vectors, self.unit = vectors, unit
        live = np.zeros(capacity, bool)
        live[: self.n] = self.live[: self.n]
        self.live = live
        sizes = np.zeros((capacity, 2), np.int64)
        sizes[: self.n] = self.sizes[: self.n]
        self.sizes = sizes

    def append(self, op: Upsert) -> np.ndarray:
        """Add the items as new slots (an id already stored leaves a tombstone behind); returns the new slots."""
        n = len(op.ids)
        self._grow(n)
        start = self.n
        for i, item_id in enumerate(op.ids):
            old = self.slot_of.get(item_id)
            if old is not None:
                self.live[old] = False
            self.slot_of[item_id] = start + i
        self.vectors[start : start + n] = op.vectors
        if self.unit is not self.vectors:
            self.unit[start : start + n] = index_form(op.vectors, self.metric)
        self.live[start : start + n] = True
        self.sizes[start : start + n] = [
            (len(item_id.encode()) + len(raw.encode()), stored.size_bytes(meta) if meta else 0)
            for item_id, raw, meta in zip(op.ids, op.inputs, op.metadata, strict=True)
        ]
        self.ids.extend(op.ids)
        self.meta.extend(op.metadata)
        self.inputs.extend(op.inputs)
        self.n += n
        return np.arange(start, start + n)

    def remove(self, op: Delete) -> None:
        """Tombstone the items (ids not stored are ignored)."""
        for item_id in op.ids:
            slot = self.slot_of.pop(item_id, None)
            if slot is not None:
                self.live[slot] = False

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live[: self.n])

    def snapshot(self, lsn: int) -> Snapshot:
        """The live items, in slot order, as a checkpoint holds them (copies: the store may change after)."""
        live = self.live_slots()
        return Snapshot(
            lsn=lsn,
            ids=[self.ids[s] for s in live],
            vectors=self.vectors[live].copy(),
            metadata=[self.meta[s] for s in live],
            inputs=[self.inputs[s] for s in live],
        )

    def items(self, ids: Sequence[str], *, with_vectors: bool) -> list[StoredItem | None]:
        """The live items with these ids (None where absent); vectors copied, or empty without `with_vectors`."""
        empty = np.empty(0, np.float32)
        out: list[StoredItem | None] = []
        for item_id in ids:
            slot = self.slot_of.get(item_id)
            out.append(
                None
                if slot is None
                else StoredItem(
                    item_id,
                    self.vectors[slot].copy() if with_vectors else empty,
                    self.meta[slot],
                    self.inputs[slot],
                )
            )
        return out

    def ids_with_inputs(self, inputs: set[str]) -> set[str]:
        """The live items whose raw input is one of these."""
        return {self.ids[s] for s in self.live_slots().tolist() if self.inputs[s] in inputs}

    def memory_bytes(self) -> int:
        unit = 0 if self.unit is self.vectors else self.unit.nbytes
        return self.vectors.nbytes + unit + _SLOT_OVERHEAD * self.n
