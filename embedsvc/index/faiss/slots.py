"""The slot store: a collection's items, one row ("slot") per stored item, held once and in columns.

Slots [0, n) are in two places:
- segments (`Segment`): runs of consecutive slots whose columns are numpy arrays, memory-mapped from a checkpoint's
  column files (checkpoint.py, columns.py) or, until the checkpoint that writes them, in memory. Columns: `vectors`
  (float32, as given), `unit` (cosine FLAT and HNSW: the unit-length rows the index searches), `codes` (the index's
  codes of these rows, where it has them), the UTF-8 `ids`, `inputs` and metadata (compact JSON, `meta`) as blobs with
  offsets, `id_hash` (blake2b-64 of each id, sorted) with `id_row`, and the indexed fields' entries (fields.py);
- the tail: the rows appended since the last checkpoint, as Python objects and growable arrays. A checkpoint turns
  it into a segment (`seal`), and once written, the store maps it (`adopt_saved`).
`live` (bool per slot, in memory) marks tombstones: a replaced or deleted row stays until a compaction renumbers the
slots (`compacted`). An id's slot is found through the tail's dict, else by its hash in each segment's sorted hashes
(newest first), checked against `live` and the id's bytes: no Python object per stored item.

Nothing here is copied per item at open: a store is built from a checkpoint by mapping its segment files
(`from_checkpoint`), and a legacy (format 1) checkpoint becomes one in-memory segment.

The store is a plain data structure: no lock, no log, no index. `contents.py` holds the collection's lock around it
and feeds its new rows to the indexes; `recovery.py` opens it from a checkpoint and the log; `planning.py` reads its
columns; `training.py` builds indexes over its rows. Their surface:
- building: `SlotStore(dimension, metric, ...)`, `from_checkpoint`, `from_legacy`, `append(upsert) -> new slots`,
  `remove(delete)`, `compacted()` (the live rows, renumbered, in memory);
- checkpoints: `seal(codes)`, `segments`, `adopt_saved`, `merge_plan`;
- reading by slot: `ids[s]`, `meta[s]`, `inputs[s]`, `vectors[rows]` and `unit[rows]` (an int, a slice or an array
  of slots, any shape), `sizes[rows]`, `live[:n]`, `chunks()` (the index-form rows as contiguous blocks);
- the rest: `n`, `count`, `tombstones`, `slot_of` (a mapping id -> slot, with a batch `lookup`), `live_slots()`,
  `items(ids)`, `ids_with_inputs(inputs)`, `sorted_slots(after)`, `field_entries()`, `memory_bytes()`,
  `mapped_bytes()`.
Readers may hold the columns they read outside the lock (the planner's filter pass does): a slot's row never changes
once written (its live flag may), and anything that renumbers slots builds a new store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedsvc.index import metadata as stored
from embedsvc.index.faiss import fields as field_index
from embedsvc.index.faiss.columns import ColumnFile
from embedsvc.index.faiss.fields import Entries
from embedsvc.index.types import Delete, FieldType, IndexedField, Metric, StoredItem, Upsert
from embedsvc.vectors import unit_rows

# Rows normalised at a time where a cosine segment keeps no unit column (exact search over a quantised collection).
_NORMALISE_ROWS = 65536
# At most this many rows of a mapped segment are gathered and their pages dropped from this process after
# (ColumnFile.rows): rescoring candidates and fetched items stay out of resident memory; a larger gather (training
# samples) keeps the pages mapped.
_DROP_ROWS = 1 << 17
_EMPTY_META: dict[str, Any] = {}


def index_form(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Vectors as the index compares them: unit length for cosine, as given otherwise."""
    if metric is not Metric.COSINE:
        return vectors
    return unit_rows(np.asarray(vectors, dtype=np.float32))


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash of each id (blake2b of its UTF-8): the key of the segments' id lookup."""
    return byte_hashes([i.encode("utf-8") for i in ids])


def byte_hashes(encoded: Sequence[bytes]) -> np.ndarray:
    blake2b = hashlib.blake2b
    return np.fromiter(
        (int.from_bytes(blake2b(e, digest_size=8).digest(), "little") for e in encoded), np.uint64, len(encoded)
    )


