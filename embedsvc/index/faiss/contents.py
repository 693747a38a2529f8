"""A collection's contents in memory: the slot store and the indexes over its slots, behind one readers-writer lock;
and how they go into a checkpoint and come back from one.

Searches and reads hold the read side of `rw`; applying committed records, a compaction's and a rebuild's swap, and
mapping a written checkpoint in hold the write side. `apply` is the one way a committed record reaches memory: the
log's leader calls it once the record's group is durable (log.py), in LSN order. An upsert appends slots to the store
(tombstoning the slots it replaces) and its new slots are fed to every index; a delete tombstones slots. Slots are
renumbered only by replacing the store as a whole (`adopt`, after a compaction or a rebuild), which bumps
`generation`: anything computed per slot outside the lock is stale once the generation has moved.

Checkpoints (recovery.py runs them; checkpoint.py writes the files): `checkpoint_plan` says what the new checkpoint
holds — the segments already in the last one (linked), the rows appended since (the store's tail, sealed into a new
segment with the index's codes of those rows), merged segments, the live bits, the index's file (its trained
template, or an HNSW index whole), the recall calibration — and `checkpointed` then maps the written segments in
place of the tail. `restore` opens a checkpoint: the segments are mapped, the index is rebuilt from its template and
the segments' codes (or read whole), nothing is trained or encoded again.

Secondary indexes: caches of the store that the durable state (checkpoint + log) can always rebuild.
- The FAISS vector index (`index`), over slots: fed the new slots of every applied upsert (`_feed`); deletes and
  replacements reach it as tombstones (`store.live`, which every search passes on as the mask of allowed slots) until
  a compaction or a rebuild renumbers the slots (`adopt`: `training.compacted`, `training.rebuild`). Checkpoints keep
  it (its template and the segments' codes, or whole for HNSW), so that `restore` re-adds instead of training.
- The keyword index (`keyword`, a collection created with a keyword language), over item ids, so renumbering slots
  does not touch it: every applied record reaches it in `apply`, under the write lock, in one keyword commit per
  group (an upsert adds or replaces its items' text, a delete removes them), so an acknowledged write is
  keyword-searchable when its writer returns and a replaced or deleted item is never found again. It writes no files:
  it is built once over the whole store when it is behind the store (`keyword_stale`: at open, after the checkpoint
  was mapped and the log's tail replayed into the store, by `training.catch_up_keywords`); a compaction and a rebuild
  (`adopt` of contents made with `keyword=False`) keep it. Its searches run under the read lock, so a hit's id is
  always a live item of the store (planning.py, keywords.py).
Another index joins at these places; if rebuilding it at start costs too much, `checkpoint_plan` adds its files to
`plan.files` (`checkpoint.Written(data=...)`, or `checkpoint.Linked` to share the last checkpoint's file when it has
not changed) and its description to `plan.extra[<name>]`; the manifest lists and checksums them with the rest, under
the same LSN; `restore` reads them back instead of a rebuild, as the vector index does with `index.faiss`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.index.faiss import checkpoint, columns
from embedsvc.index.faiss.calibration import GROWTH, Calibration
from embedsvc.index.faiss.checkpoint import FileEntry, Linked, Manifest, Plan, SegmentEntry, Written
from embedsvc.index.faiss.log import Record
from embedsvc.index.faiss.slots import Pending, Segment, SlotStore, open_segment
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.keyword.index import KeywordIndex
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Quantization, Upsert
from embedsvc.rwlock import RWLock

# At most this many segments after a checkpoint; beyond it, the smallest adjacent ones are merged.
MAX_SEGMENTS = 16
# A collection whose index needs no training has its recall calibrated once it holds this many items.
CALIBRATE_FROM = 1000
# An IVF index trained on a smaller sample than `IndexParams.train_rows` is trained again (a rebuild in the background)
# once the live count reaches RETRAIN_GROWTH times the count it was trained at, or RETRAIN_GROWTH_LAST times when
# that is enough for a full-size sample (see `Trained.retrain_at`).
RETRAIN_GROWTH = 4
RETRAIN_GROWTH_LAST = 2


@dataclass(frozen=True)
class Trained:
    """The index's last training: the live items then, and the vectors of its sample (at most train_rows of them).
    Kept in the checkpoint's manifest, so that a reopened collection knows when it trains again."""

    count: int
    sample: int

    def retrain_at(self, params: IndexParams) -> int:
        """The live count at which an index trained so is trained again; 0: never (not IVF, or its sample was full).

        k-means centroids trained on 39 x nlist rows (the first training, as soon as a collection has that many) make
        lists less even than centroids trained on 256 x nlist: at 1M clustered vectors, nlist 512, the list-size
        imbalance was 2.23 against 1.84, so a search at the same nprobe scanned a fifth more codes. The count grows
        geometrically between trainings (x4, or x2 when that already gives a full sample), and the last one has a
        full-size sample, so a collection is trained at most about log4(train_rows / train_size) + 1 more times (2 at
        nlist 512), and never again past 2 x train_rows items: a retrain re-encodes at most that many rows."""
        full = params.train_rows
        if not params.is_ivf or self.sample >= full or self.count <= 0:
            return 0
        return max(RETRAIN_GROWTH_LAST * self.count, min(RETRAIN_GROWTH * self.count, full))

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sample": self.sample}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Trained | None:
        return None if not data else cls(int(data["count"]), int(data["sample"]))


