"""Retrieval evaluation shared by the retrieval benchmarks and the keyword index's tests: BEIR files in, TREC run
files out, nDCG@k and recall@k, and the reference BM25 (bm25s in-process).

Metrics follow trec_eval / ranx / pytrec_eval: nDCG@k with gain 2^rel - 1 and discount log2(rank + 1) (rank from 1),
the ideal ranking built from every judged document of the query; recall@k counts documents judged relevant (rel > 0)
among the first k; both are averaged over the queries that have at least one relevant judgment. A run is
{query id: [(doc id, score), ...] best first}; ties keep the order given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Run = Mapping[str, Sequence[tuple[str, float]]]
Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class Corpus:
    """A BEIR corpus: document ids and the text each is searched by (title + text)."""

    ids: list[str]
    texts: list[str]


def find_cranfield(start: Path | None = None) -> Path | None:
    """The shared Cranfield folder: `shared/data/cranfield` beside this checkout or beside any folder above it."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data" / "cranfield"
        if (candidate / "corpus.jsonl").is_file():
            return candidate
    return None


def document_text(title: str, text: str) -> str:
    """What a document is searched by: title and text joined by a space, as the README's reference figures were
    measured (Cranfield's text repeats its title, so the title counts twice)."""
    return " ".join(part for part in (title.strip(), text.strip()) if part)


def load_corpus(path: Path) -> Corpus:
    ids, texts = [], []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                ids.append(str(row["_id"]))
                texts.append(document_text(row.get("title", ""), row.get("text", "")))
    return Corpus(ids, texts)


def load_queries(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return {str(row["_id"]): row["text"] for row in rows}


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines):
            parts = line.split()
            if not parts or (n == 0 and not parts[-1].lstrip("-").isdigit()):  # the header line
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def ndcg_at(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k over the judged queries (a judged query missing from the run scores 0)."""
    scores = []
    for qid, judged in qrels.items():
        if not any(rel > 0 for rel in judged.values()):
            continue
        ranked = run.get(qid, ())
        dcg = sum((2 ** judged.get(doc, 0) - 1) / math.log2(rank + 2) for rank, (doc, _) in enumerate(ranked[:k]))
        ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:k]
        idcg = sum((2**rel - 1) / math.log2(rank + 2) for rank, rel in enumerate(ideal))
        scores.append(dcg / idcg)
    return sum(scores) / len(scores) if scores else 0.0


def recall_at(run: Run, qrels: Qrels, k: int = 100) -> float:
    """Mean recall@k over the queries with at least one relevant document."""
    scores = []
    for qid, judged in qrels.items():
        relevant = {doc for doc, rel in judged.items() if rel > 0}
        if relevant:
            found = {doc for doc, _ in run.get(qid, ())[:k]}
            scores.append(len(found & relevant) / len(relevant))
    return sum(scores) / len(scores) if scores else 0.0


def write_trec(path: Path, run: Run, tag: str) -> None:
    """A TREC run file (`qid Q0 docid rank score tag`, rank from 1), the format trec_eval and ranx read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for qid, ranked in run.items():
            for rank, (doc, score) in enumerate(ranked, start=1):
                out.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")


def read_trec(path: Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run file back as a run, each query's documents in rank order."""
    rows: dict[str, list[tuple[int, str, float]]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            qid, _, doc, rank, score, _tag = line.split()
            rows.setdefault(qid, []).append((int(rank), doc, float(score)))
    return {qid: [(doc, score) for _, doc, score in sorted(ranked)] for qid, ranked in rows.items()}


def reference_bm25(corpus: Corpus, queries: Mapping[str, str], k: int = 100) -> dict[str, list[tuple[str, float]]]:
    """The README's reference BM25: bm25s defaults (Lucene variant, k1 1.5, b 0.75), bm25s's English stopwords,
    PyStemmer's English (Snowball) stemmer. Queries with no term left after analysis get an empty list."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    tokens = bm25s.tokenize(corpus.texts, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever.index(tokens, show_progress=False)
    run: dict[str, list[tuple[str, float]]] = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        if not tokens.ids[0]:
            run[qid] = []
            continue
        docs, scores = retriever.retrieve(tokens, k=min(k, len(corpus.ids)), show_progress=False)
        run[qid] = [(corpus.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
    return run


def fused_reference(runs: Iterable[Run], k: int = 60) -> dict[str, list[tuple[str, float]]]:
    """Reciprocal-rank fusion of whole runs (for checking the README's table; the product's fusion is in
    embedsvc.core.collections.fusion)."""
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for qid, ranked in run.items():
            scores = fused.setdefault(qid, {})
            for rank, (doc, _) in enumerate(ranked, start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return {qid: sorted(scores.items(), key=lambda p: -p[1]) for qid, scores in fused.items()}


def synthetic(corpus: Corpus, n: int, seed: int = 7) -> list[str]:
    """n documents of words drawn from a corpus's word frequencies, lengths drawn from its document lengths
    (seeded): text at scale with a real vocabulary's Zipf curve, for speed, not quality."""
    rng = np.random.default_rng(seed)
    words = [w for text in corpus.texts for w in text.split()]
    vocabulary, counts = np.unique(np.array(words), return_counts=True)
    lengths = np.array([len(text.split()) for text in corpus.texts if text])
    drawn = rng.choice(len(vocabulary), size=int(lengths.mean() * n * 1.2), p=counts / counts.sum())
    out, at = [], 0
    for size in rng.choice(lengths, n):
        out.append(" ".join(vocabulary[drawn[at : at + size]]))
        at += size
    return out
