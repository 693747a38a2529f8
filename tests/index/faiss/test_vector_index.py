"""VectorIndex.restore: an IVF index's lists filled from a checkpoint's codes, each allocated once, equal to the
index that added the same codes one segment after another (FAISS's add_sa_codes)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from embedsvc.index.faiss.vector_index import VectorIndex
from embedsvc.index.types import IndexKind, IndexParams, Metric, Quantization

KINDS = {
    "ivf-flat": IndexParams(kind=IndexKind.IVF_FLAT, nlist=100, nprobe=8),
    "ivf-int8": IndexParams(kind=IndexKind.IVF_FLAT, nlist=100, nprobe=8, quantization=Quantization.INT8),
    "ivf-pq": IndexParams(kind=IndexKind.IVF_PQ, nlist=100, nprobe=8, pq_m=8, pq_bits=8),
    "ivf-rabitq": IndexParams(kind=IndexKind.IVF_FLAT, nlist=100, nprobe=8, quantization=Quantization.RABITQ),
}


@pytest.mark.parametrize("name", sorted(KINDS))
@pytest.mark.parametrize("metric", [Metric.L2, Metric.INNER_PRODUCT])
def test_restored_lists_equal_appended_ones(name, metric, monkeypatch):
    rng = np.random.default_rng(5)
    d = 32
    data = rng.normal(size=(12_000, d)).astype(np.float32)
    params = KINDS[name].resolved(d)
    built = VectorIndex(params, d, metric)
    built.train(data[:6000])
    template = built._template
    assert template is not None
    # Three segments, like a checkpoint's; the second restore reads them in chunks smaller than a segment.
    bounds = [(0, 2500), (2500, 9000), (9000, 12_000)]
    parts = [(a, built.index.sa_encode(data[a:b])) for a, b in bounds]
    for first, codes in parts:
        built.index.add_sa_codes(codes, np.arange(first, first + len(codes), dtype=np.int64))
    monkeypatch.setattr("embedsvc.index.faiss.vector_index._FILL_CHUNK_BYTES", 1000 * parts[0][1].shape[1])
    restored = VectorIndex(params, d, metric)
    restored.restore(template, parts)
    assert restored.ntotal == built.ntotal == 12_000
    a = faiss.downcast_InvertedLists(built.index.invlists)
    b = faiss.downcast_InvertedLists(restored.index.invlists)
    for list_no in range(params.nlist):
        n = a.list_size(list_no)
        assert b.list_size(list_no) == n
        if n:
            ids_a = faiss.rev_swig_ptr(a.get_ids(list_no), n).copy()
            ids_b = faiss.rev_swig_ptr(b.get_ids(list_no), n).copy()
            size = a.code_size
            codes_a = faiss.rev_swig_ptr(a.get_codes(list_no), n * size).reshape(n, size)
            codes_b = faiss.rev_swig_ptr(b.get_codes(list_no), n * size).reshape(n, size)
            order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
            np.testing.assert_array_equal(ids_a[order_a], ids_b[order_b])
            np.testing.assert_array_equal(codes_a[order_a], codes_b[order_b])
    queries = rng.normal(size=(50, d)).astype(np.float32)
    expected = built.search(queries, 10, None)
    found = restored.search(queries, 10, None)
    np.testing.assert_array_equal(expected[1], found[1])
    np.testing.assert_allclose(expected[0], found[0], rtol=1e-6)