def _nothing() -> None:
    pass


class Contents:
    """The store, its indexes and their lock. `on_trainable` is called (under the write lock, so it must only start
    work elsewhere) when an untrained index could now be trained, `on_grown` when the collection has grown enough
    since its recall calibration to measure again: the collection does both in the background."""

    def __init__(
        self,
        config: CollectionConfig,
        on_trainable: Callable[[], None] = _nothing,
        on_grown: Callable[[], None] = _nothing,
        *,
        keyword: bool = True,
    ) -> None:
        """`keyword`: hold the collection's keyword index, if it has one (a rebuild's or a compaction's fresh contents
        do not: the collection's own keyword index stays in service through it, `adopt` keeps it)."""
        self.config = config
        self.rw = RWLock()
        self.store = self.new_store()
        self.index = self.new_index()
        self.keyword = KeywordIndex(config.keyword) if config.keyword and keyword else None
        # True while the keyword index does not reflect the store (until training.catch_up_keywords builds it).
        self.keyword_stale = self.keyword is not None
        self.generation = 1
        # While a rebuild runs: the records applied since its snapshot, replayed onto the new contents before the swap.
        self.rebuilding: list[Record] | None = None
        self.calibration: Calibration | None = None
        # When the index was last trained (None: untrained, or a kind without training).
        self.trained: Trained | None = None
        # The last checkpoint (directory and manifest), and whether memory holds anything it lacks beyond the log
        # (renumbered slots, a new index, a new calibration).
        self.saved: tuple[Path, Manifest] | None = None
        self.dirty = False
        self._on_trainable = on_trainable
        self._on_grown = on_grown

    def new_store(self) -> SlotStore:
        p = self.config.index
        float_index = p.quantization is Quantization.NONE and p.kind in (IndexKind.FLAT, IndexKind.HNSW)
        return SlotStore(
            self.config.dimension, self.config.metric, indexed=self.config.indexed_fields, keep_unit=float_index
        )

    def new_index(self) -> VectorIndex:
        return VectorIndex(self.config.index, self.config.dimension, self.config.metric)

    def apply(self, records: list[Record]) -> None:
        """Apply committed records (the log calls this after they are durable)."""
        with self.rw.write():
            for record in records:
                self.replay(record, index=True)
            if self.keyword is not None:
                self._feed_keywords(records)
            if self.rebuilding is not None:
                self.rebuilding.extend(records)

    def _feed_keywords(self, records: list[Record]) -> None:
        """The records' effect on the keyword index, in one commit: texts added or replaced, deleted items as empty
        texts (which remove them)."""
        assert self.keyword is not None
        ids: list[str] = []
        texts: list[str] = []
        for record in records:
            operation = record.operation
            ids.extend(operation.ids)
            texts.extend(operation.inputs if isinstance(operation, Upsert) else [""] * len(operation.ids))
        if ids:
            self.keyword.upsert(ids, texts)

    def replay(self, record: Record, *, index: bool) -> None:
        """Apply one record to the store, and with `index` to the indexes too (recovery may build them after)."""
        if isinstance(record.operation, Upsert):
            slots = self.store.append(record.operation)
            if index:
                self._feed(slots)
        else:
            self.store.remove(record.operation)

    def _feed(self, slots: np.ndarray) -> None:
        if self.index.trained:
            self.index.add(slots, self.store.unit[slots])
            count = self.store.count
            calibration = self.calibration
            due = count >= CALIBRATE_FROM if calibration is None else count >= GROWTH * calibration.count
            if self.rebuilding is not None:
                return
            if self.retrain_due():
                self._on_trainable()  # which calibrates after
            elif due and not self.index.exact:
                self._on_grown()
        elif self.store.count >= self.config.index.train_size and self.rebuilding is None:
            self._on_trainable()

    def retrain_due(self) -> bool:
        """The index is trained, and the collection has grown enough past its training sample to train it again."""
        trained = self.trained
        if trained is None or not self.index.trained:
            return False
        at = trained.retrain_at(self.config.index)
        return at > 0 and self.store.count >= at

    def adopt(self, other: Contents) -> None:
        """Take another contents' store and indexes (a rebuild's or a compaction's swap; hold the write lock)."""
        self.store, self.index, self.trained = other.store, other.index, other.trained
        if other.calibration is not None or self.store.count == 0:
            self.calibration = other.calibration
        self.generation += 1
        self.dirty = True

    # ---- checkpoints -----------------------------------------------------------------------------------------

    def checkpoint_plan(self, lsn: int) -> Plan | None:
        """What a checkpoint at `lsn` holds (None: the last checkpoint holds it all already). Read-only; call with the
        read lock held and no write being applied (inside the log's exclusive section)."""
        store, index = self.store, self.index
        previous = self.saved
        if previous is not None and previous[1].lsn == lsn and not self.dirty:
            return None
        prev_dir = previous[0] if previous is not None else None
        prev_files = previous[1].files if previous is not None else {}
        files: dict[str, checkpoint.FileSource] = {}
        segments: list[SegmentEntry] = []
        tail = store.seal(index.codes(store.tail_start, store.n) if index.keeps_codes else None)
        merges = dict(store.merge_plan(MAX_SEGMENTS - (1 if tail else 0)))
        existing = store.segments
        i = 0
        while i < len(existing):
            end = merges.get(i, i + 1)
            segment = existing[i]
            name = f"segment-{segment.start}-{sum(s.rows for s in existing[i:end])}-{lsn}.cols"
            if end > i + 1:
                pending = store.merged(i, end)
            elif (
                segment.file is not None
                and prev_dir is not None
                and segment.name in prev_files
                and (segment.codes is not None or not self._codes_due(segment))
            ):
                files[segment.name] = Linked(prev_dir / segment.name, prev_files[segment.name])
                segments.append(SegmentEntry(segment.name, segment.start, segment.rows))
                i = end
                continue
            else:
                pending = Pending(segment.start, segment.rows, dict(segment.cols))
            if "codes" not in pending.columns and index.keeps_codes:
                codes = index.codes(pending.start, pending.start + pending.rows)
                if codes is not None:
                    pending.columns["codes"] = codes
            files[name] = Written(columns=pending.columns)
            segments.append(SegmentEntry(name, pending.start, pending.rows))
            i = end
        if tail is not None:
            name = f"segment-{tail.start}-{tail.rows}-{lsn}.cols"
            files[name] = Written(columns=tail.columns)
            segments.append(SegmentEntry(name, tail.start, tail.rows))
        files[checkpoint.LIVE] = Written(columns={"live": np.packbits(store.live[: store.n], bitorder="little")})
        kind = ""
        if index.keeps_codes and index.template() is not None:
            kind = "template"
            data = index.template()
            files[checkpoint.INDEX] = self._index_file(kind, data, previous)
        elif index.whole and index.trained and index.ntotal:
            kind = "whole"
            if index.dirty or previous is None or previous[1].index != "whole":
                files[checkpoint.INDEX] = Written(data=index.serialize())
            else:
                files[checkpoint.INDEX] = Linked(previous[0] / checkpoint.INDEX, previous[1].files[checkpoint.INDEX])
        return Plan(
            lsn=lsn,
            dimension=self.config.dimension,
            slots=store.n,
            count=store.count,
            segments=segments,
            files=files,
            index=kind,
            calibration=self.calibration.to_json() if self.calibration is not None else None,
            training=self.trained.to_json() if self.trained is not None else None,
        )

    def _codes_due(self, segment: Segment) -> bool:
        """A saved segment without codes while the index could give them (trained after it was written)."""
        return self.index.keeps_codes and self.index.codes(segment.start, segment.end) is not None

    @staticmethod
    def _index_file(kind: str, data: bytes | None, previous: tuple[Path, Manifest] | None) -> checkpoint.FileSource:
        digest = hashlib.sha256(data or b"").hexdigest()
        if previous is not None and previous[1].index == kind:
            entry = previous[1].files.get(checkpoint.INDEX)
            if entry is not None and entry.sha256 == digest:
                return Linked(previous[0] / checkpoint.INDEX, entry)
        return Written(data=data)

    def checkpointed(self, path: Path, manifest: Manifest, store: SlotStore) -> None:
        """The checkpoint of `store` is written: map its new segments in place of what they hold (hold the write
        lock). Nothing changes if the store was replaced meanwhile (its own checkpoint will come)."""
        self.saved = (path, manifest)
        if store is not self.store:
            return
        old = {s.name: s for s in store.segments if s.file is not None}
        mapped = self.config.index.mmap is not False
        segments = []
        for entry in manifest.segments:
            kept = old.get(entry.file)
            if kept is not None and kept.start == entry.start and kept.rows == entry.rows:
                segments.append(kept)
            else:
                segments.append(open_segment(columns.open_file(path / entry.file, mapped=mapped), entry.start))
        store.adopt_saved(segments)
        self.index.forget(store.n)
        self.dirty = False

    def restore(self, path: Path, manifest: Manifest) -> bool:
        """Open a (format 2) checkpoint into these empty contents: segments mapped, the index restored from its file
        and the segments' codes. False when the index could not be restored (untrained, or codes missing): the
        caller refills it. ValueError when the files do not agree with the manifest."""
        store = self.new_store()
        load_store(path, manifest, store, mapped=self.config.index.mmap is not False)
        segments = store.segments
        self.store = store
        self.calibration = Calibration.from_json(manifest.calibration)
        # A checkpoint written before the training was recorded: taken as trained on a sample of what it holds (the
        # conservative guess; a Rebuild trains it on a full-size sample).
        self.trained = Trained.from_json(manifest.training) or Trained(
            manifest.count, min(manifest.count, self.config.index.train_rows)
        )
        self.saved = (path, manifest)
        self.dirty = False
        index = self.new_index()
        self.index = index
        if index.exact:
            index.add(np.arange(store.n), np.empty((0, self.config.dimension), np.float32))
            self.trained = None
            return True
        if manifest.index == "template" and all(s.codes is not None for s in segments):
            index.restore(
                _read_checked(path, manifest, checkpoint.INDEX), [(s.start, np.asarray(s.codes)) for s in segments]
            )
            # The index copied the codes into its lists: the mapped pages read for it would stay resident, the codes
            # counted twice in this process's memory (0.25 of the raw vectors for int8) until the kernel needs them.
            for segment in segments:
                if segment.file is not None:
                    segment.file.release()
            return True
        if manifest.index == "whole":
            data = np.frombuffer(_read_checked(path, manifest, checkpoint.INDEX), np.uint8)
            index.restore_whole(data)
            if index.ntotal == store.n:
                return True
        self.index = self.new_index()
        self.trained = None  # the caller refills the index: trained anew
        return False

    def load_legacy(self, legacy: checkpoint.Legacy) -> None:
        """A format-1 checkpoint's rows, into the store's tail (the next checkpoint writes them in format 2)."""
        self.store = self.new_store()
        if legacy.ids:
            self.store.append(Upsert(legacy.ids, legacy.vectors, legacy.metadata, legacy.inputs))
        self.index = self.new_index()
        self.generation += 1
        self.dirty = True

    def memory_bytes(self) -> int:
        return self.store.memory_bytes() + self.index.memory_bytes()


