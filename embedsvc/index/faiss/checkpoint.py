"""Checkpoints of a collection: its rows at one LSN, as immutable files that later checkpoints share.

A checkpoint is a directory `checkpoint-<lsn>/` that describes itself:
- `manifest.json`: format 2, the LSN, the dimension, the slots and live items, the segments in slot order (file,
  first slot, rows), every file of the directory with its size and sha256, what the index file holds, the
  recall calibration, and the index's last training (live items then, sample size; absent from
  older checkpoints: contents.py guesses);
- `segment-*.cols`: column files (columns.py) of consecutive slots: vectors, ids, inputs, metadata, the id hashes,
  indexed fields, and the index's codes (slots.py says which). A segment is never rewritten: the next checkpoint
  hard-links it (durable.link) and writes only the rows appended since, as a new segment, plus what changed;
- `live.cols`: one bit per slot (tombstones, until a compaction drops them);
- `index.faiss` (optional): the trained, empty FAISS index the codes belong to, or a whole HNSW index;
- files of other indexes over the slots (contents.py's seam), listed and checksummed like the rest.

Writing: `.checkpoint-<lsn>.tmp/`, every file fsync'd (durable.write_file) or linked, the manifest last, the
directory fsync'd, renamed into place, the parent fsync'd; only then are older checkpoints removed (their shared
files live on through the links) and the log truncated. A crash at any step leaves the old checkpoint and the full
log, or the new checkpoint (and a log whose records up to its LSN are skipped on replay). Because every file is
listed with its checksum and none is ever changed in place, a snapshot can hard-link a checkpoint as it is.

Reading: the manifest, then the small files' checksums at once; a file larger than VERIFY_AT_OPEN is checked in
the background after the collection serves (collection.py), so a restart maps its segments instead of reading them.

Checkpoints written before 0.3 (format 1: `vectors.npy`, `items.jsonl`, `meta.json` with one sha256) are read by
`read_legacy` and rewritten in format 2 by the next checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc import durable
from embedsvc.index import metadata as stored
from embedsvc.index.faiss import columns

log = logging.getLogger(__name__)
PREFIX = "checkpoint-"
MANIFEST = "manifest.json"
LIVE = "live.cols"
INDEX = "index.faiss"
FORMAT = 2
# Files at most this large are checked against the manifest before the collection opens; larger ones after.
VERIFY_AT_OPEN = 16 * 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SegmentEntry:
    file: str
    start: int
    rows: int


@dataclass(frozen=True)
class Manifest:
    lsn: int
    dimension: int
    slots: int
    count: int
    segments: tuple[SegmentEntry, ...]
    files: dict[str, FileEntry]
    index: str = ""  # "" (none), "template" (trained and empty: the segments hold the codes) or "whole" (HNSW)
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other indexes' own descriptions (contents.py)
    training: dict[str, Any] | None = None  # the index's last training (contents.Trained); None in older ones

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "lsn": self.lsn,
                "dimension": self.dimension,
                "slots": self.slots,
                "count": self.count,
                "segments": [{"file": s.file, "start": s.start, "rows": s.rows} for s in self.segments],
                "files": {name: {"bytes": f.bytes, "sha256": f.sha256} for name, f in sorted(self.files.items())},
                "index": self.index,
                "calibration": self.calibration,
                "extra": self.extra,
                "training": self.training,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {data.get('format')!r}")
        return cls(
            lsn=int(data["lsn"]),
            dimension=int(data["dimension"]),
            slots=int(data["slots"]),
            count=int(data["count"]),
            segments=tuple(SegmentEntry(s["file"], int(s["start"]), int(s["rows"])) for s in data["segments"]),
            files={name: FileEntry(int(f["bytes"]), str(f["sha256"])) for name, f in data["files"].items()},
            index=str(data.get("index") or ""),
            calibration=data.get("calibration"),
            extra=dict(data.get("extra") or {}),
            training=data.get("training"),
        )


@dataclass(frozen=True)
class Linked:
    """A file of an earlier checkpoint that the new one shares (hard-linked, never rewritten)."""

    source: Path
    entry: FileEntry


@dataclass(frozen=True)
class Written:
    """A file the new checkpoint writes: column arrays (a column file) or raw bytes."""

    columns: dict[str, Any] | None = None
    data: Any = None  # bytes, or a uint8 array


FileSource = Linked | Written


@dataclass
class Plan:
    """What a checkpoint holds: its manifest's fields, and for each file where its bytes come from."""

    lsn: int
    dimension: int
    slots: int
    count: int
    segments: list[SegmentEntry]
    files: dict[str, FileSource]
    index: str = ""
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None


def _position(path: Path) -> tuple[int, int] | None:
    """(lsn, rewrite) of a checkpoint directory's name: checkpoint-<lsn>, or checkpoint-<lsn>.<rewrite> for one
    that replaced another of the same LSN (a compaction or a rebuild with no write since)."""
    tail = path.name[len(PREFIX) :]
    lsn, _, rewrite = tail.partition(".")
    if not lsn.isdigit() or (rewrite and not rewrite.isdigit()):
        return None
    return int(lsn), int(rewrite or 0)


