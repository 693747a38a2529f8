"""The FAISS index behind a collection: FLAT, HNSW, IVF-FLAT, IVF-PQ, searched through an id bitmap.

FAISS ids are the collection's slots (row numbers of its store). Deleted and replaced rows stay in the index as
tombstones until a rebuild, and every search passes a bitmap of the allowed slots (live, and matching the filter), so
FAISS itself never returns them. IVF kinds need training: until a collection holds enough vectors the caller searches
its store exactly; `train` then fits the quantisers on the live vectors.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from embedsvc.index.exact import faiss_metric, faiss_threads
from embedsvc.index.types import IndexKind, IndexParams, Metric

# FAISS's type stubs lack the keyword constructors of its SearchParameters classes, which exist at run time.
_faiss: Any = faiss


class VectorIndex:
    """One FAISS index over a collection's slots. Not thread-safe: the collection serialises writes."""

    def __init__(self, params: IndexParams, dimension: int, metric: Metric) -> None:
        self.params = params
        self.dimension = dimension
        self.metric = metric
        self.faiss_metric = faiss_metric(metric)
        self.index = self._build()
        self.trained = bool(self.index.is_trained)

    def _build(self) -> Any:  # FAISS's stubs lack the index subclasses' attributes
        p, d = self.params, self.dimension
        if p.kind is IndexKind.FLAT:
            return faiss.IndexFlat(d, self.faiss_metric)
        if p.kind is IndexKind.HNSW:
            index: Any = faiss.IndexHNSWFlat(d, p.m, self.faiss_metric)
            index.hnsw.efConstruction = p.ef_construction
            index.hnsw.efSearch = p.ef_search
            return index
        quantizer = faiss.IndexFlat(d, self.faiss_metric)
        if p.kind is IndexKind.IVF_FLAT:
            index = faiss.IndexIVFFlat(quantizer, d, p.nlist, self.faiss_metric)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, p.nlist, p.pq_m, p.pq_bits, self.faiss_metric)
        index.nprobe = p.nprobe
        self._quantizer = quantizer  # keep the Python object alive next to the index
        return index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def train(self, vectors: np.ndarray) -> None:
        with faiss_threads():
            self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))
        self.trained = True

    def add(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows; FLAT and HNSW number them in order, so `slots` must continue from ntotal."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.params.is_ivf and len(slots) and int(slots[0]) != self.ntotal:
            raise ValueError(f"slot {int(slots[0])} added at position {self.ntotal}")
        with faiss_threads():
            if self.params.is_ivf:
                self.index.add_with_ids(vectors, np.ascontiguousarray(slots, dtype=np.int64))
            else:
                self.index.add(vectors)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, *, ef_search: int = 0, nprobe: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k among the allowed slots (a bool mask over slots, or None for all); labels -1 where there are fewer.

        A selector takes FAISS's flat search off its BLAS path, so pass None whenever every slot may be returned.
        """
        bitmap = selector = None
        if allowed is not None:
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        if self.params.kind is IndexKind.HNSW:
            params: Any = _faiss.SearchParametersHNSW(efSearch=max(ef_search or self.params.ef_search, k), sel=selector)
        elif self.params.is_ivf:
            params = _faiss.SearchParametersIVF(
                nprobe=min(nprobe or self.params.nprobe, self.params.nlist), sel=selector
            )
        else:
            params = _faiss.SearchParameters(sel=selector)
        with faiss_threads():
            distances, labels = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        del bitmap  # the selector points into it until here
        return distances, labels

    def memory_bytes(self) -> int:
        codes = {IndexKind.FLAT: 4 * self.dimension, IndexKind.IVF_FLAT: 4 * self.dimension + 8}
        per_vector = codes.get(self.params.kind)
        if per_vector is None and self.params.kind is IndexKind.HNSW:
            per_vector = 4 * self.dimension + 8 * self.params.m * 2
        if per_vector is None:  # IVF-PQ
            per_vector = (self.params.pq_m * self.params.pq_bits + 7) // 8 + 8
        return self.ntotal * per_vector
