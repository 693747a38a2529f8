"""A snapshot's files: the manifest, the checksums that guard every file, and the logical ("items") format.

A snapshot is a directory with `manifest.json` and files. The manifest names the format, the collection's
configuration (with its model binding), the item count, the position it was taken at, and every file with its size and
sha256. Two formats:
- "faiss" (`index/faiss/snapshots.py`): a FAISS collection's own files at one LSN: `collection.json`,
  `checkpoint/` (its latest checkpoint's files: `manifest.json`, segment files, `live.cols`, the index file; or, from
  before checkpoint format 2, `meta.json`, `vectors.npy` and `items.jsonl`) and `wal.log`.
- "items" (here): a logical export, in id order, in parts of at most `PART_ITEMS` items: `items-NNNNN.jsonl` (one
  `{"id", "input", "metadata"}` per line, metadata in the stored JSON form of `index/metadata.py`) and
  `vectors-NNNNN.npy` (float32, one row per line of the part).
Whatever reads a snapshot checks each file's size and sha256 first (`FileCheck`, `verify`), and refuses a mismatch
with DATA_LOSS naming the file: a damaged or truncated snapshot is never half-used.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from embedsvc import durable
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index import metadata as stored
from embedsvc.index.types import CollectionConfig, StoredItem

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FAISS = "faiss"
ITEMS = "items"
PART_ITEMS = 65_536
_BLOCK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, with "/" separators
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Taken:
    """What a backend reports after writing a collection's files into a snapshot directory."""

    format: str
    count: int
    position: int  # FAISS: the LSN; Milvus: the timestamp the export was pinned to (0: not pinned)
    point_in_time: bool
    files: tuple[FileEntry, ...]


