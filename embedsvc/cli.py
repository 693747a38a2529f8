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

from embedsvc import __version__

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

    e = sub.add_parser("embed", parents=[common], help="print vectors")
    e.add_argument("--model", required=True)
    e.add_argument("--word", action="append", required=True, help="a word (repeatable)")
    e.add_argument("--normalize", action="store_true", help="unit-length vectors")

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
            text = "\n".join(
                f"{m.name:<16} {models_state(m):<8} dim {m.dimension:<5} vocab {m.vocabulary_size:<8} {m.version}"
                for m in models
            )
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


def models_state(info: Any) -> str:
    from embedsvc.v1 import models_pb2

    return str(models_pb2.ModelState.Name(info.state)).removeprefix("MODEL_STATE_").lower()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
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