def write_checkpoint(directory: Path, plan: Plan) -> tuple[Path, Manifest]:
    """Write the plan as the collection's checkpoint; older ones are removed once it is durable. On an error
    (ENOSPC, EIO) the temporary directory is removed and the error raised; the previous checkpoint stays.

    A checkpoint at an LSN that has one already (the rows renumbered by a compaction or a rebuild, with no write
    since) gets the next rewrite number: the new directory is renamed into place before the old one goes."""
    rewrite = max((p[1] + 1 for p in map(_position, directory.glob(f"{PREFIX}*")) if p and p[0] == plan.lsn), default=0)
    name = f"{PREFIX}{plan.lsn}" + (f".{rewrite}" if rewrite else "")
    final = directory / name
    tmp = directory / f".{name}.tmp"
    durable.remove_tree(tmp)
    try:
        durable.mkdir(tmp)
        entries: dict[str, FileEntry] = {}
        for name, source in plan.files.items():
            if isinstance(source, Linked):
                durable.link(source.source, tmp / name)
                entries[name] = source.entry
            elif source.columns is not None:
                size, digest = columns.write(tmp / name, source.columns)
                entries[name] = FileEntry(size, digest)
            else:
                data = source.data if source.data is not None else b""
                durable.write_file(tmp / name, data)
                entries[name] = FileEntry(memoryview(data).nbytes, hashlib.sha256(data).hexdigest())
        manifest = Manifest(
            plan.lsn,
            plan.dimension,
            plan.slots,
            plan.count,
            tuple(plan.segments),
            entries,
            plan.index,
            plan.calibration,
            plan.extra,
            plan.training,
        )
        durable.write_file(tmp / MANIFEST, manifest.to_json())
        durable.fsync_dir(tmp)
        durable.replace(tmp, final)
    except BaseException:
        durable.remove_tree(tmp)
        raise
    durable.fsync_dir(directory)
    for old in directory.glob(f"{PREFIX}*"):
        if old != final:
            durable.remove_tree(old)
    return final, manifest


def remove_leftovers(directory: Path) -> None:
    """Remove the temporary directories of checkpoints a crash or an error cut short."""
    for tmp in directory.glob(f".{PREFIX}*.tmp"):
        log.warning("%s: removing an unfinished checkpoint", tmp)
        durable.remove_tree(tmp)


def latest_checkpoint(directory: Path) -> Path | None:
    found = [(position, p) for p in directory.glob(f"{PREFIX}*") if (position := _position(p)) is not None]
    return max(found)[1] if found else None


def is_legacy(path: Path) -> bool:
    return not (path / MANIFEST).exists() and (path / "meta.json").exists()


def read_manifest(path: Path) -> Manifest:
    """The manifest, with every small file checked against it; ValueError with the reason when damaged."""
    manifest = Manifest.from_json((path / MANIFEST).read_bytes())
    for name, entry in manifest.files.items():
        file = path / name
        if not file.exists() or file.stat().st_size != entry.bytes:
            raise ValueError(f"{path.name}/{name}: missing or of the wrong size")
        if entry.bytes <= VERIFY_AT_OPEN and columns.file_digest(file) != entry.sha256:
            raise ValueError(f"{path.name}/{name}: checksum mismatch")
    at = 0
    for segment in manifest.segments:
        if segment.start != at or segment.file not in manifest.files:
            raise ValueError(f"{path.name}: segment {segment.file} out of place")
        at += segment.rows
    if at != manifest.slots:
        raise ValueError(f"{path.name}: segments hold {at} slots, the manifest says {manifest.slots}")
    return manifest


def verify(path: Path, manifest: Manifest, names: Sequence[str] | None = None) -> str | None:
    """Check the large files (or `names`) against the manifest: None when they match, else what is wrong."""
    for name, entry in manifest.files.items():
        if names is None and entry.bytes <= VERIFY_AT_OPEN:
            continue
        if names is not None and name not in names:
            continue
        try:
            if columns.file_digest(path / name) != entry.sha256:
                return f"{path.name}/{name}: checksum mismatch"
        except OSError as exc:
            return f"{path.name}/{name}: {exc.strerror or exc}"
    return None


@dataclass(frozen=True)
class Legacy:
    """A format-1 checkpoint's rows (vectors memory-mapped from vectors.npy)."""

    lsn: int
    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]
    inputs: list[str]


def read_legacy(path: Path, dimension: int) -> Legacy:
    """Load a format-1 checkpoint; ValueError with the reason when it is damaged."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256()
    for name in ("vectors.npy", "items.jsonl"):
        with open(path / name, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    if digest.hexdigest() != meta["sha256"]:
        raise ValueError(f"{path.name}: checksum mismatch")
    vectors = np.load(path / "vectors.npy", mmap_mode="r", allow_pickle=False)
    rows = [stored.loads(line) for line in (path / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    if vectors.shape != (len(rows), dimension) or len(rows) != meta["count"]:
        raise ValueError(f"{path.name}: {vectors.shape} vectors for {len(rows)} items of dimension {dimension}")
    return Legacy(
        lsn=int(meta["lsn"]),
        ids=[r["id"] for r in rows],
        vectors=np.asarray(vectors, dtype=np.float32),
        metadata=[r["metadata"] for r in rows],
        inputs=[r["input"] for r in rows],
    )
