"""The CPU that embedsvc's own code adds to a call, piece by piece, measured in one process with the thread's CPU clock
(time.thread_time), so that a shared machine's noise barely touches it (benchmarks/percall.py measures whole calls in
a real server; this one tells which piece moved when that one does):
  - gateway: the Gateway's wrapper around a constant GetServerInfo handler (what every call passes), with defaults,
    and with keys, metrics and the audit of every call (its writer thread's CPU per line included);
  - batcher: a text model's hand-off, a one-text call submitted to the dynamic batcher and its row handed back, from
    16 threads, the model being a constant (CPU of the whole process per call);
  - vectors: reading a 384-dimension Vector message into numpy and building one from numpy.
The gateway runs with a stand-in for gRPC's context (what it asks of it costs nearly nothing), so its figures are the
gateway's own Python, not gRPC's. Medians of --repeats runs.
Prints last: `hotpath: gateway G µs, with security S µs, batcher B µs, vector in I µs, vector out O µs`.

    python benchmarks/hotpath.py [--calls 20000] [--repeats 7] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np

from embedsvc.settings import ApiKey, Role
from embedsvc.transport.admission import HEALTH_QUEUE, Admission, CountingPool, Lane
from embedsvc.transport.audit import AuditLog
from embedsvc.transport.auth import KeyRing, key_hash, new_key
from embedsvc.transport.interceptors import Gateway
from embedsvc.v1 import common_pb2, server_pb2

METHOD = "/embedsvc.v1.ServerService/GetServerInfo"


class Context:
    """What the Gateway asks of gRPC's ServicerContext, answered at no cost."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: Any) -> bool:
        return True

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


class Details:
    method = METHOD
    invocation_metadata = ()


def gateway_us(folder: Path, calls: int, *, secure: bool) -> float:
    """CPU per call of the wrapped handler (and, secure, of the audit writer's thread for its lines)."""
    key = new_key()
    options: dict[str, Any] = {}
    audit = None
    if secure:
        from embedsvc.core.registry import ModelRegistry
        from embedsvc.transport.metrics import Metrics

        folder.mkdir(parents=True, exist_ok=True)
        audit = AuditLog(folder, max_bytes=1 << 40, files=2)
        metrics = Metrics(ModelRegistry((), folder), cast(Any, None))  # the store is read only at scrape time
        keys = KeyRing([ApiKey("bench", Role.ADMIN, key_hash(key))])
        options = {"keys": keys, "metrics": metrics, "audit": audit, "audit_reads": True}
    gateway = Gateway(
        admission=Admission(max_calls=48, max_streams=16, max_heavy=2),
        work=Lane(CountingPool(64, "rpc"), 48, "max_concurrent_rpcs"),
        health=Lane(CountingPool(2, "health"), HEALTH_QUEUE, "health_queue"),
        default_deadline_s=300,
        **options,
    )
    answer = server_pb2.GetServerInfoResponse(server_version="bench")
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: answer)
    wrapped = gateway.intercept_service(lambda details: handler, Details())
    call = wrapped.unary_unary  # type: ignore[union-attr]
    context = Context((("authorization", f"Bearer {key}"),) if secure else ())
    request = server_pb2.GetServerInfoRequest()
    for _ in range(1000):
        call(request, context)
    if audit is not None:
        audit.flush()
    writer = _thread_cpu("audit")
    started = time.thread_time()
    for _ in range(calls):
        call(request, context)
    spent = time.thread_time() - started
    if audit is not None:
        audit.flush()
        spent += _thread_cpu("audit") - writer
        audit.close()
    started = time.thread_time()
    for _ in range(calls):
        handler.unary_unary(request, context)
    return (spent - (time.thread_time() - started)) / calls * 1e6


def _thread_cpu(name: str) -> float:
    """Seconds on a core of this process's thread of that name (/proc schedstat, in ns; 0 when there is none)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            return int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[0]) / 1e9
    return 0.0


def batcher_us(calls: int, threads: int = 16) -> float:
    """Process CPU per one-text call through the batcher (16 callers, a constant model), thread starts included."""
    from embedsvc.core.texts.batching import Batcher

    row = np.zeros((1, 384), np.float32)
    batcher = Batcher("bench", lambda texts: np.repeat(row, len(texts), axis=0), max_batch_size=64, max_wait_s=0.002)
    each = calls // threads

    def caller() -> None:
        for _ in range(each):
            batcher.submit(["a text"], [4])

    for _ in range(2):  # warm-up, then the measured run
        workers = [threading.Thread(target=caller) for _ in range(threads)]
        started = time.process_time()  # every thread of the process: callers and the batcher's worker
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        spent = time.process_time() - started
    batcher.close()
    return spent / (each * threads) * 1e6


def vectors_us(calls: int) -> tuple[float, float]:
    from embedsvc.transport import convert

    values = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    message = common_pb2.Vector(values=values.tolist(), space="model:bench@sha256:0123456789abcdef")
    started = time.thread_time()
    for _ in range(calls):
        convert.vector(message, "vector")
    read = (time.thread_time() - started) / calls * 1e6
    started = time.thread_time()
    for _ in range(calls):
        convert.vector_message(values, message.space)
    return read, (time.thread_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one round (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.repeats = 500, 1
    runs: dict[str, list[float]] = {"gateway": [], "security": [], "batcher": [], "in": [], "out": []}
    with tempfile.TemporaryDirectory(prefix="embedsvc-hotpath-") as tmp:
        for r in range(args.repeats):
            runs["gateway"].append(gateway_us(Path(tmp), args.calls, secure=False))
            runs["security"].append(gateway_us(Path(tmp) / str(r), args.calls, secure=True))
            runs["batcher"].append(batcher_us(max(160, args.calls // 10)))
            read, built = vectors_us(args.calls)
            runs["in"].append(read)
            runs["out"].append(built)
    med = {name: statistics.median(values) for name, values in runs.items()}
    print(
        f"CPU per call of embedsvc's own code, medians of {args.repeats} runs of {args.calls} calls: "
        + ", ".join(f"{n} {v:.1f} µs (runs {min(runs[n]):.1f}-{max(runs[n]):.1f})" for n, v in med.items())
    )
    print(
        f"hotpath: gateway {med['gateway']:.1f} µs, with security {med['security']:.1f} µs, batcher "
        f"{med['batcher']:.1f} µs, vector in {med['in']:.1f} µs, vector out {med['out']:.1f} µs"
    )


if __name__ == "__main__":
    main()
