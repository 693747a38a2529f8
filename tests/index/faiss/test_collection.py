"""FAISS collections only: training in the background, the write-ahead log, checkpoints, recovery, corruption, rebuilds
with writes meanwhile, exact search on HNSW. The contract every backend shares is in tests/index/test_backends.py."""

import numpy as np
import pytest

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss.collection import LOG, Collection, State
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric
from tests.index.vectors import brute_force, clustered


def make(store, name, n, metric=Metric.COSINE, kind=IndexKind.FLAT, d=32, **params):
    collection = store.create(CollectionConfig(name, d, metric, IndexParams(kind, **params).resolved(d)))
    x = clustered(n, d)
    for s in range(0, n, 1000):
        ids = [str(i) for i in range(s, min(s + 1000, n))]
        collection.upsert(
            Upsert(ids, x[s : s + len(ids)], [{"g": int(i) % 4, "i": int(i)} for i in ids], [""] * len(ids))
        )
    collection.wait_for_training()  # IVF kinds train in the background once enough vectors arrived
    return collection, x


@pytest.fixture
def store(tmp_path):
    s = CollectionStore(tmp_path, 1 << 30)
    yield s
    s.close_all(checkpoint=False)


def test_ivf_searches_exactly_until_trained(store):
    collection, x = make(store, "c", 500, Metric.L2, IndexKind.IVF_FLAT, nlist=64)
    assert not collection.info()["trained"]  # 39 x 64 vectors are needed
    hits, exact = collection.search(x[:3], 5)
    assert exact and hits[0][0].id == "0"
    more = clustered(2500, seed=3)
    collection.upsert(Upsert([f"m{i}" for i in range(2500)], more, [{}] * 2500, [""] * 2500))
    hits, _ = collection.search(x[:3], 5)  # while the index trains in the background: complete answers
    assert hits[0][0].id == "0" and len(hits[0]) == 5
    collection.wait_for_training()
    assert collection.info()["trained"]
    assert collection.search(x[:1], 1)[0][0][0].id == "0"


