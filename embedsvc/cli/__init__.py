"""The `embedsvc` command: `serve` and the training commands (`train-vae`, `train-gan`, `train-ae`) run locally,
every other command calls a server through the Python client. Each command group is a module that registers its
subcommands (`register`) with a handler; this module builds the parser and dispatches. Errors print one line on
stderr and exit 1.

Only the client commands' needs are imported here (argparse, numpy), so the command works in a client-only install;
`serve` and the training commands import the server side when they run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from embedsvc import __version__
from embedsvc.cli import collections, images, maps, serve, snapshots, texts, training, words
from embedsvc.cli.arguments import Parser
from embedsvc.cli.output import error_line

DEFAULT_TARGET = "localhost:50051"
GROUPS = (serve, words, collections, snapshots, texts, training, images, maps)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="embedsvc", description="Embedding and vector-arithmetic service.")
    p.add_argument("--version", action="version", version=f"embedsvc {__version__}")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _connection_options(p, defaults=True)
    p.set_defaults(local=False)
    # --json is accepted before or after the command; SUPPRESS keeps a global --json from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub, common)
    # The connection options, like --json, go before or after the command (of the commands that call a server).
    for command in _subcommands(p):
        if not command.get_default("local"):
            _connection_options(command, defaults=False)
    return p


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options that say how to reach the server. With `defaults` (the top level) they take their defaults there;
    after a command they default to SUPPRESS, so that they only override what was given before it."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection (before or after the command)")
    group.add_argument(
        "--target",
        default=default(os.environ.get("EMBEDSVC_TARGET", DEFAULT_TARGET)),
        help=f"server address host:port (default: $EMBEDSVC_TARGET or {DEFAULT_TARGET})",
    )
    group.add_argument("--timeout", type=float, default=default(120.0), help="seconds per call (default: 120)")
    group.add_argument(
        "--api-key",
        default=default(os.environ.get("EMBEDSVC_API_KEY")),
        help="the API key to send (default: $EMBEDSVC_API_KEY)",
    )
    group.add_argument(
        "--tls", action="store_true", default=default(False), help="connect with TLS (implied by the file options)"
    )
    group.add_argument(
        "--ca-file", type=Path, default=default(None), help="PEM of the CA to trust (default: the system's roots)"
    )
    group.add_argument("--cert-file", type=Path, default=default(None), help="PEM client certificate, for mutual TLS")
    group.add_argument("--key-file", type=Path, default=default(None), help="PEM key of the client certificate")


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub)command's parser below `parser`, each once (aliases share one)."""
    found: dict[int, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if id(child) not in found:
                    found[id(child)] = child
                    for grandchild in _subcommands(child):
                        found.setdefault(id(grandchild), grandchild)
    return list(found.values())


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.local:
            return int(args.handler(args) or 0)
        return _call(args)
    except SystemExit as exc:  # a handler's `fail(...)`: the message is the exit code's text
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        raise


def _call(args: argparse.Namespace) -> int:
    from embedsvc.client import Client, EmbedsvcClientError

    try:
        client = Client(
            args.target,
            timeout=args.timeout,
            api_key=args.api_key,
            tls=args.tls,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
        )
        with client:
            return int(args.handler(args, client) or 0)
    except EmbedsvcClientError as exc:
        if exc.reason == "UNAVAILABLE":
            print(f"error: cannot reach embedsvc at {args.target}: {exc.message}", file=sys.stderr)
        else:
            print(error_line(exc, args), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # unreadable TLS files, a certificate without its key
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
