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
from embedsvc.cli import collections, images, maps, serve, texts, training, words

DEFAULT_TARGET = "localhost:50051"
GROUPS = (serve, words, collections, texts, training, images, maps)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embedsvc", description="Embedding and vector-arithmetic service.")
    p.add_argument("--version", action="version", version=f"embedsvc {__version__}")
    p.add_argument(
        "--target",
        default=os.environ.get("EMBEDSVC_TARGET", DEFAULT_TARGET),
        help="server address host:port (default: $EMBEDSVC_TARGET or %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default: %(default)s)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("EMBEDSVC_API_KEY"),
        help="the API key to send (default: $EMBEDSVC_API_KEY)",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS (implied by the file options)")
    p.add_argument("--ca-file", type=Path, help="PEM of the CA to trust (default: the system's roots)")
    p.add_argument("--cert-file", type=Path, help="PEM client certificate, for mutual TLS")
    p.add_argument("--key-file", type=Path, help="PEM key of the client certificate")
    p.set_defaults(local=False)
    # --json is accepted before or after the command; SUPPRESS keeps a global --json from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub, common)
    return p


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
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # unreadable TLS files, a certificate without its key
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