def blob(texts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings as one uint8 blob and len + 1 uint64 offsets."""
    offsets = np.zeros(len(texts) + 1, np.uint64)
    if texts:
        np.cumsum(np.fromiter((len(t) for t in texts), np.uint64, len(texts)), out=offsets[1:])
    return np.frombuffer(b"".join(texts), np.uint8), offsets


def _gather_blob(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows' byte strings of a blob, as a new blob and offsets (vectorised)."""
    starts = offsets[rows].astype(np.int64)
    lengths = offsets[rows + 1].astype(np.int64) - starts
    new = np.zeros(len(rows) + 1, np.uint64)
    np.cumsum(lengths, out=new[1:])
    if not len(rows) or not lengths.sum():
        return np.empty(0, np.uint8), new
    index = np.repeat(starts - new[:-1].astype(np.int64), lengths) + np.arange(int(new[-1]))
    return data[index], new


class Segment:
    """Slots [start, start + rows) as read-only columns: mapped from a checkpoint's file, or in memory until the
    checkpoint that writes it (`file` None)."""

    def __init__(self, start: int, cols: dict[str, np.ndarray], file: ColumnFile | None = None, name: str = ""):
        self.start = start
        self.cols = cols
        self.rows = len(cols["ids_off"]) - 1
        self.file = file
        self.name = name
        self.vectors = cols["vectors"]
        self.unit = cols.get("unit")
        self.codes = cols.get("codes")

    @property
    def end(self) -> int:
        return self.start + self.rows

    def take(self, column: str, rows: np.ndarray) -> np.ndarray:
        """Some rows of a column: from a mapped file, when they are few and scattered, gathered in row order and their
        pages dropped from this process after; else indexed."""
        if self.file is not None and self.file.mapped and len(rows) <= _DROP_ROWS:
            unique, inverse = np.unique(rows, return_inverse=True)
            return self.file.rows(column, unique)[inverse]
        return self.cols[column][rows]

    def _text(self, column: str, row: int) -> bytes:
        offsets = self.cols[column + "_off"]
        return bytes(self.cols[column][int(offsets[row]) : int(offsets[row + 1])])

    def id(self, row: int) -> str:
        return self._text("ids", row).decode("utf-8")

    def input(self, row: int) -> str:
        return self._text("inputs", row).decode("utf-8")

    def meta(self, row: int) -> dict[str, Any]:
        raw = self._text("meta", row)
        return stored.loads(raw) if raw else {}

    def lengths(self, column: str, rows: np.ndarray) -> np.ndarray:
        offsets = self.cols[column + "_off"]
        return (offsets[rows + 1] - offsets[rows]).astype(np.int64)

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cols.values())

    def gather(self, rows: np.ndarray, indexed: Sequence[IndexedField]) -> dict[str, Any]:
        """The columns of some of its rows (sorted, local), as a new segment's columns: (keys, rows) per field."""
        out: dict[str, Any] = {"vectors": self.vectors[rows]}
        if self.unit is not None:
            out["unit"] = self.unit[rows]
        if self.codes is not None:
            out["codes"] = self.codes[rows]
        for column in ("ids", "inputs", "meta"):
            out[column], out[column + "_off"] = _gather_blob(self.cols[column], self.cols[column + "_off"], rows)
        out["hashes"] = self.hashes()[rows]
        for f in indexed:
            out[f"fields:{f.name}"] = field_index.gather(f, self.cols, rows)
        return out

    def hashes(self) -> np.ndarray:
        """Each row's id hash, in row order."""
        by_row = np.empty(self.rows, np.uint64)
        by_row[self.cols["id_row"].astype(np.int64)] = self.cols["id_hash"]
        return by_row

    def part(self, indexed: Sequence[IndexedField]) -> dict[str, Any]:
        """All of its columns as a part of a merged segment (the mapped arrays themselves: nothing copied)."""
        part: dict[str, Any] = {"vectors": self.vectors, "hashes": self.hashes()}
        if self.unit is not None:
            part["unit"] = self.unit
        if self.codes is not None:
            part["codes"] = self.codes
        for column in ("ids", "inputs", "meta"):
            part[column], part[column + "_off"] = self.cols[column], self.cols[column + "_off"]
        for f in indexed:
            part[f"fields:{f.name}"] = field_index.gather(f, self.cols, np.arange(self.rows))
        return part


