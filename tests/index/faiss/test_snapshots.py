"""Snapshots of FAISS collections: taken while writers write (and checkpoints truncate the log), each equals the
collection at its LSN; restores check every file (a flipped or missing byte is DATA_LOSS naming the file, and no
collection is made); a restore over a collection swaps it, and a crash between the two renames is undone at start."""

from __future__ import annotations

import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss import snapshots
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.snapshot_files import Manifest
from embedsvc.index.types import CollectionConfig, Delete, IndexParams, Metric, Upsert
from tests.index.faiss.test_checkpoints import write_format_1

D = 8
CONFIG = CollectionConfig("src", D, Metric.L2, IndexParams().resolved(D))


def nothing() -> None:
    pass


def manifest_of(taken, config: CollectionConfig = CONFIG) -> Manifest:
    return Manifest("s1", taken.format, config, taken.count, taken.position, True, 0.0, "r", taken.files)


def items_of(folder: Path, manifest: Manifest) -> dict[str, tuple[list[float], dict, str]]:
    found = {}
    for batch in snapshots.read_items("snapshots/s1", folder, manifest, nothing):
        for item in batch:
            found[item.id] = (item.vector.tolist(), item.metadata, item.input)
    return found


def replay(log: list[tuple[int, object]], upto: int) -> dict[str, tuple[list[float], dict, str]]:
    state: dict[str, tuple[list[float], dict, str]] = {}
    for lsn, op in sorted(log, key=lambda entry: entry[0]):
        if lsn > upto:
            break
        if isinstance(op, Delete):
            for i in op.ids:
                state.pop(i, None)
        else:
            for n, i in enumerate(op.ids):
                state[i] = (op.vectors[n].tolist(), op.metadata[n], op.inputs[n])
    return state


@pytest.fixture
def store(tmp_path: Path):
    s = CollectionStore(tmp_path / "data", 16 * 1024)  # small: checkpoints truncate the log while writers write
    s.recover_all()
    yield s
    s.close_all(checkpoint=False)


def test_a_snapshot_taken_while_writers_write_equals_the_collection_at_its_lsn(store, tmp_path):
    collection = store.create(CONFIG)
    written: list[tuple[int, object]] = []
    commit = collection._writer.commit

    def recorded(op):  # every write, with the LSN the log gave it
        lsn = commit(op)
        written.append((lsn, op))
        return lsn

    collection._writer.commit = recorded
    stop = threading.Event()

    def writer(k: int) -> None:
        rng = random.Random(k)
        pool = [f"w{k}-{i}" for i in range(40)]
        n = 0
        while not stop.is_set():
            if rng.random() < 0.2:
                collection.delete(rng.sample(pool, 3))
            else:
                ids = rng.sample(pool, 5)
                vectors = np.random.default_rng(n + 1000 * k).normal(size=(5, D)).astype(np.float32)
                collection.upsert(Upsert(ids, vectors, [{"k": k, "n": n}] * 5, [f"text {n}"] * 5))
            n += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    taken = []
    try:
        while len(written) < 30:
            stop.wait(0.01)
        for n in range(6):
            dest = tmp_path / f"snap{n}"
            dest.mkdir()
            taken.append((dest, collection.snapshot(dest)))
            start = len(written)
            while len(written) < start + 15:  # writes (and checkpoints) between snapshots
                stop.wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    with_checkpoint = 0
    for dest, snapshot in taken:
        manifest = manifest_of(snapshot)
        with_checkpoint += any(f.path.startswith("checkpoint/") for f in manifest.files)
        expected = replay(written, snapshot.position)
        assert snapshot.count == len(expected) and items_of(dest, manifest) == expected
    assert with_checkpoint, "no snapshot linked a checkpoint: the test did not exercise checkpoints"


@pytest.fixture
def taken(store, tmp_path):
    """A snapshot of a collection with a checkpoint and a log tail, and the collection's items."""
    collection = store.create(CONFIG)
    rng = np.random.default_rng(0)
    for b in range(20):
        ids = [f"{b}-{i}" for i in range(50)]
        collection.upsert(Upsert(ids, rng.normal(size=(50, D)).astype(np.float32), [{"b": b}] * 50, ids))
    collection.delete(["0-0", "0-1"])
    dest = tmp_path / "snap"
    dest.mkdir()
    snapshot = collection.snapshot(dest)
    manifest = manifest_of(snapshot)
    paths = {f.path for f in manifest.files}
    assert paths >= {"collection.json", "wal.log", "checkpoint/manifest.json", "checkpoint/live.cols"}
    assert segment_of(manifest)  # the checkpoint's segments, linked as they are
    return dest, manifest, items_of(dest, manifest)


def segment_of(manifest: Manifest) -> str:
    """The path of the snapshot's first checkpoint segment."""
    return min(f.path for f in manifest.files if f.path.startswith("checkpoint/segment-"))


def restore(store, dest, manifest, name="restored", **options):
    config = CollectionConfig(name, D, Metric.L2, IndexParams().resolved(D))
    return store.restore(config, "snapshots/s1", dest, manifest, lambda: iter(()), nothing, lambda _n: None, **options)


def contents(collection) -> dict[str, tuple[list[float], dict, str]]:
    return {i.id: (i.vector.tolist(), i.metadata, i.input) for batch in collection.export(500) for i in batch}


