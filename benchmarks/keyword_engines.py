"""Keyword engines measured for the collections' keyword index (docs/architecture.md, "Keyword search: the decision").

Candidates, each behind the operations a collection needs (bulk build, add / replace / delete one document and see it
at once, top-k search with an optional allowed-key set, save to a directory and open again):
  - tantivy (the Rust engine's official bindings), its own analyzer: \\w\\w+ tokens (as bm25s and scikit-learn),
    Unicode lowercase, Lucene's English stopwords, Snowball English stemmer (token for token the reference's); in RAM,
    a commit and a reader reload after each write; saving is not possible (a RAM index cannot be written out);
  - tantivy-disk: the same on disk (MmapDirectory); saving = hard links of its write-once files;
  - bm25s (sparse matrices, numpy backend) with PyStemmer: the reference; static, so a write rebuilds the index;
  - sqlite-fts5: SQLite's full-text index (bm25()), fed the reference analyzer's tokens, in memory;
  - embedsvc: the product's keyword index (embedsvc.index.keyword: tantivy in memory, filtered by growing fetch).
Quality: nDCG@10 and recall@100 on the Cranfield dev split (and the reference figures). Speed: bulk indexing rate,
single-query p50 (k = 100) unfiltered and with an allowed set of 10% and 0.1% of the documents, one write made
searchable, save and open, on Cranfield and on a synthetic corpus of --n documents drawn from Cranfield's word
frequencies and document lengths (seeded). Memory: resident-set growth of a fresh process that builds the index.
Each engine runs in its own process. Last line: `keyword-engines: tantivy nDCG N, bm25s nDCG B, tantivy p50 T ms,
bm25s p50 S ms (at --n docs)`.

    python benchmarks/keyword_engines.py [--n 100000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ireval

TOKEN = re.compile(r"(?u)\b\w\w+\b")
# Lucene's English stopwords (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET); bm25s's "en" list and tantivy's are the same.
STOPWORDS = frozenset(
    [
        *("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no"),
        *("not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this"),
        *("to", "was", "will", "with"),
    ]
)


class Analyzer:
    """The reference analyzer: \\w\\w+ tokens, lowercased, Lucene's English stopwords out, PyStemmer English."""

    def __init__(self) -> None:
        import Stemmer

        self.stem = Stemmer.Stemmer("english").stemWords

    def __call__(self, text: str) -> list[str]:
        return self.stem([t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS])


class Engine:
    name = ""

    def build(self, keys: Sequence[int], texts: Sequence[str]) -> None: ...
    def upsert(self, key: int, text: str) -> None: ...
    def delete(self, key: int) -> None: ...
    def search(self, text: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]: ...
    def save(self, directory: Path) -> None: ...
    def load(self, directory: Path) -> None: ...


