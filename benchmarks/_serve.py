"""What every benchmark shares: the one way to run `embedsvc serve` for a measurement, and the `--smoke` flag.

`serve(data_dir, *flags)` starts `python -m embedsvc serve --port 0` in a subprocess (the server a user runs, with
its own process and GIL), waits until it listens and until health says SERVING (every model loaded), yields its
target and stops it with SIGTERM. Nothing here imports from tests/: benchmarks must keep running whatever the tests
do. `--smoke` (every benchmark has it; `benchmarks/smoke.py` runs them all, and .ci/run runs that) shrinks a
benchmark to tiny sizes and one round, so that it runs in seconds through the same code path and prints its summary
line: a benchmark that no longer starts fails CI instead of rotting until someone needs its figures.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedsvc.client import Client

_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
SMOKE_HELP = "tiny sizes and one round: checks in seconds that the benchmark still runs (no figures to quote)"
# Where benchmarks.smoke keeps the distilled minilm-static for all benchmarks of one run (a data directory).
MODEL_CACHE_ENV = "EMBEDSVC_BENCH_CACHE"


def add_smoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def cache_dir(given: Path | None) -> Path:
    """The data directory that caches minilm-static for this benchmark: --data-dir, else the smoke run's shared one,
    else a new temporary one (the first start distils it, 15-30 s on 2 cores)."""
    if given is not None:
        return given
    shared = os.environ.get(MODEL_CACHE_ENV)
    return Path(shared) if shared else Path(tempfile.mkdtemp(prefix="embedsvc-bench-"))


def sharing_models(folder: Path, cache: Path) -> Path:
    """A fresh data directory `folder` for one server that uses the model cache of data directory `cache` (so that a
    server of its own does not distil minilm-static again)."""
    folder.mkdir(parents=True, exist_ok=True)
    (cache / "models").mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to((cache / "models").resolve())
    return folder


# The threads that drain each started server's stderr, by pid (serve() waits for the last lines).
_DRAINS: dict[int, threading.Thread] = {}


def start(
    *args: str, env: dict[str, str] | None = None, log: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Run `embedsvc serve --port 0 ARGS...`; return the process and its target once it listens. Its stderr keeps
    being drained (into this process's stderr only if it fails to start; into `log`, line by line, when given), so it
    never blocks on a full pipe."""
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
            drain = proc.stderr.read if log is None else lambda: log.extend(proc.stderr)  # type: ignore[union-attr]
            _DRAINS[proc.pid] = threading.Thread(target=drain, daemon=True)
            _DRAINS[proc.pid].start()
            return proc, f"127.0.0.1:{match.group(1)}"
    raise RuntimeError(f"the server exited with {proc.wait()} before listening:\n{''.join(seen)}")


@contextmanager
def serve(
    data_dir: Path,
    *flags: str,
    ready_s: float = 600,
    env: dict[str, str] | None = None,
    log: list[str] | None = None,
    **client: Any,
) -> Iterator[str]:
    """The target "127.0.0.1:PORT" of a running, SERVING server with this data directory and these `embedsvc serve`
    flags (--config, --http-port, ...); SIGTERM on exit (and its log lines, to the last, in `log` when given).
    `client`: what a Client needs to reach it (ca_file, api_key)."""
    proc, target = start("--data-dir", str(data_dir), *flags, env=env, log=log)
    try:
        with Client(target, timeout=60, **client) as probe:
            probe.wait_until_serving(ready_s)
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drained = _DRAINS.pop(proc.pid, None)
        if drained is not None:
            drained.join(10)  # its last lines (the log at shutdown) are in `log`


def free_port() -> int:
    """A TCP port free on this machine now (for a server's second port: HTTP, metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
