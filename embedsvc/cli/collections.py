"""Commands over collections: `collections create|list|info|delete|rebuild|reembed`, `aliases`, `operations`,
`upsert` (from .npy files), `search`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.cli.output import clip, emit, fail, message_dict, to_json

INDEX_PARAMETERS = (
    "m",
    "ef_construction",
    "ef_search",
    "nlist",
    "nprobe",
    "pq_m",
    "pq_bits",
    "rabitq_bits",
    "oversample",
)
FIELD_TYPES = ("string", "integer", "timestamp")


def _indexed_field(text: str) -> tuple[str, str]:
    name, _, kind = text.rpartition(":")
    if not name or kind not in FIELD_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: NAME:TYPE, TYPE one of {', '.join(FIELD_TYPES)}")
    return name, kind


def _recall(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a recall above 0, at most 1")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    col = sub.add_parser("collections", parents=[common], help="create, list, describe and delete collections")
    col_sub = col.add_subparsers(dest="collections_command", required=True, metavar="ACTION")
    cc = col_sub.add_parser("create", parents=[common], help="create a collection")
    cc.add_argument("name")
    cc.add_argument("--dim", type=int, default=0, help="dimension (not needed with --model)")
    cc.add_argument("--metric", choices=("cosine", "l2", "ip"), default="cosine")
    cc.add_argument("--index", choices=("flat", "hnsw", "ivf-flat", "ivf-pq"), default="flat")
    cc.add_argument("--model", default="", help="bind to a hosted model: items and queries may be words")
    cc.add_argument(
        "--backend", choices=("faiss", "milvus"), default="", help="where the items live (default: the server's)"
    )
    cc.add_argument(
        "--quantization",
        choices=("none", "int8", "rabitq"),
        default="",
        help="compress the index (flat, hnsw: int8 only, ivf-flat); candidates are rescored with the float vectors",
    )
    cc.add_argument(
        "--target-recall",
        type=_recall,
        default=0.0,
        help="recall@10 searches aim for (default 0.95, unless --nprobe/--ef-search is set)",
    )
    cc.add_argument(
        "--indexed-field",
        type=_indexed_field,
        action="append",
        default=[],
        metavar="NAME:TYPE",
        help="index a metadata field for filters (TYPE: string, integer, timestamp); repeat for more",
    )
    cc.add_argument(
        "--no-mmap",
        dest="mmap",
        action="store_const",
        const=False,
        default=None,
        help="read the vectors into memory at open instead of mapping them",
    )
    cc.add_argument(
        "--document-prompt",
        default=None,
        help="a text model's prompt put before items' inputs (default: its document, passage or corpus one; '': none)",
    )
    cc.add_argument(
        "--query-prompt", default=None, help="the prompt put before query texts (default: its query prompt; '': none)"
    )
    cc.add_argument(
        "--dimensions",
        type=int,
        default=0,
        help="a text model's vectors cut to this many dimensions, re-normalised (models trained for it), for its "
        "inputs and queries alike; vectors sent must be EmbedTexts' of the same dimensions",
    )
    cc.add_argument(
        "--dtype",
        choices=("float32", "int8", "uint8", "binary", "ubinary"),
        default="",
        help="quantised vectors (as EmbedTexts' dtype): a text model's inputs and queries are quantised so; without "
        "--model, the vectors sent are already (binary types rank by Hamming distance)",
    )
    for name in INDEX_PARAMETERS:
        cc.add_argument(f"--{name.replace('_', '-')}", type=int, default=0, help="index parameter (0: the default)")
    keyword = cc.add_mutually_exclusive_group()
    keyword.add_argument(
        "--keyword",
        metavar="LANGUAGE",
        help="a keyword index (BM25) over the items' text in this language (english, french, ..., none); default: "
        "English for a collection bound to a text model, none otherwise",
    )
    keyword.add_argument("--no-keyword", action="store_true", help="no keyword index, even for a text model")
    cc.add_argument("--mode", choices=MODES, default="", help="the searches' default mode (default: dense)")
    fusion_arguments(cc, "the hybrid searches' default ")
    cc.set_defaults(handler=create)
    col_sub.add_parser("list", parents=[common], help="list collections").set_defaults(handler=list_all)
    for action, handler in (("info", info), ("delete", delete)):
        parser = col_sub.add_parser(action, parents=[common], help=f"{action} a collection")
        parser.add_argument("name")
        parser.set_defaults(handler=handler)
    rb = col_sub.add_parser("rebuild", parents=[common], help="rebuild a collection's index (searches go on)")
    rb.add_argument("name")
    rb.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    rb.set_defaults(handler=rebuild)
    re = col_sub.add_parser(
        "reembed",
        parents=[common],
        help="re-embed a collection's inputs with a model (its new version) into a new collection, then switch aliases",
    )
    re.add_argument("collection", help="the collection, or an alias of it (that alias is switched at the end)")
    re.add_argument("--model", default="", help="the model (default: the collection's own, at its version now)")
    re.add_argument("--target-name", default="", help="the new collection's name (default: <collection>-<version>)")
    re.add_argument(
        "--drop-unembeddable",
        action="store_true",
        help="leave out items with no stored input (or one the model refuses) instead of failing",
    )
    re.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    re.set_defaults(handler=reembed)

    al = sub.add_parser("aliases", parents=[common], help="other names for collections")
    al_sub = al.add_subparsers(dest="aliases_command", required=True, metavar="ACTION")
    for action, handler, text in (
        ("create", create_alias, "create an alias"),
        ("switch", switch_alias, "point an alias at another collection"),
    ):
        parser = al_sub.add_parser(action, parents=[common], help=text)
        parser.add_argument("alias")
        parser.add_argument("collection")
        parser.set_defaults(handler=handler)
    ad = al_sub.add_parser("delete", parents=[common], help="delete an alias")
    ad.add_argument("alias")
    ad.set_defaults(handler=delete_alias)
    alist = al_sub.add_parser("list", parents=[common], help="list aliases")
    alist.add_argument("--collection", default="", help="only this collection's aliases")
    alist.set_defaults(handler=list_aliases)

    op = sub.add_parser(
        "operations", parents=[common], help="long-running operations (rebuilds, re-embeds, snapshots, restores)"
    )
    op_sub = op.add_subparsers(dest="operations_command", required=True, metavar="ACTION")
    ol = op_sub.add_parser("list", parents=[common], help="operations, newest first")
    ol.add_argument("--collection", default="")
    ol.set_defaults(handler=list_operations)
    for action, handler in (("get", get_operation), ("cancel", cancel_operation)):
        parser = op_sub.add_parser(action, parents=[common], help=f"{action} an operation")
        parser.add_argument("name", help="operations/...")
        parser.set_defaults(handler=handler)

    up = sub.add_parser("upsert", parents=[common], help="add or replace items from a .npy file")
    up.add_argument("collection")
    up.add_argument("--vectors", type=Path, required=True, help="an (n, d) .npy array")
    up.add_argument("--ids", type=Path, help="a text file, one id a line (default: row numbers 0..n-1)")
    up.add_argument("--metadata", type=Path, help="a JSONL file, one object a line")
    up.add_argument("--batch-size", type=int, default=1000)
    up.set_defaults(handler=upsert)

    se = sub.add_parser("search", parents=[common], help="the items nearest to a query (dense, keyword or hybrid)")
    se.add_argument("collection")
    query = se.add_mutually_exclusive_group()
    query.add_argument("--vector-file", type=Path, help="a .npy file with one vector (or the first row is used)")
    query.add_argument("--item", help="an item id of the collection")
    query.add_argument("--word", help="a word, for a collection bound to a word model")
    query.add_argument("--text", help="a text: embedded by a text model, and matched by keyword and hybrid searches")
    query.add_argument("--expr", help='a vector expression, e.g. "king - man + woman" (bound collections)')
    query.add_argument("--positive-ids", nargs="+", default=[], metavar="ID", help="search like these items")
    se.add_argument("--negative-ids", nargs="+", default=[], metavar="ID", help="... and unlike these")
    se.add_argument("--strategy", choices=("average-vector", "best-score"), default="", help="for --positive-ids")
    se.add_argument("--keyword-text", default="", help="the text the keyword side matches (default: --text)")
    se.add_argument("-k", type=int, default=10)
    se.add_argument("--filter", default="", help="e.g. 'genre = \"jazz\" AND year >= 1990'")
    se.add_argument("--exact", action="store_true", help="exhaustive search whatever the index")
    se.add_argument(
        "--target-recall", type=_recall, default=0.0, help="recall@10 to aim for (default: the collection's)"
    )
    se.add_argument("--nprobe", type=int, default=0, help="IVF lists to visit (0: the collection's or the target's)")
    se.add_argument(
        "--ef-search", type=int, default=0, help="HNSW candidate list (0: the collection's or the target's)"
    )
    se.add_argument("--oversample", type=int, default=0, help="candidates per hit rescored (quantised indexes)")
    se.add_argument(
        "--mode", choices=MODES, default="", help="dense, keyword (BM25) or hybrid (default: the collection's)"
    )
    fusion_arguments(se, "")
    se.add_argument("--rerank", default="", metavar="MODEL", help="rerank the best candidates with a cross-encoder")
    se.add_argument("--rerank-candidates", type=int, default=0, help="candidates the cross-encoder scores (50)")
    se.add_argument("--raw-scores", action="store_true", help="the cross-encoder's raw scores, not their sigmoid")
    se.add_argument("--group-by", default="", metavar="FIELD", help="k groups of hits sharing this metadata field")
    se.add_argument("--group-size", type=int, default=0, help="hits per group (1)")
    se.add_argument("--diversity", type=float, help="0..1: maximal marginal relevance (0.5 is balanced)")
    se.add_argument("--diversity-candidates", type=int, default=0, help="candidates diversity chooses from")
    se.add_argument("--keep-inputs", action="store_true", help="keep the query's own items (marked *)")
    se.add_argument("--explain", action="store_true", help="print each hit's ranks and scores on each side")
    se.set_defaults(handler=search)


MODES = ("dense", "keyword", "hybrid")


def fusion_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--fusion", choices=("rrf", "weighted"), default="", help=f"{what}fusion (weighted)")
    parser.add_argument("--rrf-k", type=int, default=0, help=f"{what}RRF constant (60)")
    parser.add_argument("--dense-weight", type=float, help=f"{what}weight of the dense side, 0..1 (0.5)")
    parser.add_argument("--candidates", type=int, default=0, help=f"{what}candidates per side before fusion (200)")


def info_line(info: Any) -> str:
    from embedsvc.v1 import collections_pb2, text_pb2

    kind = collections_pb2.IndexKind.Name(info.index.kind).removeprefix("INDEX_KIND_").lower().replace("_", "-")
    quantization = collections_pb2.Quantization.Name(info.index.quantization).removeprefix("QUANTIZATION_").lower()
    if quantization not in ("none", "unspecified"):
        kind += f"+{quantization}"
    metric = collections_pb2.Metric.Name(info.metric).removeprefix("METRIC_").lower()
    state = collections_pb2.CollectionState.Name(info.state).removeprefix("COLLECTION_STATE_").lower()
    bound = f"  model {info.model}" if info.model else ""
    backend = collections_pb2.Backend.Name(info.backend).removeprefix("BACKEND_").lower()
    dimension = str(info.dimension)
    if info.HasField("shape") and info.shape.dtype not in (0, text_pb2.EMBEDDING_DTYPE_FLOAT32):
        dimension += "/" + text_pb2.EmbeddingDtype.Name(info.shape.dtype).removeprefix("EMBEDDING_DTYPE_").lower()
    return (
        f"{info.name:<16} {state:<10} {info.count:>9} items  dim {dimension:<5} {metric:<13} {kind:<8} {backend}{bound}"
    )


def create(args: argparse.Namespace, client: Any) -> None:
    params: dict[str, Any] = {name: getattr(args, name) for name in INDEX_PARAMETERS if getattr(args, name)}
    if args.target_recall:
        params["target_recall"] = args.target_recall
    keyword: str | bool | None = False if args.no_keyword else args.keyword
    defaults = _fusion(args) | ({"mode": args.mode} if args.mode else {})
    created = client.create_collection(
        args.name,
        dimension=args.dim,
        metric=args.metric,
        index=args.index,
        model=args.model,
        backend=args.backend,
        quantization=args.quantization,
        mmap=args.mmap,
        indexed_fields=dict(args.indexed_field),
        document_prompt=args.document_prompt,
        query_prompt=args.query_prompt,
        dimensions=args.dimensions,
        dtype=args.dtype,
        keyword=keyword,
        search_defaults=defaults or None,
        **params,
    )
    emit(args, message_dict(created), info_line(created))


def list_all(args: argparse.Namespace, client: Any) -> None:
    infos = client.list_collections()
    emit(args, {"collections": [message_dict(i) for i in infos]}, "\n".join(info_line(i) for i in infos))


def info(args: argparse.Namespace, client: Any) -> None:
    found = message_dict(client.get_collection(args.name))
    emit(args, found, to_json(found, indent=2))


def rebuild(args: argparse.Namespace, client: Any) -> None:
    operation = client.rebuild(args.name)
    if not args.no_wait:
        operation = follow(args, client, operation)
        if operation.error is not None:
            raise operation.error
    emit(
        args, operation_dict(operation), info_line(operation.result) if operation.result else operation_line(operation)
    )


def reembed(args: argparse.Namespace, client: Any) -> None:
    operation = client.reembed(
        args.collection, args.model, target_name=args.target_name, drop_unembeddable=args.drop_unembeddable
    )
    if not args.no_wait:
        operation = follow(args, client, operation, unit="item")
        if operation.error is not None:
            raise operation.error
    emit(args, operation_dict(operation), reembed_lines(operation) if operation.result else operation_line(operation))


def reembed_lines(op: Any) -> str:
    result = op.result
    info = result.collection
    switched = ", ".join(result.switched_aliases) or "none (no alias pointed at it: create one)"
    lines = [
        f"re-embedded {result.reembedded} items of {result.source} into {info.name} "
        f"(model {info.model} {info.model_version})",
        f"switched aliases: {switched}; {result.source} is kept until you delete it",
    ]
    if result.dropped:
        lines.append(f"left out {result.dropped} items without a usable input: {', '.join(result.dropped_sample)}")
    return "\n".join(lines)


def follow(args: argparse.Namespace, client: Any, operation: Any, unit: str = "vec") -> Any:
    """Wait for an operation, showing its stage, progress, rate and time left on stderr."""
    from tqdm import tqdm

    with tqdm(total=0, unit=unit, disable=args.json, file=sys.stderr, leave=False) as bar:
        while not operation.done:
            bar.set_description(operation.stage)
            bar.total = operation.total_units or None
            bar.n = operation.done_units
            bar.refresh()
            time.sleep(0.2)
            operation = client.get_operation(operation.name)
    return operation


def operation_line(op: Any) -> str:
    progress = f" {op.done_units}/{op.total_units}" if op.total_units else ""
    if op.total_units and op.units_per_second and not op.done:
        progress += f" ({op.units_per_second:.0f}/s, {op.eta_seconds:.0f} s left)"
    outcome = f"failed: {op.error}" if op.error else ("done" if op.done else f"{op.stage}{progress}")
    return f"{op.name}  {op.kind} {op.collection}  {outcome}"


def operation_dict(op: Any) -> dict[str, Any]:
    fields = (
        "name",
        "done",
        "kind",
        "collection",
        "stage",
        "done_units",
        "total_units",
        "units_per_second",
        "eta_seconds",
        "cancel_requested",
        "replica",
        "warnings",
    )
    payload: dict[str, Any] = {f: getattr(op, f) for f in fields}
    if op.reembed is not None:
        payload["reembed"] = message_dict(op.reembed)
    for moment in ("create_time", "update_time", "end_time"):
        value = getattr(op, moment)
        payload[moment] = value.isoformat() if value else None
    if op.error is not None:
        payload["error"] = {"code": op.error.code.name, "reason": op.error.reason, "message": op.error.message}
    if op.result is not None:
        payload["result"] = message_dict(op.result)
    return payload


def list_operations(args: argparse.Namespace, client: Any) -> None:
    found = client.list_operations(args.collection)
    emit(args, {"operations": [operation_dict(o) for o in found]}, "\n".join(operation_line(o) for o in found))


def get_operation(args: argparse.Namespace, client: Any) -> None:
    found = client.get_operation(args.name)
    emit(args, operation_dict(found), operation_line(found))


def cancel_operation(args: argparse.Namespace, client: Any) -> None:
    found = client.cancel_operation(args.name)
    emit(args, operation_dict(found), operation_line(found))


def _alias_dict(alias: Any) -> dict[str, Any]:
    moment = alias.update_time.isoformat() if alias.update_time else None
    return {"alias": alias.alias, "collection": alias.collection, "update_time": moment}


def create_alias(args: argparse.Namespace, client: Any) -> None:
    alias = client.create_alias(args.alias, args.collection)
    emit(args, _alias_dict(alias), f"{alias.alias} -> {alias.collection}")


def switch_alias(args: argparse.Namespace, client: Any) -> None:
    alias, previous = client.update_alias(args.alias, args.collection)
    emit(
        args,
        _alias_dict(alias) | {"previous_collection": previous},
        f"{alias.alias} -> {alias.collection} (was {previous})",
    )


def delete_alias(args: argparse.Namespace, client: Any) -> None:
    client.delete_alias(args.alias)
    emit(args, {"deleted": args.alias}, f"deleted alias {args.alias}")


def list_aliases(args: argparse.Namespace, client: Any) -> None:
    found = client.list_aliases(args.collection)
    emit(
        args, {"aliases": [_alias_dict(a) for a in found]}, "\n".join(f"{a.alias:<20} -> {a.collection}" for a in found)
    )


def delete(args: argparse.Namespace, client: Any) -> None:
    client.delete_collection(args.name)
    emit(args, {"deleted": args.name}, f"deleted {args.name}")


def upsert(args: argparse.Namespace, client: Any) -> None:
    from tqdm import tqdm

    try:
        vectors = np.load(args.vectors, allow_pickle=False)
        ids = args.ids.read_text(encoding="utf-8").splitlines() if args.ids else [str(i) for i in range(len(vectors))]
        metadata = (
            [json.loads(line) for line in args.metadata.read_text(encoding="utf-8").splitlines() if line.strip()]
            if args.metadata
            else None
        )
    except (OSError, ValueError) as exc:
        fail(f"cannot read the input files: {exc}")
    if vectors.ndim != 2 or len(ids) != len(vectors) or (metadata is not None and len(metadata) != len(vectors)):
        count = len(metadata) if metadata is not None else "-"
        fail(f"{getattr(vectors, 'shape', None)} vectors, {len(ids)} ids and {count} metadata lines do not match")
    with tqdm(total=len(ids), unit="item", disable=args.json, file=sys.stderr) as bar:
        response = client.upsert_stream(
            args.collection, ids, vectors.astype(np.float32), metadata, batch_size=args.batch_size, progress=bar.update
        )
    emit(
        args,
        {"upserted": response.upserted, "batches": response.batches, "count": response.count},
        f"upserted {response.upserted} items in {response.batches} batches"
        + (f"; {args.collection} has {response.count}" if response.count >= 0 else ""),
    )


def _fusion(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {
        "fusion": args.fusion,
        "rrf_k": args.rrf_k,
        "dense_weight": args.dense_weight,
        "candidates": args.candidates,
    }
    return {k: v for k, v in chosen.items() if v not in ("", 0, None)}


def search(args: argparse.Namespace, client: Any) -> None:
    vector = None
    if args.vector_file is not None:
        array = np.load(args.vector_file, allow_pickle=False)
        vector = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1])[0]
    if vector is None and not (
        args.item or args.word or args.text or args.expr or args.positive_ids or args.negative_ids or args.keyword_text
    ):
        fail("give a query: --text, --word, --item, --expr, --vector-file, --positive-ids or --keyword-text")
    options: dict[str, Any] = {
        "k": args.k,
        "filter": args.filter,
        "exact": args.exact,
        "mode": args.mode,
        "rerank": args.rerank,
        "rerank_candidates": args.rerank_candidates,
        "raw_scores": args.raw_scores,
        "group_by": args.group_by,
        "group_size": args.group_size,
        "diversity": args.diversity,
        "diversity_candidates": args.diversity_candidates,
        "keep_inputs": args.keep_inputs,
        "target_recall": args.target_recall,
        "nprobe": args.nprobe,
        "ef_search": args.ef_search,
        "oversample": args.oversample,
    }
    hits = client.search(
        args.collection,
        vector=vector,
        item_id=args.item or "",
        input=args.word or args.text or "",
        expression=args.expr,
        positive_ids=args.positive_ids,
        negative_ids=args.negative_ids,
        strategy=args.strategy.replace("-", "_"),
        keyword_text=args.keyword_text,
        **options,
        **_fusion(args),
    )
    payload: dict[str, Any] = {"hits": [_hit_dict(h) for h in hits]}
    if hits.groups:
        payload["groups"] = [{"value": g.value, "hits": [_hit_dict(h) for h in g.hits]} for g in hits.groups]
    if hits.retrieval is not None:
        payload["retrieval"] = dataclasses.asdict(hits.retrieval)
    lines: list[str] = []
    if hits.groups:
        for group in hits.groups:
            lines.append(f"{args.group_by} = {to_json(group.value)}" if group.value is not None else "(no value)")
            lines.extend("  " + line for line in _hit_lines(group.hits, args.explain))
    else:
        lines = _hit_lines(list(hits), args.explain)
    report = hits.retrieval
    if report is not None and (args.explain or report.notices):
        lines.append(_report_line(report))
    emit(args, payload, "\n".join(lines))


def _hit_dict(h: Any) -> dict[str, Any]:
    out = {"id": h.id, "score": h.score, "metadata": h.metadata, "input": h.input}
    if h.is_input:
        out["is_input"] = True
    if h.explanation is not None:
        out["explanation"] = {k: v for k, v in dataclasses.asdict(h.explanation).items() if v not in (None, 0, 0.0)}
    return out


def _hit_lines(hits: list[Any], explain: bool) -> list[str]:
    width = max((len(h.id) + h.is_input for h in hits), default=2)
    scores = [f"{h.score:.4f}" for h in hits]
    score_width = max(map(len, scores), default=6)  # BM25 scores pass 10: right-aligned
    lines = []
    for h, score in zip(hits, scores, strict=True):
        name = h.id + ("*" if h.is_input else "")
        line = f"{name:<{width}}  {score:>{score_width}}"
        if explain and h.explanation is not None:
            line += f"  [{_explained(h.explanation)}]"
        lines.append(
            line + (f"  {to_json(h.metadata)}" if h.metadata else "") + (f"  {clip(h.input)}" if h.input else "")
        )
    return lines


def _explained(e: Any) -> str:
    parts = []
    if e.dense_rank:
        parts.append(f"dense #{e.dense_rank} {e.dense_score:.4f}")
    if e.keyword_rank:
        parts.append(f"keyword #{e.keyword_rank} {e.keyword_score:.4f}")
    if e.fused_score is not None and (e.dense_rank or e.keyword_rank):
        parts.append(f"fused {e.dense_contribution:.4f} + {e.keyword_contribution:.4f}")
    for name, label in (("rerank_score", "rerank"), ("mmr_score", "mmr"), ("best_positive", "best +")):
        value = getattr(e, name)
        if value is not None:
            parts.append(f"{label} {value:.4f}")
    if e.candidate_rank:
        parts.append(f"was #{e.candidate_rank}")
    return ", ".join(parts)


def _report_line(report: Any) -> str:
    line = f"# {report.mode}"
    if report.fusion is not None:
        f = report.fusion
        weight = f", dense weight {f['dense_weight']}" if f["dense_weight"] is not None else ""
        k = f", k {f['rrf_k']}" if f["method"] == "rrf" else ""
        line += f" ({f['method']}{k}{weight}, {f['candidates']} candidates a side)"
    if report.keyword_language:
        line += f", keywords in {report.keyword_language}"
    if report.rerank is not None:
        line += f", reranked by {report.rerank['model']} ({report.rerank['candidates']} candidates)"
    for query, notice in report.notices:
        line += f"; notice: {notice.replace('_', ' ')}" + (f" (query {query})" if query else "")
    return line
