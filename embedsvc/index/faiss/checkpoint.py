"""Checkpoints of a collection: its live items at one LSN, written atomically; and atomic small-file writes.

A checkpoint is a directory `checkpoint-<lsn>/` with `vectors.npy` (float32, as given), `items.jsonl` (id, input,
metadata per row, in the same order) and `meta.json` (lsn, count, dimension, sha256 of both files). It is written
as `.checkpoint-<lsn>.tmp/`, every file fsync'd, renamed into place, and the directory fsync'd; only then are older
checkpoints removed and the log truncated. A crash at any step leaves the old checkpoint and the full log, or the new
checkpoint (and a log whose records up to its LSN are skipped on replay).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc import durable
from embedsvc.index import metadata as stored

log = logging.getLogger(__name__)
PREFIX = "checkpoint-"


@dataclass(frozen=True)
class Snapshot:
    lsn: int
    ids: list[str]
    vectors: np.ndarray  # (n, d) float32
    metadata: list[dict[str, Any]]
    inputs: list[str]


def _digest(*blobs: bytes) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()


def _file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def write_checkpoint(directory: Path, snapshot: Snapshot) -> Path:
    """Write the snapshot as the collection's checkpoint; older ones are removed once it is durable. On an error
    (ENOSPC, EIO) the temporary directory is removed and the error raised; the previous checkpoint stays."""
    final = directory / f"{PREFIX}{snapshot.lsn}"
    tmp = directory / f".{PREFIX}{snapshot.lsn}.tmp"
    if final.exists():
        # Nothing was written since that checkpoint: it already holds this snapshot. (Replacing it would leave no
        # checkpoint at all, with the log already emptied, if a crash came between the removal and the rename.)
        return final
    durable.remove_tree(tmp)
    try:
        durable.mkdir(tmp)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(snapshot.vectors, dtype=np.float32))
        vectors = buffer.getvalue()
        items = "".join(
            stored.dumps({"id": item_id, "input": raw, "metadata": meta}) + "\n"
            for item_id, meta, raw in zip(snapshot.ids, snapshot.metadata, snapshot.inputs, strict=True)
        ).encode("utf-8")
        meta = {
            "lsn": snapshot.lsn,
            "count": len(snapshot.ids),
            "dimension": int(snapshot.vectors.shape[1]),
            "sha256": _digest(vectors, items),
        }
        durable.write_file(tmp / "vectors.npy", vectors)
        durable.write_file(tmp / "items.jsonl", items)
        durable.write_file(tmp / "meta.json", json.dumps(meta).encode())
        durable.fsync_dir(tmp)
        durable.replace(tmp, final)
    except BaseException:
        durable.remove_tree(tmp)
        raise
    durable.fsync_dir(directory)
    for old in directory.glob(f"{PREFIX}*"):
        if old != final:
            durable.remove_tree(old)
    return final


def remove_leftovers(directory: Path) -> None:
    """Remove the temporary directories of checkpoints a crash or an error cut short."""
    for tmp in directory.glob(f".{PREFIX}*.tmp"):
        log.warning("%s: removing an unfinished checkpoint", tmp)
        durable.remove_tree(tmp)


def latest_checkpoint(directory: Path) -> Path | None:
    found = [(int(p.name[len(PREFIX) :]), p) for p in directory.glob(f"{PREFIX}*") if p.name[len(PREFIX) :].isdigit()]
    return max(found)[1] if found else None


def read_checkpoint(path: Path, dimension: int) -> Snapshot:
    """Load a checkpoint; ValueError with the reason when it is damaged."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if _file_digest(path / "vectors.npy", path / "items.jsonl") != meta["sha256"]:
        raise ValueError(f"{path.name}: checksum mismatch")
    vectors = np.load(path / "vectors.npy", allow_pickle=False)
    rows = [stored.loads(line) for line in (path / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    if vectors.shape != (len(rows), dimension) or len(rows) != meta["count"]:
        raise ValueError(f"{path.name}: {vectors.shape} vectors for {len(rows)} items of dimension {dimension}")
    return Snapshot(
        lsn=int(meta["lsn"]),
        ids=[r["id"] for r in rows],
        vectors=vectors.astype(np.float32, copy=False),
        metadata=[r["metadata"] for r in rows],
        inputs=[r["input"] for r in rows],
    )
