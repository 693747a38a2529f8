"""Ten million vectors on one machine: memory per index kind, recall at the defaults and at target recalls, search
against raw FAISS on the same index kind, durable ingest, graceful stop and restart to SERVING.

Data: clustered d = 128 vectors (1,024 Gaussian clusters, unit-variance centres, noise 0.5 per component), generated
in seeded chunks into a memory-mapped .npy file; the queries are further points of the same clusters. One server
(`embedsvc serve`, no models) holds a collection per kind:

  flat      FLAT, L2                              the vectors, mapped from the checkpoint
  cosine    FLAT, cosine                          the unit rows mapped; the vectors as given stay on disk
  int8      IVF_FLAT + int8 (IVF-SQ8), L2         the codes in memory; the vectors on disk, for rescoring
  ivf-pq    IVF_PQ (m = 32), L2                   the codes in memory; the vectors on disk, for rescoring
  hnsw      HNSW + int8, L2 (not by default: building a graph of 1M on 2 cores takes most of an hour)

nlist is about sqrt(n) rounded down to a power of two (at most 16,384): 512 at 1M, 2,048 at 10M. Every collection is
loaded at once, one UpsertStream each (the durable ingest rate is the total). The run then waits for training and
recall calibration, stops the server with SIGTERM (graceful stop: a checkpoint of what changed), starts it again
(restart to SERVING; the empty server's own start, measured first, is reported beside it), and measures:
- memory per kind: each collection's directory hard-linked into a data directory of its own, served alone, warmed
  with a batch search; its RSS (anonymous + file-backed) minus the empty server's, over the raw vectors (n x d x 4);
- recall@10 against exact search (FAISS brute force) at the defaults and with target_recall 0.95 and 0.99, and the
  recall the provenance estimates;
- search: BatchSearch QPS (all queries in one packed call, median of --repeats, taking turns with raw FAISS) and
  single-query Search p50, against raw FAISS in this process on the same index kind with the same settings (the
  service's effective nprobe and oversampling; quantised kinds rescored with numpy over the memory-mapped vectors,
  as the service does).
The machine is shared (its load average is printed); times are medians.

Prints last: `scale: n N, flat memory F x raw, int8 memory Q x raw recall R, default recall D, restart T s, search
ratio S` (F, Q: memory over raw for flat and int8; R: int8 recall@10 with target_recall 0.99; D: the lowest
recall@10 at the defaults over the kinds; T: restart to SERVING; S: the lowest BatchSearch QPS ratio over the kinds).

    python benchmarks/scale.py                                   # 1,000,000 vectors
    python benchmarks/scale.py --n 10000000 --queries 200 --kinds flat,int8,ivf-pq
    python benchmarks/scale.py --smoke                           # seconds: 20,000 vectors, every kind but hnsw
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embedsvc.client import Client
from tests import serve_process

D = 128
CENTRES = 1024
NOISE = 0.5
CHUNK = 100_000


@dataclass
class Kind:
    name: str
    metric: str
    index: str
    params: dict[str, Any] = field(default_factory=dict)
    quantization: str = ""

    @property
    def quantised(self) -> bool:
        return bool(self.quantization) or self.index == "ivf-pq"


def kinds(n: int, wanted: Sequence[str]) -> list[Kind]:
    nlist = int(min(16384, max(16, 4 * round(np.sqrt(n) / 4))))
    nlist = 1 << int(np.log2(nlist))  # a power of two: 512 at 1M, 2,048 at 10M
    table = {
        "flat": Kind("flat", "l2", "flat"),
        "cosine": Kind("cosine", "cosine", "flat"),
        "int8": Kind("int8", "l2", "ivf-flat", {"nlist": nlist}, "int8"),
        "ivf-pq": Kind("ivf-pq", "l2", "ivf-pq", {"nlist": nlist, "pq_m": 32}),
        "hnsw": Kind("hnsw", "l2", "hnsw", {}, "int8"),
    }
    return [table[w] for w in wanted]


def generate(path: Path, n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """n + queries clustered vectors: the first n into a .npy file (memory-mapped), the rest returned as queries."""
    centres = np.random.default_rng(0).normal(size=(CENTRES, D)).astype(np.float32)
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng([1, start])
        rows = min(CHUNK, n - start)
        data[start : start + rows] = centres[rng.integers(0, CENTRES, rows)] + NOISE * rng.normal(size=(rows, D))
    data.flush()
    rng = np.random.default_rng(2)
    q = (centres[rng.integers(0, CENTRES, queries)] + NOISE * rng.normal(size=(queries, D))).astype(np.float32)
    return np.load(path, mmap_mode="r"), q


class Ids(Sequence[str]):
    """Item ids "0" .. "n-1", made on demand (10M Python strings would be most of a gigabyte)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [str(j) for j in range(*i.indices(self.n))]
        return str(i)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def truth(data: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Exact top 10 (FAISS brute force, in chunks of the data)."""
    queries = unit(q) if metric == "cosine" else q
    best_d = np.full((len(q), 0), np.nan, np.float32)
    best_i = np.empty((len(q), 0), np.int64)
    for start in range(0, len(data), 1_000_000):
        block = np.asarray(data[start : start + 1_000_000])
        if metric == "cosine":
            dist, idx = faiss.knn(queries, unit(block), 10, metric=faiss.METRIC_INNER_PRODUCT)
            dist = -dist
        else:
            dist, idx = faiss.knn(queries, block, 10)
        best_d = np.concatenate([best_d, dist], axis=1)
        best_i = np.concatenate([best_i, idx + start], axis=1)
    order = np.argsort(best_d, axis=1, kind="stable")[:, :10]
    return np.take_along_axis(best_i, order, 1)


def recall(found: Sequence[Sequence[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, exact, strict=True)]))


def hits_of(packed: Any) -> list[list[int]]:
    offsets = packed.offsets
    return [[int(i) for i in packed.ids[offsets[q] : offsets[q + 1]]] for q in range(len(packed.counts))]


def rss(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of a process, bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


_LIVE: set[subprocess.Popen[str]] = set()  # servers not yet stopped: stopped on the way out, whatever happens


def start(data_dir: Path, config: Path) -> tuple[subprocess.Popen[str], str, float]:
    started = time.perf_counter()
    proc, target = serve_process.start("--config", str(config), "--data-dir", str(data_dir))
    _LIVE.add(proc)
    with Client(target, timeout=600) as client:
        client.wait_until_serving(1800)
    return proc, target, time.perf_counter() - started


def stop(proc: subprocess.Popen[str]) -> float:
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(3600)
    _LIVE.discard(proc)
    return time.perf_counter() - started


def stop_all() -> None:
    """Stop every server still running (after an exception or a signal): SIGTERM, then SIGKILL after 60 s."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _LIVE.discard(proc)


def load(target: str, kind: Kind, data: np.ndarray, batch: int) -> None:
    with Client(target, timeout=3600) as client:
        client.upsert_stream(kind.name, Ids(len(data)), data, batch_size=batch)


def settled(client: Client, kinds_: list[Kind], n: int, timeout: float) -> None:
    """Wait until every IVF/HNSW/quantised collection is trained and calibrated at (about) its full size."""
    deadline = time.monotonic() + timeout
    for kind in kinds_:
        if kind.index == "flat" and not kind.quantization:
            continue
        while True:
            info = client.get_collection(kind.name)
            if info.trained and info.HasField("calibration") and 1.5 * info.calibration.count > n:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind.name}: not trained and calibrated after {timeout:.0f} s")
            time.sleep(2)


