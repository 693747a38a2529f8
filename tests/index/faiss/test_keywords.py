"""FAISS collections' keyword index under the collection's durability rules: built at open from the checkpoint and
the log's tail, kept through compactions and rebuilds (with writes meanwhile), fed by every applied write at once.
The contract both backends share (filters, exclusions, replaces, deletes) is in tests/index/test_backends.py; power
loss at every storage step is in test_power_loss.py."""

import json
import threading

import numpy as np
import pytest

from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric, Upsert

D = 4


def config(name="c", kind=IndexKind.FLAT, **params):
    return CollectionConfig(name, D, Metric.L2, IndexParams(kind, **params).resolved(D), keyword="english")


def write(collection, ids, texts, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(len(ids), D)).astype(np.float32)
    collection.upsert(Upsert(list(ids), vectors, [{"n": i} for i in range(len(ids))], list(texts)))


def found(collection, text, k=50):
    (hits,) = collection.keyword_search([text], k)
    return sorted(h.id for h in hits.hits)


@pytest.fixture
def store(tmp_path):
    s = CollectionStore(tmp_path, 1 << 30)
    yield s
    s.close_all(checkpoint=False)


def reopen(store, tmp_path, checkpoint_bytes=1 << 30):
    store.close_all(checkpoint=False)
    again = CollectionStore(tmp_path, checkpoint_bytes)
    again.recover_all()
    return again


def test_open_builds_it_from_the_checkpoint_and_replays_the_log_tail(store, tmp_path):
    collection = store.create(config())
    write(collection, ["a", "b", "c"], ["wing flutter", "shock wave", "flutter of panels"])
    collection.checkpoint()
    write(collection, ["a", "d"], ["nozzle flow", "flutter again"])  # after the checkpoint: in the log only
    collection.delete(["b"])
    again = reopen(store, tmp_path)
    try:
        recovered = again.get("c")
        assert found(recovered, "flutter") == ["c", "d"]
        assert found(recovered, "nozzle") == ["a"] and found(recovered, "shock") == []
    finally:
        again.close_all(checkpoint=False)


def test_compaction_keeps_it_and_renumbered_slots_stay_right(store):
    collection = store.create(config())
    write(collection, [str(i) for i in range(40)], [f"panel {i} flutter" if i % 2 else f"wave {i}" for i in range(40)])
    collection.delete([str(i) for i in range(0, 40, 4)])
    write(collection, ["1", "3"], ["replaced text", "replaced text"], seed=1)
    before = found(collection, "flutter")
    collection.checkpoint(compact=True)
    assert collection.tombstones == 0
    assert found(collection, "flutter") == before and found(collection, "replaced") == ["1", "3"]
    (hits,) = collection.keyword_search(["flutter"], 50, with_vectors=True)
    for hit in hits.hits:  # each hit carries its own item (slots were renumbered)
        (item,) = collection.get([hit.id], with_vectors=True)
        assert hit.input == item.input and np.array_equal(hit.vector, item.vector)


def test_a_rebuild_keeps_it_and_writes_during_the_rebuild_reach_it(store):
    collection = store.create(config(kind=IndexKind.IVF_FLAT, nlist=2))
    write(collection, [str(i) for i in range(200)], [f"text {i} boundary" for i in range(200)])
    collection.wait_for_training()
    entered, release = threading.Event(), threading.Event()

    def stage(name, _total):
        if name == "indexing":
            entered.set()
            assert release.wait(30)

    rebuild = threading.Thread(target=lambda: collection.rebuild(stage))
    rebuild.start()
    assert entered.wait(60)
    write(collection, ["late"], ["slipstream during the rebuild"])
    collection.delete(["7"])
    assert found(collection, "slipstream") == ["late"]
    release.set()
    rebuild.join(60)
    assert found(collection, "slipstream") == ["late"] and "7" not in found(collection, "boundary", 300)
    assert len(found(collection, "boundary", 300)) == 199


def test_concurrent_writers_are_each_searchable_on_return(store):
    collection = store.create(config())
    failures = []

    def writer(w):
        for i in range(15):
            item = f"w{w}i{i}"
            write(collection, [item], [f"token{w}x{i} common"], seed=i)
            if found(collection, f"token{w}x{i}") != [item]:
                failures.append(item)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == [] and len(found(collection, "common", 100)) == 60


def test_collections_made_before_keyword_search_open_dense_only():
    plain = CollectionConfig("old", D, Metric.L2, IndexParams().resolved(D))
    legacy = json.loads(plain.to_json())
    del legacy["keyword"], legacy["search_defaults"]  # the configuration file as 0.2 wrote it
    restored = CollectionConfig.from_json(json.dumps(legacy))
    assert restored == plain and restored.keyword == "" and restored.search_defaults.mode.value == "dense"
