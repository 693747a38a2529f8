"""Commands over texts: `index-texts` (documents into a collection bound to a text model) and `rerank` (texts ordered by
their relevance to a query, by a cross-encoder)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from embedsvc.cli.output import clip, emit, fail, provenance


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    it = sub.add_parser("index-texts", parents=[common], help="add documents to a collection bound to a text model")
    it.add_argument("collection")
    it.add_argument(
        "file",
        type=Path,
        help='one document a line (ids 0..n-1), or JSONL: {"id": ..., "text": ..., "metadata": {...}} a line',
    )
    it.add_argument("--batch-size", type=int, default=64, help="documents per stream message")
    it.set_defaults(handler=index_texts)

    rr = sub.add_parser(
        "rerank", parents=[common], help="order texts by their relevance to a query, with a cross-encoder model"
    )
    rr.add_argument("model", help="a cross-encoder (GetModel: reranks)")
    rr.add_argument("query")
    rr.add_argument("texts", nargs="*", metavar="TEXT", help="the texts to score (or --file)")
    rr.add_argument("--file", type=Path, help="texts to score, one a line (blank lines skipped)")
    rr.add_argument("--top-n", type=int, default=0, help="only the best N (default: every text)")
    rr.add_argument("--raw-scores", action="store_true", help="the model's logits instead of their sigmoid")
    rr.add_argument("--truncate", action="store_true", help="truncate pairs longer than the model reads (else refused)")
    rr.set_defaults(handler=rerank)


def read_documents(path: Path) -> tuple[list[str], list[str], list[dict[str, Any] | None]]:
    """(ids, texts, metadata) from one document a line, or JSONL objects with "text" and optional "id", "metadata".

    Plain files: ids are line numbers 0..n-1 and blank lines are skipped (they keep their number). A file is JSONL
    when its name ends in .jsonl or its first non-blank line starts with "{"."""
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next((line for line in lines if line.strip()), "")
    ids: list[str] = []
    texts: list[str] = []
    metadata: list[dict[str, Any] | None] = []
    if path.suffix == ".jsonl" or first.lstrip().startswith("{"):
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n + 1}: not JSON: {exc.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f'line {n + 1}: expected an object with a "text" string')
            meta = record.get("metadata")
            if meta is not None and not isinstance(meta, dict):
                raise ValueError(f'line {n + 1}: "metadata" must be an object')
            ids.append(str(record.get("id", n)))
            texts.append(record["text"])
            metadata.append(meta)
    else:
        for n, line in enumerate(lines):
            if line.strip():
                ids.append(str(n))
                texts.append(line)
                metadata.append(None)
    return ids, texts, metadata


def index_texts(args: argparse.Namespace, client: Any) -> None:
    from tqdm import tqdm

    try:
        ids, texts, metadata = read_documents(args.file)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"cannot read {args.file}: {exc}")
    if not texts:
        fail(f"{args.file} has no documents")
    with tqdm(total=len(ids), unit="doc", disable=args.json, file=sys.stderr) as bar:
        response = client.upsert_stream(
            args.collection,
            ids,
            metadata=metadata if any(m for m in metadata) else None,
            inputs=texts,
            batch_size=args.batch_size,
            progress=bar.update,
        )
    emit(
        args,
        {"indexed": response.upserted, "batches": response.batches, "count": response.count},
        f"indexed {response.upserted} documents in {response.batches} batches"
        + (f"; {args.collection} has {response.count}" if response.count >= 0 else ""),
    )


def rerank(args: argparse.Namespace, client: Any) -> None:
    texts = list(args.texts)
    if args.file is not None:
        try:
            texts += [line for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {args.file}: {exc}")
    if not texts:
        fail("no texts to rerank: give them as arguments or with --file")
    ranked = client.rerank(
        args.model, args.query, texts, top_n=args.top_n, raw_scores=args.raw_scores, truncate=args.truncate
    )
    payload = {
        "query": args.query,
        "results": [{"index": r.index, "score": r.score, "text": texts[r.index]} for r in ranked.results],
        "truncated": ranked.truncated,
        "token_counts": ranked.token_counts,
        "max_seq_length": ranked.max_seq_length,
        "provenance": provenance(ranked.provenance),
    }
    lines = [
        f"{r.score:.4f}  [{r.index}] {clip(texts[r.index])}" + ("  (truncated)" if r.index in ranked.truncated else "")
        for r in ranked.results
    ]
    emit(args, payload, "\n".join(lines))
