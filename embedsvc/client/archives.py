"""Snapshot archives on the client's side: a downloaded snapshot as one tar file (`manifest.json`, then every file of
the manifest, in its order), checked against the manifest's sizes and sha256 as it is written, and read back for an
upload. Plain tar (POSIX, uncompressed): `tar -tf` lists it, and a snapshot's vectors do not compress well.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from embedsvc.client.types import EmbedsvcClientError

MANIFEST = "manifest.json"
_BLOCK = tarfile.BLOCKSIZE


def _damaged(message: str, path: str) -> EmbedsvcClientError:
    return EmbedsvcClientError(grpc.StatusCode.DATA_LOSS, message, "DATA_LOSS", {"file": path})


class ArchiveWriter:
    """Writes a snapshot's stream (DownloadSnapshot's messages) as a tar file: to `<destination>.partial`, renamed to
    `destination` only once every file arrived whole and matched its checksum."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self.partial = destination.with_name(destination.name + ".partial")
        self._out = open(self.partial, "wb")  # noqa: SIM115 - closed by close() or abort()
        self.manifest: dict[str, Any] | None = None
        self._files: list[dict[str, Any]] = []
        self._at = -1
        self._written = 0
        self._digest = hashlib.sha256()

    def add(self, manifest: bytes, path: str, offset: int, data: bytes) -> None:
        if self.manifest is None:
            if not manifest:
                raise _damaged("the stream did not start with the snapshot's manifest", MANIFEST)
            self.manifest = json.loads(manifest)
            self._files = list(self.manifest["files"])
            self._member(MANIFEST, len(manifest))
            self._out.write(manifest)
            self._pad(len(manifest))
            return
        if self._at < 0 or path != self._files[self._at]["path"]:
            self._next(path)
        if offset != self._written:
            raise _damaged(f"{path}: a chunk at offset {offset}, expected {self._written}", path)
        self._written += len(data)
        if self._written > self._files[self._at]["size_bytes"]:
            raise _damaged(f"{path} is longer than its manifest says", path)
        self._digest.update(data)
        self._out.write(data)

    def _next(self, path: str) -> None:
        while True:
            self._finish()
            self._at += 1
            if self._at >= len(self._files):
                raise _damaged(f"{path!r} is not a file of the manifest (in its order)", path)
            entry = self._files[self._at]
            self._member(entry["path"], entry["size_bytes"])
            if entry["path"] == path:
                return

    def _finish(self) -> None:
        if self._at < 0:
            return
        entry = self._files[self._at]
        if self._written != entry["size_bytes"] or self._digest.hexdigest() != entry["sha256"]:
            raise _damaged(f"{entry['path']} does not match its size and sha256 in the manifest", entry["path"])
        self._pad(self._written)
        self._written = 0
        self._digest = hashlib.sha256()

    def _member(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        self._out.write(info.tobuf(tarfile.PAX_FORMAT))

    def _pad(self, size: int) -> None:
        self._out.write(b"\0" * (-size % _BLOCK))

    def close(self) -> dict[str, Any]:
        """Finish the archive (every file must have arrived); the manifest."""
        if self.manifest is None:
            raise _damaged("the stream ended before the snapshot's manifest", MANIFEST)
        while self._at < len(self._files) - 1:  # files that sent no chunk must be empty
            self._finish()
            self._at += 1
            self._member(self._files[self._at]["path"], self._files[self._at]["size_bytes"])
        self._finish()
        self._out.write(b"\0" * (2 * _BLOCK))
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self.partial, self.destination)
        return self.manifest

    def abort(self) -> None:
        self._out.close()
        self.partial.unlink(missing_ok=True)


def read_archive(source: Path, chunk_bytes: int) -> Iterator[tuple[bytes, str, int, bytes]]:
    """An archive's stream for UploadSnapshot: (manifest, "", 0, b"") first, then (b"", path, offset, chunk) for
    every file of the manifest, in its order. ValueError when the archive lacks the manifest or a file."""
    with tarfile.open(source, "r:") as archive:
        first = archive.next()
        if first is None or first.name != MANIFEST:
            raise ValueError(f"{source}: not a snapshot archive (it must start with {MANIFEST})")
        handle = archive.extractfile(first)
        assert handle is not None
        manifest = handle.read()
        yield manifest, "", 0, b""
        for entry in json.loads(manifest)["files"]:
            try:
                member = archive.getmember(entry["path"])
            except KeyError:
                raise ValueError(f"{source}: {entry['path']} of the manifest is missing") from None
            reader = archive.extractfile(member)
            if reader is None:
                raise ValueError(f"{source}: {entry['path']} is not a file")
            offset = 0
            while block := reader.read(chunk_bytes):
                yield b"", entry["path"], offset, block
                offset += len(block)
