"""Brute-force nearest neighbours with FAISS (BLAS matrix products plus a heap per query), and the process-wide
FAISS settings for serving. Word arithmetic and collections' exact searches both run here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from embedsvc.index.types import Metric

# Query batches at least this large use FAISS's BLAS path. This FAISS build defaults to 128,000, which sends every
# batch below that through a scalar path about ten times slower (measured: 250 queries of 256 dims over 100k vectors
# took 1.3 s instead of 0.12 s). FAISS's own historical default is 20.
BLAS_THRESHOLD = 20


# FAISS parallelises one call with OpenMP over every core. Called from many gRPC worker threads at once, each caller
# gets its own team of that size, and the teams thrash: measured on 2 cores, 16 concurrent BatchSearch calls (32
# queries over 20k x 384) served 5 calls/s in total, against 85/s for one caller alone, while with one OpenMP thread
# per call the same 16 callers served 126/s. So one call at a time gets every core (the latency of a lone caller), and
# calls that arrive while it runs use one thread each (the throughput of many).
_CORES = faiss.omp_get_max_threads()
_parallel = threading.Lock()


@contextmanager
def faiss_threads() -> Iterator[None]:
    """Run the FAISS calls inside on every core if no other call is doing so, else on one thread.

    OpenMP's thread count is per calling thread, so this sets it for the current thread only.
    """
    if _CORES > 1 and _parallel.acquire(blocking=False):
        faiss.omp_set_num_threads(_CORES)
        try:
            yield
        finally:
            _parallel.release()
    else:
        faiss.omp_set_num_threads(1)
        yield


def configure_faiss() -> None:
    """Process-wide FAISS settings for serving; called once when a server is built."""
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


def faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


def knn_inner_product(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over the rows of `base`, best first; labels -1 past the end of a small base."""
    k = min(k, base.shape[0])
    with faiss_threads():
        return faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over given rows (positions into `vectors`), best first."""
    k = min(k, len(vectors))
    if k == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    with faiss_threads():
        return faiss.knn(
            np.ascontiguousarray(queries, dtype=np.float32),
            np.ascontiguousarray(vectors, dtype=np.float32),
            k,
            metric=faiss_metric(metric),
        )
