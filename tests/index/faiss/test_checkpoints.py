"""Checkpoints in format 2: incremental (a later checkpoint links the segments of the one before and writes only the
rows appended since), self-describing (a manifest of files with checksums), opened by mapping, merged when segments
pile up, compacted when tombstones do; damage found at open or by the background check; format-1 checkpoints still
open and are rewritten by the next checkpoint."""

import hashlib
import io
import json

import numpy as np
import pytest

from embedsvc.index import metadata as stored
from embedsvc.index.faiss import checkpoint, contents
from embedsvc.index.faiss.collection import Collection, State
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric, Quantization
from tests.index.vectors import brute_force, clustered

D = 16


def config(name="c", metric=Metric.L2, kind=IndexKind.FLAT, **params):
    return CollectionConfig(name, D, metric, IndexParams(kind, **params).resolved(D))


def load(collection, x, start, stop, tag=""):
    ids = [f"{tag}{i}" for i in range(start, stop)]
    meta = [{"i": i, "t": f"text {i}"} for i in range(start, stop)]
    collection.upsert(Upsert(ids, x[start:stop], meta, [f"in {i}" for i in range(start, stop)]))


def latest(directory):
    path = checkpoint.latest_checkpoint(directory)
    return path, checkpoint.read_manifest(path)


def test_a_later_checkpoint_links_what_it_can_and_writes_the_rest(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(config())
    directory = tmp_path / "collections" / "c"
    x = clustered(3000, D)
    load(collection, x, 0, 2000)
    collection.checkpoint()
    first, manifest = latest(directory)
    assert [(s.start, s.rows) for s in manifest.segments] == [(0, 2000)]
    old_segment = first / manifest.segments[0].file
    inode = old_segment.stat().st_ino
    load(collection, x, 2000, 3000)
    collection.delete(["5"])
    collection.checkpoint()
    second, manifest = latest(directory)
    assert not first.exists() and second != first
    assert [(s.start, s.rows) for s in manifest.segments] == [(0, 2000), (2000, 1000)]
    assert (second / manifest.segments[0].file).stat().st_ino == inode  # the same file, not a copy
    for name, entry in manifest.files.items():  # self-describing: every file, its size and checksum
        data = (second / name).read_bytes()
        assert len(data) == entry.bytes and hashlib.sha256(data).hexdigest() == entry.sha256
    assert manifest.count == 2999 and manifest.slots == 3000
    store.close_all(checkpoint=False)
    reopened = Collection.open(directory, 1 << 30)
    assert reopened.count == 2999 and reopened.get(["5"], with_vectors=False) == [None]
    (item,) = reopened.get(["2500"], with_vectors=True)
    np.testing.assert_array_equal(item.vector, x[2500])
    assert item.metadata == {"i": 2500, "t": "text 2500"} and item.input == "in 2500"
    hits, exact = reopened.search(x[:5], 3)
    order, _ = brute_force(np.delete(x, 5, axis=0), x[:5], 3, Metric.L2)
    assert exact and [[h.id for h in r] for r in hits] == [[str(i + (i >= 5)) for i in r] for r in order.tolist()]
    reopened.close()


def test_rows_and_texts_read_at_once_from_mapped_segments_and_the_tail(tmp_path):
    # A search's hits read their ids, inputs and vectors at once per segment (gathered through the mapping, its pages
    # dropped after): the same as reading slot by slot, in any order, repeated slots included, again and again.
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(config())
    x = clustered(3000, D)
    load(collection, x, 0, 1000, tag="é")
    collection.checkpoint()
    load(collection, x, 1000, 2000)
    collection.checkpoint()
    load(collection, x, 2000, 3000)  # the tail
    slots_store = collection._contents.store
    assert [s.file is not None and s.file.mapped for s in slots_store.segments] == [True, True]
    slots = np.array([2999, 5, 1500, 5, 0, 2000, 1999, 999, 1000, 2500])
    for _ in range(2):
        assert slots_store.ids.many(slots) == [slots_store.ids[s] for s in slots.tolist()]
        assert slots_store.inputs.many(slots) == [f"in {s}" for s in slots.tolist()]
        np.testing.assert_array_equal(slots_store.vectors[slots], x[slots])
    assert slots_store.ids.many(slots)[:2] == ["2999", "é5"]
    assert slots_store.ids.many(np.array([], np.int64)) == []
    sizes = slots_store.sizes[slots]
    expected = [len(i.encode()) + len(f"in {s}") for i, s in zip(slots_store.ids.many(slots), slots.tolist())]
    assert sizes[:, 0].tolist() == expected
    found = collection.search(x[[5, 1500, 2500]], 2, exact=True)
    assert [r[0].id for r in found.hits] == ["é5", "1500", "2500"] and found.hits[0][0].input == "in 5"
    store.close_all(checkpoint=False)


def test_nothing_written_since_means_no_new_checkpoint(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(config())
    load(collection, clustered(100, D), 0, 100)
    collection.checkpoint()
    directory = tmp_path / "collections" / "c"
    before = sorted(p.name for p in directory.iterdir())
    collection.checkpoint()
    assert sorted(p.name for p in directory.iterdir()) == before
    store.close_all(checkpoint=False)


def test_segments_are_merged_past_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(contents, "MAX_SEGMENTS", 3)
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(config(metric=Metric.COSINE))
    x = clustered(700, D)
    for start in range(0, 700, 100):
        load(collection, x, start, start + 100)
        collection.checkpoint()
        _, manifest = latest(tmp_path / "collections" / "c")
        assert len(manifest.segments) <= 3
    assert sum(s.rows for s in manifest.segments) == 700
    store.close_all(checkpoint=False)
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)
    items = reopened.get([str(i) for i in range(700)], with_vectors=True)
    np.testing.assert_array_equal(np.stack([i.vector for i in items]), x)
    assert reopened.ids_with_inputs({"in 650", "in 3"}) == {"650", "3"}
    reopened.close()


def test_a_compaction_keeps_the_trained_index_and_its_codes(tmp_path, monkeypatch):
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(config(kind=IndexKind.IVF_FLAT, nlist=8, quantization=Quantization.INT8))
    x = clustered(2000, D)
    load(collection, x, 0, 2000)
    collection.wait_for_training()
    collection.delete([str(i) for i in range(0, 2000, 2)])

    def no_training(self, vectors):
        raise AssertionError("trained again")

    monkeypatch.setattr(VectorIndex, "train", no_training)
    collection.checkpoint(compact=True)
    assert collection.tombstones == 0 and collection.count == 1000
    live = np.arange(1, 2000, 2)
    hits, _ = collection.search(x[live[:10]], 5, nprobe=8)
    order, _ = brute_force(x[live], x[live[:10]], 5, Metric.L2)
    assert [[int(h.id) for h in r] for r in hits] == live[order].tolist()
    store.close_all(checkpoint=False)
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)  # codes re-added: no training either
    assert reopened.info()["trained"] and reopened.count == 1000
    reopened.close()