def raw_index(kind: Kind, data: np.ndarray) -> Any:
    """The same index kind, built by FAISS in this process (for FLAT: the rows brute force runs over, unit length for
    cosine)."""
    if kind.index == "flat":
        return unit(np.asarray(data)) if kind.metric == "cosine" else data
    nlist = kind.params.get("nlist", 256)
    if kind.index == "hnsw":  # the service's defaults: M 32, ef_construction 200
        sq8: Any = faiss.ScalarQuantizer.QT_8bit
        index: Any = faiss.IndexHNSWSQ(D, sq8, 32)
        index.hnsw.efConstruction = 200
    elif kind.index == "ivf-pq":  # index_factory: the index owns its coarse quantizer
        index = faiss.index_factory(D, f"IVF{nlist},PQ{kind.params.get('pq_m', 32)}x8")
        index.do_polysemous_training = False  # as the service's IndexIVFPQ (the factory turns it on: minutes)
    else:
        index = faiss.index_factory(D, f"IVF{nlist},SQ8")
    sample = np.asarray(data[np.sort(np.random.default_rng(0).choice(len(data), min(len(data), 256 * nlist), False))])
    index.train(sample)
    for start in range(0, len(data), CHUNK):
        index.add(np.asarray(data[start : start + CHUNK]))
    return index