class _Tail:
    """The rows appended since the last checkpoint, from slot `start` on."""

    def __init__(self, start: int, dimension: int, cosine: bool, indexed: Sequence[IndexedField]) -> None:
        self.start = start
        self.rows = 0
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self.inputs: list[str] = []
        # The same, encoded as a segment stores them (so that sealing the tail only joins them), and the id hashes.
        self.id_bytes: list[bytes] = []
        self.meta_bytes: list[bytes] = []
        self.input_bytes: list[bytes] = []
        self.hashes = np.empty((16, 1), np.uint64)
        self.vectors = np.empty((16, dimension), np.float32)
        self.unit = np.empty((16, dimension), np.float32) if cosine else None
        self.sizes = np.zeros((16, 2), np.int64)
        self.slot_of: dict[str, int] = {}
        self.keys: dict[str, list[Any]] = {f.name: [] for f in indexed}
        self.key_slots: dict[str, list[int]] = {f.name: [] for f in indexed}
        self._entries: dict[str, tuple[int, Entries]] = {}

    def reserve(self, extra: int) -> None:
        need = self.rows + extra
        if need <= len(self.vectors):
            return
        capacity = max(need, 2 * len(self.vectors))
        for name in ("vectors", "unit", "sizes", "hashes"):
            old = getattr(self, name)
            if old is None:
                continue
            new = np.empty((capacity, old.shape[1]), old.dtype)
            new[: self.rows] = old[: self.rows]
            setattr(self, name, new)

    def entries(self, name: str, string: bool) -> Entries:
        """This field's tail entries as arrays (cached until the next append)."""
        cached = self._entries.get(name)
        count = len(self.keys[name])
        if cached is not None and cached[0] == count:
            return cached[1]
        keys = self.keys[name]
        key_array = np.array(keys, dtype=object) if string else np.array(keys, dtype=np.int64)
        entries = Entries(0, key_array, np.array(self.key_slots[name], np.int64), sorted=False)
        self._entries[name] = (count, entries)
        return entries


@dataclass(frozen=True)
class _Layout:
    """Where slots are: the segments, their starts (and the tail's, last), the tail. Replaced as a whole, so a
    reader that took it once sees one consistent picture."""

    segments: tuple[Segment, ...]
    starts: np.ndarray
    tail: _Tail

    def parts(self, rows: np.ndarray) -> np.ndarray:
        """For each slot, the index of its segment (len(segments): the tail)."""
        return np.searchsorted(self.starts, rows, "right") - 1


