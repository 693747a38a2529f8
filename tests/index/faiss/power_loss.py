"""Power-loss simulation for the storage layer.

kill -9 cannot prove that fsyncs are in the right order: the page cache survives it, so everything written is still
there afterwards. This harness watches every storage primitive (`embedsvc.durable`), stops the storage at a chosen
step, and computes what a power loss at that step could leave on disk, as SQLite's crash tests and RocksDB's fault
injection environment do:

- a file's content is what it held at its last fsync; what was written after it is lost, or (the "prefix" variants)
  a random prefix of it survives;
- names (new files, new directories, renames, removals) are as they were at their directory's last fsync, or (the
  "current" variants) as they are now, since a journal may have committed them anyway.

`run(workload, root, crash_at)` runs a workload with the storage stopped at step `crash_at`, and `image(...)` builds
one possible disk state after the loss into a fresh directory, for recovery to open.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedsvc import durable


class PowerLoss(BaseException):
    """The storage stopped here (a BaseException: nothing in the product may catch it)."""


class Recorder:
    def __init__(self, root: Path, crash_at: int | None) -> None:
        self.root = root
        self.crash_at = crash_at
        self.steps = 0
        self.crashed = False
        self._new = False
        self.contents: dict[int, bytes] = {}  # inode -> content at its last fsync
        self.listings: dict[int, dict[str, tuple[int, bool]]] = {}  # directory inode -> entries at its last fsync
        for directory, dirs, files in os.walk(root):  # everything there before the workload is durable
            self._list(Path(directory))
            for name in files:
                path = Path(directory) / name
                self.contents[path.stat().st_ino] = path.read_bytes()
            del dirs

    def _list(self, directory: Path) -> None:
        entries = {}
        for entry in os.scandir(directory):
            entries[entry.name] = (entry.inode(), entry.is_dir(follow_symlinks=False))
        self.listings[directory.stat().st_ino] = entries

    # ---- the observer protocol of embedsvc.durable ------------------------------------------------------------------

    def before(self, op: str, *args: object) -> None:
        if self.crashed:
            raise PowerLoss(op)
        if self.crash_at is not None and self.steps >= self.crash_at:
            self.crashed = True
            raise PowerLoss(op)
        self.steps += 1
        if op in ("open", "write_file"):
            path = args[0]
            assert isinstance(path, Path)
            self._new = not path.exists() or op == "write_file"  # write_file truncates: nothing of before is left

    def after(self, op: str, *args: object) -> None:
        if op in ("open", "write_file", "mkdir"):
            path = args[0]
            assert isinstance(path, Path)
            ino = path.stat().st_ino
            if op == "mkdir":
                self.listings.pop(ino, None)  # an inode number can be reused: a new directory has no durable entries
            elif self._new:
                self.contents.pop(ino, None)  # nor has a new (or truncated) file durable content
        elif op == "fsync":
            fd = args[0]
            assert isinstance(fd, int)
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if path.is_dir():
                self._list(path)
            else:
                self.contents[os.fstat(fd).st_ino] = path.read_bytes()
        elif op == "fsync_dir":
            path = args[0]
            assert isinstance(path, Path)
            self._list(path)

    # ---- what a power loss leaves --------------------------------------------------------------------------------

    def image(self, dest: Path, *, names: str, data: str, rng: np.random.Generator) -> None:
        """Write one possible post-loss state of the watched tree into `dest`. names: "durable" | "current";
        data: "durable" (unsynced writes lost) | "prefix" (a random prefix of them kept)."""
        current = self._current_files()

        def content(ino: int) -> bytes:
            base = self.contents.get(ino, b"")
            now = current.get(ino)
            if data == "prefix" and now is not None and len(now) > len(base) and now.startswith(base):
                keep = int(rng.integers(0, len(now) - len(base) + 1))
                return now[: len(base) + keep]
            return base

        dest.mkdir(parents=True)
        if names == "durable":
            self._emit(self.root.stat().st_ino, dest, content)
        else:
            for directory, _dirs, files in os.walk(self.root):
                target = dest / Path(directory).relative_to(self.root)
                target.mkdir(parents=True, exist_ok=True)
                for name in files:
                    (target / name).write_bytes(content((Path(directory) / name).stat().st_ino))

    def _emit(self, directory: int, dest: Path, content: Callable[[int], bytes]) -> None:
        for name, (ino, is_dir) in self.listings.get(directory, {}).items():
            if is_dir:
                (dest / name).mkdir()
                self._emit(ino, dest / name, content)
            else:
                (dest / name).write_bytes(content(ino))

    def _current_files(self) -> dict[int, bytes]:
        found = {}
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(directory) / name
                found[path.stat().st_ino] = path.read_bytes()
        return found


def run(workload: Callable[[Path], None], root: Path, crash_at: int | None) -> Recorder:
    """Run `workload(root)` with the storage stopped at step `crash_at` (None: never); the recorder knows what is
    durable. The workload should catch PowerLoss where it would have died."""
    recorder = Recorder(root, crash_at)
    durable.observer = recorder
    try:
        workload(root)
    finally:
        durable.observer = None
    return recorder


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
