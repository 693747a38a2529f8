"""Snapshots of FAISS collections (the "faiss" format of `index/snapshot_files.py`): a collection's own files at one
LSN, and putting such files back as a new collection.

A snapshot directory holds `collection.json`, `checkpoint/` (the files of the collection's latest checkpoint, hard
links where the file system allows, else copies) and `wal.log` (the log's first bytes: every record up to the
snapshot's LSN). The collection facade (`Collection.snapshot`) decides the LSN, under the log's exclusive section, and
keeps checkpoints from truncating the log while its prefix is copied; this module only moves files.

It assumes, as `checkpoint.py` guarantees today, that a checkpoint's files never change once renamed into place (a
new checkpoint is a new directory): that is what makes hard links safe. A checkpoint format whose files change in
place (appended segments) must copy them instead: `link_checkpoint` and `place` are the two places.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from embedsvc import durable
from embedsvc.index.faiss import checkpoint
from embedsvc.index.faiss.log import scan
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
from embedsvc.index.types import CollectionConfig, Delete, StoredItem, Upsert

CONFIG = "collection.json"
CHECKPOINT = "checkpoint"
LOG = "wal.log"
_BLOCK = 1 << 20
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
        meta = f"{CHECKPOINT}/meta.json"
        if meta not in entries:
            raise damaged(snapshot, meta, "is missing from the manifest")
        verify(snapshot, source, (entries[meta],), check)
        try:
            lsn = int(json.loads((source / meta).read_bytes())["lsn"])
        except (ValueError, KeyError, TypeError) as exc:
            raise damaged(snapshot, meta, f"does not parse ({exc})") from None
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
    """The items of a "faiss" snapshot, in id order (its checkpoint with its log replayed), every file checked first."""
    verify(snapshot, folder, manifest.files, check)
    dimension = manifest.config.dimension
    items: dict[str, tuple[np.ndarray, dict, str]] = {}
    lsn = 0
    if (folder / CHECKPOINT / "meta.json").exists():
        try:
            loaded = checkpoint.read_checkpoint(folder / CHECKPOINT, dimension)
        except (OSError, ValueError, KeyError) as exc:
            raise damaged(snapshot, CHECKPOINT, f"does not load ({exc})") from None
        lsn = loaded.lsn
        for n, item_id in enumerate(loaded.ids):
            items[item_id] = (loaded.vectors[n], loaded.metadata[n], loaded.inputs[n])
    result = scan(folder / LOG, dimension, after_lsn=lsn)
    if result.corruption or result.torn_bytes:
        raise damaged(snapshot, LOG, result.corruption or "ends in a torn record")
    for record in result.records:
        if record.lsn <= lsn:
            continue
        operation = record.operation
        if isinstance(operation, Delete):
            for item_id in operation.ids:
                items.pop(item_id, None)
        elif isinstance(operation, Upsert):
            for n, item_id in enumerate(operation.ids):
                items[item_id] = (operation.vectors[n], operation.metadata[n], operation.inputs[n])
    if len(items) != manifest.count:
        raise damaged(snapshot, LOG, f"replays to {len(items)} items; the manifest lists {manifest.count}")
    ids = sorted(items)
    for start in range(0, len(ids), batch):
        check()
        yield [StoredItem(i, items[i][0], items[i][1], items[i][2]) for i in ids[start : start + batch]]
