"""Kill a real server with SIGKILL while clients upsert, restart it, and check that nothing acknowledged is lost.

Each client sends atomic batches of items whose vectors derive from the batch tag, each with a text naming its batch;
a batch counts as acknowledged when Upsert returned. After every restart the whole collection is exported and checked:
every acknowledged item is present with its exact vector, metadata and text, and every batch is either fully visible
or not at all; and the keyword index (rebuilt at open) finds exactly the visible items of each batch by its tag.
Used by tests/test_crash.py and benchmarks/crash.py (it lives here, beside the benchmarks' one way to start a server,
so that benchmarks import nothing from tests/).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks._serve import start
from embedsvc.client import Client, EmbedsvcClientError

DIM = 16
BATCH = 20
COLLECTION = "crash"


def batch_vectors(tag: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(tag.encode())).normal(size=(BATCH, DIM)).astype(np.float32)


@dataclass
class Outcome:
    kills: int = 0
    acknowledged: dict[str, int] = field(default_factory=dict)  # batch tag -> round
    lost: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    keyword_mismatch: list[str] = field(default_factory=list)  # batch tags the keyword index answers wrongly

    @property
    def acknowledged_items(self) -> int:
        return BATCH * len(self.acknowledged)


def text(tag: str, i: int) -> str:
    return f"{tag} item {i}"


def verify(client: Client, outcome: Outcome) -> None:
    visible: dict[str, dict[str, object]] = {item["id"]: item for item in client.export_items(COLLECTION)}
    per_batch: dict[str, int] = {}
    for item_id, item in visible.items():
        tag = str(item["metadata"]["batch"])
        per_batch[tag] = per_batch.get(tag, 0) + 1
        vectors = batch_vectors(tag)
        i = int(item["metadata"]["i"])
        if item_id != f"{tag}-{i}" or not np.array_equal(item["vector"], vectors[i]) or item["input"] != text(tag, i):
            outcome.torn.append(item_id)
    outcome.torn.extend(tag for tag, n in per_batch.items() if n != BATCH)
    for tag in outcome.acknowledged:
        for i in range(BATCH):
            if f"{tag}-{i}" not in visible:
                outcome.lost.append(f"{tag}-{i}")
    by_tag: dict[str, set[str]] = {}  # visible ids by their batch tag (ids are "<tag>-<i>"), built once
    for item_id in visible:
        by_tag.setdefault(item_id.rsplit("-", 1)[0], set()).add(item_id)
    tags = sorted(set(per_batch) | set(outcome.acknowledged))
    for at in range(0, len(tags), 64):  # the keyword index against what is visible: nothing lost or resurrected
        chunk = tags[at : at + 64]
        found = client.batch_search(COLLECTION, chunk, mode="keyword", k=BATCH + 1, include_metadata=False)
        for tag, hits in zip(chunk, found, strict=True):
            if {h.id for h in hits} != by_tag.get(tag, set()):
                outcome.keyword_mismatch.append(tag)


def writer(
    target: str, round_: int, client_no: int, outcome: Outcome, lock: threading.Lock, writing: threading.Event
) -> None:
    with Client(target, timeout=10) as client:
        n = 0
        while True:
            tag = f"r{round_}c{client_no}b{n}"
            ids = [f"{tag}-{i}" for i in range(BATCH)]
            metadata = [{"batch": tag, "i": i, "round": round_} for i in range(BATCH)]
            try:
                client.upsert(COLLECTION, ids, batch_vectors(tag), metadata, [text(tag, i) for i in range(BATCH)])
            except EmbedsvcClientError:
                return  # the server is gone
            with lock:
                outcome.acknowledged[tag] = round_
            writing.set()
            n += 1


def run(data_dir: Path, kills: int, *, clients: int = 3, seed: int = 0, backend: str = "faiss", log=print) -> Outcome:
    """backend: faiss (the write-ahead log in the data directory) or milvus (Milvus Lite, a file in it)."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "crash.toml"
    storage = f'[storage]\nbackend = "{backend}"\n[storage.milvus]\nuri = "milvus.db"\n' if backend == "milvus" else ""
    config.write_text("[server]\nembedded_models = false\n" + storage)
    outcome = Outcome()
    lock = threading.Lock()
    for round_ in range(kills + 1):
        proc, target = start("--config", str(config), "--data-dir", str(data_dir))
        try:
            with Client(target, timeout=300) as client:  # a whole export and keyword search on a loaded machine
                client.wait_until_serving(60)
                if round_ == 0 and not client.list_collections():
                    client.create_collection(COLLECTION, dimension=DIM, metric="cosine", keyword="none")
                verify(client, outcome)
            if round_ == kills:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                break
            writing = threading.Event()
            threads = [
                threading.Thread(target=writer, args=(target, round_, c, outcome, lock, writing))
                for c in range(clients)
            ]
            for t in threads:
                t.start()
            # Kill only once writes are under way (a batch of this round was acknowledged), then at a random moment:
            # the pause varies where the kill lands, nothing counts on its length.
            if not writing.wait(60):
                raise RuntimeError(f"round {round_}: no upsert was acknowledged within 60 s")
            time.sleep(rng.uniform(0.0, 0.8))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            outcome.kills += 1
            for t in threads:
                t.join(30)
            log(f"kill {outcome.kills}: {len(outcome.acknowledged)} batches acknowledged so far")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    return outcome
