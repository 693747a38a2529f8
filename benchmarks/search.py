"""Search speed and quality: the service against raw FAISS, on 100k "phrase vectors" of minilm-static.

Phrase vectors are unit-normalised weighted sums of two random word vectors of minilm-static (weights uniform in
0.3-1.0, seeded): structured like real embeddings, unlike uniform noise, which no graph index can search. 100k are
indexed and 1,000 more are the queries, k = 10. In one run:
  - raw FAISS IndexFlatIP, all queries in one batch, in-process;
  - the service's BatchSearch over gRPC on a FLAT cosine collection (all 1,000 queries in one call, as FAISS gets;
    queries and hits packed as arrays, as FAISS takes and gives them);
  - single-query Search latency on FLAT, and on HNSW (M 32, efConstruction 200, efSearch 64) with its recall@10.
Batch throughputs are medians of --repeats runs, the two sides interleaved.
Prints last: `search: ratio R, p50 L ms, recall@10 X, hnsw/flat QPS S` (R: service BatchSearch throughput over raw
FAISS batch throughput; L: p50 single-query Search latency on FLAT; X: HNSW recall@10; S: HNSW over FLAT single-query
QPS).

    python benchmarks/search.py [--n 100000] [--data-dir DIR] [--smoke]

--smoke: 2,000 vectors, 50 queries, one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, cache_dir, serve, sharing_models
from embedsvc.backends.word_vectors import load_word_vectors
from embedsvc.client import Client
from embedsvc.settings import Settings


def phrases(unit: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.integers(0, len(unit), n), rng.integers(0, len(unit), n)
    w = rng.uniform(0.3, 1.0, size=(n, 2)).astype(np.float32)
    x = w[:, :1] * unit[a] + w[:, 1:] * unit[b]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def single_queries(client: Client, name: str, queries: np.ndarray, **options: object) -> tuple[list[float], list]:
    latencies, results = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(client.search(name, vector=q, k=10, include_metadata=False, **options))
        latencies.append(time.perf_counter() - start)
    return latencies, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=9, help="timed batch searches per side, interleaved (medians)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where minilm-static is (or will be) cached")
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.queries, args.repeats = 2000, 50, 1
    data_dir = cache_dir(args.data_dir)
    space = load_word_vectors(Settings().all_models()[0], data_dir)
    rng = np.random.default_rng(0)
    x, q = phrases(space.unit, args.n, rng), phrases(space.unit, args.queries, rng)
    ids = [str(i) for i in range(args.n)]

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, truth = index.search(q, 10)

    with (
        tempfile.TemporaryDirectory(prefix="embedsvc-search-") as tmp,
        serve(sharing_models(Path(tmp) / "data", data_dir)) as target,
        Client(target, timeout=1200) as client,
    ):
        client.create_collection("flat", dimension=x.shape[1], metric="cosine")
        client.upsert_stream("flat", ids, x, batch_size=2000)
        client.batch_search("flat", q[:50], k=10)  # warm-up
        faiss_times, service_times = [], []
        for _ in range(args.repeats):  # interleaved: the machine's noise hits both sides alike
            start = time.perf_counter()
            index.search(q, 10)
            faiss_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            packed = [  # the same batch as raw FAISS gets (limits.max_queries is 1024), the hits as arrays
                client.batch_search_packed("flat", q[s : s + 1000], k=10) for s in range(0, len(q), 1000)
            ]
            service_times.append(time.perf_counter() - start)
        faiss_qps = len(q) / statistics.median(faiss_times)
        service_qps = len(q) / statistics.median(service_times)
        got = [[int(i) for i in p.query(n)[0]] for p in packed for n in range(len(p))]
        agree = np.mean([ids == t.tolist() for ids, t in zip(got, truth, strict=True)])
        flat_lat, _ = single_queries(client, "flat", q[:300])

        build = time.perf_counter()
        client.create_collection("hnsw", dimension=x.shape[1], metric="cosine", index="hnsw")
        client.upsert_stream("hnsw", ids, x, batch_size=5000)
        build = time.perf_counter() - build
        single_queries(client, "hnsw", q[:20])  # warm-up
        hnsw_lat, hnsw_hits = single_queries(client, "hnsw", q)
    recall = np.mean(
        [len({int(h.id) for h in hits} & set(t.tolist())) / 10 for hits, t in zip(hnsw_hits, truth, strict=True)]
    )
    p50 = statistics.median(flat_lat) * 1e3
    flat_qps, hnsw_qps = 1 / statistics.mean(flat_lat), 1 / statistics.mean(hnsw_lat)
    print(f"vectors {args.n} x {x.shape[1]}, queries {len(q)}, k 10")
    print(
        f"raw FAISS IndexFlatIP batch: {faiss_qps:.0f} q/s; service BatchSearch (FLAT): {service_qps:.0f} q/s; "
        f"same top-10 as FAISS: {agree:.3f}"
    )
    hnsw_p50 = statistics.median(hnsw_lat) * 1e3
    print(
        f"single Search FLAT: p50 {p50:.2f} ms, {flat_qps:.0f} q/s; HNSW: p50 {hnsw_p50:.2f} ms, "
        f"{hnsw_qps:.0f} q/s, recall@10 {recall:.3f}, built in {build:.1f} s"
    )
    print(
        f"search: ratio {service_qps / faiss_qps:.2f}, p50 {p50:.2f} ms, recall@10 {recall:.3f}, "
        f"hnsw/flat QPS {hnsw_qps / flat_qps:.1f}"
    )


if __name__ == "__main__":
    main()
