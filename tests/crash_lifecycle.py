"""SIGKILL a real server while it takes snapshots, restores them and re-embeds, then check that nothing is half-made:
every listed snapshot is whole (its files download and check against the manifest), no temporary folder is left,
every restored collection is whole or absent, and a re-embed continues after the restart and finishes. Used by
tests/test_crash.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedsvc.client import Client
from tests import helpers, serve_process
from tests.conftest import GENSIM_DATA

DIM = 64
ITEMS = 40_000
SOURCE = "big"
TEXTS = 3000


@dataclass
class Outcome:
    kills: int = 0
    # Operations a kill stopped part-way (found unfinished or interrupted after the restart), by kind.
    cut: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def write_config(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "crash.toml"
    lee = GENSIM_DATA / "lee_fasttext.vec"
    config.write_text(
        "[server]\nembedded_models = false\n"
        f'[[models]]\nname = "lee"\nkind = "word-vectors"\nformat = "word2vec-text"\npath = "{lee}"\n'
        '[[models]]\nname = "lee-mean"\nkind = "text-encoder"\nformat = "averaged-words"\nwords = "lee"\n'
        '[[models]]\nname = "lee-sif"\nkind = "text-encoder"\nformat = "averaged-words"\nwords = "lee"\n'
        'weighting = "sif"\n'
    )
    return config


def texts(n: int) -> list[str]:
    lines = (GENSIM_DATA / "lee_background.cor").read_text(encoding="latin-1").lower().split(".")
    words = [[w for w in line.split() if w.isalpha()] for line in lines]
    sentences = [" ".join(w[:20]) for w in words if len(w) >= 6]
    return [f"{sentences[i % len(sentences)]} {i % 11} the" for i in range(n)]


def start(config: Path, data_dir: Path) -> tuple[object, str]:
    return serve_process.start("--config", str(config), "--data-dir", str(data_dir))


def kill(proc: object) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(30)  # type: ignore[attr-defined]


def fill(client: Client) -> None:
    rng = np.random.default_rng(0)
    client.create_collection(SOURCE, dimension=DIM, metric="l2")
    ids = [f"i{n}" for n in range(ITEMS)]
    client.upsert_stream(SOURCE, ids, rng.normal(size=(ITEMS, DIM)).astype(np.float32), batch_size=5000)
    client.create_collection("docs", model="lee-mean")
    client.create_alias("docs-live", "docs")
    client.upsert_stream("docs", [f"d{n}" for n in range(TEXTS)], inputs=texts(TEXTS), batch_size=500)
    client.create_snapshot(SOURCE, wait=True, timeout=300)  # one whole snapshot, for the restores to use


def check(client: Client, data_dir: Path, outcome: Outcome, scratch: Path) -> None:
    """What a restart must find, whatever the kill interrupted."""
    leftovers = [p.name for p in (data_dir / "snapshot-files").glob(".*")]
    leftovers += [p.name for p in (data_dir / "collections").glob(".*")]
    if leftovers:
        outcome.problems.append(f"left behind: {leftovers}")
    for snapshot in client.list_snapshots():
        try:
            client.download_snapshot(snapshot.name, scratch / "check.tar")  # every file checked on both sides
        except Exception as exc:
            outcome.problems.append(f"{snapshot.name} listed but not whole: {exc}")
        (scratch / "check.tar").unlink(missing_ok=True)
    for info in client.list_collections():
        if info.name.startswith("copy-") and info.count != ITEMS:
            outcome.problems.append(f"{info.name} restored half: {info.count} items")
    for op in client.list_operations():
        if op.kind in ("snapshot", "restore") and not op.done:
            outcome.problems.append(f"{op.name} ({op.kind}) still unfinished after a restart")


def wait_for(client: Client, name: str, ready: Callable[[object], bool], timeout: float = 60) -> object:
    """The operation once `ready` says so or it is done (a fast one may finish before a poll sees it part-way)."""

    def seen() -> object:
        op = client.get_operation(name)
        return op if ready(op) or op.done else None

    return helpers.wait_for(seen, timeout, f"{name} to be under way", every=0.005)


def run(data_dir: Path, rounds: int, log: Callable[[str], None] = print) -> Outcome:
    config = write_config(data_dir)
    outcome = Outcome()
    scratch = data_dir.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    reembed = ""
    for round_ in range(rounds + 1):
        proc, target = start(config, data_dir)
        try:
            with Client(target, timeout=120) as client:
                client.wait_until_serving(120)
                if round_ == 0:
                    fill(client)
                check(client, data_dir, outcome, scratch)
                if round_ == rounds:
                    break
                kind = ("snapshot", "restore", "reembed")[round_ % 3]
                running = [o for o in client.list_operations("docs") if o.kind == "reembed" and not o.done]
                if kind == "restore" and not client.list_snapshots(SOURCE):
                    kind = "snapshot"
                if kind == "reembed" and reembed and not running:  # it finished: one re-embed is enough
                    kind = "snapshot"
                if kind == "snapshot":
                    op = client.create_snapshot(SOURCE)
                    op = wait_for(client, op.name, lambda o: o.stage == "copying")
                elif kind == "restore":
                    snapshot = client.list_snapshots(SOURCE)[0].name
                    op = client.restore_snapshot(snapshot, f"copy-{round_}")
                    op = wait_for(client, op.name, lambda o: o.stage == "restoring")
                else:
                    op = running[0] if running else client.reembed("docs-live", model="lee-sif", target_name="docs-2")
                    reembed = op.name
                    op = wait_for(client, op.name, lambda o: o.stage == "filling" and o.done_units > 0)
            if not op.done:
                outcome.cut[kind] = outcome.cut.get(kind, 0) + 1
            kill(proc)
            outcome.kills += 1
            log(f"kill {outcome.kills}: {kind} {'part-way' if not op.done else 'after it finished'}")
        finally:
            if proc.poll() is None:
                if round_ == rounds:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
                else:
                    kill(proc)
    # The re-embed: it continued after each kill and finished, and its alias names the new collection.
    proc, target = start(config, data_dir)
    try:
        with Client(target, timeout=120) as client:
            client.wait_until_serving(120)
            if reembed:
                done = client.wait_operation(reembed, timeout=600)
                info = client.get_collection("docs-live")
                if (info.name, info.count, done.result.reembedded) != ("docs-2", TEXTS, TEXTS):
                    outcome.problems.append(f"re-embed ended with {info.name} {info.count}: {done.result}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return outcome