def test_upsert_replaces_delete_removes_and_recovery_restores(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    collection, x = make(store, "c", 100, Metric.L2)
    collection.upsert(Upsert(["5"], np.zeros((1, 32), np.float32), [{"new": True}], [""]))
    assert collection.delete(["6", "nope"]) == (1, 1)
    (five, six) = collection.get(["5", "6"], with_vectors=True)
    assert six is None and five.metadata == {"new": True} and not five.vector.any()
    assert collection.info()["tombstones"] == 2
    store.close_all(checkpoint=False)  # a crash: no checkpoint, the log has everything
    again = CollectionStore(tmp_path, 1 << 30)
    again.recover_all()
    recovered = again.get("c")
    assert recovered.count == 99
    (five, six, seven) = recovered.get(["5", "6", "7"], with_vectors=True)
    assert six is None and five.metadata == {"new": True}
    np.testing.assert_array_equal(seven.vector, x[7])
    recovered.rebuild()  # checkpoint with compaction: the log is emptied, tombstones dropped
    assert recovered.info()["tombstones"] == 0 and (tmp_path / "collections" / "c" / LOG).stat().st_size == 0
    again.close_all(checkpoint=True)
    third = CollectionStore(tmp_path, 1 << 30)
    third.recover_all()
    assert third.get("c").count == 99
    third.close_all(checkpoint=False)


def test_automatic_checkpoint_keeps_everything(tmp_path):
    store = CollectionStore(tmp_path, 50_000)  # a tiny threshold: checkpoints happen during the loads
    _, x = make(store, "c", 3000, Metric.INNER_PRODUCT)
    assert list((tmp_path / "collections" / "c").glob("checkpoint-*"))
    store.close_all(checkpoint=False)
    again = CollectionStore(tmp_path, 50_000)
    again.recover_all()
    items = again.get("c").get([str(i) for i in range(3000)], with_vectors=True)
    np.testing.assert_array_equal(np.vstack([i.vector for i in items]), x)
    again.close_all(checkpoint=False)


def test_corruption_marks_one_collection_data_loss(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    make(store, "bad", 3000, Metric.L2)
    make(store, "good", 100, Metric.L2)
    store.close_all(checkpoint=False)
    path = tmp_path / "collections" / "bad" / LOG
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    again = CollectionStore(tmp_path, 1 << 30)
    again.recover_all()
    assert again.get("bad").state is State.DATA_LOSS
    with pytest.raises(EmbedsvcError) as info:
        again.get("bad").search(np.zeros((1, 32), np.float32), 1)
    assert info.value.reason is Reason.DATA_LOSS
    assert again.get("good").count == 100
    again.close_all(checkpoint=False)


def test_torn_tail_is_truncated_at_every_offset(tmp_path):
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(CollectionConfig("c", 4, Metric.L2, IndexParams().resolved(4)))
    for i in range(3):
        collection.upsert(Upsert([f"a{i}", f"b{i}"], np.full((2, 4), i, np.float32), [{"i": i}, {}], ["", ""]))
    store.close_all(checkpoint=False)
    path = tmp_path / "collections" / "c" / LOG
    full = path.read_bytes()
    record = len(full) // 3
    for cut in range(2 * record, len(full)):
        path.write_bytes(full[:cut])
        recovered = Collection.open(tmp_path / "collections" / "c", 1 << 30)
        assert recovered.state is State.READY and recovered.count == 4, cut
        assert path.stat().st_size == 2 * record  # the torn bytes are gone
        recovered.close()


def test_hnsw_exact_search_after_deletes_and_replacements_equals_brute_force(store):
    kind = IndexKind.HNSW
    collection, x = make(store, "c", 2000, Metric.L2, kind)
    rng = np.random.default_rng(4)
    gone = rng.choice(2000, 300, replace=False)
    collection.delete([str(i) for i in gone])
    moved = [i for i in range(0, 2000, 7) if i not in set(gone.tolist())][:50]
    x[moved] += 5.0
    collection.upsert(Upsert([str(i) for i in moved], x[moved], [{}] * len(moved), [""] * len(moved)))
    live = np.setdiff1d(np.arange(2000), gone)
    q = x[live[:20]] + 0.01
    hits, exact = collection.search(q, 10, exact=True)
    assert exact
    order, _ = brute_force(x[live], q, 10, Metric.L2)
    assert [[int(h.id) for h in r] for r in hits] == live[order].tolist()


@pytest.mark.parametrize(("kind", "params"), [(IndexKind.FLAT, {}), (IndexKind.IVF_FLAT, {"nlist": 16})])
def test_rebuild_takes_in_the_writes_made_while_it_runs(store, kind, params):
    collection, x = make(store, f"rebuilt-{kind.value}", 2000, metric=Metric.L2, kind=kind, **params)
    collection.upsert(Upsert(["0", "1"], x[:2] + 1, [{}, {}], ["", ""]))  # two tombstones
    stages, searched = [], []
    new = clustered(3, seed=9)

    def check():
        # Runs between the rebuild's steps, on its thread: writes and searches meanwhile go to the old index.
        if not searched:
            collection.upsert(Upsert(["new0", "new1", "5"], new, [{"during": True}] * 3, [""] * 3))
            collection.delete(["7"])
            searched.append(collection.search(new[:1], 1)[0][0][0].id)
            assert collection.rebuilding

    collection.rebuild(lambda stage, total: stages.append(stage), lambda done: None, check)
    assert not collection.rebuilding and searched == ["new0"]
    assert stages[0] == "snapshot" and stages[-2:] == ["catching-up", "checkpoint"] and "indexing" in stages
    assert collection.count == 2000 + 2 - 1
    assert collection.info()["tombstones"] == 2  # "5" replaced and "7" deleted during the rebuild, replayed
    hits, _ = collection.search(np.concatenate([new, x[7:8]]), 1, exact=False)
    assert [h[0].id for h in hits[:3]] == ["new0", "new1", "5"] and hits[3][0].id != "7"
    assert collection.get(["7"], with_vectors=False) == [None]


def test_a_cancelled_rebuild_changes_nothing(store):
    collection, x = make(store, "cancelled", 500, metric=Metric.L2)
    before = collection.search(x[:5], 3)[0]

    def check():
        raise EmbedsvcError(Reason.CANCELLED, "cancelled")

    with pytest.raises(EmbedsvcError):
        collection.rebuild(check=check)
    assert not collection.rebuilding and collection.search(x[:5], 3)[0] == before
    collection.upsert(Upsert(["after"], x[:1], [{}], [""]))
    assert collection.count == 501
