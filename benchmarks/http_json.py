"""HTTP/JSON against gRPC: the same small unary call (Arithmetic, one expression, top 10, on minilm-static) from 16
concurrent clients for --seconds each way, against `embedsvc serve --http-port` in a subprocess. gRPC clients use one
channel each; HTTP clients one httpx connection each (keep-alive). Both run in this process's threads, so each side
pays a Python client's cost. Last line: `http: ratio R, p50 grpc G ms, p50 http H ms` (R: HTTP calls/s over gRPC's).

    python benchmarks/http_json.py [--data-dir DIR] [--seconds 10] [--clients 16] [--smoke]

--smoke: 4 clients for 0.5 s each way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, cache_dir, free_port, serve, sharing_models
from embedsvc.v1 import arithmetic_pb2, arithmetic_pb2_grpc

BODY = {"model": "minilm-static", "expressions": [{"text": "king - man + woman"}], "topN": 10}


def run(clients: int, seconds: float, make_call) -> tuple[float, float]:
    """Calls per second and median latency (ms) of `clients` closed-loop callers."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def loop(i: int) -> None:
        call = make_call()
        start.wait()
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            call()
            latencies[i].append(time.perf_counter() - began)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    return len(flat) / elapsed, statistics.median(flat) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    add_smoke(parser)
    args = parser.parse_args()
    warm_up_s = 2.0
    if args.smoke:
        args.seconds, args.clients, warm_up_s = 0.5, 4, 0.2
    data_dir = sharing_models(Path(tempfile.mkdtemp(prefix="embedsvc-http-")) / "data", cache_dir(args.data_dir))
    http_port = free_port()
    with serve(data_dir, "--http-port", str(http_port)) as target:
        url = f"http://127.0.0.1:{http_port}/embedsvc.v1.ArithmeticService/Arithmetic"
        request = arithmetic_pb2.ArithmeticRequest(
            model="minilm-static", expressions=[arithmetic_pb2.Expression(text="king - man + woman")], top_n=10
        )
        httpx.post(url, json=BODY, timeout=60).raise_for_status()  # SERVING: the HTTP side answers too

        def grpc_call():
            stub = arithmetic_pb2_grpc.ArithmeticServiceStub(grpc.insecure_channel(target))
            return lambda: stub.Arithmetic(request, timeout=30)

        def http_call():
            session = httpx.Client(timeout=30)

            def call() -> None:
                response = session.post(url, json=BODY)
                response.raise_for_status()
                response.json()

            return call

        run(args.clients, warm_up_s, grpc_call)  # warm-up, both ways
        run(args.clients, warm_up_s, http_call)
        grpc_rate, grpc_p50 = run(args.clients, args.seconds, grpc_call)
        http_rate, http_p50 = run(args.clients, args.seconds, http_call)
    print(f"gRPC      {grpc_rate:7.0f} calls/s  p50 {grpc_p50:6.2f} ms  ({args.clients} clients)")
    print(f"HTTP/JSON {http_rate:7.0f} calls/s  p50 {http_p50:6.2f} ms")
    print(f"http: ratio {http_rate / grpc_rate:.2f}, p50 grpc {grpc_p50:.2f} ms, p50 http {http_p50:.2f} ms")


if __name__ == "__main__":
    main()
