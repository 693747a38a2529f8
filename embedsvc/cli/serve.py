"""`embedsvc serve`: the server, configured from flags, the environment and an optional TOML file.

This is the only place that reads the server's environment (EMBEDSVC_CONFIG, EMBEDSVC_DATA_DIR, XDG_DATA_HOME) and
builds Settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("serve", parents=[common], help="run the server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    s.add_argument("--config", type=Path, default=os.environ.get("EMBEDSVC_CONFIG"), help="TOML config file")
    s.add_argument("--data-dir", type=Path, default=os.environ.get("EMBEDSVC_DATA_DIR"), help="cache/state dir")
    s.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR (default INFO)")
    s.set_defaults(handler=serve, local=True)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "embedsvc"


def settings(args: argparse.Namespace) -> Any:
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
        data_dir = default_data_dir()
    return Settings.from_config(config, host=args.host, port=args.port, data_dir=data_dir, log_level=args.log_level)


def serve(args: argparse.Namespace) -> int:
    from embedsvc.settings import ConfigError

    try:
        chosen = settings(args)
    except ConfigError as exc:
        print(f"error: config: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=chosen.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it logs every CPU-feature probe at INFO
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
    server.start()
    server.wait_for_termination()
    if server.load_error:
        print(f"error: {server.load_error}", file=sys.stderr)
        return 1
    return 0
