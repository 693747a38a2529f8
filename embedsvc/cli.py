"""The `embedsvc` command: `serve` runs the server, every other command calls one through the Python client.

This module is the only place that reads flags and the environment (EMBEDSVC_TARGET, EMBEDSVC_CONFIG,
EMBEDSVC_DATA_DIR, XDG_DATA_HOME) and builds Settings. Errors print one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc import __version__
from embedsvc.cli_images import IMAGE_COMMANDS
from embedsvc.cli_images import add_commands as add_image_commands
from embedsvc.cli_maps import MAP_COMMANDS
from embedsvc.cli_maps import add_commands as add_map_commands

DEFAULT_TARGET = "localhost:50051"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "embedsvc"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embedsvc", description="Embedding and vector-arithmetic service.")
    p.add_argument("--version", action="version", version=f"embedsvc {__version__}")
    p.add_argument(
        "--target",
        default=os.environ.get("EMBEDSVC_TARGET", DEFAULT_TARGET),
        help="server address host:port (default: $EMBEDSVC_TARGET or %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default: %(default)s)")
    # --json is accepted before or after the command; SUPPRESS keeps a global --json from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    s.add_argument("--config", type=Path, default=os.environ.get("EMBEDSVC_CONFIG"), help="TOML config file")
    s.add_argument("--data-dir", type=Path, default=os.environ.get("EMBEDSVC_DATA_DIR"), help="cache/state dir")
    s.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR (default INFO)")

    sub.add_parser("models", parents=[common], help="list the hosted models")

    a = sub.add_parser("arith", parents=[common], help="evaluate a vector expression, e.g. 'king - man + woman'")
    a.add_argument("--model", required=True)
    a.add_argument("expression", nargs="+", help="one or more expressions")
    a.add_argument("--topn", type=int, default=10)
    a.add_argument("--method", choices=("cosadd", "cosmul"), default="cosadd")
    a.add_argument("--keep-inputs", action="store_true", help="keep the expression's own words among the hits")
    a.add_argument("--restrict-vocab", type=int, default=0, help="search only the first N words")
    a.add_argument("--contributions", action="store_true", help="show each term's share of each score")

    n = sub.add_parser("nearest", parents=[common], help="the nearest words of a word")
    n.add_argument("--model", required=True)
    n.add_argument("word", nargs="+")
    n.add_argument("--topn", type=int, default=10)

    e = sub.add_parser("embed", parents=[common], help="print the vectors of words or texts")
    e.add_argument("--model", required=True)
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--word", action="append", help="a word of a word model (repeatable)")
    what.add_argument("--text", action="append", help="a text, for a model that embeds texts (repeatable)")
    what.add_argument("--image", action="append", type=Path, help="a PNG/JPEG file, for an image model (repeatable)")
    e.add_argument("--normalize", action="store_true", help="unit-length vectors")
    e.add_argument(
        "--long-texts", choices=("truncate", "chunk"), default="truncate", help="texts over the model's max length"
    )

    si = sub.add_parser("similarity", parents=[common], help="cosine similarity of two words")
    si.add_argument("--model", required=True)
    si.add_argument("first")
    si.add_argument("second")

    d = sub.add_parser("doesnt-match", parents=[common], help="which word does not go with the others")
    d.add_argument("--model", required=True)
    d.add_argument("word", nargs="+")

    ev = sub.add_parser("evaluate-analogies", parents=[common], help="accuracy on a questions-words.txt file")
    ev.add_argument("--model", required=True)
    ev.add_argument("file", type=Path)
    ev.add_argument("--restrict-vocab", type=int, default=300_000)
    ev.add_argument("--case-sensitive", action="store_true")
    ev.add_argument("--dummy4unknown", action="store_true", help="count OOV questions as wrong")
    ev.add_argument("--method", choices=("cosadd", "cosmul"), default="cosadd")
    col = sub.add_parser("collections", parents=[common], help="create, list, describe and delete collections")
    col_sub = col.add_subparsers(dest="collections_command", required=True, metavar="ACTION")
    cc = col_sub.add_parser("create", parents=[common], help="create a collection")
    cc.add_argument("name")
    cc.add_argument("--dim", type=int, default=0, help="dimension (not needed with --model)")
    cc.add_argument("--metric", choices=("cosine", "l2", "ip"), default="cosine")
    cc.add_argument("--index", choices=("flat", "hnsw", "ivf-flat", "ivf-pq"), default="flat")
    cc.add_argument("--model", default="", help="bind to a hosted model: items and queries may be words")
    for flag in ("m", "ef-construction", "ef-search", "nlist", "nprobe", "pq-m", "pq-bits"):
        cc.add_argument(f"--{flag}", type=int, default=0, help="index parameter (0: the default)")
    col_sub.add_parser("list", parents=[common], help="list collections")
    for action in ("info", "delete", "rebuild"):
        col_sub.add_parser(action, parents=[common], help=f"{action} a collection").add_argument("name")

    up = sub.add_parser("upsert", parents=[common], help="add or replace items from a .npy file")
    up.add_argument("collection")
    up.add_argument("--vectors", type=Path, required=True, help="an (n, d) .npy array")
    up.add_argument("--ids", type=Path, help="a text file, one id a line (default: row numbers 0..n-1)")
    up.add_argument("--metadata", type=Path, help="a JSONL file, one object a line")
    up.add_argument("--batch-size", type=int, default=1000)

    se = sub.add_parser("search", parents=[common], help="the items nearest to a query")
    se.add_argument("collection")
    query = se.add_mutually_exclusive_group(required=True)
    query.add_argument("--vector-file", type=Path, help="a .npy file with one vector (or the first row is used)")
    query.add_argument("--item", help="an item id of the collection")
    query.add_argument("--word", help="a word, for a collection bound to a word model")
    query.add_argument("--text", help="a text, for a collection bound to a text model")
    query.add_argument("--expr", help='a vector expression, e.g. "king - man + woman" (bound collections)')
    se.add_argument("-k", type=int, default=10)
    se.add_argument("--filter", default="", help="e.g. 'genre = \"jazz\" AND year >= 1990'")
    se.add_argument("--exact", action="store_true", help="exhaustive search whatever the index")

    it = sub.add_parser("index-texts", parents=[common], help="add documents to a collection bound to a text model")
    it.add_argument("collection")
    it.add_argument(
        "file",
        type=Path,
        help='one document a line (ids 0..n-1), or JSONL: {"id": ..., "text": ..., "metadata": {...}} a line',
    )
    it.add_argument("--batch-size", type=int, default=64, help="documents per stream message")
    add_image_commands(sub, common)
    add_map_commands(sub, common)
    return p


def _settings(args: argparse.Namespace) -> Any:
    from embedsvc.settings import Settings

    config: dict[str, Any] = {}
    if args.config is not None:
        try:
            config = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SystemExit(f"error: cannot read config {args.config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SystemExit(f"error: config {args.config} is not valid TOML: {exc}") from None
    data_dir = args.data_dir
    if data_dir is None and "data_dir" not in config.get("server", {}):
        data_dir = _default_data_dir()
    return Settings.from_config(config, host=args.host, port=args.port, data_dir=data_dir, log_level=args.log_level)


def _serve(args: argparse.Namespace) -> int:
    from embedsvc.settings import ConfigError

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"error: config: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it logs every CPU-feature probe at INFO
    from embedsvc.transport.server import create_server

    try:
        server, _port = create_server(settings)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("embedsvc").info("%s: shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.wait_for_termination()
    if server.load_error:
        print(f"error: {server.load_error}", file=sys.stderr)
        return 1
    return 0


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text)


def _provenance(p: Any) -> dict[str, Any]:
    return {"model": p.model, "model_version": p.model_version, "method": p.method, "parameters": p.parameters}


def _hits_table(hits: Sequence[Any], contributions: bool = False) -> str:
    width = max((len(h.word) for h in hits), default=4)
    lines = []
    for h in hits:
        line = f"{h.word:<{width}}  {h.score:.4f}" + ("  (input)" if h.is_input else "")
        if contributions:
            line += "  [" + ", ".join(f"{c:+.4f}" for c in h.contributions) + "]"
        lines.append(line)
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from embedsvc.client import Client

    with Client(args.target, timeout=args.timeout) as client:
        if args.command == "models":
            models = client.list_models()
            rows = [MessageToDict(m, preserving_proto_field_name=True) for m in models]
            text = "\n".join(f"{m.name:<16} {models_state(m):<8} {_model_line(m)}" for m in models)
            _print(args, {"models": rows}, text)
        elif args.command == "arith":
            result = client.arithmetic(
                args.model,
                args.expression,
                method=args.method,
                top_n=args.topn,
                keep_inputs=args.keep_inputs,
                restrict_vocab=args.restrict_vocab,
                return_contributions=args.contributions,
            )
            payloads = [
                {
                    "expression": expr,
                    "terms": r.terms,
                    "hits": [
                        {"word": h.word, "score": h.score, "is_input": h.is_input}
                        | ({"contributions": list(h.contributions)} if args.contributions else {})
                        for h in r.hits
                    ],
                }
                for expr, r in zip(args.expression, result.results, strict=True)
            ]
            payload: dict[str, Any] = payloads[0] if len(payloads) == 1 else {"results": payloads}
            payload["provenance"] = _provenance(result.provenance)
            text = "\n\n".join(
                (f"{p['expression']}\n" if len(payloads) > 1 else "") + _hits_table(r.hits, args.contributions)
                for p, r in zip(payloads, result.results, strict=True)
            )
            _print(args, payload, text)
        elif args.command == "nearest":
            lists = client.nearest_words(args.model, args.word, top_n=args.topn)
            payload = {
                "results": [
                    {"word": w, "hits": [{"word": h.word, "score": h.score} for h in hits]}
                    for w, hits in zip(args.word, lists, strict=True)
                ]
            }
            text = "\n\n".join(
                (f"{w}\n" if len(lists) > 1 else "") + _hits_table(hits)
                for w, hits in zip(args.word, lists, strict=True)
            )
            _print(args, payload, text)
        elif args.command == "embed" and args.text:
            te = client.embed_texts(args.model, args.text, normalize=args.normalize, long_texts=args.long_texts)
            payload = {
                "texts": args.text,
                "vectors": te.vectors.tolist(),
                "truncated": te.truncated,
                "token_counts": te.token_counts,
                "space": te.space,
                "provenance": _provenance(te.provenance),
            }
            text = "\n".join(
                f"{_clip(t, 30)}\t" + " ".join(f"{x:.6f}" for x in v)
                for t, v in zip(args.text, te.vectors, strict=True)
            )
            _print(args, payload, text)
        elif args.command == "index-texts":
            return _index_texts(args, client)
        elif args.command in MAP_COMMANDS:
            from embedsvc import cli_maps

            return cli_maps.run(args, client)
        elif args.command in IMAGE_COMMANDS:
            from embedsvc import cli_images

            return cli_images.run(args, client)
        elif args.command == "embed" and args.image:
            ie = client.embed_images(args.model, [p.read_bytes() for p in args.image], normalize=args.normalize)
            payload = {
                "images": [str(p) for p in args.image],
                "vectors": ie.vectors.tolist(),
                "space": ie.space,
                "provenance": _provenance(ie.provenance),
            }
            text = "\n".join(
                f"{p}\t" + " ".join(f"{x:.6f}" for x in v) for p, v in zip(args.image, ie.vectors, strict=True)
            )
            _print(args, payload, text)
        elif args.command == "embed":
            emb = client.embed_words(args.model, args.word, normalize=args.normalize)
            payload = {
                "words": args.word,
                "vectors": emb.vectors.tolist(),
                "in_vocabulary": emb.in_vocabulary,
                "space": emb.space,
                "provenance": _provenance(emb.provenance),
            }
            text = "\n".join(
                f"{w}\t" + " ".join(f"{x:.6f}" for x in v) for w, v in zip(args.word, emb.vectors, strict=True)
            )
            _print(args, payload, text)
        elif args.command == "similarity":
            (sim,) = client.similarity(args.model, [(args.first, args.second)])
            _print(args, {"first": args.first, "second": args.second, "similarity": sim}, f"{sim:.4f}")
        elif args.command == "doesnt-match":
            odd, ranking = client.doesnt_match(args.model, args.word)
            payload = {"odd_one_out": odd, "ranking": [{"word": w, "score": s} for w, s in ranking]}
            _print(args, payload, odd)
        elif args.command == "collections":
            _collections(args, client)
        elif args.command == "upsert":
            return _upsert(args, client)
        elif args.command == "search":
            vector = None
            if args.vector_file is not None:
                array = np.load(args.vector_file, allow_pickle=False)
                vector = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1])[0]
            hits = client.search(
                args.collection,
                vector=vector,
                item_id=args.item or "",
                input=args.word or args.text or "",
                expression=args.expr,
                k=args.k,
                filter=args.filter,
                exact=args.exact,
            )
            payload = {"hits": [{"id": h.id, "score": h.score, "metadata": h.metadata, "input": h.input} for h in hits]}
            width = max((len(h.id) for h in hits), default=2)
            text = "\n".join(
                f"{h.id:<{width}}  {h.score:.4f}"
                + (f"  {json.dumps(h.metadata)}" if h.metadata else "")
                + (f"  {_clip(h.input)}" if h.input else "")
                for h in hits
            )
            _print(args, payload, text)
        elif args.command == "evaluate-analogies":
            try:
                data = args.file.read_bytes()
            except OSError as exc:
                print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
                return 1
            report = client.evaluate_analogies(
                args.model,
                data,
                restrict_vocab=args.restrict_vocab,
                case_sensitive=args.case_sensitive,
                dummy4unknown=args.dummy4unknown,
                method=args.method,
            )
            sections = [
                {"name": s.name, "correct": s.correct, "incorrect": s.incorrect, "accuracy": s.accuracy}
                for s in report.sections
            ]
            t = report.total
            payload = {
                "total": {"correct": t.correct, "incorrect": t.incorrect, "accuracy": t.accuracy},
                "sections": sections,
                "questions": report.questions,
                "oov_questions": report.oov_questions,
                "skipped_lines": report.skipped_lines,
                "provenance": _provenance(report.provenance),
            }
            lines = [
                f"{s.name:<28} {s.accuracy:6.1%}  ({s.correct}/{s.correct + s.incorrect})" for s in report.sections
            ]
            lines.append(f"{'total':<28} {t.accuracy:6.1%}  ({t.correct}/{t.correct + t.incorrect})")
            lines.append(f"questions {report.questions}, skipped as OOV {report.oov_questions}")
            _print(args, payload, "\n".join(lines))
    return 0


def _info_dict(info: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _info_line(info: Any) -> str:
    from embedsvc.v1 import collections_pb2

    kind = collections_pb2.IndexKind.Name(info.index.kind).removeprefix("INDEX_KIND_").lower().replace("_", "-")
    metric = collections_pb2.Metric.Name(info.metric).removeprefix("METRIC_").lower()
    state = collections_pb2.CollectionState.Name(info.state).removeprefix("COLLECTION_STATE_").lower()
    bound = f"  model {info.model}" if info.model else ""
    return f"{info.name:<16} {state:<10} {info.count:>9} items  dim {info.dimension:<5} {metric:<13} {kind}{bound}"


def _collections(args: argparse.Namespace, client: Any) -> None:
    action = args.collections_command
    if action == "create":
        params = {
            name: getattr(args, name)
            for name in ("m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_bits")
            if getattr(args, name)
        }
        info = client.create_collection(
            args.name, dimension=args.dim, metric=args.metric, index=args.index, model=args.model, **params
        )
        _print(args, _info_dict(info), _info_line(info))
    elif action == "list":
        infos = client.list_collections()
        _print(args, {"collections": [_info_dict(i) for i in infos]}, "\n".join(_info_line(i) for i in infos))
    elif action == "info":
        info = client.get_collection(args.name)
        _print(args, _info_dict(info), json.dumps(_info_dict(info), indent=2))
    elif action == "rebuild":
        info = client.rebuild(args.name)
        _print(args, _info_dict(info), _info_line(info))
    else:
        client.delete_collection(args.name)
        _print(args, {"deleted": args.name}, f"deleted {args.name}")


def _upsert(args: argparse.Namespace, client: Any) -> int:
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
        print(f"error: cannot read the input files: {exc}", file=sys.stderr)
        return 1
    if vectors.ndim != 2 or len(ids) != len(vectors) or (metadata is not None and len(metadata) != len(vectors)):
        shape = getattr(vectors, "shape", None)
        count = len(metadata) if metadata is not None else "-"
        print(f"error: {shape} vectors, {len(ids)} ids and {count} metadata lines do not match", file=sys.stderr)
        return 1
    with tqdm(total=len(ids), unit="item", disable=args.json, file=sys.stderr) as bar:
        response = client.upsert_stream(
            args.collection, ids, vectors.astype(np.float32), metadata, batch_size=args.batch_size, progress=bar.update
        )
    _print(
        args,
        {"upserted": response.upserted, "batches": response.batches, "count": response.count},
        f"upserted {response.upserted} items in {response.batches} batches; {args.collection} has {response.count}",
    )
    return 0


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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


def _index_texts(args: argparse.Namespace, client: Any) -> int:
    from tqdm import tqdm

    try:
        ids, texts, metadata = read_documents(args.file)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if not texts:
        print(f"error: {args.file} has no documents", file=sys.stderr)
        return 1
    with tqdm(total=len(ids), unit="doc", disable=args.json, file=sys.stderr) as bar:
        response = client.upsert_stream(
            args.collection,
            ids,
            metadata=metadata if any(m for m in metadata) else None,
            inputs=texts,
            batch_size=args.batch_size,
            progress=bar.update,
        )
    _print(
        args,
        {"indexed": response.upserted, "batches": response.batches, "count": response.count},
        f"indexed {response.upserted} documents in {response.batches} batches; {args.collection} has {response.count}",
    )
    return 0


def _model_line(m: Any) -> str:
    from embedsvc.v1 import models_pb2

    if m.kind in (models_pb2.MODEL_KIND_VAE, models_pb2.MODEL_KIND_IMAGE_ENCODER):
        kind = "vae" if m.kind == models_pb2.MODEL_KIND_VAE else "image"
        shape = f"{m.image_size}x{m.image_size}x{m.image_channels}"
        return f"dim {m.dimension:<5} {kind:<8} {shape:<10} {m.device:<6} {m.version}"
    if m.kind == models_pb2.MODEL_KIND_TEXT_ENCODER:
        return f"dim {m.dimension:<5} text     max {m.max_seq_length:<4} tokens {m.device:<6} {m.version}"
    texts = "  (+texts)" if m.embeds_texts else ""
    return f"dim {m.dimension:<5} words    vocab {m.vocabulary_size:<8} {m.version}{texts}"


def models_state(info: Any) -> str:
    from embedsvc.v1 import models_pb2

    return str(models_pb2.ModelState.Name(info.state)).removeprefix("MODEL_STATE_").lower()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "train-vae":
        from embedsvc.cli_images import train_vae

        return train_vae(args)
    from embedsvc.client import EmbedsvcClientError

    try:
        return _command(args)
    except EmbedsvcClientError as exc:
        if exc.reason == "UNAVAILABLE":
            print(f"error: cannot reach embedsvc at {args.target}: {exc.message}", file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
