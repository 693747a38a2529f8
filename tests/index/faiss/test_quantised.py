"""Quantised indexes (int8, RaBitQ, IVF-PQ) rescored with the float vectors, recall you can ask for, and what a
restart does with them: codes re-added, never trained again; the calibration kept."""

import numpy as np
import pytest

from embedsvc.index.faiss.collection import Collection
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric, Quantization
from tests.index.vectors import brute_force, clustered

D = 32
KINDS = [
    (IndexKind.FLAT, Quantization.INT8, {}),
    (IndexKind.FLAT, Quantization.RABITQ, {}),
    (IndexKind.HNSW, Quantization.INT8, {}),
    (IndexKind.IVF_FLAT, Quantization.INT8, {"nlist": 16}),
    (IndexKind.IVF_FLAT, Quantization.RABITQ, {"nlist": 16}),
    (IndexKind.IVF_PQ, Quantization.NONE, {"nlist": 16, "pq_m": 8, "pq_bits": 6}),
]


def filled(tmp_path, kind, quantization, metric=Metric.L2, n=6000, **params):
    store = CollectionStore(tmp_path, 1 << 30)
    config = CollectionConfig("q", D, metric, IndexParams(kind, quantization=quantization, **params).resolved(D))
    collection = store.create(config)
    data = clustered(n + 100, D, centers=40)
    x, queries = data[:n], data[n:]
    for start in range(0, n, 1000):
        ids = [str(i) for i in range(start, min(start + 1000, n))]
        collection.upsert(Upsert(ids, x[start : start + len(ids)], [{}] * len(ids), [""] * len(ids)))
    collection.wait_for_training(300)
    return store, collection, x, queries


def recall(hits, truth):
    return np.mean([len({int(h.id) for h in r} & set(t.tolist())) / len(t) for r, t in zip(hits, truth, strict=True)])


@pytest.mark.parametrize(("kind", "quantization", "params"), KINDS)
@pytest.mark.parametrize("metric", [Metric.L2, Metric.COSINE])
def test_rescored_recall_and_a_restart_without_training(tmp_path, kind, quantization, params, metric, monkeypatch):
    store, collection, x, queries = filled(tmp_path, kind, quantization, metric, **params)
    assert collection.info()["trained"]
    truth, scores = brute_force(x, queries, 10, metric)
    found = collection.search(queries, 10, target_recall=0.99)
    assert not found.exact and recall(found.hits, truth) >= 0.95
    # The scores are the exact ones (rescored with the float vectors), not the codes' approximations.
    top = {int(h.id): h.score for h in found.hits[0]}
    for item, score in zip(truth[0].tolist(), scores[0].tolist(), strict=True):
        if item in top:
            assert top[item] == pytest.approx(score, rel=1e-4, abs=1e-4)
    store.close_all(checkpoint=True)

    def no_training(self, vectors):
        raise AssertionError("a restart trained the index again")

    monkeypatch.setattr(VectorIndex, "train", no_training)
    reopened = Collection.open(tmp_path / "collections" / "q", 1 << 30)
    assert reopened.info()["trained"] and reopened.info()["calibration"] is not None
    again = reopened.search(queries, 10, target_recall=0.99)
    assert [[h.id for h in r] for r in again.hits] == [[h.id for h in r] for r in found.hits]
    reopened.close()


def test_a_target_recall_sets_the_knob_and_the_provenance_says_so(tmp_path):
    store, collection, x, queries = filled(tmp_path, IndexKind.IVF_FLAT, Quantization.NONE, n=8000, nlist=64)
    calibration = collection.info()["calibration"]
    assert calibration.knob == "nprobe" and calibration.count >= 4000
    low = collection.search(queries, 10, target_recall=0.5)
    high = collection.search(queries, 10, target_recall=0.999)
    assert int(low.parameters["nprobe"]) <= int(high.parameters["nprobe"])
    assert low.parameters["target_recall"] == "0.5" and high.parameters["target_recall"] == "0.999"
    for result in (low, high):
        value = int(result.parameters["nprobe"])
        expected = next(r for v, _, r in calibration.points if v == value)
        assert float(result.parameters["estimated_recall"]) == pytest.approx(expected, abs=1e-3)
    truth, _ = brute_force(x, queries, 10, Metric.L2)
    assert recall(high.hits, truth) >= recall(low.hits, truth)
    explicit = collection.search(queries, 10, nprobe=3)  # a knob in the request wins over any target
    assert explicit.parameters["nprobe"] == "3" and "target_recall" not in explicit.parameters
    assert collection.search(queries, 10, exact=True).parameters == {}  # exact: nothing to estimate
    store.close_all(checkpoint=False)


def test_the_collection_target_never_lowers_the_configured_knob(tmp_path):
    store, collection, _, queries = filled(tmp_path, IndexKind.IVF_FLAT, Quantization.NONE, n=4000, nlist=32)
    assert collection.config.index.target_recall == 0.95
    found = collection.search(queries, 10)
    assert int(found.parameters["nprobe"]) >= collection.config.index.nprobe
    store.close_all(checkpoint=False)


def test_memory_of_an_int8_collection_is_its_codes(tmp_path):
    store, _, x, _ = filled(tmp_path, IndexKind.FLAT, Quantization.INT8, n=6000)
    store.close_all(checkpoint=True)
    reopened = Collection.open(tmp_path / "collections" / "q", 1 << 30)
    info = reopened.info()
    raw = x.nbytes
    assert info["memory_bytes"] <= 0.35 * raw  # the codes (d bytes a vector), the live flags
    assert info["mapped_bytes"] >= raw  # the float vectors stay on disk, mapped, for rescoring
    reopened.close()


def test_hnsw_with_rabitq_is_refused():
    problems = IndexParams(IndexKind.HNSW, quantization=Quantization.RABITQ).resolved(D).problems(D)
    assert [field for field, _ in problems] == ["index.quantization"]


def test_ivf_pq_takes_no_quantization():
    problems = IndexParams(IndexKind.IVF_PQ, quantization=Quantization.INT8).resolved(D).problems(D)
    assert [field for field, _ in problems] == ["index.quantization"]
