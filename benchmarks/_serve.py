"""Start `embedsvc serve` in a subprocess for a benchmark (the same helper the tests use)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.serve_process import serving


@contextmanager
def serve(data_dir: Path, *extra: str) -> Iterator[str]:
    """Yield the target "127.0.0.1:PORT" of a running server with this data dir; SIGTERM on exit."""
    with serving("--data-dir", str(data_dir), *extra) as target:
        yield target


def free_port() -> int:
    """A TCP port free on this machine now (for a server's second port: HTTP, metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
