"""Overload: what the server does when offered four times what it can serve.

1. Capacity: 16 closed-loop callers (one channel each) call WordService.Similarity on one word pair for --seconds;
   the calls per second are the capacity C.
2. Overload: an open-loop generator offers 4 x C calls per second for --duration seconds, spread over 32 channels,
   each call with a 2 s deadline (what a caller with a timeout does). Meanwhile a prober calls
   grpc.health.v1.Health/Check every 20 ms on its own channel.
Both loads come from benchmarks/loadgen (Node.js and @grpc/grpc-js, built from protos/ alone; `npm install` runs
there the first time): a Python generator costs the 2-core machine about as much per call as the server does, and
would measure itself.
Counted: served (OK) per second, refused (RESOURCE_EXHAUSTED) share, the p99 latency of the served calls, the p99
latency of health checks, and every other outcome (only OK, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED are expected).
Prints last: `overload: capacity C rps, offered O rps, served S rps, rejected J%, p99 admitted L ms, health p99 H ms,
other errors E`.

    python benchmarks/overload.py [--duration 30] [--seconds 10] [--factor 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import gensim
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import serve

WORDS = Path(gensim.__file__).parent / "test" / "test_data" / "EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"


def loadgen(target: str, *options: str) -> dict:
    """Run the Node load generator (benchmarks/loadgen: cheap per call, so that it leaves the CPU to the server)."""
    folder = Path(__file__).resolve().parent / "loadgen"
    if not (folder / "node_modules").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=folder, check=True)
    done = subprocess.run(
        ["node", str(folder / "loadgen.js"), "--target", target, *options], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_counts(port: int) -> dict[str, float]:
    """Similarity calls the server finished, by code (its Prometheus metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "embedsvc_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("method") == "Similarity":
                    counts[sample.labels["code"]] = sample.value
    return counts


def probe(target: str, stop: threading.Event, latencies: list[float], failures: Counter[str]) -> None:
    channel = grpc.insecure_channel(target)
    stub = health_pb2_grpc.HealthStub(channel)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            latencies.append(time.perf_counter() - started)
        except grpc.RpcError as exc:
            failures[exc.code().name] += 1
        time.sleep(0.02)
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of overload")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of the capacity measurement")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load over capacity")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="embedsvc-overload-") as tmp:
        config = Path(tmp) / "server.toml"
        model = f'name = "words"\nkind = "word-vectors"\nformat = "word2vec-text"\npath = {json.dumps(str(WORDS))}\n'
        config.write_text("[server]\nembedded_models = false\n[[models]]\n" + model)
        metrics_port = free_port()
        with serve(Path(tmp) / "data", "--config", str(config), "--metrics-port", str(metrics_port)) as target:
            channel = grpc.insecure_channel(target)
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
            ready = time.monotonic() + 120
            while health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status != 1:
                if time.monotonic() > ready:
                    raise TimeoutError("the server did not become SERVING")
                time.sleep(0.2)
            channel.close()
            closed = loadgen(target, "--closed", "16", "--channels", "16", "--duration", str(args.seconds))
            cap = closed["codes"].get("OK", 0) / closed["elapsed"]
            print(f"capacity: {cap:.0f} calls/s (16 closed-loop callers, {args.seconds:g} s)", flush=True)
            offered = args.factor * cap
            stop = threading.Event()
            health: list[float] = []
            health_failures: Counter[str] = Counter()
            prober = threading.Thread(target=probe, args=(target, stop, health, health_failures))
            prober.start()
            before = server_counts(metrics_port)
            report = loadgen(target, "--rate", f"{offered:.0f}", "--duration", str(args.duration), "--channels", "32")
            after = server_counts(metrics_port)
            stop.set()
            prober.join()
    on_server = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    codes = Counter(report["codes"])
    served = codes["OK"] / report["elapsed"]
    offered_actual = report["sent"] / report["elapsed"]
    refused = codes["RESOURCE_EXHAUSTED"]
    others = sum(n for code, n in codes.items() if code not in ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"))
    others += sum(health_failures.values())
    health_p99 = float(np.percentile(health, 99) * 1e3) if health else float("nan")
    print(f"outcomes: {dict(codes)}; health checks: {len(health)} answered, failures {dict(health_failures)}")
    print(f"as the server counted them (Similarity): { {k: int(v) for k, v in on_server.items() if v} }")
    print(
        f"served p50 {report['ok_p50_ms']:.1f} ms; health p50 "
        f"{statistics.median(health) * 1e3 if health else float('nan'):.1f} ms"
    )
    print(
        f"overload: capacity {cap:.0f} rps, offered {offered_actual:.0f} rps, served {served:.0f} rps, "
        f"rejected {100 * refused / max(1, report['sent']):.0f}%, p99 admitted {report['ok_p99_ms']:.0f} ms, "
        f"health p99 {health_p99:.0f} ms, other errors {others}"
    )


if __name__ == "__main__":
    main()
