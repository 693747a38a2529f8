"""Commands over models, words and arithmetic: `models`, `embed`, `tokenize`, `arith`, `nearest`, `similarity`,
`doesnt-match`, `evaluate-analogies`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedsvc.cli.arguments import deprecated_alias
from embedsvc.cli.output import clip, emit, fail, message_dict, provenance

# How `embedsvc models` names a kind; a kind not listed shows its own name.
_KIND_LABELS = {"word-vectors": "words", "text-encoder": "text", "image-encoder": "image", "cross-encoder": "rerank"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    mo = sub.add_parser("models", parents=[common], help="list the hosted models; load, unload or reload one")
    mo.set_defaults(handler=models)
    mo_sub = mo.add_subparsers(dest="models_command", required=False, metavar="ACTION")
    mo_sub.add_parser("list", parents=[common], help="list the hosted models (the default)").set_defaults(
        handler=models
    )
    for action, text in (
        ("load", "load an unloaded or failed model, or a new one from --config (admin)"),
        ("reload", "load a model again, or from a new --config, while it serves; then switch (admin)"),
    ):
        parser = mo_sub.add_parser(action, parents=[common], help=text)
        parser.add_argument("name")
        parser.add_argument(
            "--config", type=Path, help="a TOML file with the keys of one [[models]] entry, without the name"
        )
        parser.set_defaults(handler=change_model, action=action)
    un = mo_sub.add_parser("unload", parents=[common], help="stop serving a model (admin)")
    un.add_argument("name")
    un.set_defaults(handler=change_model, action="unload", config=None)
    sub.add_parser("server-info", parents=[common], help="the server's version and limits").set_defaults(
        handler=server_info
    )

    a = sub.add_parser("arith", parents=[common], help="evaluate a vector expression, e.g. 'king - man + woman'")
    a.add_argument("--model", required=True)
    a.add_argument("expression", nargs="+", help="one or more expressions")
    top = a.add_argument("--top-n", type=int, default=10, help="hits per expression (default %(default)s)")
    deprecated_alias(a, "--topn", top)
    a.add_argument("--method", choices=("cosadd", "cosmul"), default="cosadd")
    a.add_argument("--keep-inputs", action="store_true", help="keep the expression's own words among the hits")
    a.add_argument("--restrict-vocab", type=int, default=0, help="search only the first N words")
    a.add_argument("--contributions", action="store_true", help="show each term's share of each score")
    a.set_defaults(handler=arith)

    n = sub.add_parser("nearest", parents=[common], help="the nearest words of a word")
    n.add_argument("--model", required=True)
    n.add_argument("word", nargs="+")
    top = n.add_argument("--top-n", type=int, default=10, help="hits per word (default %(default)s)")
    deprecated_alias(n, "--topn", top)
    n.set_defaults(handler=nearest)

    e = sub.add_parser("embed", parents=[common], help="print the vectors of words, texts or images")
    e.add_argument("--model", required=True)
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--word", action="append", help="a word of a word model (repeatable)")
    what.add_argument("--text", action="append", help="a text, for a model that embeds texts (repeatable)")
    what.add_argument("--image", action="append", type=Path, help="a PNG/JPEG file, for an image model (repeatable)")
    e.add_argument("--normalize", action="store_true", help="unit-length vectors")
    e.add_argument(
        "--long-texts",
        choices=("truncate", "chunk", "refuse"),
        default="truncate",
        help="texts over the model's max length",
    )
    e.add_argument(
        "--truncation-direction",
        choices=("right", "left"),
        default="right",
        help="which end of a long text truncation keeps (left: its end)",
    )
    e.add_argument(
        "--dimensions",
        type=int,
        default=0,
        help="texts: Matryoshka truncation to this many dimensions, re-normalised (models trained for it)",
    )
    e.add_argument(
        "--dtype",
        choices=("float32", "int8", "uint8", "binary", "ubinary"),
        default="float32",
        help="texts: quantised output (int8/uint8 calibrated per model; binary/ubinary: packed sign bits)",
    )
    e.add_argument("--prompt-name", default="", help="one of the text model's prompts (default: its default prompt)")
    e.set_defaults(handler=embed)

    tk = sub.add_parser("tokenize", parents=[common], help="the tokens a text model reads")
    tk.add_argument("--model", required=True)
    tk.add_argument("text", nargs="+")
    tk.add_argument("--no-special", action="store_true", help="leave out the special tokens the model adds")
    tk.set_defaults(handler=tokenize)

    si = sub.add_parser("similarity", parents=[common], help="cosine similarity of two words")
    si.add_argument("--model", required=True)
    si.add_argument("first")
    si.add_argument("second")
    si.set_defaults(handler=similarity)

    d = sub.add_parser("doesnt-match", parents=[common], help="which word does not go with the others")
    d.add_argument("--model", required=True)
    d.add_argument("word", nargs="+")
    d.set_defaults(handler=doesnt_match)

    ev = sub.add_parser("evaluate-analogies", parents=[common], help="accuracy on a questions-words.txt file")
    ev.add_argument("--model", required=True)
    ev.add_argument("file", type=Path)
    ev.add_argument("--restrict-vocab", type=int, default=300_000)
    ev.add_argument("--case-sensitive", action="store_true")
    ev.add_argument("--dummy4unknown", action="store_true", help="count OOV questions as wrong")
    ev.add_argument("--method", choices=("cosadd", "cosmul"), default="cosadd")
    ev.set_defaults(handler=evaluate_analogies)


def models(args: argparse.Namespace, client: Any) -> None:
    found = client.list_models()
    rows = [message_dict(m, all_fields=False) for m in found]
    emit(args, {"models": rows}, "\n".join(f"{m.name:<16} {model_state(m):<8} {model_line(m)}" for m in found))


def change_model(args: argparse.Namespace, client: Any) -> None:
    config = ""
    if args.config is not None:
        try:
            config = args.config.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {args.config}: {exc.strerror}")
    if args.action == "load":
        info = client.load_model(args.name, config)
    elif args.action == "reload":
        info = client.reload_model(args.name, config)
    else:
        info = client.unload_model(args.name)
    emit(args, message_dict(info, all_fields=False), f"{info.name:<16} {model_state(info):<8} {model_line(info)}")


def server_info(args: argparse.Namespace, client: Any) -> None:
    found = client.get_server_info()
    started = found.start_time.isoformat() if found.start_time else None
    payload = {
        "server_version": found.server_version,
        "api_version": found.api_version,
        "start_time": started,
        "limits": found.limits,
    }
    lines = [f"embedsvc {found.server_version}, API {found.api_version}, started {started}", "limits:"]
    lines += [f"  {name:<24} {value}" for name, value in found.limits.items()]
    emit(args, payload, "\n".join(lines))


def model_state(info: Any) -> str:
    from embedsvc.v1 import models_pb2

    return str(models_pb2.ModelState.Name(info.state)).removeprefix("MODEL_STATE_").lower()


def model_line(m: Any) -> str:
    """What `embedsvc models` shows of a model: from what it reports (image shape, vocabulary, token limit)."""
    from embedsvc.v1 import models_pb2

    kind = str(models_pb2.ModelKind.Name(m.kind)).removeprefix("MODEL_KIND_").lower().replace("_", "-")
    label = _KIND_LABELS.get(kind, kind)
    if m.state != models_pb2.MODEL_STATE_READY:
        return f"{'':<9} {label:<8} {m.error}".rstrip()
    if m.image_size:
        shape = f"{m.image_size}x{m.image_size}x{m.image_channels}"
        return f"dim {m.dimension:<5} {label:<8} {shape:<10} {m.device:<6} {m.version}"
    if m.vocabulary_size:
        texts = "  (+texts)" if m.embeds_texts else ""
        return f"dim {m.dimension:<5} {label:<8} vocab {m.vocabulary_size:<8} {m.version}{texts}"
    if m.reranks:  # no vectors: it scores (query, text) pairs
        return f"{'pairs':<9} {label:<8} max {m.max_seq_length:<4} tokens {m.device:<6} {m.version}"
    return f"dim {m.dimension:<5} {label:<8} max {m.max_seq_length:<4} tokens {m.device:<6} {m.version}"


def _hits_table(hits: Sequence[Any], contributions: bool = False) -> str:
    width = max((len(h.word) for h in hits), default=4)
    lines = []
    for h in hits:
        line = f"{h.word:<{width}}  {h.score:.4f}" + ("  (input)" if h.is_input else "")
        if contributions:
            line += "  [" + ", ".join(f"{c:+.4f}" for c in h.contributions) + "]"
        lines.append(line)
    return "\n".join(lines)


def arith(args: argparse.Namespace, client: Any) -> None:
    result = client.arithmetic(
        args.model,
        args.expression,
        method=args.method,
        top_n=args.top_n,
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
    payload["provenance"] = provenance(result.provenance)
    text = "\n\n".join(
        (f"{p['expression']}\n" if len(payloads) > 1 else "") + _hits_table(r.hits, args.contributions)
        for p, r in zip(payloads, result.results, strict=True)
    )
    emit(args, payload, text)


def nearest(args: argparse.Namespace, client: Any) -> None:
    lists = client.nearest_words(args.model, args.word, top_n=args.top_n)
    payload = {
        "results": [
            {"word": w, "hits": [{"word": h.word, "score": h.score} for h in hits]}
            for w, hits in zip(args.word, lists, strict=True)
        ]
    }
    text = "\n\n".join(
        (f"{w}\n" if len(lists) > 1 else "") + _hits_table(hits) for w, hits in zip(args.word, lists, strict=True)
    )
    emit(args, payload, text)


def _rows(labels: Sequence[str], vectors: Any) -> str:
    def shown(x: Any) -> str:
        return str(x) if isinstance(x, int) else f"{x:.6f}"

    return "\n".join(
        f"{label}\t" + " ".join(shown(x) for x in v.tolist()) for label, v in zip(labels, vectors, strict=True)
    )


def embed(args: argparse.Namespace, client: Any) -> None:
    if args.text:
        te = client.embed_texts(
            args.model,
            args.text,
            normalize=args.normalize,
            long_texts=args.long_texts,
            dimensions=args.dimensions,
            dtype=args.dtype,
            truncation_direction=args.truncation_direction,
            prompt_name=args.prompt_name,
        )
        payload = {
            "texts": args.text,
            "vectors": te.vectors.tolist(),
            "dtype": te.dtype,
            "dimension": te.dimension,
            "truncated": te.truncated,
            "token_counts": te.token_counts,
            "space": te.space,
            "provenance": provenance(te.provenance),
            "warnings": te.warnings,
        }
        text = _rows([clip(t, 30) for t in args.text], te.vectors)
        emit(args, payload, "\n".join([text, *(f"warning: {w}" for w in te.warnings)]))
    elif args.image:
        ie = client.embed_images(args.model, [_read(p) for p in args.image], normalize=args.normalize)
        payload = {
            "images": [str(p) for p in args.image],
            "vectors": ie.vectors.tolist(),
            "space": ie.space,
            "provenance": provenance(ie.provenance),
        }
        emit(args, payload, _rows([str(p) for p in args.image], ie.vectors))
    else:
        emb = client.embed_words(args.model, args.word, normalize=args.normalize)
        payload = {
            "words": args.word,
            "vectors": emb.vectors.tolist(),
            "in_vocabulary": emb.in_vocabulary,
            "space": emb.space,
            "provenance": provenance(emb.provenance),
        }
        emit(args, payload, _rows(args.word, emb.vectors))


def tokenize(args: argparse.Namespace, client: Any) -> None:
    found = client.tokenize_texts(args.model, args.text, add_special_tokens=not args.no_special)
    payload = {
        "texts": args.text,
        "tokens": [
            [{"id": t.id, "token": t.token, "special": t.special, "start": t.start, "end": t.end} for t in tokens]
            for tokens in found
        ],
    }
    lines = [
        f"{clip(text, 30)}\t{len(tokens)} tokens: " + " ".join(f"{t.token}({t.id})" for t in tokens)
        for text, tokens in zip(args.text, found, strict=True)
    ]
    emit(args, payload, "\n".join(lines))


def similarity(args: argparse.Namespace, client: Any) -> None:
    (sim,) = client.similarity(args.model, [(args.first, args.second)])
    emit(args, {"first": args.first, "second": args.second, "similarity": sim}, f"{sim:.4f}")


def doesnt_match(args: argparse.Namespace, client: Any) -> None:
    odd, ranking = client.doesnt_match(args.model, args.word)
    emit(args, {"odd_one_out": odd, "ranking": [{"word": w, "score": s} for w, s in ranking]}, odd)


def evaluate_analogies(args: argparse.Namespace, client: Any) -> None:
    report = client.evaluate_analogies(
        args.model,
        _read(args.file),
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
        "provenance": provenance(report.provenance),
    }
    lines = [f"{s.name:<28} {s.accuracy:6.1%}  ({s.correct}/{s.correct + s.incorrect})" for s in report.sections]
    lines.append(f"{'total':<28} {t.accuracy:6.1%}  ({t.correct}/{t.correct + t.incorrect})")
    lines.append(f"questions {report.questions}, skipped as OOV {report.oov_questions}")
    emit(args, payload, "\n".join(lines))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
