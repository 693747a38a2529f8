"""What training an IVF index again as the collection grows buys: list-size imbalance and the codes a search scans.

In this process (no server), on scale.py's clustered d = 128 data with its nlist (about sqrt(n), a power of two:
512 at 300,000 and at 1,000,000), three IVF_FLAT + int8 indexes of the same n vectors:
  first      a collection trained once, on the first train_size (39 x nlist) vectors (the growth rule switched off;
             before it existed, a collection kept that training);
  retrained  a collection as it is now: trained at train_size, then again as it grows (contents.Trained.retrain_at);
  raw        raw FAISS (IVF<nlist>,SQ8) trained on a seeded sample of 256 x nlist of all n vectors, as scale.py builds
             it (one k-means run; the collections keep the most even of several, then balance its lists:
             vector_index.py, balance.py).
Both collections receive the vectors in batches of 20,000 and finish their background work after each batch (so the
trainings happen at the counts the rule gives, whatever the machine's load). For each index: the list-size imbalance
(FAISS's imbalance_factor: n x sum(size^2) / (sum size)^2, 1 when the lists are even), the mean number of codes a
query's probed lists hold (what an IVF search scans) at the nprobe the first collection's search uses at its defaults
and at the one the retrained collection's uses, and recall@10 against exact search at those defaults. Counts, not
times: the figures do not depend on the machine's load.

    python benchmarks/ivf_training.py                 # 300,000 vectors
    python benchmarks/ivf_training.py --n 1000000
    python benchmarks/ivf_training.py --smoke         # seconds: 30,000 vectors, nlist 64

Prints last: `ivf_training: n N, nlist L, imbalance first F retrained R raw W, codes scanned at nprobe P first A
retrained B raw C, recall@10 first X retrained Y`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # the data generator, nlist, raw FAISS and exact search of the scale benchmark

from embedsvc.index.faiss import contents as contents_module
from embedsvc.index.faiss.balance import imbalance
from embedsvc.index.faiss.log import Upsert
from embedsvc.index.faiss.store import CollectionStore
from embedsvc.index.types import CollectionConfig, IndexKind, IndexParams, Metric, Quantization

BATCH = 20_000


def list_sizes(index: Any) -> np.ndarray:
    ivf = faiss.extract_index_ivf(index)
    return np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], np.int64)


def scanned(index: Any, q: np.ndarray, nprobe: int) -> float:
    """Mean codes in the nprobe lists each query probes (the lists whose centroids are nearest)."""
    ivf = faiss.extract_index_ivf(index)
    _, lists = ivf.quantizer.search(q, nprobe)
    return float(list_sizes(index)[lists].sum(axis=1).mean())


def build(root: Path, name: str, data: np.ndarray, nlist: int, *, retrain: bool) -> Any:
    """A collection loaded in batches, its background work finished after each (see the module docstring)."""
    params = IndexParams(IndexKind.IVF_FLAT, nlist=nlist, quantization=Quantization.INT8).resolved(scale.D)
    store = CollectionStore(root / name, 1 << 40)
    growth = contents_module.RETRAIN_GROWTH, contents_module.RETRAIN_GROWTH_LAST
    if not retrain:
        contents_module.RETRAIN_GROWTH = contents_module.RETRAIN_GROWTH_LAST = 1 << 40
    try:
        collection = store.create(CollectionConfig(name, scale.D, Metric.L2, params))
        bounds = [0, params.train_size, *range(BATCH, len(data), BATCH), len(data)]
        bounds = sorted({b for b in bounds if b <= len(data)})
        trainings = []
        for start, end in itertools.pairwise(bounds):
            ids = [str(i) for i in range(start, end)]
            collection.upsert(Upsert(ids, np.asarray(data[start:end]), [{}] * len(ids), [""] * len(ids)))
            collection.wait_for_training()
            training = collection.info()["training"]
            if training and (not trainings or trainings[-1] != training):
                trainings.append(training)
    finally:
        contents_module.RETRAIN_GROWTH, contents_module.RETRAIN_GROWTH_LAST = growth
    print(f"{name}: trainings {[(t['count'], t['sample']) for t in trainings]}", flush=True)
    return store, collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="30,000 vectors, 200 queries")
    args = parser.parse_args()
    n, queries = (30_000, 200) if args.smoke else (args.n, args.queries)
    nlist = 64 if args.smoke else scale.kinds(n, ["int8"])[0].params["nlist"]
    kind = scale.Kind("int8", "l2", "ivf-flat", {"nlist": nlist}, "int8")
    with tempfile.TemporaryDirectory(prefix="ivf-training-") as tmp:
        root = Path(tmp)
        data, q = scale.generate(root / "data.npy", n, queries)
        exact = scale.truth(data, q, "l2")
        started = time.perf_counter()
        stores, found = [], {}
        for name, retrain in (("first", False), ("retrained", True)):
            store, collection = build(root, name, data, nlist, retrain=retrain)
            stores.append(store)
            hits = collection.search(q, 10)
            found[name] = (collection, hits.parameters, scale.recall([[int(h.id) for h in r] for r in hits[0]], exact))
        raw = scale.raw_index(kind, data)
        print(f"built in {time.perf_counter() - started:.0f} s (n {n}, nlist {nlist})", flush=True)
        indexes = {name: c._contents.index.index for name, (c, _, _) in found.items()} | {"raw": raw}
        probes = sorted({int(p["nprobe"]) for _, p, _ in found.values()})
        for name, index in indexes.items():
            sizes = list_sizes(index)
            codes = ", ".join(f"nprobe {p}: {scanned(index, q, p):,.0f}" for p in probes)
            line = f"{name:9s} imbalance {imbalance(sizes):.3f}, largest list {sizes.max():,}, codes scanned {codes}"
            if name in found:
                _, parameters, r = found[name]
                line += f"; at its defaults {parameters}, recall@10 {r:.4f}"
            print(line, flush=True)
        p = int(found["retrained"][1]["nprobe"])
        f = {name: imbalance(list_sizes(index)) for name, index in indexes.items()}
        s = {name: scanned(index, q, p) for name, index in indexes.items()}
        for store in stores:
            store.close_all(checkpoint=False)
    print(
        f"ivf_training: n {n}, nlist {nlist}, imbalance first {f['first']:.2f} retrained {f['retrained']:.2f} raw "
        f"{f['raw']:.2f}, codes scanned at nprobe {p} first {s['first']:.0f} retrained {s['retrained']:.0f} raw "
        f"{s['raw']:.0f}, recall@10 first {found['first'][2]:.3f} retrained {found['retrained'][2]:.3f}"
    )


if __name__ == "__main__":
    main()
