"""FAISS's OpenMP threads under concurrent callers: one call at a time gets every core, the others one thread each."""

import threading

import faiss
import numpy as np

from embedsvc.index import exact
from embedsvc.index.exact import exact_search, faiss_threads
from embedsvc.index.types import Metric


def test_one_caller_gets_every_core_concurrent_callers_one_thread(monkeypatch):
    monkeypatch.setattr(exact, "_CORES", 4)
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def first():
        with faiss_threads():
            seen["first"] = faiss.omp_get_max_threads()
            inside.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    inside.wait(10)
    with faiss_threads():  # while the first holds the cores
        seen["second"] = faiss.omp_get_max_threads()
    release.set()
    t.join()
    with faiss_threads():  # and once it is done, the cores are free again
        seen["third"] = faiss.omp_get_max_threads()
    assert seen == {"first": 4, "second": 1, "third": 4}


def test_concurrent_searches_agree_with_one_search():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 64)).astype(np.float32)
    q = rng.normal(size=(50, 64)).astype(np.float32)
    _, expected = exact_search(x, q, 10, Metric.L2)
    results = [None] * 8

    def run(i):
        results[i] = exact_search(x, q, 10, Metric.L2)[1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, expected) for r in results)