def _damaged_segment(tmp_path):
    """A checkpointed collection "c" of 500 rows whose first segment file has one flipped bit; (its path, its bytes)."""
    store = CollectionStore(tmp_path, 1 << 30)
    load(store.create(config()), clustered(500, D), 0, 500)
    store.close_all(checkpoint=True)
    path, manifest = latest(tmp_path / "collections" / "c")
    segment = path / manifest.segments[0].file
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0x40
    segment.write_bytes(bytes(data))
    return segment, bytes(data)


def test_damage_in_a_small_file_is_found_at_open(tmp_path):
    _damaged_segment(tmp_path)
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)
    assert reopened.state is State.DATA_LOSS and "checksum mismatch" in reopened.error


def test_damage_in_a_large_file_is_found_after_open(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "VERIFY_AT_OPEN", 1024)  # every segment is "large": checked in the background
    segment, data = _damaged_segment(tmp_path)
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)
    reopened.wait_for_training(30)
    assert reopened.state is State.DATA_LOSS and "checksum mismatch" in reopened.error
    assert segment.read_bytes() == data  # kept as it is, for inspection


def test_the_checks_after_open_pass_on_a_sound_checkpoint_replaced_meanwhile(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "VERIFY_AT_OPEN", 1024)
    store = CollectionStore(tmp_path, 1 << 30)
    x = clustered(600, D)
    load(store.create(config()), x, 0, 500)
    store.close_all(checkpoint=True)
    reopened = Collection.open(tmp_path / "collections" / "c", 1 << 30)
    load(reopened, x, 500, 600)
    reopened.checkpoint()  # the directory the check reads from is gone: the check reads the files it opened
    reopened.wait_for_training(30)
    assert reopened.state is State.READY
    reopened.close()


def write_format_1(directory, lsn, ids, vectors, metadata, inputs):
    """A checkpoint as embedsvc 0.2 wrote it (vectors.npy, items.jsonl, meta.json)."""
    path = directory / f"checkpoint-{lsn}"
    path.mkdir()
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    items = "".join(
        stored.dumps({"id": i, "input": raw, "metadata": m}) + "\n" for i, m, raw in zip(ids, metadata, inputs)
    ).encode()
    (path / "vectors.npy").write_bytes(buffer.getvalue())
    (path / "items.jsonl").write_bytes(items)
    meta = {"lsn": lsn, "count": len(ids), "dimension": vectors.shape[1]}
    meta["sha256"] = hashlib.sha256(buffer.getvalue() + items).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("metric", [Metric.L2, Metric.COSINE])
def test_a_format_1_checkpoint_opens_and_the_next_checkpoint_rewrites_it(tmp_path, metric):
    store = CollectionStore(tmp_path, 1 << 30)
    store.create(config(metric=metric))
    store.close_all(checkpoint=False)
    directory = tmp_path / "collections" / "c"
    x = clustered(300, D)
    ids = [str(i) for i in range(300)]
    write_format_1(directory, 7, ids, x, [{"i": i} for i in range(300)], [""] * 300)
    opened = Collection.open(directory, 1 << 30)
    assert opened.state is State.READY and opened.count == 300
    np.testing.assert_array_equal(opened.get(["42"], with_vectors=True)[0].vector, x[42])
    hits, _ = opened.search(x[:3], 4)
    order, _ = brute_force(x, x[:3], 4, metric)
    assert [[int(h.id) for h in r] for r in hits] == order.tolist()
    opened.checkpoint()  # the upgrade: nothing was written since, so the same LSN, a rewrite of it
    path, manifest = latest(directory)
    assert (path / checkpoint.MANIFEST).exists() and not (path / "meta.json").exists()
    assert manifest.lsn == 7 and manifest.count == 300
    assert not [p for p in directory.iterdir() if p.name == "checkpoint-7" and (p / "meta.json").exists()]
    opened.close()
    again = Collection.open(directory, 1 << 30)
    assert again.count == 300 and again.get(["299"], with_vectors=False)[0].metadata == {"i": 299}
    again.close()