def load_store(path: Path, manifest: Manifest, store: SlotStore, *, mapped: bool = True, keep_fd: bool = True) -> None:
    """A format-2 checkpoint's rows into `store` (empty, of the checkpoint's dimension): its segments mapped (or read,
    without `mapped`) and its live flags. ValueError when they do not agree with the manifest. `keep_fd` keeps each
    segment's descriptor for the background checksum (collection.py)."""
    if manifest.dimension != store.dimension:
        raise ValueError(f"{path.name}: dimension {manifest.dimension}, not {store.dimension}")
    segments = [
        open_segment(columns.open_file(path / e.file, mapped=mapped, keep_fd=keep_fd), e.start)
        for e in manifest.segments
    ]
    live_file = columns.open_file(path / checkpoint.LIVE, mapped=False)
    live = np.unpackbits(live_file["live"], count=manifest.slots, bitorder="little").astype(bool)
    store.load_segments(segments, live)
    if store.count != manifest.count:
        raise ValueError(f"{path.name}: {store.count} live slots, the manifest says {manifest.count}")


def _read_checked(path: Path, manifest: Manifest, name: str) -> bytes:
    data = (path / name).read_bytes()
    entry: FileEntry = manifest.files[name]
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ValueError(f"{path.name}/{name}: checksum mismatch")
    return data