def test_restore_places_the_files_and_the_collection_equals_the_snapshot(store, taken, tmp_path):
    dest, manifest, items = taken
    restored = restore(store, dest, manifest)
    assert restored.count == manifest.count == 998 and contents(restored) == items
    restored.upsert(Upsert(["new"], np.zeros((1, D), np.float32), [{}], [""]))  # a collection of its own
    assert items_of(dest, manifest) == items  # the snapshot's files did not change (its log was copied)
    store.close_all(checkpoint=False)
    again = CollectionStore(tmp_path / "data", 16 * 1024)
    again.recover_all()
    assert again.get("restored").count == 999 and not list((tmp_path / "data" / "collections").glob(".*"))


@pytest.mark.parametrize(
    "path", ["collection.json", "wal.log", "checkpoint/manifest.json", "checkpoint/live.cols", "segment"]
)
def test_a_flipped_byte_is_caught_and_nothing_is_restored(store, taken, tmp_path, path):
    dest, manifest, _ = taken
    path = segment_of(manifest) if path == "segment" else path
    damaged = tmp_path / "damaged"
    shutil.copytree(dest, damaged)
    data = bytearray((damaged / path).read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / path).write_bytes(bytes(data))
    with pytest.raises(EmbedsvcError) as info:
        restore(store, damaged, manifest)
    assert (info.value.reason, info.value.metadata["file"]) == (Reason.DATA_LOSS, path)
    with pytest.raises(EmbedsvcError) as info:  # read item by item (a restore into Milvus) too
        list(snapshots.read_items("snapshots/s1", damaged, manifest, nothing))
    assert (info.value.reason, info.value.metadata["file"]) == (Reason.DATA_LOSS, path)
    assert not store.has("restored") and not list(store.root.glob(".*"))


def test_a_truncated_or_missing_file_is_caught(store, taken, tmp_path):
    dest, manifest, _ = taken
    truncated = tmp_path / "truncated"
    shutil.copytree(dest, truncated)
    with open(truncated / "wal.log", "r+b") as fh:
        fh.truncate(fh.seek(0, 2) - 1)
    with pytest.raises(EmbedsvcError) as info:
        restore(store, truncated, manifest)
    assert (info.value.reason, info.value.metadata["file"]) == (Reason.DATA_LOSS, "wal.log")
    segment = segment_of(manifest)
    (truncated / segment).unlink()
    with pytest.raises(EmbedsvcError) as info:
        restore(store, truncated, manifest)
    assert (info.value.reason, info.value.metadata["file"]) == (Reason.DATA_LOSS, segment)
    assert not store.has("restored")


def test_restore_over_an_existing_collection(store, taken):
    dest, manifest, items = taken
    store.create(CollectionConfig("busy", D, Metric.L2, IndexParams().resolved(D)))
    with pytest.raises(EmbedsvcError) as info:
        restore(store, dest, manifest, "busy")
    assert info.value.reason is Reason.COLLECTION_EXISTS
    assert contents(restore(store, dest, manifest, "busy", replace=True)) == items
    assert not list(store.root.glob(".*"))


@pytest.mark.parametrize("renamed", [False, True])
def test_a_crash_between_the_two_renames_of_a_replace_is_settled_at_start(tmp_path, renamed):
    """Step 1 renames the old collection to .replacing-<name>, step 2 the restored one into place: a crash after step
    1 brings the old one back; after step 2, the restored one stays and the old one goes."""
    root = tmp_path / "data"
    first = CollectionStore(root, 1 << 30)
    first.recover_all()
    first.create(CONFIG).upsert(Upsert(["old"], np.zeros((1, D), np.float32), [{}], [""]))
    first.close_all(checkpoint=True)
    collections = root / "collections"
    (collections / "src").rename(collections / ".replacing-src")
    if renamed:  # the restored collection is in place (here: another copy with one more item)
        shutil.copytree(collections / ".replacing-src", collections / "src")
    again = CollectionStore(root, 1 << 30)
    again.recover_all()
    assert again.get("src").count == 1 and not (collections / ".replacing-src").exists()


def test_a_snapshot_of_a_format_1_checkpoint_restores(store, tmp_path):
    """A collection still on a checkpoint written before format 2 (0.2's vectors.npy, items.jsonl, meta.json) snapshots
    and restores: the restored collection opens it as the source does, and rewrites it at its next checkpoint."""
    store.create(CONFIG)
    store.close_all(checkpoint=False)
    directory = store.root / "src"
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, D)).astype(np.float32)
    ids = [f"old-{i}" for i in range(40)]
    write_format_1(directory, 5, ids, x, [{"i": i} for i in range(40)], ids)
    again = CollectionStore(store.root.parent, 1 << 30)
    again.recover_all()
    try:
        source = again.get("src")
        source.upsert(Upsert(["new"], np.ones((1, D), np.float32), [{"new": True}], ["new"]))
        source.delete(["old-0"])
        dest = tmp_path / "snap"
        dest.mkdir()
        manifest = manifest_of(source.snapshot(dest))
        assert {"checkpoint/meta.json", "checkpoint/vectors.npy"} <= {f.path for f in manifest.files}
        items = items_of(dest, manifest)
        assert items == contents(source) and len(items) == 40
        restored = restore(again, dest, manifest)
        assert contents(restored) == items
        restored.checkpoint()
        assert contents(restored) == items
    finally:
        again.close_all(checkpoint=False)
