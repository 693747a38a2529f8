"""Checkpoints of a collection: its live items at one LSN, written atomically; and atomic small-file writes.

A checkpoint is a directory `checkpoint-<lsn>/` with `vectors.npy` (float32, as given), `items.jsonl` (id, input,
metadata per row, in the same order) and `meta.json` (lsn, count, dimension, sha256 of both files). It is written
as `.checkpoint-<lsn>.tmp/`, every file fsync'd, renamed into place, and the directory fsync'd; only then are older
checkpoints removed and the log truncated. A crash at any step leaves the old checkpoint and the full log, or the new
checkpoint (and a log whose records up to its LSN are skipped on replay).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.durable import fsync_dir, fsync_file
from embedsvc.index import metadata as stored

PREFIX = "checkpoint-"


@dataclass(frozen=True)
class Snapshot:
    lsn: int
    ids: list[str]
    vectors: np.ndarray  # (n, d) float32
    metadata: list[dict[str, Any]]
    inputs: list[str]


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def write_checkpoint(directory: Path, snapshot: Snapshot) -> Path:
    final = directory / f"{PREFIX}{snapshot.lsn}"
    tmp = directory / f".{PREFIX}{snapshot.lsn}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / "vectors.npy", np.ascontiguousarray(snapshot.vectors, dtype=np.float32))
    with open(tmp / "items.jsonl", "w", encoding="utf-8") as fh:
        for item_id, meta, raw in zip(snapshot.ids, snapshot.metadata, snapshot.inputs, strict=True):
            fh.write(stored.dumps({"id": item_id, "input": raw, "metadata": meta}) + "\n")
    meta = {
        "lsn": snapshot.lsn,
        "count": len(snapshot.ids),
        "dimension": int(snapshot.vectors.shape[1]),
        "sha256": _digest(tmp / "vectors.npy", tmp / "items.jsonl"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(directory)
    for old in directory.glob(f"{PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    found = [(int(p.name[len(PREFIX) :]), p) for p in directory.glob(f"{PREFIX}*") if p.name[len(PREFIX) :].isdigit()]
    return max(found)[1] if found else None


def read_checkpoint(path: Path, dimension: int) -> Snapshot:
    """Load a checkpoint; ValueError with the reason when it is damaged."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if _digest(path / "vectors.npy", path / "items.jsonl") != meta["sha256"]:
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
