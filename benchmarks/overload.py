"""Overload: what the server does when offered four times what it can serve.

1. Capacity: 16 closed-loop callers (one connection each, one call at a time) call WordService.Similarity on one word
   pair for --seconds; the calls the server answered OK per second are the capacity C.
2. Overload: an open-loop generator offers 4 x C calls per second for --duration seconds over 32 connections, each
   call with a 2 s deadline (`grpc-timeout`, what a caller with a timeout sends). Meanwhile a prober calls
   grpc.health.v1.Health/Check every 20 ms on its own channel.
3. Capacity again, as in 1, once the overload's calls have finished or expired. C in the last line is the mean of the
   two: on a shared 2-core machine the capacity of one 10 s window moved by 10-25 % between runs minutes apart, and
   served is judged against the capacity of the same minutes (the offered load is 4 x the first).
Both loads come from h2load (nghttp2's HTTP/2 load generator, written in C: `apt-get install nghttp2-client`), sending
the gRPC request as its body. The generator must not measure itself: on 2 cores a Node.js @grpc/grpc-js generator
offering 3,700 calls/s took a whole core (its event loop fell behind, so its calls "timed out" before they were even
sent) and left the server 75 % of the other; h2load offers the same load on about 13 % of a core.
h2load sees HTTP status codes, not gRPC status (trailers), so the outcomes come from the server's own Prometheus
counters (by code), and a sample: 100 Similarity calls a second from a gRPC client of its own, each outcome recorded
by its code. Calls h2load finished that the server did not count never reached a handler (gRPC itself shed them, or
their deadline passed first); their codes are split in the sample's proportions. (Until this sample existed they
were all taken to be RESOURCE_EXHAUSTED; grpcio 1.85 in fact sheds calls past `max_pending_rpcs` with CANCELLED.)
The p99 latency of admitted calls is taken from h2load's per-call log conservatively: the slowest calls are all taken
to be admitted ones.
Prints last: `overload: capacity C rps, offered O rps, served S rps, rejected J%, p99 admitted L ms, health p99 H ms,
other errors E` (E: outcomes other than OK, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED, failed streams, failed health
checks).

With --node-modules, two Node.js clients (@grpc/grpc-js, benchmarks/overload_census.js) also sample what a client in
another language sees (100 calls/s each): one as it is, one with the service config the README publishes
(protos/service_config.json: retries with backoff and throttling).

    python benchmarks/overload.py [--duration 30] [--seconds 10] [--factor 4] [--server-setting "max_workers = 16"]
        [--node-modules DIR] [--smoke]

--smoke: 1 s of capacity, 2 s of overload at twice it, a 200-call warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import struct
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, free_port, serve
from embedsvc.v1 import words_pb2

WORDS = Path(gensim.__file__).parent / "test" / "test_data" / "EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"
DEADLINE_MS = 2000
REPO = Path(__file__).resolve().parent.parent
SERVICE_CONFIG = "protos/service_config.json"


def grpc_body(folder: Path) -> Path:
    """One Similarity request as a gRPC message on the wire: flag byte, big-endian length, the protobuf."""
    message = words_pb2.SimilarityRequest(
        model="words", pairs=[words_pb2.WordPair(first="one", second="two")]
    ).SerializeToString()
    path = folder / "similarity.bin"
    path.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return path


def h2load(target: str, body: Path, *options: str) -> dict[str, float]:
    """Run h2load against Similarity; returns its totals (done, failed, errored, timeout, elapsed)."""
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install nghttp2-client")
    command = [
        "h2load",
        *options,
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-H",
        f"grpc-timeout: {DEADLINE_MS}m",
        f"http://{target}/embedsvc.v1.WordService/Similarity",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    totals = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    finished = re.search(r"finished in ([\d.]+)(us|ms|s),", out)  # h2load picks the unit
    if not totals or not finished:
        raise SystemExit(f"unexpected h2load output:\n{out}")
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    result = {n: float(v) for n, v in zip(names, totals.groups(), strict=True)}
    result["elapsed"] = float(finished.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1.0}[finished.group(2)]
    return result


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


def in_flight(port: int) -> float:
    """Similarity calls the server is answering now (its embedsvc_requests_in_flight gauge)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "embedsvc_requests_in_flight"
        for sample in family.samples
        if sample.labels.get("method") == "Similarity"
    )


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