class SlotStore:
    """The items of a collection, one slot per stored row; not thread-safe (the collection's lock guards it).

    `keep_unit`: segments keep the unit-length rows beside the vectors (cosine, when the index searches floats:
    FLAT, HNSW); the tail always does for cosine (the index is fed from it)."""

    def __init__(
        self,
        dimension: int,
        metric: Metric,
        *,
        indexed: Sequence[IndexedField] = (),
        keep_unit: bool = False,
    ) -> None:
        self.dimension = dimension
        self.metric = metric
        self.indexed = tuple(indexed)
        self.keep_unit = keep_unit and metric is Metric.COSINE
        self.n = 0
        self._count = 0
        self.live = np.zeros(16, bool)
        self._layout = _Layout((), np.zeros(1, np.int64), self._new_tail(0))
        self.slot_of = IdIndex(self)
        self.ids = _Text(self, "ids")
        self.inputs = _Text(self, "inputs")
        self.meta = _Meta(self)
        self.vectors = _Rows(self, unit=False)
        self.unit = _Rows(self, unit=True)
        self.sizes = _Sizes(self)

    def _new_tail(self, start: int) -> _Tail:
        return _Tail(start, self.dimension, self.metric is Metric.COSINE, self.indexed)

    def _set_layout(self, segments: Sequence[Segment], tail: _Tail) -> None:
        starts = np.array([s.start for s in segments] + [tail.start], np.int64)
        self._layout = _Layout(tuple(segments), starts, tail)

    # ---- building ------------------------------------------------------------------------------------------------

    def like(self) -> SlotStore:
        """An empty store of the same shape."""
        return SlotStore(self.dimension, self.metric, indexed=self.indexed, keep_unit=self.keep_unit)

    def load_segments(self, segments: Sequence[Segment], live: np.ndarray) -> None:
        """Start from these segments (consecutive from slot 0) and their live flags (an empty store only)."""
        n = segments[-1].end if segments else 0
        self.n = n
        self.live = np.zeros(max(16, n), bool)
        self.live[:n] = live[:n]
        self._count = int(self.live[:n].sum())
        self._set_layout(segments, self._new_tail(n))

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._layout.segments

    @property
    def tail_start(self) -> int:
        return self._layout.tail.start

    @property
    def count(self) -> int:
        """Live items."""
        return self._count

    @property
    def tombstones(self) -> int:
        return self.n - self._count

    def _reserve_live(self, extra: int) -> None:
        need = self.n + extra
        if need > len(self.live):
            live = np.zeros(max(need, 2 * len(self.live)), bool)
            live[: self.n] = self.live[: self.n]
            self.live = live

    def append(self, op: Upsert) -> np.ndarray:
        """Add the items as new slots (an id already stored leaves a tombstone behind); returns the new slots."""
        rows = len(op.ids)
        encoded = [i.encode("utf-8") for i in op.ids]
        hashes = byte_hashes(encoded)
        old = self.slot_of.lookup(op.ids, hashes)
        replaced = old[old >= 0]
        self.live[replaced] = False
        self._count -= len(replaced)
        tail = self._layout.tail
        tail.reserve(rows)
        self._reserve_live(rows)
        start = self.n
        local = start - tail.start
        vectors = np.asarray(op.vectors, dtype=np.float32)
        tail.vectors[local : local + rows] = vectors
        if tail.unit is not None:
            tail.unit[local : local + rows] = index_form(vectors, self.metric)
        tail.hashes[local : local + rows, 0] = hashes
        inputs = [raw.encode("utf-8") for raw in op.inputs]
        metas = [stored.dumps(m).encode("utf-8") if m else b"" for m in op.metadata]
        tail.sizes[local : local + rows, 0] = [len(a) + len(b) for a, b in zip(encoded, inputs, strict=True)]
        tail.sizes[local : local + rows, 1] = [len(m) for m in metas]
        if len(set(op.ids)) == rows:
            tail.slot_of.update(zip(op.ids, range(start, start + rows), strict=True))
        else:  # the same id twice in one write: the last one wins
            for i, item_id in enumerate(op.ids):
                previous = tail.slot_of.get(item_id)
                if previous is not None and previous >= start:
                    self.live[previous] = False
                    self._count -= 1
                tail.slot_of[item_id] = start + i
        for f in self.indexed:
            keys, key_slots = tail.keys[f.name], tail.key_slots[f.name]
            for i, meta in enumerate(op.metadata):
                value = meta.get(f.name) if meta else None
                if value is None:
                    continue
                for element in field_index.elements(value):
                    keys.append(field_index.key(f, element))
                    key_slots.append(local + i)
        tail.ids.extend(op.ids)
        tail.meta.extend(op.metadata)
        tail.inputs.extend(op.inputs)
        tail.id_bytes.extend(encoded)
        tail.meta_bytes.extend(metas)
        tail.input_bytes.extend(inputs)
        tail.rows += rows
        self.live[start : start + rows] = True
        self._count += rows
        self.n += rows
        return np.arange(start, start + rows)

    def remove(self, op: Delete) -> None:
        """Tombstone the items (ids not stored are ignored)."""
        slots = self.slot_of.lookup(op.ids)
        found = slots[slots >= 0]
        self.live[found] = False
        self._count -= len(found)
        tail = self._layout.tail
        for item_id in op.ids:
            tail.slot_of.pop(item_id, None)

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live[: self.n])

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def _tail_columns(self, tail: _Tail, rows: np.ndarray) -> dict[str, Any]:
        """Columns of some tail rows (local, sorted); indexed fields as (keys, rows)."""
        every = len(rows) == tail.rows
        keep = rows.tolist()

        def pick(values: list[bytes]) -> list[bytes]:
            return values[: tail.rows] if every else [values[r] for r in keep]

        # Views where every row is taken: rows below `rows` are never written again (a growth copies them away).
        take = slice(0, tail.rows) if every else rows
        out: dict[str, Any] = {"vectors": tail.vectors[take]}
        if self.keep_unit and tail.unit is not None:
            out["unit"] = tail.unit[take]
        out["ids"], out["ids_off"] = blob(pick(tail.id_bytes))
        out["hashes"] = tail.hashes[take, 0]
        out["inputs"], out["inputs_off"] = blob(pick(tail.input_bytes))
        out["meta"], out["meta_off"] = blob(pick(tail.meta_bytes))
        position = np.full(tail.rows, -1, np.int64)
        position[rows] = np.arange(len(rows))
        for f in self.indexed:
            slots = np.array(tail.key_slots[f.name], np.int64)
            kept = position[slots] >= 0 if len(slots) else np.zeros(0, bool)
            keys = [k for k, ok in zip(tail.keys[f.name], kept.tolist(), strict=True) if ok]
            out[f"fields:{f.name}"] = (keys, position[slots[kept]] if len(slots) else slots)
        return out

    def _finish(self, parts: list[dict[str, Any]], codes: np.ndarray | None) -> dict[str, np.ndarray]:
        """One segment's columns from the columns of consecutive parts (blobs re-based, hashes sorted, fields merged).
        Vectors, unit rows and codes may stay lists of arrays: columns.write writes them one after another."""
        out: dict[str, Any] = {}
        rows = [len(p["ids_off"]) - 1 for p in parts]
        total = sum(rows)
        for name in ("vectors", "unit"):
            if all(name in p for p in parts) and parts:
                out[name] = _join([p[name] for p in parts], (0, self.dimension), np.float32)
        if codes is not None:
            out["codes"] = codes
        elif parts and all("codes" in p for p in parts):
            out["codes"] = _join([p["codes"] for p in parts], (0, parts[0]["codes"].shape[1]), np.uint8)
        for column in ("ids", "inputs", "meta"):
            datas = [p[column] for p in parts]
            offsets = np.zeros(total + 1, np.uint64)
            at, base = 0, 0
            for p, r in zip(parts, rows, strict=True):
                offsets[at : at + r + 1] = p[column + "_off"].astype(np.uint64) + np.uint64(base)
                at += r
                base += int(p[column + "_off"][-1])
            out[column] = _join(datas, (0,), np.uint8)
            out[column + "_off"] = offsets
        hashes = np.concatenate([p["hashes"] for p in parts]) if parts else np.empty(0, np.uint64)
        order = np.argsort(hashes, kind="stable")
        out["id_hash"] = hashes[order]
        out["id_row"] = order.astype(np.uint32)
        for f in self.indexed:
            keys: list[Any] = []
            field_rows: list[np.ndarray] = []
            at = 0
            for p, r in zip(parts, rows, strict=True):
                part_keys, part_rows = p[f"fields:{f.name}"]
                keys.extend(part_keys)
                field_rows.append(np.asarray(part_rows, np.int64) + at)
                at += r
            out.update(
                field_index.columns(f, keys, np.concatenate(field_rows) if field_rows else np.empty(0, np.int64))
            )
        return out

    def seal(self, codes: np.ndarray | None) -> Pending | None:
        """The tail's columns for a new segment file (None when it is empty), with the index's codes of its rows if
        it has them. The store is unchanged: `adopt_saved` swaps the written segment in."""
        tail = self._layout.tail
        if not tail.rows:
            return None
        return Pending(tail.start, tail.rows, self._finish([self._tail_columns(tail, np.arange(tail.rows))], codes))

    def merge_plan(self, limit: int) -> list[tuple[int, int]]:
        """Runs of segments (index ranges [a, b)) to merge so that at most `limit` remain: the adjacent pair with
        the fewest rows together, again and again."""
        sizes = [s.rows for s in self.segments]
        groups = [[i] for i in range(len(sizes))]
        while len(groups) > limit:
            totals = [sum(sizes[j] for j in groups[i] + groups[i + 1]) for i in range(len(groups) - 1)]
            i = int(np.argmin(totals))
            groups[i : i + 2] = [groups[i] + groups[i + 1]]
        return [(g[0], g[-1] + 1) for g in groups if len(g) > 1]

    def merged(self, a: int, b: int) -> Pending:
        """Segments [a, b) as one segment's columns (vectors and codes as lists of the mapped arrays: no copy)."""
        segments = self.segments[a:b]
        parts = [s.part(self.indexed) for s in segments]
        if not all("codes" in p for p in parts):
            for p in parts:
                p.pop("codes", None)
        return Pending(segments[0].start, sum(s.rows for s in segments), self._finish(parts, None))

    def adopt_saved(self, saved: Sequence[Segment]) -> None:
        """After a checkpoint: `saved` (mapped, consecutive from slot 0) replace the segments and the tail rows they
        cover. Rows appended since the seal (none: checkpoints run while no write is applied) stay in the tail."""
        layout = self._layout
        end = saved[-1].end if saved else 0
        tail = layout.tail
        if end > tail.start + tail.rows:
            raise ValueError("saved segments run past the store")
        if end == tail.start:
            self._set_layout(saved, tail)
            return
        # Every tail row is in the saved segments now: a new, empty tail.
        self._set_layout(saved, self._new_tail(end))

    def compacted(self, codes: Any = None) -> SlotStore:
        """A new store holding the live rows, in slot order, renumbered from 0 (one in-memory segment). `codes(slots)`
        gives the index codes of tail slots, where segments keep codes."""
        fresh = self.like()
        parts = []
        layout = self._layout
        for segment in layout.segments:
            rows = np.flatnonzero(self.live[segment.start : segment.end])
            parts.append(segment.gather(rows, self.indexed))
        tail = layout.tail
        rows = np.flatnonzero(self.live[tail.start : tail.start + tail.rows])
        tail_part = self._tail_columns(tail, rows)
        if codes is not None and parts and all("codes" in p for p in parts):
            tail_codes = codes(rows + tail.start)
            if tail_codes is not None:
                tail_part["codes"] = tail_codes
        parts.append(tail_part)
        keep_unit = all("unit" in q for q in parts)
        keep_codes = all("codes" in q for q in parts)
        for p in parts:  # unit rows and codes only where every part has them
            if not keep_unit:
                p.pop("unit", None)
            if not keep_codes:
                p.pop("codes", None)
        segment = Segment(0, _materialise(self._finish(parts, None)))
        live = np.ones(segment.rows, bool)
        fresh.load_segments([segment] if segment.rows else [], live)
        return fresh

    # ---- reading -------------------------------------------------------------------------------------------------

    def chunks(self, max_rows: int = 1 << 62) -> Iterator[tuple[int, np.ndarray]]:
        """The index-form rows of every slot, as (first slot, contiguous block) pairs of at most `max_rows`."""
        layout = self._layout
        n = self.n
        cosine = self.metric is Metric.COSINE
        for segment in layout.segments:
            block = segment.unit if segment.unit is not None else segment.vectors
            step = min(max_rows, _NORMALISE_ROWS) if cosine and segment.unit is None else max_rows
            for a in range(0, segment.rows, step):
                part = block[a : a + step]
                yield segment.start + a, (unit_rows(np.asarray(part)) if cosine and segment.unit is None else part)
        tail = layout.tail
        rows = min(tail.rows, n - tail.start)
        source = tail.unit if tail.unit is not None else tail.vectors
        for a in range(0, rows, max_rows):
            yield tail.start + a, source[a : min(rows, a + max_rows)]

    def items(self, ids: Sequence[str], *, with_vectors: bool) -> list[StoredItem | None]:
        """The live items with these ids (None where absent); vectors copied, or empty without `with_vectors`."""
        slots = self.slot_of.lookup(ids)
        return self.items_at(ids, slots, with_vectors=with_vectors)

    def items_at(self, ids: Sequence[str], slots: np.ndarray, *, with_vectors: bool) -> list[StoredItem | None]:
        empty = np.empty(0, np.float32)
        found = slots[slots >= 0]
        vectors = self.vectors[found] if with_vectors and len(found) else None
        out: list[StoredItem | None] = []
        at = 0
        for item_id, slot in zip(ids, slots.tolist(), strict=True):
            if slot < 0:
                out.append(None)
                continue
            vector = vectors[at] if vectors is not None else empty
            at += 1
            out.append(StoredItem(item_id, vector, self.meta[slot], self.inputs[slot]))
        return out

    def ids_with_inputs(self, inputs: set[str]) -> set[str]:
        """The live items whose raw input is one of these."""
        layout = self._layout
        found: set[str] = set()
        tail = layout.tail
        for r, raw in enumerate(tail.inputs[: tail.rows]):
            if raw in inputs and self.live[tail.start + r]:
                found.add(tail.ids[r])
        for segment in layout.segments:
            offsets = segment.cols["inputs_off"]
            lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
            live = self.live[segment.start : segment.end]
            for text in inputs:
                encoded = text.encode("utf-8")
                candidates = np.flatnonzero(live & (lengths == len(encoded)))
                if encoded and len(candidates):
                    first = segment.cols["inputs"][offsets[candidates].astype(np.int64)]
                    candidates = candidates[first == encoded[0]]
                for row in candidates.tolist():
                    if segment._text("inputs", row) == encoded:
                        found.add(segment.id(row))
        return found

    def sorted_slots(self, after: str | None = None) -> np.ndarray:
        """The live slots in the order of their ids (UTF-8 byte order, as Python orders str), those after `after`."""
        slots = self.live_slots()
        if not len(slots):
            return slots
        encoded = [self.ids[s].encode("utf-8") for s in slots.tolist()]
        if after is not None:
            bound = after.encode("utf-8")
            keep = np.fromiter((e > bound for e in encoded), bool, len(encoded))
            slots = slots[keep]
            encoded = [e for e, k in zip(encoded, keep.tolist(), strict=True) if k]
        order = sorted(range(len(encoded)), key=encoded.__getitem__)
        return slots[np.asarray(order, np.int64)] if order else slots[:0]

    def field_entries(self) -> dict[str, list[Entries]]:
        """Each indexed field's entries over every slot (fields.py evaluates filters on them)."""
        layout = self._layout
        out: dict[str, list[Entries]] = {}
        for f in self.indexed:
            parts = [field_index.segment_entries(f, s.start, s.cols) for s in layout.segments]
            tail = layout.tail.entries(f.name, string=f.type is FieldType.STRING)
            parts.append(Entries(layout.tail.start, tail.keys, tail.rows, sorted=False))
            out[f.name] = parts
        return out

    def memory_bytes(self) -> int:
        """Bytes this store holds in memory: the tail, the live flags, segments not yet written or read in."""
        layout = self._layout
        tail = layout.tail
        unsaved = sum(s.nbytes() for s in layout.segments if s.file is None or not s.file.mapped)
        per_row = 200  # the tail's Python objects (id, metadata, input), an estimate
        tail_bytes = tail.vectors.nbytes + (tail.unit.nbytes if tail.unit is not None else 0) + per_row * tail.rows
        return unsaved + tail_bytes + self.live.nbytes

    def mapped_bytes(self) -> int:
        """Bytes of checkpoint files mapped (resident as far as the reads touch them)."""
        return sum(s.file.nbytes for s in self._layout.segments if s.file is not None and s.file.mapped)


