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


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def provenance(p: Any) -> dict[str, Any]:
    return {"model": p.model, "model_version": p.model_version, "method": p.method, "parameters": p.parameters}


def clip(text: str, width: int = 70) -> str:
    """One line of at most `width` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def message_dict(message: Any, *, all_fields: bool = True) -> dict[str, Any]:
    """A protobuf message as a JSON-ready dict (with `all_fields`, fields at their defaults too)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=all_fields)