@dataclass(frozen=True)
class Manifest:
    id: str
    format: str
    config: CollectionConfig
    count: int
    position: int
    point_in_time: bool
    created_at: float  # seconds since the epoch
    replica: str
    files: tuple[FileEntry, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["config"] = json.loads(self.config.to_json())
        data["files"] = [asdict(f) for f in self.files]
        return json.dumps({"format_version": FORMAT_VERSION, **data}, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """ValueError (with what is wrong) for anything that is not a manifest of this format."""
        try:
            data = json.loads(raw)
            if data.pop("format_version", None) != FORMAT_VERSION:
                raise ValueError("an unknown format_version")
            files = tuple(FileEntry(str(f["path"]), int(f["size_bytes"]), str(f["sha256"])) for f in data["files"])
            manifest = cls(
                id=str(data["id"]),
                format=str(data["format"]),
                config=CollectionConfig.from_json(json.dumps(data["config"])),
                count=int(data["count"]),
                position=int(data["position"]),
                point_in_time=bool(data["point_in_time"]),
                created_at=float(data["created_at"]),
                replica=str(data["replica"]),
                files=files,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a snapshot manifest: {exc}") from None
        if manifest.format not in (FAISS, ITEMS):
            raise ValueError(f"not a snapshot manifest: format {manifest.format!r}")
        for entry in files:
            check_path(entry.path)
            if entry.size_bytes < 0 or len(entry.sha256) != 64:
                raise ValueError(f"not a snapshot manifest: file entry {entry.path!r}")
        if len({f.path for f in files}) != len(files):
            raise ValueError("not a snapshot manifest: a file listed twice")
        return manifest

    def with_id(self, snapshot_id: str, replica: str) -> Manifest:
        return replace(self, id=snapshot_id, replica=replica)


def check_path(path: str) -> None:
    """ValueError unless `path` is a plain relative path inside a snapshot (no `..`, no absolute path)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"not a snapshot manifest: file path {path!r}")
    if path == MANIFEST or len(path) > 200 or "\\" in path or "\0" in path:
        raise ValueError(f"not a snapshot manifest: file path {path!r}")


def damaged(snapshot: str, path: str, problem: str) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.DATA_LOSS,
        f"snapshot {snapshot}: {path} {problem} (the snapshot is damaged: nothing is restored from it, nor sent whole)",
        metadata={"snapshot": snapshot, "file": path},
    )


class FileCheck:
    """Checks one file's bytes, as they stream by, against its manifest entry."""

    def __init__(self, snapshot: str, entry: FileEntry) -> None:
        self.snapshot = snapshot
        self.entry = entry
        self._digest = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.entry.size_bytes:
            raise damaged(self.snapshot, self.entry.path, f"is longer than the {self.entry.size_bytes} bytes listed")
        self._digest.update(data)

    def finish(self) -> None:
        if self.size != self.entry.size_bytes:
            raise damaged(
                self.snapshot, self.entry.path, f"is {self.size} bytes, not the {self.entry.size_bytes} listed"
            )
        if self._digest.hexdigest() != self.entry.sha256:
            raise damaged(self.snapshot, self.entry.path, "fails its sha256 checksum")


def open_file(snapshot: str, folder: Path, path: str) -> BinaryIO:
    """A snapshot's file opened for reading; DATA_LOSS naming it when it is missing."""
    try:
        return open(folder / path, "rb")
    except FileNotFoundError:
        raise damaged(snapshot, path, "is missing") from None


def read_checked(snapshot: str, folder: Path, entry: FileEntry) -> bytes:
    """A whole file's bytes, checked."""
    check = FileCheck(snapshot, entry)
    try:
        data = (folder / entry.path).read_bytes()
    except FileNotFoundError:
        raise damaged(snapshot, entry.path, "is missing") from None
    check.update(data)
    check.finish()
    return data


def verify(snapshot: str, folder: Path, entries: tuple[FileEntry, ...], check: Callable[[], None]) -> None:
    """Check every file against the manifest (DATA_LOSS naming the first that fails)."""
    for entry in entries:
        verify_file(snapshot, folder / entry.path, entry, check)


def verify_file(snapshot: str, path: Path, entry: FileEntry, check: Callable[[], None]) -> None:
    """Check the file at `path` (a snapshot's file, wherever it was put) against its entry."""
    checker = FileCheck(snapshot, entry)
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_BLOCK):
                checker.update(block)
                check()
    except FileNotFoundError:
        raise damaged(snapshot, entry.path, "is missing") from None
    checker.finish()


def file_entry(folder: Path, path: str) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with open(folder / path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return FileEntry(path, size, digest.hexdigest())


def write_entry(folder: Path, path: str, data: bytes) -> FileEntry:
    """Write a file of the snapshot (fsync'd) and return its entry."""
    target = folder / path
    target.parent.mkdir(parents=True, exist_ok=True)
    durable.write_file(target, data)
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest())


# ---- the "items" format ---------------------------------------------------------------------------------------------


class ItemsWriter:
    """Writes items, given in id order, as parts of the "items" format."""

    def __init__(self, folder: Path, dimension: int) -> None:
        self.folder = folder
        self.dimension = dimension
        self.files: list[FileEntry] = []
        self.count = 0  # items written to parts
        self.added = 0  # items given so far
        self._pending: list[StoredItem] = []

    def add(self, items: list[StoredItem]) -> None:
        self.added += len(items)
        self._pending.extend(items)
        while len(self._pending) >= PART_ITEMS:
            self._flush(self._pending[:PART_ITEMS])
            self._pending = self._pending[PART_ITEMS:]

    def close(self) -> tuple[FileEntry, ...]:
        if self._pending or not self.files:
            self._flush(self._pending)
            self._pending = []
        durable.fsync_dir(self.folder)
        return tuple(self.files)

    def _flush(self, items: list[StoredItem]) -> None:
        part = len(self.files) // 2
        lines = "".join(stored.dumps({"id": i.id, "input": i.input, "metadata": i.metadata}) + "\n" for i in items)
        vectors = np.zeros((len(items), self.dimension), np.float32)
        for row, item in enumerate(items):
            vectors[row] = item.vector
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        self.files.append(write_entry(self.folder, f"items-{part:05d}.jsonl", lines.encode("utf-8")))
        self.files.append(write_entry(self.folder, f"vectors-{part:05d}.npy", buffer.getvalue()))
        self.count += len(items)


def read_items(
    snapshot: str, folder: Path, manifest: Manifest, check: Callable[[], None]
) -> Iterator[list[StoredItem]]:
    """The items of an "items" snapshot, a part at a time, each part's files checked before it is used."""
    entries = {f.path: f for f in manifest.files}
    parts = sorted(p for p in entries if p.startswith("items-") and p.endswith(".jsonl"))
    seen = 0
    for items_path in parts:
        check()
        vectors_path = "vectors-" + items_path.removeprefix("items-").removesuffix(".jsonl") + ".npy"
        if vectors_path not in entries:
            raise damaged(snapshot, vectors_path, "is missing from the manifest")
        lines = read_checked(snapshot, folder, entries[items_path]).decode("utf-8").splitlines()
        try:
            vectors = np.load(io.BytesIO(read_checked(snapshot, folder, entries[vectors_path])), allow_pickle=False)
            rows = [stored.loads(line) for line in lines]
        except (ValueError, KeyError) as exc:
            raise damaged(snapshot, items_path, f"does not parse ({exc})") from None
        if vectors.shape != (len(rows), manifest.config.dimension):
            raise damaged(snapshot, vectors_path, f"holds {vectors.shape} vectors for {len(rows)} items")
        seen += len(rows)
        yield [
            StoredItem(str(r["id"]), vectors[n].astype(np.float32), r["metadata"] or {}, r["input"] or "")
            for n, r in enumerate(rows)
        ]
    if seen != manifest.count:
        raise damaged(snapshot, MANIFEST, f"lists {manifest.count} items, the files hold {seen}")
