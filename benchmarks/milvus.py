"""Collections on Milvus: embedsvc over Milvus Lite against raw pymilvus on the same Milvus, in one run.

100k phrase vectors of minilm-static (as in benchmarks/search.py; 1,000 more are the queries, k = 10). One Milvus Lite
is started here (its gRPC server runs in this process); `embedsvc serve` (a subprocess, `[storage] backend = "milvus"`)
and a raw pymilvus client both talk to it.
  - ingest: the 100k vectors through embedsvc's UpsertStream (batches of 2,000, each acknowledged once Milvus took it)
    into one HNSW collection, and through pymilvus `insert` (the same batches) into another with a plain id + vector
    schema; interleaved, --repeats times each, medians;
  - search: all queries through embedsvc's BatchSearch (one call, 1,000 queries) and through pymilvus `search` (one
    call, the same queries, ids only) on the same collection, the one embedsvc made, interleaved, medians;
  - recall@10 of that HNSW search against exact numpy top-10;
  - the same BatchSearch on a FAISS-backed HNSW collection of the same server, for scale: F = FAISS QPS / Milvus QPS.
Prints last: `milvus: search ratio R, ingest ratio I, recall@10 X, faiss/milvus QPS F` (R, I: embedsvc throughput over
raw pymilvus throughput).

    python benchmarks/milvus.py [--n 100000] [--repeats 3] [--data-dir DIR] [--smoke]

--smoke: 2,000 vectors, 50 queries, one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, cache_dir, serve
from benchmarks.search import phrases
from embedsvc.backends.word_vectors import load_word_vectors
from embedsvc.client import Client
from embedsvc.index.milvus.store import milvus_name
from embedsvc.settings import Settings

HNSW = {"M": 16, "efConstruction": 200}
EF = 64


def raw_collection(client, name: str, dim: int) -> None:
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=256)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="COSINE", params=HNSW)
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None, help="where minilm-static is (or will be) cached")
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.queries, args.batch_size, args.repeats = 2000, 50, 500, 1
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    data_dir = cache_dir(args.data_dir)
    space = load_word_vectors(Settings().all_models()[0], data_dir)
    rng = np.random.default_rng(0)
    x, q = phrases(space.unit, args.n, rng), phrases(space.unit, args.queries, rng)
    dim = x.shape[1]
    ids = [str(i) for i in range(args.n)]
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]

    with tempfile.TemporaryDirectory(prefix="embedsvc-milvus-") as tmp:
        uri = server_manager_instance.start_and_get_uri(str(Path(tmp) / "bench.db"))
        assert uri, "Milvus Lite did not start"
        raw = MilvusClient(uri)
        config = Path(tmp) / "embedsvc.toml"
        config.write_text(f'[server]\nembedded_models = false\n[storage.milvus]\nuri = "{uri}"\n')
        with (
            serve(Path(tmp) / "data", "--config", str(config)) as target,
            Client(target, timeout=3600) as client,
        ):
            index = {"m": HNSW["M"], "ef_construction": HNSW["efConstruction"], "ef_search": EF}
            service_ingest, raw_ingest = [], []
            for r in range(args.repeats):
                name = f"ingest{r}"
                client.create_collection(name, dimension=dim, metric="cosine", index="hnsw", backend="milvus", **index)
                start = time.perf_counter()
                client.upsert_stream(name, ids, x, batch_size=args.batch_size)
                service_ingest.append(time.perf_counter() - start)
                raw_collection(raw, f"raw{r}", dim)
                start = time.perf_counter()
                for s in range(0, args.n, args.batch_size):
                    rows = [
                        {"id": i, "vector": v}
                        for i, v in zip(ids[s : s + args.batch_size], x[s : s + args.batch_size].tolist(), strict=True)
                    ]
                    raw.insert(f"raw{r}", rows)
                raw_ingest.append(time.perf_counter() - start)
                if r:  # keep one loaded collection of each kind: memory
                    client.delete_collection(name)
                    raw.drop_collection(f"raw{r}")
            searched = milvus_name("ingest0")
            client.create_collection("faiss", dimension=dim, metric="cosine", index="hnsw", backend="faiss", **index)
            client.upsert_stream("faiss", ids, x, batch_size=args.batch_size)

            def service(name: str) -> tuple[float, list[list[str]]]:
                start = time.perf_counter()
                hits = client.batch_search(name, q, k=10, include_metadata=False, ef_search=EF)
                return time.perf_counter() - start, [[h.id for h in row] for row in hits]

            def direct() -> tuple[float, list[list[str]]]:
                start = time.perf_counter()
                answers = raw.search(
                    searched, data=q.tolist(), limit=10, search_params={"metric_type": "COSINE", "params": {"ef": EF}}
                )
                return time.perf_counter() - start, [[str(h["id"]) for h in row] for row in answers]

            service("ingest0"), direct(), service("faiss")  # warm-up
            service_search, raw_search, faiss_search = [], [], []
            for _ in range(args.repeats):
                t, service_hits = service("ingest0")
                service_search.append(t)
                t, raw_hits = direct()
                raw_search.append(t)
                faiss_search.append(service("faiss")[0])
    recall = np.mean(
        [len({int(i) for i in row} & set(t.tolist())) / 10 for row, t in zip(service_hits, truth, strict=True)]
    )
    same = np.mean([a == b for a, b in zip(service_hits, raw_hits, strict=True)])
    ingest_ratio = statistics.median(raw_ingest) / statistics.median(service_ingest)
    search_ratio = statistics.median(raw_search) / statistics.median(service_search)
    milvus_qps = len(q) / statistics.median(service_search)
    faiss_qps = len(q) / statistics.median(faiss_search)
    print(
        f"vectors {args.n} x {dim}, queries {len(q)}, k 10, "
        f"HNSW M {HNSW['M']} efConstruction {HNSW['efConstruction']} ef {EF}"
    )
    print(
        f"ingest: embedsvc {args.n / statistics.median(service_ingest):.0f} vectors/s, "
        f"raw pymilvus {args.n / statistics.median(raw_ingest):.0f} vectors/s"
    )
    print(
        f"search: embedsvc BatchSearch {milvus_qps:.0f} q/s, "
        f"raw pymilvus {len(q) / statistics.median(raw_search):.0f} q/s, "
        f"same top-10 as raw: {same:.3f}; embedsvc on FAISS HNSW {faiss_qps:.0f} q/s"
    )
    print(
        f"milvus: search ratio {search_ratio:.2f}, ingest ratio {ingest_ratio:.2f}, recall@10 {recall:.3f}, "
        f"faiss/milvus QPS {faiss_qps / milvus_qps:.1f}"
    )


if __name__ == "__main__":
    main()