class Tantivy(Engine):
    name = "tantivy"

    def __init__(self) -> None:
        import tantivy

        self.t = tantivy
        self.native = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(r"\w\w+"))
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stopword("english"))
            .filter(tantivy.Filter.stemmer("english"))
            .build()
        )
        builder = tantivy.SchemaBuilder()
        # i64: a u64 key is not matched by a Python int term, so deleting by it would silently do nothing
        builder.add_integer_field("key", stored=False, indexed=True, fast=True)
        builder.add_text_field("body", stored=False, tokenizer_name="body", index_option="freq")
        self.schema = builder.build()
        self._open(None)

    def _open(self, path: Path | None) -> None:
        t = self.t
        self.index = t.Index(self.schema) if path is None else t.Index.open(str(path))
        self.index.register_tokenizer("body", self.native)
        self.index.config_reader(reload_policy="manual")
        self.writer = self.index.writer(heap_size=64_000_000, num_threads=1)

    def build(self, keys: Sequence[int], texts: Sequence[str]) -> None:
        for key, text in zip(keys, texts, strict=True):
            self.writer.add_document(self.t.Document(key=[key], body=[text]))
        self._commit()

    def _commit(self) -> None:
        self.writer.commit()
        self.index.reload()

    def upsert(self, key: int, text: str) -> None:
        self.writer.delete_documents_by_term("key", key)
        self.writer.add_document(self.t.Document(key=[key], body=[text]))
        self._commit()

    def delete(self, key: int) -> None:
        self.writer.delete_documents_by_term("key", key)
        self._commit()

    def search(self, text: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        t = self.t
        terms = self.native.analyze(text)
        if not terms:
            return []
        query = t.Query.boolean_query([(t.Occur.Should, t.Query.term_query(self.schema, "body", w)) for w in terms])
        searcher = self.index.searcher()
        if allowed is not None:  # the allowed keys as a term set, required beside the scored terms
            keyset = t.Query.const_score_query(t.Query.term_set_query(self.schema, "key", allowed.tolist()), 0.0)
            query = t.Query.boolean_query([(t.Occur.Must, keyset), (t.Occur.Must, query)])
        hits = searcher.search(query, k, count=False).hits
        keys = searcher.fast_field_values("key", [address for _, address in hits])
        return [(int(key), float(score)) for (score, _), key in zip(hits, keys, strict=True)]

    def save(self, directory: Path) -> None:
        # A RAM index cannot be written out; a saved index is a disk index built from the same documents.
        raise NotImplementedError

    def load(self, directory: Path) -> None:
        raise NotImplementedError


class TantivyDisk(Tantivy):
    """tantivy on disk: the index lives in a directory; save = hard links of its (write-once) files."""

    name = "tantivy-disk"

    def __init__(self, root: Path) -> None:
        self.root = root
        super().__init__()

    def _open(self, path: Path | None) -> None:
        t = self.t
        if path is None:
            path = self.root / "live"
            path.mkdir(parents=True)
            self.index = t.Index(self.schema, path=str(path))
        else:
            self.index = t.Index.open(str(path))
        self.path = path
        self.index.register_tokenizer("body", self.native)
        self.index.config_reader(reload_policy="manual")
        self.writer = self.index.writer(heap_size=64_000_000, num_threads=1)

    def save(self, directory: Path) -> None:
        import os

        self.writer.commit()
        self.writer.wait_merging_threads()  # a merge must not delete files while they are linked
        self.writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        directory.mkdir(parents=True)
        for file in self.path.iterdir():
            if file.name not in (".tantivy-writer.lock", ".tantivy-meta.lock"):
                os.link(file, directory / file.name)

    def load(self, directory: Path) -> None:
        del self.writer, self.index
        self._open(directory)


class Bm25s(Engine):
    name = "bm25s"

    def __init__(self) -> None:
        import bm25s

        self.bm25s = bm25s
        self.analyze = Analyzer()
        self.docs: dict[int, list[str]] = {}

    def build(self, keys: Sequence[int], texts: Sequence[str]) -> None:
        self.docs = {key: self.analyze(text) for key, text in zip(keys, texts, strict=True)}
        self._index()

    def _index(self) -> None:
        self.keys = np.fromiter(self.docs, np.int64, len(self.docs))
        self.retriever = self.bm25s.BM25()
        self.retriever.index(list(self.docs.values()), show_progress=False)
        self.row_of = {int(k): r for r, k in enumerate(self.keys)}

    def upsert(self, key: int, text: str) -> None:
        self.docs[key] = self.analyze(text)
        self._index()  # a static index: every change rebuilds it

    def delete(self, key: int) -> None:
        self.docs.pop(key, None)
        self._index()

    def search(self, text: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        terms = [w for w in self.analyze(text) if w in self.retriever.vocab_dict]
        if not terms:
            return []
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self.keys), np.float32)
            mask[[self.row_of[int(a)] for a in allowed if int(a) in self.row_of]] = 1.0
        rows, scores = self.retriever.retrieve(
            [terms], k=min(k, len(self.keys)), show_progress=False, weight_mask=mask, n_threads=1
        )
        return [(int(self.keys[r]), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]

    def save(self, directory: Path) -> None:
        self.retriever.save(str(directory))
        np.save(directory / "keys.npy", self.keys)

    def load(self, directory: Path) -> None:
        self.retriever = self.bm25s.BM25.load(str(directory), mmap=True)
        self.keys = np.load(directory / "keys.npy")
        self.row_of = {int(k): r for r, k in enumerate(self.keys)}


class Fts5(Engine):
    name = "sqlite-fts5"

    def __init__(self) -> None:
        self.analyze = Analyzer()
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("CREATE VIRTUAL TABLE docs USING fts5(body, tokenize = 'unicode61 remove_diacritics 0')")

    def build(self, keys: Sequence[int], texts: Sequence[str]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT INTO docs(rowid, body) VALUES (?, ?)",
                ((key, " ".join(self.analyze(text))) for key, text in zip(keys, texts, strict=True)),
            )

    def upsert(self, key: int, text: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM docs WHERE rowid = ?", (key,))
            self.db.execute("INSERT INTO docs(rowid, body) VALUES (?, ?)", (key, " ".join(self.analyze(text))))

    def delete(self, key: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM docs WHERE rowid = ?", (key,))

    def search(self, text: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        terms = self.analyze(text)
        if not terms:
            return []
        match = " OR ".join(f'"{w}"' for w in terms)
        if allowed is None:
            rows = self.db.execute(
                "SELECT rowid, bm25(docs) FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?", (match, k)
            )
        else:
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS allowed(key INTEGER PRIMARY KEY)")
            self.db.execute("DELETE FROM allowed")
            self.db.executemany("INSERT INTO allowed VALUES (?)", ((int(a),) for a in allowed))
            rows = self.db.execute(
                "SELECT rowid, bm25(docs) FROM docs WHERE docs MATCH ? AND rowid IN (SELECT key FROM allowed) "
                "ORDER BY bm25(docs) LIMIT ?",
                (match, k),
            )
        return [(int(key), -float(score)) for key, score in rows]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        target = sqlite3.connect(directory / "fts.sqlite")
        self.db.backup(target)
        target.close()

    def load(self, directory: Path) -> None:
        source = sqlite3.connect(directory / "fts.sqlite")
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        source.backup(self.db)
        source.close()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


class Product(Engine):
    """The product's keyword index (embedsvc.index.keyword): tantivy in memory, filters by growing fetch."""

    name = "embedsvc"

    def __init__(self) -> None:
        from embedsvc.index.keyword.index import KeywordIndex

        self.index = KeywordIndex("english")

    def build(self, keys: Sequence[int], texts: Sequence[str]) -> None:
        self.index.build([str(k) for k in keys], texts)

    def upsert(self, key: int, text: str) -> None:
        self.index.upsert([str(key)], [text])

    def delete(self, key: int) -> None:
        self.index.delete([str(key)])

    def search(self, text: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        from embedsvc.index.keyword.index import Allowed

        test = None
        if allowed is not None:
            keys = set(allowed.tolist())  # a collection maps hit ids to slots and reads its filter's mask
            test = Allowed(
                lambda ids: np.array([int(i) in keys for i in ids]),
                share=len(keys) / max(len(self.index), 1),
                ids=lambda: (str(k) for k in keys),
            )
        hits = self.index.search(text, k, test)
        return [(int(i), float(s)) for i, s in zip(hits.ids, hits.scores, strict=True)]

    def save(self, directory: Path) -> None:
        raise NotImplementedError


def make(name: str, root: Path) -> Engine:
    if name == "embedsvc":
        return Product()
    if name == "tantivy":
        return Tantivy()
    if name == "tantivy-disk":
        return TantivyDisk(root)
    if name == "bm25s":
        return Bm25s()
    return Fts5()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_corpus(engine: Engine, label: str, docs: list[str], data: dict, writes: int) -> dict[str, object]:
    """Every figure of one engine on one corpus (ids are positions); `data` holds the Cranfield run's inputs."""
    out: dict[str, object] = {}
    rng = np.random.default_rng(3)
    texts = data["texts"]
    rss = rss_bytes()
    keys = list(range(len(docs)))
    build = timed(lambda: engine.build(keys, docs))
    out[f"{label}_docs"] = len(docs)
    out[f"{label}_index_docs_per_s"] = round(len(docs) / build)
    out[f"{label}_rss_mib"] = round((rss_bytes() - rss) / 2**20, 1)
    if label == "cranfield":
        corpus, queries, qrels = data["corpus"], data["queries"], data["qrels"]
        run = {
            qid: [(corpus.ids[key], score) for key, score in engine.search(text, 100)] for qid, text in queries.items()
        }
        out["ndcg10"] = round(ireval.ndcg_at(run, qrels), 4)
        out["recall100"] = round(ireval.recall_at(run, qrels), 4)
    for share in (None, 0.1, 0.001):
        allowed = None
        if share is not None:
            allowed = np.sort(rng.choice(len(docs), max(1, int(share * len(docs))), replace=False))
        laps = [timed(lambda text=text, allowed=allowed: engine.search(text, 100, allowed)) for text in texts]
        out[f"{label}_p50_ms" + ("" if share is None else f"_allowed_{share:g}")] = round(p50_ms(laps), 2)
    check = engine.search(texts[0], 100, np.arange(0, len(docs), 7))
    out[f"{label}_filter_exact"] = all(key % 7 == 0 for key, _ in check)
    upserts = [
        timed(lambda key=int(key): engine.upsert(key, docs[(key + 1) % len(docs)]))
        for key in rng.choice(len(docs), writes)
    ]
    out[f"{label}_upsert_visible_ms"] = round(p50_ms(upserts), 2)
    engine.upsert(len(docs), docs[0] + " zyzzogeton")
    found = any(key == len(docs) for key, _ in engine.search("zyzzogeton", 10))
    engine.delete(len(docs))
    gone = not any(key == len(docs) for key, _ in engine.search("zyzzogeton", 10))
    out[f"{label}_add_then_delete_ok"] = found and gone
    try:
        saved = Path(data["root"]) / label / "saved"
        out[f"{label}_save_s"] = round(timed(lambda: engine.save(saved)), 3)
        out[f"{label}_disk_mib"] = round(sum(f.stat().st_size for f in saved.rglob("*")) / 2**20, 1)
        before = engine.search(texts[0], 10)
        out[f"{label}_open_s"] = round(timed(lambda: engine.load(saved)), 3)
        out[f"{label}_reopened_same"] = engine.search(texts[0], 10) == before
    except NotImplementedError:
        out[f"{label}_save_s"] = "n/a (rebuild from the checkpoint's texts)"
    return out


def measure(name: str, n: int, queries_limit: int, writes: int) -> dict[str, object]:
    folder = ireval.find_cranfield()
    assert folder is not None, "shared/data/cranfield not found"
    corpus = ireval.load_corpus(folder / "corpus.jsonl")
    queries = ireval.load_queries(folder / "queries-dev.jsonl")
    data = {
        "corpus": corpus,
        "queries": queries,
        "qrels": ireval.load_qrels(folder / "qrels-dev.tsv"),
        "texts": list(queries.values())[:queries_limit],
    }
    out: dict[str, object] = {"engine": name}
    with tempfile.TemporaryDirectory() as tmp:
        data["root"] = tmp
        out |= measure_corpus(make(name, Path(tmp) / "cranfield"), "cranfield", corpus.texts, data, writes)
        if n:
            # bm25s rebuilds its whole index on every write: three are enough to time it at scale.
            many = min(writes, 3) if name == "bm25s" else writes
            docs = ireval.synthetic(corpus, n)
            out |= measure_corpus(make(name, Path(tmp) / "synthetic"), "synthetic", docs, data, many)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="synthetic corpus size (0: Cranfield only)")
    parser.add_argument("--engines", default="embedsvc,tantivy,tantivy-disk,bm25s,sqlite-fts5")
    parser.add_argument("--writes", type=int, default=20, help="single upserts timed per corpus")
    parser.add_argument("--smoke", action="store_true", help="seconds: 2,000 synthetic documents, 10 queries")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # one engine, in a child process
    args = parser.parse_args()
    queries_limit = 10 if args.smoke else 1000
    n, writes = (2000, 3) if args.smoke else (args.n, args.writes)
    if args.engine:
        print(json.dumps(measure(args.engine, n, queries_limit, writes)))
        return
    data = ireval.find_cranfield()
    if data is None:
        sys.exit("shared/data/cranfield not found beside this checkout")
    corpus = ireval.load_corpus(data / "corpus.jsonl")
    qrels = ireval.load_qrels(data / "qrels-dev.tsv")
    reference = ireval.reference_bm25(corpus, ireval.load_queries(data / "queries-dev.jsonl"))
    print(
        f"reference bm25s: nDCG@10 {ireval.ndcg_at(reference, qrels):.4f}, "
        f"recall@100 {ireval.recall_at(reference, qrels):.4f}"
    )
    results: dict[str, dict[str, object]] = {}
    for name in args.engines.split(","):
        child = [sys.executable, __file__, "--engine", name, "--n", str(args.n), "--writes", str(args.writes)]
        done = subprocess.run(child + (["--smoke"] if args.smoke else []), capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(results[name]))
    tantivy, bm25 = results.get("tantivy", {}), results.get("bm25s", {})
    docs = n if n else len(corpus.ids)
    label = "synthetic" if n else "cranfield"
    print(
        f"keyword-engines: tantivy nDCG {tantivy.get('ndcg10')}, bm25s nDCG {bm25.get('ndcg10')}, "
        f"tantivy p50 {tantivy.get(f'{label}_p50_ms')} ms, bm25s p50 {bm25.get(f'{label}_p50_ms')} ms (at {docs} docs)"
    )


if __name__ == "__main__":
    main()