def _join(arrays: list[Any], empty_shape: tuple[int, ...], dtype: Any) -> Any:
    """Arrays to write one after another: one array when there is one, a list otherwise (columns.write joins them)."""
    flat: list[Any] = []
    for a in arrays:
        flat.extend(a if isinstance(a, list) else [a])
    if not flat:
        return np.empty(empty_shape, dtype)
    return flat[0] if len(flat) == 1 else flat


def _materialise(cols: dict[str, Any]) -> dict[str, np.ndarray]:
    """Columns as single arrays (an in-memory segment must be readable by row)."""
    return {name: (np.concatenate(c) if isinstance(c, list) else c) for name, c in cols.items()}


@dataclass(frozen=True)
class Pending:
    """A segment to write: its first slot, its rows and its columns (arrays, or lists of arrays written in turn)."""

    start: int
    rows: int
    columns: dict[str, Any]


def open_segment(file: ColumnFile, start: int) -> Segment:
    """A segment over a checkpoint's column file; ValueError when its columns do not agree."""
    cols = file.columns
    for name in ("vectors", "ids", "ids_off", "inputs", "inputs_off", "meta", "meta_off", "id_hash", "id_row"):
        if name not in cols:
            raise ValueError(f"{file.path.name}: no column {name}")
    rows = len(cols["ids_off"]) - 1
    if len(cols["vectors"]) != rows or len(cols["id_hash"]) != rows or int(cols["ids_off"][-1]) != len(cols["ids"]):
        raise ValueError(f"{file.path.name}: columns of different lengths")
    return Segment(start, cols, file, file.path.name)


