"""Snapshots of FAISS collections (the "faiss" format of `index/snapshot_files.py`): a collection's own files at one
LSN, and putting such files back as a new collection.

A snapshot directory holds `collection.json`, `checkpoint/` (the files of the collection's latest checkpoint: its
`manifest.json` with the LSN, its segment files, `live.cols` and the index file; hard links where the file system
allows, else copies) and `wal.log` (the log's first bytes: every record up to the snapshot's LSN). The collection
facade (`Collection.snapshot`) decides the LSN, under the log's exclusive section, and keeps checkpoints from
truncating the log (or removing the checkpoint) while the files are linked and the log's prefix copied; this module
only moves files. The keyword index writes no files: a restored collection builds it at open, as any collection does.

Hard links are safe because `checkpoint.py` never changes a checkpoint's files once renamed into place: a later
checkpoint links the segments it shares and writes new files for the rest, and a snapshot's links keep the files it
names whatever the collection does next. A checkpoint format whose files changed in place would have to copy them
instead: `link_checkpoint` and `place` are the two places. Snapshots taken before format 2 (`checkpoint/meta.json`,
`vectors.npy`, `items.jsonl`) are still placed and read: the restored collection opens them as it opens a format-1
checkpoint, and rewrites them at its next checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from embedsvc import durable
from embedsvc.index.faiss import checkpoint
from embedsvc.index.faiss.contents import load_store
from embedsvc.index.faiss.log import scan
from embedsvc.index.faiss.slots import SlotStore
from embedsvc.index.snapshot_files import (
    FileCheck,
    FileEntry,
    Manifest,
    damaged,
    file_entry,
    open_file,
    verify,
    verify_file,
    write_entry,
)
from embedsvc.index.types import CollectionConfig, StoredItem, Upsert

CONFIG = "collection.json"
CHECKPOINT = "checkpoint"
LOG = "wal.log"
_BLOCK = 1 << 20
_LEGACY_META = "meta.json"  # a format-1 checkpoint's description (checkpoint.read_legacy)
_LINK_FAILURES = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link, or a copy where links cannot be made (another file system)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in _LINK_FAILURES:
            raise
        shutil.copyfile(source, target)
        durable.fsync_file(target)


def link_checkpoint(directory: Path, dest: Path) -> list[str]:
    """Link the latest checkpoint's files into `dest/checkpoint/` (none yet: nothing); their snapshot paths."""
    latest = checkpoint.latest_checkpoint(directory)
    if latest is None:
        return []
    (dest / CHECKPOINT).mkdir()
    paths = []
    for source in sorted(p for p in latest.iterdir() if p.is_file()):
        link_or_copy(source, dest / CHECKPOINT / source.name)
        paths.append(f"{CHECKPOINT}/{source.name}")
    return paths


