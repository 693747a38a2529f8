"""The FAISS index behind a collection: FLAT, HNSW, IVF-FLAT, IVF-PQ, searched through an id bitmap.

FAISS ids are the collection's slots (row numbers of its store). Deleted and replaced rows stay in the index as
tombstones until a rebuild, and every search passes a bitmap of the allowed slots (live, and matching the filter), so
FAISS itself never returns them. IVF kinds need training: until a collection holds enough vectors the caller searches
its store exactly; `train` then fits the quantisers on the live vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import faiss
import numpy as np

# FAISS's type stubs lack the keyword constructors of its SearchParameters classes, which exist at run time.
_faiss: Any = faiss


# Query batches at least this large use FAISS's BLAS path. This FAISS build defaults to 128,000, which sends every
# batch below that through a scalar path about ten times slower (measured: 250 queries of 256 dims over 100k vectors
# took 1.3 s instead of 0.12 s). FAISS's own historical default is 20.
BLAS_THRESHOLD = 20


def configure_faiss() -> None:
    """Process-wide FAISS settings for serving; called once when a server is built."""
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


class Metric(StrEnum):
    COSINE = "cosine"
    L2 = "l2"
    INNER_PRODUCT = "ip"


class IndexKind(StrEnum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVF_FLAT = "ivf-flat"
    IVF_PQ = "ivf-pq"


def faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


@dataclass(frozen=True)
class IndexParams:
    """Index kind and parameters; 0 means "the default" until `resolved`."""

    kind: IndexKind = IndexKind.FLAT
    m: int = 0
    ef_construction: int = 0
    ef_search: int = 0
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0
    pq_bits: int = 0

    def resolved(self, dimension: int) -> IndexParams:
        """Defaults filled in for this kind; parameters of other kinds zeroed."""
        if self.kind is IndexKind.FLAT:
            return IndexParams(IndexKind.FLAT)
        if self.kind is IndexKind.HNSW:
            return IndexParams(
                IndexKind.HNSW,
                m=self.m or 32,
                ef_construction=self.ef_construction or 200,
                ef_search=self.ef_search or 64,
            )
        nlist = self.nlist or 256
        ivf = IndexParams(self.kind, nlist=nlist, nprobe=self.nprobe or min(16, nlist))
        if self.kind is IndexKind.IVF_FLAT:
            return ivf
        pq_m = self.pq_m or next(m for m in (64, 32, 16, 8, 4, 2, 1) if dimension % m == 0)
        return replace(ivf, pq_m=pq_m, pq_bits=self.pq_bits or 8)

    def problems(self, dimension: int) -> list[tuple[str, str]]:
        """(field, message) for each parameter out of range; call on resolved params."""
        checks = [
            ("m", 2 <= self.m <= 256 if self.kind is IndexKind.HNSW else True, "m must be 2..256"),
            ("ef_construction", 1 <= self.ef_construction <= 4096 or self.kind is not IndexKind.HNSW, "1..4096"),
            ("ef_search", 1 <= self.ef_search <= 4096 or self.kind is not IndexKind.HNSW, "1..4096"),
            ("nlist", 1 <= self.nlist <= 65536 or not self.is_ivf, "1..65536"),
            ("nprobe", 1 <= self.nprobe <= self.nlist or not self.is_ivf, "1..nlist"),
            (
                "pq_m",
                self.kind is not IndexKind.IVF_PQ or (self.pq_m > 0 and dimension % self.pq_m == 0),
                f"must divide the dimension {dimension}",
            ),
            ("pq_bits", self.kind is not IndexKind.IVF_PQ or 1 <= self.pq_bits <= 16, "1..16"),
        ]
        return [(f"index.{name}", f"{name}: {message}") for name, ok, message in checks if not ok]

    @property
    def is_ivf(self) -> bool:
        return self.kind in (IndexKind.IVF_FLAT, IndexKind.IVF_PQ)

    @property
    def train_size(self) -> int:
        """Vectors needed before training (FAISS wants about 39 points per centroid)."""
        if self.kind is IndexKind.IVF_FLAT:
            return 39 * self.nlist
        if self.kind is IndexKind.IVF_PQ:
            return 39 * max(self.nlist, 1 << self.pq_bits)
        return 0


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
        self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))
        self.trained = True

    def add(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows; FLAT and HNSW number them in order, so `slots` must continue from ntotal."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.params.is_ivf:
            self.index.add_with_ids(vectors, np.ascontiguousarray(slots, dtype=np.int64))
        else:
            if len(slots) and int(slots[0]) != self.ntotal:
                raise ValueError(f"slot {int(slots[0])} added at position {self.ntotal}")
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


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over given rows (positions into `vectors`), best first."""
    k = min(k, len(vectors))
    if k == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    return faiss.knn(
        np.ascontiguousarray(queries, dtype=np.float32),
        np.ascontiguousarray(vectors, dtype=np.float32),
        k,
        metric=faiss_metric(metric),
    )