# ---- column readers (what `store.ids[s]`, `store.vectors[rows]` and the rest return) -------------------------------


class _Text:
    """ids[s] / inputs[s]: a slot's string."""

    def __init__(self, store: SlotStore, column: str) -> None:
        self._store = store
        self._column = column

    def __getitem__(self, slot: int) -> str:
        layout = self._store._layout
        tail = layout.tail
        if slot >= tail.start:
            return (tail.ids if self._column == "ids" else tail.inputs)[slot - tail.start]
        segment = layout.segments[int(np.searchsorted(layout.starts, slot, "right")) - 1]
        return segment.id(slot - segment.start) if self._column == "ids" else segment.input(slot - segment.start)

    def many(self, slots: np.ndarray) -> list[str]:
        """The strings of these slots, in their order: each segment's rows gathered from its blob at once (a search's
        hits), not one slot at a time."""
        slots = np.asarray(slots, np.int64).reshape(-1)
        layout = self._store._layout
        tail = layout.tail
        out: list[str] = [""] * len(slots)
        parts = layout.parts(slots)
        for part in np.unique(parts).tolist():
            where = np.flatnonzero(parts == part)
            if part == len(layout.segments):
                column = tail.ids if self._column == "ids" else tail.inputs
                for i, slot in zip(where.tolist(), (slots[where] - tail.start).tolist(), strict=True):
                    out[i] = column[slot]
                continue
            segment = layout.segments[part]
            data, offsets = _gather_blob(
                segment.cols[self._column], segment.cols[self._column + "_off"], slots[where] - segment.start
            )
            if segment.file is not None and len(where) <= _DROP_ROWS:  # their pages not kept, as rescoring's
                segment.file.drop(self._column, self._column + "_off")
            raw, bounds = data.tobytes(), offsets.tolist()
            for j, i in enumerate(where.tolist()):
                out[i] = raw[bounds[j] : bounds[j + 1]].decode("utf-8")
        return out


