"""`embedsvc serve`: the server, configured from an optional TOML file, the environment and flags (Settings.load reads
them all; see its docstring for the precedence). `auth new-key` makes API keys (locally, no server).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedsvc.settings import Settings


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("serve", parents=[common], help="run the server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    s.add_argument("--config", type=Path, help="TOML config file (default: $EMBEDSVC_CONFIG)")
    s.add_argument("--data-dir", type=Path, help="cache/state dir (default: $EMBEDSVC_DATA_DIR)")
    s.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR (default INFO)")
    s.add_argument("--log-format", choices=("text", "json"), help="text (default) or one JSON object a line")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: a free one)")
    s.add_argument(
        "--http-port", type=int, help="serve the HTTP/JSON API and the explorer on this port (0: a free one)"
    )
    s.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve a non-loopback address without API keys (refused otherwise)",
    )
    s.set_defaults(handler=serve, local=True)

    a = sub.add_parser("auth", parents=[common], help="API keys")
    a_sub = a.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    k = a_sub.add_parser("new-key", parents=[common], help="make a new API key and print its [[auth.keys]] entry")
    k.add_argument("--name", required=True, help="the key's name: shows in logs, metrics and the audit log")
    k.add_argument("--role", required=True, choices=("read", "write", "admin"))
    k.add_argument("--collections", nargs="+", default=[], help="collections (globs) the key may touch; default all")
    k.set_defaults(handler=make_key, local=True)


def settings(args: argparse.Namespace) -> Any:
    """The server's Settings from the command line, the environment and the configuration file."""
    from embedsvc.settings import Settings

    return Settings.load(
        args.config,
        os.environ,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
        http_port=args.http_port,
        insecure=args.insecure,
    )


def make_key(args: argparse.Namespace) -> int:
    import json

    from embedsvc.settings import key_hash
    from embedsvc.transport.auth import new_key

    key = new_key()
    entry = {"name": args.name, "role": args.role, "sha256": key_hash(key), "collections": args.collections}
    if args.json:
        print(json.dumps({"key": key, **entry}))
        return 0
    block = [
        "[[auth.keys]]",
        f"name = {json.dumps(args.name)}",
        f'role = "{args.role}"',
        f'sha256 = "{entry["sha256"]}"',
    ]
    if args.collections:
        block.append(f"collections = {json.dumps(args.collections)}")
    print(f"key: {key}")
    print("Give the key to its user (it is shown only now) and add this to the server's configuration:\n")
    print("\n".join(block))
    return 0


def apply_to_process(chosen: Settings) -> None:
    """What the settings say about the whole process `embedsvc serve` runs in (not set by a server made in-process,
    which shares its process with its embedder): the GIL's switch interval."""
    sys.setswitchinterval(chosen.gil_switch_interval_ms / 1000)


def serve(args: argparse.Namespace) -> int:
    # Idle model threads sleep instead of spinning. Torch's OpenMP threads spin for a while after each parallel region
    # by default, which suits one program that owns the machine; in a server they take the cores the request threads
    # need (measured on 2 cores: 10-12 % more throughput on the latent benchmark). Before torch loads: libgomp reads it
    # once. An operator's own OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from embedsvc.settings import ConfigError

    try:
        chosen = settings(args)
    except ConfigError as exc:
        print(f"error: config: {exc}", file=sys.stderr)
        return 1
    from embedsvc.transport import logs

    logs.configure(chosen.log_level, chosen.log_format)
    apply_to_process(chosen)
    from embedsvc.transport.server import create_server

    try:
        server, _port = create_server(chosen)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("embedsvc").info("%s: shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if server.tls is not None:
        signal.signal(signal.SIGHUP, lambda _signum, _frame: server.tls.reload() if server.tls else None)
    server.start()
    server.wait_for_termination()
    # Stopped (stores checkpointed, the audit log closed): only the exit is left. Python's garbage collections at exit
    # walk the ~470,000 objects torch, transformers and the models leave: 6-7 s from "stopped" to the exit in the
    # container on a busy 2-core machine, after up to grace_period_s for calls, within a 15 s stop grace. Frozen,
    # they are skipped: 1.2 s. Nothing left needs a finaliser to run; atexit handlers still run.
    gc.freeze()
    if server.load_error:
        print(f"error: {server.load_error}", file=sys.stderr)
        return 1
    return 0