def raw_search(kind: Kind, index: Any, data: np.ndarray, q: np.ndarray, parameters: dict[str, str]) -> list[list[int]]:
    """Raw FAISS with the service's effective settings (and the same rescoring for quantised kinds)."""
    if kind.index == "flat":
        queries = unit(q) if kind.metric == "cosine" else q
        metric = faiss.METRIC_INNER_PRODUCT if kind.metric == "cosine" else faiss.METRIC_L2
        return faiss.knn(queries, np.asarray(index), 10, metric=metric)[1].tolist()
    over = int(parameters.get("oversample", 1)) if kind.quantised else 1
    if "nprobe" in parameters:
        faiss.extract_index_ivf(index).nprobe = int(parameters["nprobe"])
    if "ef_search" in parameters:
        index.hnsw.efSearch = max(int(parameters["ef_search"]), 10 * over)
    _, labels = index.search(q, 10 * over)
    if not kind.quantised:
        return labels.tolist()
    candidates = np.asarray(data[np.sort(np.unique(np.maximum(labels, 0)))])
    position = {s: i for i, s in enumerate(np.sort(np.unique(np.maximum(labels, 0))).tolist())}
    rows = np.vectorize(position.__getitem__)(np.maximum(labels, 0))
    exact = ((candidates[rows] - q[:, None, :]) ** 2).sum(axis=2)
    exact[labels < 0] = np.inf
    order = np.argsort(exact, axis=1, kind="stable")[:, :10]
    return np.take_along_axis(labels, order, 1).tolist()