class _Meta:
    """meta[s]: a slot's metadata (decoded from its segment on each read; {} shared for items without)."""

    def __init__(self, store: SlotStore) -> None:
        self._store = store

    def __getitem__(self, slot: int) -> dict[str, Any]:
        layout = self._store._layout
        tail = layout.tail
        if slot >= tail.start:
            return tail.meta[slot - tail.start]
        segment = layout.segments[int(np.searchsorted(layout.starts, slot, "right")) - 1]
        return segment.meta(slot - segment.start) or _EMPTY_META


class _Rows:
    """vectors[rows] / unit[rows]: float32 rows of slots (an int, a slice, or an array of any shape)."""

    def __init__(self, store: SlotStore, *, unit: bool) -> None:
        self._store = store
        self._unit = unit

    def __getitem__(self, rows: Any) -> np.ndarray:
        store = self._store
        if isinstance(rows, int | np.integer):
            return self[np.array([int(rows)])][0]
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(store.n))
        rows = np.asarray(rows, np.int64)
        layout = store._layout
        flat = rows.reshape(-1)
        out = np.empty((len(flat), store.dimension), np.float32)
        parts = layout.parts(flat)
        tail = layout.tail
        cosine = store.metric is Metric.COSINE
        for part in np.unique(parts).tolist():
            where = parts == part if len(layout.starts) > 1 else slice(None)
            if part == len(layout.segments):
                local = flat[where] - tail.start
                source = tail.unit if self._unit and tail.unit is not None else tail.vectors
                out[where] = source[local]
                continue
            segment = layout.segments[part]
            local = flat[where] - segment.start
            if self._unit and cosine:
                out[where] = (
                    segment.take("unit", local)
                    if segment.unit is not None
                    else unit_rows(segment.take("vectors", local))
                )
            else:
                out[where] = segment.take("vectors", local)
        return out.reshape((*rows.shape, store.dimension))


