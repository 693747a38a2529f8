"""Column files: named numpy arrays in one file, written once and opened in place by memory-mapping.

A checkpoint keeps a collection's rows in segments (slots.py), and each segment is one column file. Layout: the 8-byte
MAGIC, a u64 (little-endian) header length, the header as JSON (`{"format": 1, "columns": {name: [dtype, shape,
offset]}}`), then each column's bytes, C order, at an offset aligned to ALIGN. Opening maps the file once (read-only,
shared: the page cache holds it, and only the pages a search touches are resident) and every column is a numpy view
into the mapping; nothing is parsed or copied. With `mmap=False` the file is read into memory instead.

The bytes are covered by the sha256 that the checkpoint's manifest holds (checkpoint.py); `write` returns it, computed
from the buffers as they are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc import durable

MAGIC = b"eSCOLS\x00\x01"
_LEN = struct.Struct("<Q")
# Columns start at multiples of this (cache lines; SIMD loads of FAISS and BLAS like aligned rows).
ALIGN = 64
_MAX_HEADER = 1 << 24


class ColumnFile:
    """An opened column file: `columns[name]` is a read-only numpy view of the mapped (or read) file."""

    def __init__(
        self,
        path: Path,
        columns: dict[str, np.ndarray],
        nbytes: int,
        mapping: mmap.mmap | None,
        fd: int | None,
        offsets: dict[str, int],
    ) -> None:
        self.path = path
        self.columns = columns
        self.nbytes = nbytes
        self._mapping = mapping
        # Kept open for `digest`, which must read this file even once a newer checkpoint replaced its name.
        self._fd = fd
        self._offsets = offsets

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Some rows of a column (rescoring candidates, Get), gathered through the mapping at once (sorted rows read
        best), then the column's pages dropped from this process (`drop`): the read costs the page cache, as a pread
        of each row would, not this process's resident memory, which the kernel's fault-around grows by up to 64 KiB
        a row touched."""
        out = self.columns[name][rows]
        self.drop(name)
        return out

    def drop(self, *names: str) -> None:
        """Drop this process's mapped pages of these columns (they stay in the page cache; the next read maps them
        again). Safe while other threads read them: the mapping is read-only, so a dropped page is mapped again."""
        if self._mapping is None:
            return
        for name in names:
            start = self._offsets[name]
            end = start + self.columns[name].nbytes
            first = start - start % mmap.PAGESIZE
            if end > first:
                self._mapping.madvise(mmap.MADV_DONTNEED, first, end - first)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def get(self, name: str) -> np.ndarray | None:
        return self.columns.get(name)

    @property
    def mapped(self) -> bool:
        return self._mapping is not None

    def release(self) -> None:
        """Drop this process's mapped pages (they stay in the page cache; the next read maps them again)."""
        if self._mapping is not None:
            self._mapping.madvise(mmap.MADV_DONTNEED)

    def digest(self) -> str:
        """The sha256 of the file as it is on disk, read with pread (the page cache only: nothing is mapped into this
        process), then the descriptor closed. Called once, by the background check after open."""
        fd, self._fd = self._fd, None
        if fd is None:
            raise ValueError(f"{self.path.name}: already checked")
        digest = hashlib.sha256()
        try:
            at = 0
            while block := os.pread(fd, 1 << 22, at):
                digest.update(block)
                at += len(block)
        finally:
            os.close(fd)
        return digest.hexdigest()

    def close(self) -> None:
        """Close the descriptor `digest` would read (the mapping and row reads stay)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pad(at: int) -> int:
    return -at % ALIGN


def write(path: Path, columns: Mapping[str, Any]) -> tuple[int, str]:
    """Write the columns (through durable.write_file, fsync'd); returns the file's size and sha256. A column is an
    array, or a list of arrays of one dtype joined along their first axis (written one after another, not copied)."""
    pieces: dict[str, list[np.ndarray]] = {}
    table: dict[str, list[Any]] = {}
    for name, value in columns.items():
        parts = [np.ascontiguousarray(a) for a in (value if isinstance(value, list) else [value])]
        dtype = parts[0].dtype
        if any(p.dtype != dtype or p.shape[1:] != parts[0].shape[1:] for p in parts):
            raise ValueError(f"column {name}: parts of different dtypes or shapes")
        pieces[name] = parts
        table[name] = [dtype.str, [sum(len(p) for p in parts), *parts[0].shape[1:]], 0]
    sizes = {name: sum(p.nbytes for p in parts) for name, parts in pieces.items()}
    # The header holds the offsets, which depend on the header's length: grow the reserved space until it fits.
    base = 0
    while True:
        at = base
        for name in table:
            at += _pad(at)
            table[name][2] = at
            at += sizes[name]
        header = json.dumps({"format": 1, "columns": table}, separators=(",", ":")).encode()
        need = len(MAGIC) + _LEN.size + len(header)
        need += _pad(need)
        if need <= base:
            break
        base = need
    head = MAGIC + _LEN.pack(len(header)) + header
    out: list[Any] = [head + bytes(base - len(head))]
    position = base
    for name, parts in pieces.items():
        offset = table[name][2]
        if offset > position:
            out.append(bytes(offset - position))
        out.extend(p.reshape(-1).view(np.uint8) for p in parts if p.size)
        position = offset + sizes[name]
    digest = hashlib.sha256()
    for part in out:
        digest.update(part)
    durable.write_file(path, out)
    return position, digest.hexdigest()


def open_file(path: Path, *, mapped: bool = True, keep_fd: bool = False) -> ColumnFile:
    """Open a column file; ValueError when its header is damaged or does not fit the file. `keep_fd` keeps a
    descriptor for `digest`."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        head = fh.read(len(MAGIC) + _LEN.size)
        if len(head) < len(MAGIC) + _LEN.size or not head.startswith(MAGIC):
            raise ValueError(f"{path.name}: not a column file")
        (length,) = _LEN.unpack_from(head, len(MAGIC))
        if length > min(_MAX_HEADER, size):
            raise ValueError(f"{path.name}: a damaged header length")
        try:
            table = json.loads(fh.read(length))["columns"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path.name}: a damaged header ({exc})") from None
        mapping: mmap.mmap | None = None
        if mapped and size:
            mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            buffer: Any = mapping
        else:
            fh.seek(0)
            buffer = bytearray(fh.read())
    raw = np.frombuffer(buffer, np.uint8) if size else np.empty(0, np.uint8)
    columns = {}
    offsets = {}
    try:
        for name, (dtype, shape, offset) in table.items():
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            end = offset + count * dt.itemsize
            if offset < 0 or end > size:
                raise ValueError(f"column {name} runs past the end of the file")
            column = raw[offset:end].view(dt).reshape(shape)
            column.flags.writeable = False
            columns[name] = column
            offsets[name] = int(offset)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    return ColumnFile(path, columns, size, mapping, os.open(path, os.O_RDONLY) if keep_fd else None, offsets)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
