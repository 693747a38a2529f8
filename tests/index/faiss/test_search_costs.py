"""Search costs: filters evaluated off the lock (a slow filter does not hold writers up, and stays correct when a
compaction renumbers slots meanwhile), IVF-PQ re-ranking in bounded steps, the word-analogy cache bounded."""

import threading

import numpy as np

from embedsvc.index.faiss import collection as collection_module
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.filtering import Compare, Filter
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric


def custom(predicate):
    """A filter whose predicate is any function (the tree is not used by the FAISS backend)."""
    return Filter("custom", Compare("i", "=", 0), predicate)


def filled(tmp_path, n=2000, kind=IndexKind.FLAT, **params):
    store = CollectionStore(tmp_path, 1 << 30)
    collection = store.create(CollectionConfig("c", 8, Metric.L2, IndexParams(kind, **params).resolved(8)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    collection.upsert(Upsert([str(i) for i in range(n)], x, [{"i": i} for i in range(n)], [""] * n))
    collection.wait_for_training()
    return store, collection, x


def test_a_slow_filter_does_not_hold_writers_up(tmp_path):
    store, collection, x = filled(tmp_path)
    started, finish = threading.Event(), threading.Event()

    def slow(metadata):
        started.set()
        finish.wait(10)
        return metadata["i"] % 2 == 0

    result = {}
    searching = threading.Thread(
        target=lambda: result.setdefault("hits", collection.search(x[:1], 5, where=custom(slow)))
    )
    searching.start()
    assert started.wait(10)
    collection.upsert(Upsert(["new"], np.zeros((1, 8), np.float32), [{"i": 10_000}], [""]))
    assert searching.is_alive()  # the write went through while the filter was still being evaluated
    finish.set()
    searching.join(10)
    hits, _ = result["hits"]
    assert hits[0][0].id == "0"
    assert all(int(h.id) % 2 == 0 for h in hits[0])
    store.close_all(checkpoint=False)


def test_a_compaction_during_filter_evaluation_keeps_answers_right(tmp_path):
    store, collection, x = filled(tmp_path, n=500)
    collection.delete([str(i) for i in range(0, 500, 3)])  # tombstones: the compaction renumbers slots
    first = threading.Event()

    def predicate(metadata):
        if not first.is_set():
            first.set()
            collection.checkpoint(compact=True)  # runs while the filter is being evaluated, off the lock
        return metadata["i"] % 2 == 1

    hits, _ = collection.search(x[1:2], 10, where=custom(predicate), exact=True)
    expected = [i for i in range(500) if i % 3 and i % 2 == 1]
    order = sorted(expected, key=lambda i: float(((x[i] - x[1]) ** 2).sum()))[:10]
    assert [int(h.id) for h in hits[0]] == order
    store.close_all(checkpoint=False)


def test_pq_reranking_in_steps_equals_one_step(tmp_path, monkeypatch):
    store, collection, x = filled(tmp_path, n=3000, kind=IndexKind.IVF_PQ, nlist=8, pq_m=4, pq_bits=4)
    queries = x[:300]
    whole, _ = collection.search(queries, 10)
    monkeypatch.setattr(collection_module, "_RERANK_BYTES", 8 * 4 * 40 * 7)  # 7 queries a step
    stepped, _ = collection.search(queries, 10)
    assert [[h.id for h in row] for row in whole] == [[h.id for h in row] for row in stepped]
    store.close_all(checkpoint=False)


def test_the_analogy_vocabulary_cache_is_bounded(spaces):
    space = spaces["planted"]
    for restrict in range(1, 60):
        space.folded_vocabulary(restrict, True)
    assert len(space._folded) <= 4
    assert space.folded_vocabulary(10**9, False) is space.folded_vocabulary(len(space.words), False)