def copy_log(log: Path, dest: Path, size: int, check: Callable[[], None]) -> FileEntry:
    """Copy the log's first `size` bytes to `dest/wal.log` (fsync'd)."""
    digest = hashlib.sha256()
    copied = 0
    fd = os.open(dest / LOG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(log, "rb") if log.exists() else open(os.devnull, "rb") as source:
            while copied < size:
                check()
                block = source.read(min(_BLOCK, size - copied))
                if not block:
                    raise OSError(errno.EIO, f"{log} is shorter than the {size} bytes the snapshot needs")
                durable.write(fd, block)
                digest.update(block)
                copied += len(block)
        durable.fsync(fd)
    finally:
        os.close(fd)
    return FileEntry(LOG, size, digest.hexdigest())


def finish(dest: Path, config: CollectionConfig, linked: list[str], log: FileEntry) -> tuple[FileEntry, ...]:
    """Write collection.json, checksum the linked files, fsync the directories: the snapshot's file entries."""
    entries = [write_entry(dest, CONFIG, config.to_json()), *(file_entry(dest, p) for p in linked), log]
    if linked:
        durable.fsync_dir(dest / CHECKPOINT)
    durable.fsync_dir(dest)
    return tuple(entries)


def place(snapshot: str, source: Path, manifest: Manifest, target: Path, check: Callable[[], None]) -> None:
    """Put a "faiss" snapshot's checkpoint and log into a new collection's (temporary) directory, checking every
    file against the manifest as it is placed (DATA_LOSS naming the file)."""
    entries = {f.path: f for f in manifest.files}
    if CONFIG in entries:  # unused here (the manifest's configuration is restored), but a damaged snapshot is refused
        verify(snapshot, source, (entries[CONFIG],), check)
    linked = sorted(p for p in entries if p.startswith(f"{CHECKPOINT}/"))
    if linked:
        lsn = _checkpoint_lsn(snapshot, source, entries, check)
        folder = target / f"{checkpoint.PREFIX}{lsn}"
        folder.mkdir()
        for path in linked:
            name = path.removeprefix(f"{CHECKPOINT}/")
            if "/" in name:
                raise damaged(snapshot, path, "is not a checkpoint file")
            try:
                link_or_copy(source / path, folder / name)
            except FileNotFoundError:
                raise damaged(snapshot, path, "is missing") from None
            verify_file(snapshot, folder / name, entries[path], check)
        durable.fsync_dir(folder)
    if LOG not in entries:
        raise damaged(snapshot, LOG, "is missing from the manifest")
    _copy_checked(snapshot, source / LOG, target / LOG, entries[LOG], check)
    durable.fsync_dir(target)


def _checkpoint_lsn(snapshot: str, source: Path, entries: dict[str, FileEntry], check: Callable[[], None]) -> int:
    """The LSN of a snapshot's checkpoint, from its manifest.json (format 2) or meta.json (format 1), checked."""
    for name in (checkpoint.MANIFEST, _LEGACY_META):
        path = f"{CHECKPOINT}/{name}"
        if path in entries:
            break
    else:
        raise damaged(snapshot, f"{CHECKPOINT}/{checkpoint.MANIFEST}", "is missing from the manifest")
    verify(snapshot, source, (entries[path],), check)
    try:
        return int(json.loads((source / path).read_bytes())["lsn"])
    except (ValueError, KeyError, TypeError) as exc:
        raise damaged(snapshot, path, f"does not parse ({exc})") from None


def _copy_checked(snapshot: str, source: Path, target: Path, entry: FileEntry, check: Callable[[], None]) -> None:
    checker = FileCheck(snapshot, entry)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open_file(snapshot, source.parent, source.name) as reader:
            while block := reader.read(_BLOCK):
                check()
                checker.update(block)
                durable.write(fd, block)
        checker.finish()
        durable.fsync(fd)
    finally:
        os.close(fd)


def read_items(
    snapshot: str, folder: Path, manifest: Manifest, check: Callable[[], None], batch: int = 4096
) -> Iterator[list[StoredItem]]:
    """The items of a "faiss" snapshot, in id order (its checkpoint with its log replayed), every file checked first.
    The checkpoint's segments are mapped, not read: only the log's tail and the ids' order are held in memory."""
    verify(snapshot, folder, manifest.files, check)
    config = manifest.config
    store = SlotStore(config.dimension, config.metric)
    lsn = 0
    base = folder / CHECKPOINT
    try:
        if (base / checkpoint.MANIFEST).exists():
            saved = checkpoint.read_manifest(base)
            load_store(base, saved, store, keep_fd=False)
            lsn = saved.lsn
        elif (base / _LEGACY_META).exists():
            legacy = checkpoint.read_legacy(base, config.dimension)
            if legacy.ids:
                store.append(Upsert(legacy.ids, legacy.vectors, legacy.metadata, legacy.inputs))
            lsn = legacy.lsn
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise damaged(snapshot, CHECKPOINT, f"does not load ({exc})") from None
    result = scan(folder / LOG, config.dimension, after_lsn=lsn)
    if result.corruption or result.torn_bytes:
        raise damaged(snapshot, LOG, result.corruption or "ends in a torn record")
    for record in result.records:
        if record.lsn <= lsn:
            continue
        operation = record.operation
        if isinstance(operation, Upsert):
            store.append(operation)
        else:
            store.remove(operation)
    if store.count != manifest.count:
        raise damaged(snapshot, LOG, f"replays to {store.count} items; the manifest lists {manifest.count}")
    slots = store.sorted_slots()
    for start in range(0, len(slots), batch):
        check()
        part = slots[start : start + batch]
        ids = [store.ids[s] for s in part.tolist()]
        found = store.items_at(ids, part, with_vectors=True)
        yield [item for item in found if item is not None]