def census(target: str, stop: threading.Event, outcomes: Counter[str], rate: float = 100.0) -> None:
    """Sample the overload's outcomes exactly: `rate` Similarity calls per second (open loop, 2 s deadline) on a
    channel of their own, each outcome recorded by its gRPC code (and, for RESOURCE_EXHAUSTED and CANCELLED, its
    reason or message). h2load cannot see gRPC status, and gRPC's own refusals never reach the server's counters."""
    channel = grpc.insecure_channel(target)
    similarity = channel.unary_unary(
        "/embedsvc.v1.WordService/Similarity",
        request_serializer=words_pb2.SimilarityRequest.SerializeToString,
        response_deserializer=words_pb2.SimilarityResponse.FromString,
    )
    request = words_pb2.SimilarityRequest(model="words", pairs=[words_pb2.WordPair(first="one", second="two")])
    lock = threading.Lock()

    def done(future: grpc.Future) -> None:
        exc = future.exception()
        if exc is None:
            name = "OK"
        else:
            code = exc.code()
            trailers = exc.trailing_metadata() or ()
            answered = any(k == "grpc-status-details-bin" for k, _ in trailers)
            # Without the server's ErrorInfo the outcome came from gRPC itself (the server's or the caller's), never
            # from a handler: a refusal before any handler, or a deadline that passed first.
            name = code.name if answered else f"{code.name} by gRPC ({exc.details()})"
        with lock:
            outcomes[name] += 1

    pending = []
    next_at = time.perf_counter()
    while not stop.is_set():
        future = similarity.future(request, timeout=DEADLINE_MS / 1000)
        future.add_done_callback(done)
        pending.append(future)
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
    for future in pending:
        future.exception()  # wait for it
    channel.close()