class _Sizes:
    """sizes[rows]: per slot, the bytes of its id and input, and of its metadata as JSON (what a hit adds)."""

    def __init__(self, store: SlotStore) -> None:
        self._store = store

    def __getitem__(self, rows: Any) -> np.ndarray:
        store = self._store
        rows = np.asarray(rows, np.int64).reshape(-1)
        layout = store._layout
        out = np.zeros((len(rows), 2), np.int64)
        parts = layout.parts(rows)
        tail = layout.tail
        for part in np.unique(parts).tolist():
            where = parts == part
            if part == len(layout.segments):
                out[where] = tail.sizes[rows[where] - tail.start]
                continue
            segment = layout.segments[part]
            local = rows[where] - segment.start
            out[where, 0] = segment.lengths("ids", local) + segment.lengths("inputs", local)
            out[where, 1] = segment.lengths("meta", local)
            if segment.file is not None and len(local) <= _DROP_ROWS:  # a search's hits: their pages not kept
                segment.file.drop("ids_off", "inputs_off", "meta_off")
        return out


class IdIndex(Mapping[str, int]):
    """Each live id's slot: the tail's dict, then each segment's sorted id hashes, newest segment first."""

    def __init__(self, store: SlotStore) -> None:
        self._store = store

    def lookup(self, ids: Sequence[str], hashes: np.ndarray | None = None) -> np.ndarray:
        """The live slot of each id, -1 where absent (`hashes`: their id hashes, when the caller has them)."""
        store = self._store
        layout = store._layout
        out = np.full(len(ids), -1, np.int64)
        tail = layout.tail.slot_of
        rest = []
        for i, item_id in enumerate(ids):
            slot = tail.get(item_id)
            if slot is not None:
                out[i] = slot
            else:
                rest.append(i)
        if not rest or not layout.segments:
            return out
        wanted = np.array(rest, np.int64)
        hashes = hashes[wanted] if hashes is not None else id_hashes([ids[i] for i in rest])
        live = store.live
        for segment in reversed(layout.segments):
            if not len(wanted):
                break
            keys = segment.cols["id_hash"]
            lo = np.searchsorted(keys, hashes, "left")
            hi = np.searchsorted(keys, hashes, "right")
            found = np.zeros(len(wanted), bool)
            for j in np.flatnonzero(hi > lo).tolist():
                target = ids[int(wanted[j])]
                for position in range(int(lo[j]), int(hi[j])):
                    slot = segment.start + int(segment.cols["id_row"][position])
                    if live[slot] and segment.id(slot - segment.start) == target:
                        out[wanted[j]] = slot
                        found[j] = True
                        break
            wanted, hashes = wanted[~found], hashes[~found]
        return out

    def __getitem__(self, item_id: str) -> int:
        slot = int(self.lookup([item_id])[0])
        if slot < 0:
            raise KeyError(item_id)
        return slot

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and int(self.lookup([item_id])[0]) >= 0

    def __iter__(self) -> Iterator[str]:
        ids = self._store.ids
        return (ids[s] for s in self._store.live_slots().tolist())

    def __len__(self) -> int:
        return self._store.count
