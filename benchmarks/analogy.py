"""Analogy throughput: the service (batched, over gRPC) against gensim and raw FAISS, on minilm-static.

Evaluates gensim's full questions-words.txt three ways in one run and prints one summary line last:
  - the service: EvaluateAnalogies through the Python client, against `embedsvc serve` in a subprocess;
  - gensim: KeyedVectors.evaluate_word_analogies in-process on the same vectors;
  - raw FAISS: IndexFlatIP.search over the same unit-normalised vectors, all questions in one batch (queries built
    with numpy, answers counted with gensim's rules), the floor any FAISS-based server pays.
Throughput is answered questions (OOV questions are skipped by all three) per second; medians of --repeats runs.
The service and gensim must report the same accuracy, or the benchmark fails.

    python benchmarks/analogy.py [--data-dir DIR] [--repeats 3] [--smoke]

--smoke: the first 600 questions (two sections), one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import gensim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, cache_dir, serve, sharing_models
from embedsvc.backends.word_vectors import load_word_vectors
from embedsvc.client import Client
from embedsvc.settings import Settings

QUESTIONS = Path(gensim.__file__).parent / "test" / "test_data" / "questions-words.txt"


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def faiss_evaluate(kv, index, questions):
    """gensim's counting rules over one raw FAISS batch search: a FAISS user's fastest honest path."""
    ok_vocab = {k.upper(): i for i, k in reversed(list(enumerate(kv.index_to_key[:300_000])))}
    asked = []
    for q in questions:
        ids = [ok_vocab.get(w.upper(), -1) for w in q]
        if min(ids) >= 0:
            asked.append((ids, q[3].upper()))
    unit = index.reconstruct_n(0, index.ntotal)
    ids = np.asarray([a[0] for a in asked])
    means = unit[ids[:, 1]] + unit[ids[:, 2]] - unit[ids[:, 0]]
    queries = np.ascontiguousarray(means / np.linalg.norm(means, axis=1, keepdims=True), dtype=np.float32)
    _, labels = index.search(queries, 8)
    correct = 0
    for (abc, expected), row in zip(asked, labels, strict=True):
        sims = [i for i in row if i not in abc[:3]][:5]
        ignore = {kv.index_to_key[i].upper() for i in abc[:3]}
        predicted = None
        for i in sims:
            predicted = kv.index_to_key[i].upper()
            if predicted not in ignore:
                break
        correct += predicted == expected
    return correct, len(asked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="server data dir (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3)
    add_smoke(parser)
    args = parser.parse_args()
    data_dir = cache_dir(args.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="embedsvc-analogy-"))
    questions_file = QUESTIONS
    if args.smoke:
        args.repeats = 1
        questions_file = tmp / "questions-smoke.txt"
        questions_file.write_text("".join(QUESTIONS.read_text().splitlines(keepends=True)[:603]))

    space = load_word_vectors(Settings().all_models()[0], data_dir)  # distils once into data_dir if needed
    kv = space.kv
    data = questions_file.read_bytes()
    questions = [tuple(line.split()) for line in data.decode().splitlines() if not line.startswith(":")]
    questions = [q for q in questions if len(q) == 4]

    with serve(sharing_models(tmp / "data", data_dir)) as target, Client(target, timeout=600) as client:
        client.evaluate_analogies("minilm-static", data)  # warm-up
        service_s, report = timed(lambda: client.evaluate_analogies("minilm-static", data), args.repeats)
    answered = report.total.correct + report.total.incorrect

    gensim_s, (gensim_score, sections) = timed(lambda: kv.evaluate_word_analogies(str(questions_file)), args.repeats)
    gensim_answered = len(sections[-1]["correct"]) + len(sections[-1]["incorrect"])

    index = faiss.IndexFlatIP(space.dimension)
    index.add(np.ascontiguousarray(space.unit))
    faiss_s, (faiss_correct, faiss_answered) = timed(lambda: faiss_evaluate(kv, index, questions), args.repeats)

    if (report.total.accuracy, answered) != (gensim_score, gensim_answered):
        raise SystemExit(f"accuracy differs: service {report.total.accuracy} on {answered}, gensim {gensim_score}")
    service_qps, gensim_qps, faiss_qps = answered / service_s, answered / gensim_s, faiss_answered / faiss_s
    print(f"questions answered: {answered} of {report.questions} ({report.oov_questions} OOV skipped)")
    print(f"service  {service_s:7.3f} s  {service_qps:9.0f} q/s  accuracy {report.total.accuracy:.4f}")
    print(f"gensim   {gensim_s:7.3f} s  {gensim_qps:9.0f} q/s  accuracy {gensim_score:.4f}")
    print(f"faiss    {faiss_s:7.3f} s  {faiss_qps:9.0f} q/s  accuracy {faiss_correct / faiss_answered:.4f}")
    print(f"service / faiss: {service_qps / faiss_qps:.2f}")
    print(
        f"analogy: service {service_qps:.0f} q/s, gensim {gensim_qps:.0f} q/s, faiss {faiss_qps:.0f} q/s, "
        f"ratio {service_qps / gensim_qps:.1f}, accuracy {report.total.accuracy:.4f}"
    )


if __name__ == "__main__":
    main()
