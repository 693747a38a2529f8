"""Start `embedsvc serve` as a subprocess on a free port, for benchmarks that measure the service end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serve(data_dir: Path, *extra: str) -> Iterator[str]:
    """Yield the target "127.0.0.1:PORT" of a running server; stop it with SIGTERM on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedsvc", "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            if match:
                # keep draining stderr so the server never blocks on a full pipe
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                yield f"127.0.0.1:{match.group(1)}"
                break
        else:
            raise RuntimeError(f"the server exited with {proc.wait()} before listening")
    finally:
        proc.terminate()
        proc.wait(30)
