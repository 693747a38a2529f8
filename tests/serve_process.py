"""Start `embedsvc serve` as a subprocess on a free port: for tests and benchmarks that need a real server process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Run `embedsvc serve --port 0 ARGS...`; return the process and its target once it listens.

    Its stderr keeps being drained so that the server never blocks on a full pipe.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedsvc", "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"127.0.0.1:{match.group(1)}"
    raise RuntimeError(f"the server exited with {proc.wait()} before listening:\n{''.join(seen)}")


@contextmanager
def serving(*args: str) -> Iterator[str]:
    """A running server's target; the server gets SIGTERM on exit."""
    proc, target = start(*args)
    try:
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
