"""Split-and-merge balancing of IVF centroids (balance.py): more even lists, so fewer codes scanned at a given nprobe,
with recall at that nprobe kept; never less even than its input; unit-length centroids when spherical. Real FAISS."""

import faiss
import numpy as np
import pytest

from embedsvc.index.faiss import vector_index
from embedsvc.index.faiss.balance import balance, imbalance
from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.types import IndexKind, IndexParams, Metric, Quantization

D = 16
NLIST = 32


def blobs(n, centers, seed, spread=0.05):
    """Tight clusters, twice as many as lists: k-means gives some lists several clusters and others half of one."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, D)).astype(np.float32)
    return (c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, D))).astype(np.float32)


def kmeans(x, seed, spherical=False):
    km = faiss.Kmeans(D, NLIST, niter=10, seed=seed, spherical=spherical)
    km.train(x)
    return km.centroids


def scan(centroids, data, queries, nprobe, metric=faiss.METRIC_L2):
    """(codes a query scans at nprobe, on average; recall@10 of an IVF-Flat index on these centroids)."""
    quantizer = faiss.IndexFlat(D, metric)
    quantizer.add(centroids)
    sizes = np.bincount(quantizer.search(data, 1)[1][:, 0], minlength=NLIST)
    ivf = faiss.IndexIVFFlat(quantizer, D, NLIST, metric)
    ivf.is_trained = True
    ivf.add(data)
    ivf.nprobe = nprobe
    found = ivf.search(queries, 10)[1]
    exact = faiss.knn(queries, data, 10, metric=metric)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found.tolist(), exact.tolist(), strict=True)])
    return sizes[quantizer.search(queries, nprobe)[1]].sum(axis=1).mean(), recall


@pytest.mark.parametrize("seed", [1234, 1235, 1236])
def test_lists_get_more_even_and_searches_scan_fewer_codes_at_the_same_recall(seed):
    data = blobs(12000, 64, seed=3)
    sample, queries = data[:8000], blobs(300, 64, seed=3)[::-1]  # the same clusters (seeded centres), new points
    queries = queries + np.random.default_rng(9).normal(scale=0.05, size=queries.shape).astype(np.float32)
    start = kmeans(sample, seed)
    even, before, after = balance(start, sample, faiss.METRIC_L2)
    assert before == pytest.approx(imbalance(np.bincount(faiss.knn(sample, start, 1)[1][:, 0], minlength=NLIST)))
    assert after < before - 0.15  # k-means left 1.35-1.48 here; split-and-merge 1.12-1.19
    assert after == pytest.approx(imbalance(np.bincount(faiss.knn(sample, even, 1)[1][:, 0], minlength=NLIST)))
    codes_before, recall_before = scan(start, data, queries, 4)
    codes_after, recall_after = scan(even, data, queries, 4)
    assert codes_after < 0.95 * codes_before
    assert recall_after >= recall_before - 0.01
    again, *_ = balance(start, sample, faiss.METRIC_L2)
    assert np.array_equal(again, even)  # seeded


def test_spherical_centroids_stay_unit_length_for_inner_product():
    data = blobs(8000, 64, seed=4, spread=0.2)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    start = kmeans(data, 1234, spherical=True)
    even, before, after = balance(start, data, faiss.METRIC_INNER_PRODUCT, spherical=True)
    assert after <= before
    np.testing.assert_allclose(np.linalg.norm(even, axis=1), 1.0, rtol=1e-5)
    codes_before, recall_before = scan(start, data, data[:200], 4, faiss.METRIC_INNER_PRODUCT)
    codes_after, recall_after = scan(even, data, data[:200], 4, faiss.METRIC_INNER_PRODUCT)
    assert codes_after <= codes_before and recall_after >= recall_before - 0.01


def test_even_lists_and_tiny_inputs_are_returned_as_they_are():
    centres = np.random.default_rng(0).normal(size=(NLIST, D)).astype(np.float32)
    even = np.repeat(centres, 10, axis=0)  # every list exactly 10 points: nothing to move
    out, before, after = balance(centres, even, faiss.METRIC_L2)
    assert before == after == pytest.approx(1.0) and np.array_equal(out, centres)
    few = centres[:3]  # too few lists or points to balance
    out, before, after = balance(few, even[:50], faiss.METRIC_L2)
    assert np.array_equal(out, few) and before == after
    out, _, _ = balance(centres, even[: 2 * NLIST], faiss.METRIC_L2)
    assert np.array_equal(out, centres)


def test_imbalance_is_faiss_own_factor():
    sizes = np.array([5, 1, 0, 2])
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(1), 1, 4)
    index.quantizer.add(np.arange(4, dtype=np.float32)[:, None])
    index.is_trained = True
    index.add(np.repeat(np.arange(4, dtype=np.float32), sizes)[:, None])
    assert imbalance(sizes) == pytest.approx(index.invlists.imbalance_factor())
    assert imbalance(np.zeros(3)) == 1.0


def test_an_ivf_index_balances_on_what_its_budget_allows_and_skips_below_32_a_list(monkeypatch):
    """VectorIndex.train: the chosen k-means run balanced on the whole sample, on a seeded subsample when the budget
    (training vectors x nlist x d) is smaller, and not at all when that would leave fewer than 32 vectors a list."""
    sample = blobs(8000, 64, seed=3)

    def lists_imbalance(budget):
        monkeypatch.setattr(vector_index, "BALANCE_UP_TO", budget)
        params = IndexParams(IndexKind.IVF_FLAT, nlist=NLIST, quantization=Quantization.INT8).resolved(D)
        index = VectorIndex(params, D, Metric.L2)
        index.train(sample, restarts=2)
        centroids = index.index.quantizer.reconstruct_n(0, NLIST)
        return imbalance(np.bincount(faiss.knn(sample, centroids, 1)[1][:, 0], minlength=NLIST))

    whole = lists_imbalance(len(sample) * NLIST * D)
    subsample = lists_imbalance(40 * NLIST * NLIST * D)  # 40 vectors a list
    kmeans_only = lists_imbalance(31 * NLIST * NLIST * D)
    assert whole < kmeans_only - 0.15 and subsample < kmeans_only - 0.05
