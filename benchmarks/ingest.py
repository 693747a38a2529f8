"""Durable ingest rate: 100k x 256 vectors streamed into a FLAT collection, every batch fsync'd before its ack.

    python benchmarks/ingest.py [--n 100000] [--batch-size 2000] [--smoke]

Measured end to end through the Python client (building messages included), against `embedsvc serve` in a
subprocess (no models: none is needed). Prints last: `ingest: V vectors/s durable (N vectors, batch B, S s)`.
--smoke: 2,000 vectors in batches of 500, one run.
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
from benchmarks._serve import add_smoke, serve
from embedsvc.client import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.batch_size, args.repeats = 2000, 500, 1
    x = np.random.default_rng(0).normal(size=(args.n, args.dim)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(args.n)]
    times = []
    with tempfile.TemporaryDirectory(prefix="embedsvc-ingest-") as tmp:
        config = Path(tmp) / "ingest.toml"
        config.write_text("[server]\nembedded_models = false\n")
        with serve(Path(tmp) / "data", "--config", str(config)) as target, Client(target, timeout=600) as client:
            for r in range(args.repeats):
                name = f"ingest{r}"
                client.create_collection(name, dimension=args.dim, metric="ip")
                start = time.perf_counter()
                response = client.upsert_stream(name, ids, x, batch_size=args.batch_size)
                times.append(time.perf_counter() - start)
                assert response.count == args.n
                client.delete_collection(name)
    seconds = statistics.median(times)
    print(f"runs: {', '.join(f'{t:.2f} s' for t in times)}")
    print(
        f"ingest: {args.n / seconds:.0f} vectors/s durable ({args.n} vectors, batch {args.batch_size}, {seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
