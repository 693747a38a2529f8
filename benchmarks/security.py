"""What TLS and API keys cost: the same server configuration, plaintext without auth vs TLS with an API key.

Two server processes (the same word model and collection; one plaintext with auth off, one with `[server.tls]` and
`[auth]` keys) are measured in interleaved rounds, one at a time, so that both see the same machine:
  - unary: 16 concurrent clients (16 threads, one channel each, as 16 backends would connect) calling
    WordService.Similarity on one word pair, as fast as they can for --seconds;
  - batch: the same 16 clients calling CollectionService.BatchSearch (--batch queries of 384 dimensions, k 10) on a
    20,000-item FLAT cosine collection;
  - handshake: the time from a new channel to its first answer (Health.Check), TLS minus plaintext, median of 30.
Throughputs are medians over --rounds rounds. The certificates come from trustme (a test CA), the key from
`embedsvc auth new-key`'s generator.
Prints last: `security: unary ratio R1, batch ratio R2, handshake H ms` (R: TLS+auth throughput over plaintext).

    python benchmarks/security.py [--rounds 5] [--seconds 3] [--smoke]

--smoke: one round of 0.5 s each way, 4 clients, 2,000 items, 3 handshakes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gensim
import grpc
import numpy as np
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import add_smoke, serve
from embedsvc.client import Client
from embedsvc.transport.auth import key_hash, new_key

WORDS = Path(gensim.__file__).parent / "test" / "test_data" / "EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"


def config(folder: Path, *, secure: bool, key: str, certs: dict[str, Path], clients: int) -> Path:
    """A server configuration: one word model, a thread for every call the clients can have in flight (twice over,
    and at least the default stream cap, 16, that admission requires); with `secure`, TLS and one admin key."""
    threads = max(2 * clients, 16)
    text = f"[server]\nembedded_models = false\nmax_workers = {threads}\nmax_concurrent_rpcs = {threads}\n"
    if secure:
        text += (
            f"[server.tls]\ncert_file = {json.dumps(str(certs['cert']))}\nkey_file = {json.dumps(str(certs['key']))}\n"
        )
        text += f'[auth]\nenabled = true\n[[auth.keys]]\nname = "bench"\nrole = "admin"\nsha256 = "{key_hash(key)}"\n'
    text += '[[models]]\nname = "words"\nkind = "word-vectors"\nformat = "word2vec-text"\n'
    text += f"path = {json.dumps(str(WORDS))}\n"
    path = folder / ("secure.toml" if secure else "plain.toml")
    path.write_text(text)
    return path


def throughput(clients: list[Client], call: Callable[[Client], object], seconds: float) -> float:
    """Calls per second of all clients together, each calling in a loop for `seconds` (after one warm call each)."""
    counts = [0] * len(clients)
    warm = threading.Barrier(len(clients) + 1)
    go = threading.Event()
    deadline = 0.0

    def loop(i: int) -> None:
        client = clients[i]
        call(client)  # connect (and the TLS handshake) before the clock starts
        warm.wait()
        go.wait()
        n = 0
        while time.perf_counter() < deadline:
            call(client)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    warm.wait()
    began = time.perf_counter()
    deadline = began + seconds
    go.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def first_answer_ms(target: str, credentials: grpc.ChannelCredentials | None, repeats: int) -> float:
    """Median milliseconds from a new channel to its first Health.Check answer."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        times.append((time.perf_counter() - start) * 1e3)
        channel.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--batch", type=int, default=32, help="queries per BatchSearch")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one channel each")
    parser.add_argument("--handshakes", type=int, default=30, help="new channels timed each way (median)")
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.items, args.clients, args.handshakes = 1, 0.5, 2000, 4, 3
    key = new_key()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.items, 384)).astype(np.float32)
    queries = rng.normal(size=(args.batch, 384)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="embedsvc-security-") as tmp:
        folder = Path(tmp)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        certs = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
        certs["ca"].write_bytes(ca.cert_pem.bytes())
        certs["cert"].write_bytes(cert.cert_chain_pems[0].bytes())
        certs["key"].write_bytes(cert.private_key_pem.bytes())
        plain_cfg = config(folder, secure=False, key=key, certs=certs, clients=args.clients)
        secure_cfg = config(folder, secure=True, key=key, certs=certs, clients=args.clients)
        with (
            serve(folder / "plain", "--config", str(plain_cfg)) as plain_target,
            serve(folder / "secure", "--config", str(secure_cfg), ca_file=certs["ca"], api_key=key) as secure_target,
        ):
            sides = {
                "plaintext": [Client(plain_target, timeout=120) for _ in range(args.clients)],
                "tls+key": [
                    Client(secure_target, timeout=120, api_key=key, ca_file=certs["ca"]) for _ in range(args.clients)
                ],
            }
            for clients in sides.values():
                clients[0].create_collection("bench", dimension=384, metric="cosine")
                for start in range(0, args.items, 5000):
                    ids = [str(i) for i in range(start, min(start + 5000, args.items))]
                    clients[0].upsert("bench", ids, x[start : start + len(ids)])

            def unary(client: Client) -> object:
                return client.similarity("words", [("one", "two")])

            def batch(client: Client) -> object:
                return client.batch_search("bench", queries, k=10, include_metadata=False)

            results: dict[tuple[str, str], list[float]] = {}
            for r in range(args.rounds):
                for name, call in (("unary", unary), ("batch", batch)):
                    order = list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))
                    for side, clients in order:
                        qps = throughput(clients, call, args.seconds)
                        results.setdefault((name, side), []).append(qps)
                print(
                    f"round {r + 1}: " + ", ".join(f"{n} {s} {v[-1]:.0f}/s" for (n, s), v in sorted(results.items())),
                    flush=True,
                )
            for clients in sides.values():
                for client in clients:
                    client.close()
            tls = grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes())
            plain_ms = first_answer_ms(plain_target, None, args.handshakes)
            tls_ms = first_answer_ms(secure_target, tls, args.handshakes)
    median = {k: statistics.median(v) for k, v in results.items()}
    r1 = median[("unary", "tls+key")] / median[("unary", "plaintext")]
    r2 = median[("batch", "tls+key")] / median[("batch", "plaintext")]
    unary_plain, unary_secure = median[("unary", "plaintext")], median[("unary", "tls+key")]
    print(f"unary Similarity: plaintext {unary_plain:.0f}/s, tls+key {unary_secure:.0f}/s")
    print(
        f"BatchSearch ({args.batch} queries): plaintext {median[('batch', 'plaintext')]:.1f}/s, "
        f"tls+key {median[('batch', 'tls+key')]:.1f}/s"
    )
    print(f"new channel to first answer: plaintext {plain_ms:.2f} ms, tls {tls_ms:.2f} ms")
    print(f"security: unary ratio {r1:.2f}, batch ratio {r2:.2f}, handshake {tls_ms - plain_ms:.2f} ms")


if __name__ == "__main__":
    main()
