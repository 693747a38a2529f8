"""How every command prints: one line of JSON with `--json`, human text otherwise; and one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any, NoReturn


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """Print the payload as JSON (with --json) or the text."""
    print(to_json(payload) if args.json else text)


def to_json(value: Any, indent: int | None = None) -> str:
    """JSON as the commands print it: UTF-8 kept, timestamps as RFC 3339."""
    return json.dumps(value, ensure_ascii=False, default=_json_default, indent=indent)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):  # typed metadata: timestamps as RFC 3339
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def fail(message: str) -> NoReturn:
    """Stop the command: `error: <message>` on stderr, exit code 1."""
    raise SystemExit(f"error: {message}")


def error_line(exc: Any, args: argparse.Namespace) -> str:
    """`error: CODE REASON: message (field f)` of a failed call, with the next step in the CLI's words where the server
    names it (ErrorInfo metadata "hint", errors.Hint): flags, not gRPC metadata."""
    message = _cli_words(exc.metadata, args) or exc.message
    where = f" (field {exc.field})" if exc.field else ""
    return f"error: {exc.code.name} {exc.reason}: {message}{where}"


def _cli_words(metadata: dict[str, str], args: argparse.Namespace) -> str | None:
    hint, command = metadata.get("hint"), vars(args).get("command", "")
    if hint == "send-api-key":
        return "no API key: pass --api-key KEY or set EMBEDSVC_API_KEY"
    if hint == "embed-texts" and command in ("embed", "map", "cluster"):
        flag = "--text" if command == "embed" else "--texts"
        return f"model '{metadata.get('model', '')}' embeds texts and has no vocabulary of words: use {flag}"
    text = str(vars(args).get("filter") or "")
    if hint == "quote-strings" and text:
        value, position = metadata.get("value", ""), int(metadata.get("position", "-1"))
        if value and text[position : position + len(value)] == value:
            fixed = text[:position] + json.dumps(value) + text[position + len(value) :]
            return (
                f"expected a value, got {value}: strings are in double quotes, and the shell needs the filter in "
                f"single quotes: --filter '{fixed}'"
            )
    return None


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def provenance(p: Any) -> dict[str, Any]:
    # Parameters sorted: a protobuf map has no order, and the same call should print the same line.
    parameters = dict(sorted(p.parameters.items()))
    return {"model": p.model, "model_version": p.model_version, "method": p.method, "parameters": parameters}


def clip(text: str, width: int = 70) -> str:
    """One line of at most `width` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def message_dict(message: Any, *, all_fields: bool = True) -> dict[str, Any]:
    """A protobuf message as a JSON-ready dict (with `all_fields`, fields at their defaults too)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=all_fields)