def timed(fns: list[Any], repeats: int) -> list[float]:
    """Each function's median time over `repeats` rounds, the functions taking turns within a round (interleaved: this
    machine's speed drifts by tens of percent over a minute, which back-to-back blocks of runs would attribute to one
    side)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            started = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - started)
    return [statistics.median(spent) for spent in times]


def p50(fn: Any, queries: np.ndarray) -> float:
    times = []
    for row in queries:
        started = time.perf_counter()
        fn(row)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM unwinds through stop_all, like Ctrl-C
    try:
        run()
    finally:
        stop_all()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time (p50)")
    parser.add_argument("--kinds", default="flat,cosine,int8,ivf-pq", help="of: flat, cosine, int8, ivf-pq, hnsw")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--work-dir", type=Path, default=None, help="where data and servers' files go (kept)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 20,000 vectors, 50 queries")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.queries, args.single, args.repeats = 20_000, 50, 10, 1
    n = args.n
    wanted = kinds(n, [k for k in args.kinds.split(",") if k])
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="embedsvc-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "serve.toml"
    config.write_text("[server]\nembedded_models = false\n")
    raw_bytes = n * D * 4
    print(f"n {n}, d {D}, raw vectors {raw_bytes / 2**20:.0f} MiB per collection; load average {os.getloadavg()}")

    data, q = generate(work / "data.npy", n, args.queries)
    exact = {metric: truth(data, q, metric) for metric in {k.metric for k in wanted}}

    empty_proc, _, empty_start = start(work / "empty", config)
    empty_rss = rss(empty_proc.pid)
    stop(empty_proc)
    print(f"empty server: start to SERVING {empty_start:.2f} s, RSS {empty_rss['VmRSS'] / 2**20:.0f} MiB")

    data_dir = work / "data"
    proc, target, _ = start(data_dir, config)
    with Client(target, timeout=3600) as client:
        for kind in wanted:
            client.create_collection(
                kind.name, dimension=D, metric=kind.metric, index=kind.index, quantization=kind.quantization,
                **kind.params,
            )  # fmt: skip
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(wanted)) as pool:
        for future in [pool.submit(load, target, kind, data, args.batch_size) for kind in wanted]:
            future.result()
    ingest = len(wanted) * n / (time.perf_counter() - started)
    print(f"durable ingest: {ingest:.0f} vectors/s ({len(wanted)} collections at once)")
    with Client(target, timeout=3600) as client:
        settled(client, wanted, n, timeout=6 * 3600)
        loaded_rss = rss(proc.pid)
    stopping = stop(proc)
    print(f"graceful stop {stopping:.2f} s (RSS before {loaded_rss['VmRSS'] / 2**20:.0f} MiB)")

    proc, target, restart = start(data_dir, config)
    print(f"restart to SERVING {restart:.2f} s (the empty server's start: {empty_start:.2f} s)")
    results: dict[str, dict[str, float]] = {}
    with Client(target, timeout=3600) as client:
        for kind in wanted:
            row = results.setdefault(kind.name, {})
            truth_ = exact[kind.metric]
            for label, options in (
                ("default", {}),
                ("0.95", {"target_recall": 0.95}),
                ("0.99", {"target_recall": 0.99}),
            ):
                packed = client.batch_search_packed(kind.name, q, k=10, **options)
                row[f"recall {label}"] = recall(hits_of(packed), truth_)
                params = dict(packed.provenance.parameters) if packed.provenance else {}
                row[f"estimate {label}"] = float(params.get("estimated_recall", "nan"))
                if label == "default":
                    row["params"] = params  # type: ignore[assignment]
        all_rss = rss(proc.pid)
        for kind in wanted:
            params = results[kind.name]["params"]  # type: ignore[assignment]
            index = raw_index(kind, data)
            raw_found = raw_search(kind, index, data, q, params)
            results[kind.name]["raw recall"] = recall(raw_found, exact[kind.metric])
            service, raw = timed(
                [
                    lambda k=kind: client.batch_search_packed(k.name, q, k=10),
                    lambda k=kind, i=index, p=params: raw_search(k, i, data, q, p),
                ],
                args.repeats,
            )
            single = q[: args.single]
            service_p50 = p50(lambda v, k=kind: client.search(k.name, vector=v, k=10, include_metadata=False), single)
            raw_p50 = p50(lambda v, k=kind, i=index, p=params: raw_search(k, i, data, v[None, :], p), single)
            results[kind.name] |= {
                "qps": len(q) / service, "raw qps": len(q) / raw, "ratio": raw / service,
                "p50 ms": 1000 * service_p50, "raw p50 ms": 1000 * raw_p50,
            }  # fmt: skip
            del index
    stop(proc)
    print(f"server RSS with every collection, warmed: {all_rss['VmRSS'] / 2**20:.0f} MiB")

    for kind in wanted:  # each collection alone: its own memory
        alone = work / f"alone-{kind.name}"
        shutil.rmtree(alone, ignore_errors=True)
        (alone / "collections").mkdir(parents=True)
        subprocess.run(["cp", "-al", str(data_dir / "collections" / kind.name), str(alone / "collections")], check=True)
        log = alone / "collections" / kind.name / "wal.log"  # a copy of its own: the server appends to it
        contents = log.read_bytes()
        log.unlink()
        log.write_bytes(contents)
        proc, target, _ = start(alone, config)
        with Client(target, timeout=3600) as client:
            client.batch_search_packed(kind.name, q, k=10)
            used = rss(proc.pid)
        stop(proc)
        results[kind.name] |= {
            "memory": (used["VmRSS"] - empty_rss["VmRSS"]) / raw_bytes,
            "anon": (used["RssAnon"] - empty_rss["RssAnon"]) / raw_bytes,
            "file": (used["RssFile"] - empty_rss["RssFile"]) / raw_bytes,
        }

    print(
        "\n| kind | memory x raw (anon + file) | recall@10 default / 0.95 / 0.99 | estimated | raw FAISS recall |"
        " QPS service / raw (ratio) | p50 ms service / raw | settings |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in wanted:
        r = results[kind.name]
        print(
            f"| {kind.name} | {r['memory']:.3f} ({r['anon']:.3f} + {r['file']:.3f}) | {r['recall default']:.3f} / "
            f"{r['recall 0.95']:.3f} / {r['recall 0.99']:.3f} | {r['estimate default']:.3f} / "
            f"{r['estimate 0.95']:.3f} / {r['estimate 0.99']:.3f} | {r['raw recall']:.3f} | "
            f"{r['qps']:.1f} / {r['raw qps']:.1f} ({r['ratio']:.2f}) | {r['p50 ms']:.1f} / {r['raw p50 ms']:.1f} | "
            f"{r['params']} |"
        )
    print(f"load average {os.getloadavg()}; work directory {work}")
    flat = results.get("flat", {}).get("memory", float("nan"))
    int8 = results.get("int8", {})
    default = min(r["recall default"] for r in results.values())
    ratio = min(r["ratio"] for r in results.values())
    print(
        f"scale: n {n}, flat memory {flat:.2f} x raw, int8 memory {int8.get('memory', float('nan')):.2f} x raw "
        f"recall {int8.get('recall 0.99', float('nan')):.3f}, default recall {default:.3f}, restart {restart:.1f} s, "
        f"search ratio {ratio:.2f}"
    )
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