def node_census(args: argparse.Namespace, target: str, service_config: Path | None) -> subprocess.Popen[str]:
    """benchmarks/overload_census.js: what a Node.js client (@grpc/grpc-js) sees, 100 calls/s for --duration s."""
    command = ["node", str(Path(__file__).with_name("overload_census.js")), str(REPO), target, "100"]
    command.append(f"{args.duration:g}")
    if service_config is not None:
        command.append(str(service_config))
    env = {**os.environ, "NODE_PATH": str(Path(args.node_modules) / "node_modules")}
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of overload")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of the capacity measurement")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load over capacity")
    parser.add_argument(
        "--server-setting", action="append", default=[], help='a [server] line for the server, e.g. "max_workers = 16"'
    )
    add_smoke(parser)
    parser.add_argument(
        "--node-modules",
        help="a folder where npm installed @grpc/grpc-js and @grpc/proto-loader: also sample what a Node.js client "
        "sees, without and with the published service config (protos/service_config.json: its retry policy)",
    )
    args = parser.parse_args()
    warm_up_calls = 2000
    if args.smoke:
        args.seconds, args.duration, args.factor, warm_up_calls = 1.0, 2.0, 2.0, 200
    with tempfile.TemporaryDirectory(prefix="embedsvc-overload-") as tmp:
        folder = Path(tmp)
        config = folder / "server.toml"
        model = f'name = "words"\nkind = "word-vectors"\nformat = "word2vec-text"\npath = {json.dumps(str(WORDS))}\n'
        server = "".join(f"{line}\n" for line in args.server_setting)
        config.write_text("[server]\nembedded_models = false\n" + server + "[[models]]\n" + model)
        body = grpc_body(folder)
        metrics_port = free_port()
        with serve(folder / "data", "--config", str(config), "--metrics-port", str(metrics_port)) as target:
            h2load(target, body, "-n", str(warm_up_calls), "-c", "16", "-m", "1")  # warm-up

            def capacity() -> float:
                before = server_counts(metrics_port)
                closed = h2load(target, body, "-D", f"{args.seconds:g}", "-c", "16", "-m", "1")
                return (server_counts(metrics_port).get("OK", 0) - before.get("OK", 0)) / closed["elapsed"]

            cap_before = capacity()
            print(f"capacity: {cap_before:.0f} calls/s (16 closed-loop callers, {args.seconds:g} s)", flush=True)
            cap = cap_before
            clients = 32
            per_client = max(1, math.ceil(args.factor * cap / clients))
            # Enough streams per connection that no call waits for one (every call may take its whole deadline):
            # with fewer, h2load stops offering once that many calls are outstanding, and the load is not open.
            streams = max(100, math.ceil(1.5 * per_client * DEADLINE_MS / 1000))
            stop = threading.Event()
            health: list[float] = []
            health_failures: Counter[str] = Counter()
            prober = threading.Thread(target=probe, args=(target, stop, health, health_failures))
            prober.start()
            sampled: Counter[str] = Counter()
            sampling = threading.Event()
            sampler = threading.Thread(target=census, args=(target, sampling, sampled))
            sampler.start()
            nodes = []
            if args.node_modules:
                nodes = [node_census(args, target, None), node_census(args, target, REPO / SERVICE_CONFIG)]
            log = folder / "calls.tsv"
            before = server_counts(metrics_port)
            report = h2load(
                target,
                body,
                "-D",
                f"{args.duration:g}",
                "-c",
                str(clients),
                "-m",
                str(streams),
                "--rps",
                str(per_client),
                "--log-file",
                str(log),
            )
            sampling.set()
            sampler.join()
            node_seen = [json.loads(node.communicate()[0]) for node in nodes]
            settle_by = time.monotonic() + DEADLINE_MS / 1000 + 30
            while in_flight(metrics_port) and time.monotonic() < settle_by:  # calls still running finish or expire
                time.sleep(0.1)
            after = server_counts(metrics_port)
            stop.set()
            prober.join()
            # Capacity again: the machine's own speed drifts by 10-25 % between runs (other tenants, frequency), and
            # served is judged against the capacity of the same minutes, before and after the overload.
            cap_after = capacity()
            cap = (cap_before + cap_after) / 2
            print(f"capacity after: {cap_after:.0f} calls/s; the mean of both: {cap:.0f}", flush=True)
            durations_ms = np.array(
                [int(row.split("\t")[2]) / 1000 for row in log.read_text().splitlines() if row.count("\t") >= 2]
            )
    on_server = Counter({code: int(after.get(code, 0) - before.get(code, 0)) for code in after})
    on_server.subtract(Counter({code: n for code, n in sampled.items() if " by gRPC" not in code}))  # the sample's
    on_server = +on_server
    done = int(report["done"])
    counted = sum(on_server.values())
    native = max(0, done - counted)  # refused by gRPC itself, before any handler: their codes come from the sample
    # The calls gRPC refused or expired itself, split by code in the sample's proportions (all of them "other
    # errors" when the sample saw none, for want of their codes).
    sampled_native = Counter({code.split()[0]: n for code, n in sampled.items() if " by gRPC" in code})
    native_by = Counter(
        {code: round(native * n / sum(sampled_native.values())) for code, n in sampled_native.items()}
        if sampled_native
        else {"UNKNOWN": native}
    )
    served = on_server["OK"] / report["elapsed"]
    offered = report["started"] / report["elapsed"]
    refused = on_server["RESOURCE_EXHAUSTED"] + native_by["RESOURCE_EXHAUSTED"]
    allowed = ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
    others = sum(n for code, n in (on_server + native_by).items() if code not in allowed)
    others += int(report["failed"] + report["errored"] + report["timeout"]) + sum(health_failures.values())
    slowest = max(1, math.ceil(0.01 * on_server["OK"]))
    p99_admitted = float(np.sort(durations_ms)[-slowest]) if len(durations_ms) >= slowest else float("nan")
    health_p99 = float(np.percentile(health, 99) * 1e3) if health else float("nan")
    print(
        f"h2load: {int(report['started'])} started, {done} done, {int(report['failed'])} failed, "
        f"{int(report['errored'])} errored, {int(report['timeout'])} timed out; not counted by the server: {native} "
        f"(by the sample: {dict(native_by)})"
    )
    print(f"as the server counted them (Similarity): {dict(on_server)}")
    print(f"a sample of {sum(sampled.values())} calls, by outcome: {dict(sampled)}")
    for seen, how in zip(node_seen, ("as they are", f"with {SERVICE_CONFIG}'s retry policy"), strict=False):
        print(f"a Node.js client (@grpc/grpc-js), {seen['calls']} calls {how}: {seen['outcomes']}")
    print(
        f"health checks: {len(health)} answered, failures {dict(health_failures)}, p50 "
        f"{statistics.median(health) * 1e3 if health else float('nan'):.1f} ms; all calls p50 "
        f"{float(np.median(durations_ms)) if len(durations_ms) else float('nan'):.1f} ms"
    )
    print(
        f"overload: capacity {cap:.0f} rps, offered {offered:.0f} rps, served {served:.0f} rps, "
        f"rejected {100 * refused / max(1, done):.0f}%, p99 admitted {p99_admitted:.0f} ms, "
        f"health p99 {health_p99:.0f} ms, other errors {others}"
    )


if __name__ == "__main__":
    main()
