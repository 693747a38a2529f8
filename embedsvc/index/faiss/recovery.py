"""Recovery and checkpoints of a collection: opening it from its files, and writing what memory holds back to disk.

Files in the collection's directory: `collection.json` (CONFIG: the configuration, written once), `wal.log` (LOG: see
log.py) and `checkpoint-<lsn>/` (see checkpoint.py).

- `recover`: the latest checkpoint is opened into the contents (`Contents.restore`: its segments memory-mapped, the
  index re-added from its codes or read whole; a format-1 checkpoint is read into memory instead), the log's records
  after its LSN are replayed (a torn tail, the last unacknowledged group, is cut off first) — through the index when
  it came back, else the index is built once over the result (`training.refill`), the keyword index built over the
  live items (`training.catch_up_keywords`) — and the log is opened for writing with `Contents.apply` as the place
  its committed records go. Damage is `Damaged`, which the collection reports as
  DATA_LOSS, keeping the files as they are.
- `Checkpoints`: a checkpoint at the log's last LSN, written while no write is in flight (`LogWriter.exclusive`),
  then the log emptied. It writes only what changed (`Contents.checkpoint_plan`: the rows appended since the last
  one, as a new segment; the live bits; the index file when it changed) and links the rest; then the new segments
  are mapped in place of the rows they hold (`Contents.checkpointed`). With `compact`, the live rows are first copied
  renumbered into new contents (`training.compacted`, outside the write lock), which the checkpoint writes and which
  are swapped in after. A checkpoint is due once the log passes `checkpoint_bytes` (compacting when more than half
  the slots are tombstones). A failed one (a full disk, an I/O error) never fails the write that triggered it: every
  write stays durable in the log; it is reported and retried, with backoff, by a later write.

Recovery and checkpoints move the slot store and the indexes only through `Contents` (`restore`, `checkpoint_plan`,
`checkpointed`, `adopt`) and `training` (`refill`, `compacted`, `catch_up_keywords`): another slot store layout or
another secondary index does not change this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from embedsvc import durable
from embedsvc.index.faiss import checkpoint, training
from embedsvc.index.faiss.contents import Contents
from embedsvc.index.faiss.log import LogWriter, scan
from embedsvc.index.types import CollectionConfig
from embedsvc.stats import Histogram

log = logging.getLogger(__name__)

CONFIG = "collection.json"
LOG = "wal.log"


class Damaged(Exception):
    """The collection's files are damaged: the message says how (and that they are kept for inspection)."""


def read_config(directory: Path) -> CollectionConfig:
    config = CollectionConfig.from_json((directory / CONFIG).read_bytes())
    if not config.created_at:
        config = replace(config, created_at=(directory / CONFIG).stat().st_mtime)
    return config


def recover(directory: Path, contents: Contents) -> LogWriter:
    """Load the latest checkpoint and the log after it into `contents` (empty), build its indexes, and return the
    log opened for writing. Raises Damaged."""
    config = contents.config
    lsn = 0
    indexed = False  # the index came back with the checkpoint: the log's tail is fed to it as it is replayed
    try:
        latest = checkpoint.latest_checkpoint(directory)
        if latest is not None and checkpoint.is_legacy(latest):
            legacy = checkpoint.read_legacy(latest, config.dimension)
            contents.load_legacy(legacy)
            lsn = legacy.lsn
        elif latest is not None:
            manifest = checkpoint.read_manifest(latest)
            indexed = contents.restore(latest, manifest)
            lsn = manifest.lsn
        else:
            indexed = contents.index.trained
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Damaged(f"checkpoint unreadable: {exc}") from exc
    checkpoint.remove_leftovers(directory)
    path = directory / LOG
    result = scan(path, config.dimension, after_lsn=lsn)
    if result.corruption:
        raise Damaged(f"log corrupt: {result.corruption}; {LOG} is kept as it is for inspection")
    if result.torn_bytes:
        log.warning("%s: dropping a torn write of %d bytes at the end of the log", path, result.torn_bytes)
        durable.truncate_file(path, result.valid_bytes)
    replayed = 0
    for record in result.records:
        if record.lsn <= lsn:
            continue  # already in the checkpoint (a crash came between checkpoint and log truncation)
        contents.replay(record, index=indexed)
        lsn = record.lsn
        replayed += 1
    if not indexed:
        training.refill(contents)
    training.catch_up_keywords(contents)
    writer = LogWriter(path, lsn + 1, contents.apply)
    log.info("collection %s: %d items (%d log records replayed)", config.name, contents.store.count, replayed)
    return writer


class Checkpoints:
    """One collection's checkpoints: written on demand and once the log is large, with their timings and failures.

    `writer` returns the open log, or raises (a closed or damaged collection)."""

    def __init__(
        self, directory: Path, contents: Contents, checkpoint_bytes: int, writer: Callable[[], LogWriter]
    ) -> None:
        self.directory = directory
        self.contents = contents
        self.checkpoint_bytes = checkpoint_bytes
        self._writer = writer
        self.seconds = Histogram()
        # The last failure's message ("" once one succeeds again), failures so far, and when the next try is due.
        self.error = ""
        self.failures = 0
        self.retry_at = 0.0

    def write(self, *, compact: bool = False) -> None:
        """Write a checkpoint of the live items and empty the log; `compact` also rebuilds memory and indexes."""
        writer = self._writer()
        contents = self.contents

        def run() -> None:
            started = time.perf_counter()
            lsn = writer.settled_lsn
            # Inside the exclusive section no record is applied, so the contents stay as they are until the swap
            # below (a rebuild's swap may still come: `checkpointed` then leaves the new contents alone).
            target = contents
            if compact:
                with contents.rw.read():
                    target = training.compacted(contents)
            with contents.rw.read():
                plan = target.checkpoint_plan(lsn)
                store = target.store
            if plan is not None:
                path, manifest = checkpoint.write_checkpoint(self.directory, plan)
            writer.truncate()
            if plan is not None:
                with contents.rw.write():
                    if target is not contents:
                        contents.adopt(target)
                    contents.checkpointed(path, manifest, store)
            self.seconds.observe(time.perf_counter() - started)

        writer.exclusive(run)

    def after_write(self, writer: LogWriter) -> None:
        """Checkpoint once the log is large. Called after a write is durable, so a failure here never fails the
        write: it is logged, reported (info, metrics) and retried after a backoff of 5 s doubling to 5 minutes."""
        if writer.size <= self.checkpoint_bytes or time.monotonic() < self.retry_at:
            return
        store = self.contents.store
        try:
            # A running rebuild compacts anyway; compacting here too would rebuild the index under the write lock.
            self.write(compact=store.n > 2 * max(store.count, 1) and self.contents.rebuilding is None)
        except Exception as exc:
            self.failures += 1
            self.error = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            backoff = min(300.0, 5.0 * 2 ** min(self.failures - 1, 6))
            self.retry_at = time.monotonic() + backoff
            log.error(
                "collection %s: checkpoint failed (%s); writes stay durable in the log, retrying in %.0f s",
                self.contents.config.name,
                self.error,
                backoff,
            )
        else:
            if self.error:
                log.info("collection %s: checkpoint succeeded again", self.contents.config.name)
            self.error = ""
            self.retry_at = 0.0
