"""The adapters' cost: gensim code through RemoteKeyedVectors, LangChain code through EmbedsvcVectorStore.

- gensim: `most_similar(positive=[b, c], negative=[a], topn=5)` for the first 3,000 questions of questions-words.txt
  answerable by minilm-static, one call per question as gensim code does it: through RemoteKeyedVectors against
  `embedsvc serve` in a subprocess, and in-process gensim on the same vectors (the answers must agree). Also the
  adapter's overhead over the client call it makes (client.arithmetic with the same terms).
- LangChain: `similarity_search(query, k=4)` on a collection bound to minilm, against the same two client calls it
  wraps (embed_texts, then search by vector).
Rounds are interleaved; medians of --repeats rounds. Last line:
`adapters: gensim per-call ratio G, langchain overhead L ms` (G: remote over in-process throughput).

    python benchmarks/adapters.py [--data-dir DIR] [--repeats 3] [--questions 3000] [--smoke]

--smoke: 100 questions, 10 searches over 20 texts, one round.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gensim

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, cache_dir, serve, sharing_models

importlib.import_module("embedsvc.backends")  # before anything imports transformers (torchvision guard)
from embedsvc.adapters.keyedvectors import RemoteKeyedVectors  # noqa: E402
from embedsvc.adapters.langchain import EmbedsvcVectorStore  # noqa: E402
from embedsvc.backends.word_vectors import load_word_vectors  # noqa: E402
from embedsvc.client import Client  # noqa: E402
from embedsvc.settings import Settings  # noqa: E402

QUESTIONS = Path(gensim.__file__).parent / "test" / "test_data" / "questions-words.txt"
LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"


def per_call_s(fn, calls) -> float:
    start = time.perf_counter()
    for call in calls:
        fn(call)
    return (time.perf_counter() - start) / len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--searches", type=int, default=300)
    add_smoke(parser)
    args = parser.parse_args()
    n_texts, warm_questions, warm_searches = 200, 200, 20
    if args.smoke:
        args.repeats, args.questions, args.searches = 1, 100, 10
        n_texts, warm_questions, warm_searches = 20, 10, 2
    data_dir = cache_dir(args.data_dir)

    local = load_word_vectors(Settings().all_models()[0], data_dir).kv
    questions = []
    for line in QUESTIONS.read_text().splitlines():
        words = line.split()
        if len(words) == 4 and not line.startswith(":") and all(w in local.key_to_index for w in words[:3]):
            questions.append(words[:3])
        if len(questions) == args.questions:
            break
    texts = [line[:300] for line in LEE.read_text(encoding="utf-8").splitlines()[:n_texts]]
    queries = [t[:60] for t in texts[: args.searches]]

    server_dir = sharing_models(Path(tempfile.mkdtemp(prefix="embedsvc-adapters-")) / "data", data_dir)
    with serve(server_dir) as target, Client(target, timeout=600) as client:
        remote = RemoteKeyedVectors(client, "minilm-static")
        store = EmbedsvcVectorStore(client, "bench-langchain", model="minilm")
        store.add_texts(texts, ids=[str(i) for i in range(len(texts))])

        def gensim_local(q):
            return local.most_similar(positive=[q[1], q[2]], negative=[q[0]], topn=5)

        def gensim_remote(q):
            return remote.most_similar(positive=[q[1], q[2]], negative=[q[0]], topn=5)

        def client_direct(q):
            return client.arithmetic("minilm-static", [[(1.0, q[1]), (1.0, q[2]), (-1.0, q[0])]], top_n=5)

        def langchain(query):
            return store.similarity_search(query, k=4)

        def two_calls(query):
            vector = client.embed_texts("minilm", [query]).vectors[0]
            return client.search("bench-langchain", vector=vector, k=4)

        for q in questions[:warm_questions]:  # warm-up, and the answers must be gensim's
            got, want = gensim_remote(q), gensim_local(q)
            if [w for w, _ in got] != [w for w, _ in want]:
                raise SystemExit(f"answers differ for {q}: remote {got}, gensim {want}")
        for query in queries[:warm_searches]:
            langchain(query), two_calls(query)

        rounds: dict[str, list[float]] = {k: [] for k in ("local", "remote", "client", "langchain", "direct")}
        for _ in range(args.repeats):
            rounds["local"].append(per_call_s(gensim_local, questions))
            rounds["remote"].append(per_call_s(gensim_remote, questions))
            rounds["client"].append(per_call_s(client_direct, questions))
            rounds["langchain"].append(per_call_s(langchain, queries))
            rounds["direct"].append(per_call_s(two_calls, queries))
        client.delete_collection("bench-langchain")
    med = {k: statistics.median(v) for k, v in rounds.items()}
    ratio = med["local"] / med["remote"]
    gensim_overhead_ms = (med["remote"] - med["client"]) * 1e3
    langchain_overhead_ms = (med["langchain"] - med["direct"]) * 1e3
    print(f"questions: {len(questions)}, searches: {len(queries)}, rounds: {args.repeats}")
    print(f"gensim in-process   {1 / med['local']:8.0f} calls/s  {med['local'] * 1e3:6.3f} ms/call")
    print(f"RemoteKeyedVectors  {1 / med['remote']:8.0f} calls/s  {med['remote'] * 1e3:6.3f} ms/call")
    print(f"client.arithmetic   {1 / med['client']:8.0f} calls/s  (adapter overhead {gensim_overhead_ms:.3f} ms)")
    print(f"langchain search    {med['langchain'] * 1e3:6.3f} ms/call, the two client calls {med['direct'] * 1e3:6.3f}")
    print(f"adapters: gensim per-call ratio {ratio:.2f}, langchain overhead {langchain_overhead_ms:.3f} ms")


if __name__ == "__main__":
    main()
