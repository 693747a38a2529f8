"""The storage primitives every durable write goes through: appends, fsyncs, renames, directory syncs.

Collections, aliases, operations and directions write only through these functions, so that a test can watch every
step and stop the storage at any one of them, then compute what a power loss at that point would leave on disk
(`tests/index/faiss/power_loss.py`: what was fsync'd survives; what was written after the last fsync is lost, or a
prefix of it survives; renames and new files survive only once their directory was fsync'd).

`observer` is None in production. A test sets it to an object with `before(op, *args)` (called before each primitive;
it may raise to stop the storage there) and `after(op, *args)` (called once the primitive is done).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What write_file takes: bytes, or a sequence of buffers written one after another (numpy arrays, memory-mapped
# columns: a large file is written without first being joined into one bytes object).
Data = bytes | bytearray | memoryview | Sequence[Any]

observer: Any = None


def _before(op: str, *args: Any) -> None:
    if observer is not None:
        observer.before(op, *args)


def _after(op: str, *args: Any) -> None:
    if observer is not None:
        observer.after(op, *args)


def open_append(path: Path) -> int:
    """A descriptor appending to `path` (created if absent; creating it is durable only after fsync_dir)."""
    _before("open", path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _after("open", path)
    return fd


def write(fd: int, data: bytes) -> None:
    """Write all of `data` (os.write may write less than asked)."""
    _before("write", fd, data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    _after("write", fd, data)


def fsync(fd: int) -> None:
    _before("fsync", fd)
    os.fsync(fd)
    _after("fsync", fd)


def truncate(fd: int, size: int) -> None:
    _before("truncate", fd, size)
    os.ftruncate(fd, size)
    _after("truncate", fd, size)


def truncate_file(path: Path, size: int) -> None:
    """Cut `path` to `size` bytes, durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        truncate(fd, size)
        fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: Data) -> None:
    """Create or overwrite `path` with `data` (bytes, or a sequence of buffers written in order), and fsync it (its
    directory entry still needs fsync_dir)."""
    _before("write_file", path, data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        parts: Sequence[Any] = [data] if isinstance(data, bytes | bytearray | memoryview) else data
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                view = view[os.write(fd, view[: 1 << 30]) :]
        _after("write_file", path, data)
        fsync(fd)
    finally:
        os.close(fd)


def link(src: Path, dst: Path) -> None:
    """A second name for an existing file (a hard link; durable after fsync_dir of dst's parent). Checkpoints share
    their unchanged, never rewritten files this way."""
    _before("link", src, dst)
    os.link(src, dst)
    _after("link", src, dst)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the renames, new files and removals in `path` durable."""
    _before("fsync_dir", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _after("fsync_dir", path)


def mkdir(path: Path) -> None:
    _before("mkdir", path)
    path.mkdir()
    _after("mkdir", path)


def ensure_dir(path: Path) -> None:
    """Create `path` and any missing parents, durably (each new entry's parent is fsync'd)."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    mkdir(path)
    fsync_dir(path.parent)


def replace(src: Path, dst: Path) -> None:
    """Rename `src` over `dst` (atomic; durable after fsync_dir of the parent)."""
    _before("replace", src, dst)
    os.replace(src, dst)
    _after("replace", src, dst)


def remove_tree(path: Path) -> None:
    """Remove a file or a directory tree if present (durable after fsync_dir of the parent)."""
    _before("remove", path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    _after("remove", path)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, never a mix:
    temp file, fsync, rename, directory fsync."""
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    write_file(tmp, data)
    replace(tmp, path)
    fsync_dir(path.parent)


class DataDirInUse(OSError):
    """Another server holds the data directory."""


class DataDirLock:
    """An exclusive lock on a data directory (`<data_dir>/LOCK`, flock'd, holding the owner's pid), so that two
    servers never share one: they would both append to the same logs and remove each other's files."""

    def __init__(self, data_dir: Path) -> None:
        import fcntl

        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "LOCK"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise DataDirInUse(
                f"the data directory {data_dir} is in use by another embedsvc server (pid {holder}); stop it, or "
                "give this one its own --data-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
