"""Snapshots of collections: taking one (an operation), the catalogue, restoring one (an operation), and a snapshot as
a stream of chunks (download and upload).

Where things live: a snapshot's files in the snapshot directory (`[storage] snapshot_dir`, default
`<data_dir>/snapshot-files`), one folder per snapshot, `<id>/`, with its `manifest.json`; its catalogue entry (the
same manifest) in the state replicas share (`index/state.Records`, kind "snapshots"). A snapshot is written as
`.tmp-<replica>-<id>/`, renamed to `<id>/` once every file is fsync'd, and entered in the catalogue last; deleting
leaves the catalogue first, then renames the folder aside (`.deleted-<id>`) and removes it. A crash at any point leaves
either a listed, whole snapshot or garbage that `cleanup` removes at the next start (this replica's temporary and
unlisted folders only: another replica may be writing its own into a shared directory).

The files' format and checksums are `index/snapshot_files.py`'s; what each backend writes and restores, its own. The
policy is here: names, the model a restored collection needs, the limits of a stream.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedsvc import durable
from embedsvc.core.collections.binding import binding
from embedsvc.core.collections.service import Collections
from embedsvc.core.operations import Operation, OperationStore, Progress
from embedsvc.core.paging import Page, page_size
from embedsvc.errors import EmbedsvcError, Reason, invalid, limit_exceeded, missing
from embedsvc.index.backend import check_name
from embedsvc.index.snapshot_files import MANIFEST, FileCheck, Manifest, damaged, open_file
from embedsvc.index.state import Records
from embedsvc.index.stores import snapshot_items
from embedsvc.index.types import Backend, CollectionConfig

log = logging.getLogger(__name__)

SNAPSHOT = "snapshot"
RESTORE = "restore"
KIND = "snapshots"
PREFIX = "snapshots/"
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 4096
MAX_CHUNK = 4 << 20
_TMP = ".tmp-"
_DELETED = ".deleted-"
Visible = Callable[[str], bool]


def _everything(name: str) -> bool:
    return True


@dataclass(frozen=True)
class Chunk:
    """One message of a snapshot's stream: the manifest (first), or a piece of one file."""

    manifest: bytes = b""
    path: str = ""
    offset: int = 0
    data: bytes = b""


def snapshot_id(name: str, field: str = "name") -> str:
    if not name:
        raise missing(field, "the snapshot's name")
    found = name.removeprefix(PREFIX)
    if not found or len(found) > 64 or not all(c.isascii() and (c.isalnum() or c == "-") for c in found):
        raise invalid(field, f"{name!r} is not a snapshot name (snapshots/<id>)")
    return found


def not_found(name: str, field: str = "name") -> EmbedsvcError:
    return EmbedsvcError(
        Reason.SNAPSHOT_NOT_FOUND, f"no snapshot named {name!r}", field=field, metadata={"snapshot": name}
    )


class Snapshots:
    def __init__(
        self,
        collections: Collections,
        records: Records,
        operations: OperationStore,
        folder: Path,
        replica: str,
        *,
        reserve: Callable[[str], None] = lambda _name: None,
    ) -> None:
        """`reserve(name)` refuses a restore's target name that an alias holds (they share a namespace)."""
        self.collections = collections
        self.store = collections.store
        self.limits = collections.limits
        self.records = records
        self.operations = operations
        self.folder = folder
        self.replica = replica
        self._reserve = reserve

    # ---- the catalogue -------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """At start: remove this replica's unfinished snapshots, deleted ones' folders, and its folders that the
        catalogue does not list (a crash between the rename and the catalogue entry)."""
        durable.ensure_dir(self.folder)
        listed = set(self.records.list(KIND))
        for path in self.folder.iterdir():
            mine = path.name.startswith(f"{_TMP}{self.replica}-") or path.name.startswith(_DELETED)
            if not mine and path.is_dir() and not path.name.startswith(".") and path.name not in listed:
                try:
                    mine = Manifest.from_json((path / MANIFEST).read_bytes()).replica == self.replica
                except (OSError, ValueError):
                    mine = False
            if mine:
                log.warning("removing %s: a snapshot that was not finished or not listed", path)
                durable.remove_tree(path)
        durable.fsync_dir(self.folder)

    def get(self, name: str, field: str = "name") -> Manifest:
        raw = self.records.get(KIND, snapshot_id(name, field))
        if raw is None:
            raise not_found(name, field)
        try:
            return Manifest.from_json(raw)
        except ValueError as exc:
            raise EmbedsvcError(
                Reason.DATA_LOSS, f"the catalogue entry of {name} is damaged: {exc}", metadata={"snapshot": name}
            ) from None

    def list_page(self, size: int, token: str, collection: str = "", visible: Visible = _everything) -> Page[Manifest]:
        found = []
        for key, raw in self.records.list(KIND).items():
            try:
                manifest = Manifest.from_json(raw)
            except ValueError as exc:
                log.error("snapshot catalogue entry %s is damaged and was skipped: %s", key, exc)
                continue
            name = manifest.config.name
            if (not collection or name == collection) and visible(name):
                found.append(manifest)
        return self.collections.tokens.page(
            sorted(found, key=lambda m: m.id, reverse=True),
            lambda m: m.id,
            listing=f"snapshots:{collection}",
            token=token,
            size=page_size(size, self.limits.max_page_size),
            descending=True,
        )

    def delete(self, name: str) -> None:
        manifest = self.get(name)
        self.records.delete(KIND, manifest.id)
        path = self.folder / manifest.id
        if path.is_dir():
            aside = self.folder / f"{_DELETED}{manifest.id}"
            durable.replace(path, aside)
            durable.fsync_dir(self.folder)
            durable.remove_tree(aside)

    def files(self, manifest: Manifest) -> Path:
        """The folder of a snapshot's files; SNAPSHOT_ELSEWHERE when another replica made it where this one cannot
        see, DATA_LOSS when they are gone."""
        path = self.folder / manifest.id
        if (path / MANIFEST).is_file():
            return path
        name = PREFIX + manifest.id
        if manifest.replica != self.replica:
            raise EmbedsvcError(
                Reason.SNAPSHOT_ELSEWHERE,
                f"{name} was made by replica {manifest.replica}, and its files are not in this server's snapshot "
                f"directory ({self.folder}); give every replica the same [storage] snapshot_dir",
                metadata={"snapshot": name, "replica": manifest.replica},
            )
        raise damaged(name, MANIFEST, f"and the snapshot's other files are missing from {self.folder}")

    # ---- taking --------------------------------------------------------------------------------------------------

    def create(self, name: str) -> Operation:
        """Start (or find) a snapshot of a collection; it runs in the background."""
        collection = self.store.get(self.collections.resolve(name))
        collection.check_ready()
        source = collection.config.name

        def work(progress: Progress) -> dict[str, Any]:
            snapshot = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
            tmp = self.folder / f"{_TMP}{self.replica}-{snapshot}"
            durable.ensure_dir(self.folder)
            try:
                durable.mkdir(tmp)
                progress.stage("copying", collection.count)
                taken = collection.snapshot(tmp, progress.check, progress.units)
                manifest = Manifest(
                    snapshot,
                    taken.format,
                    collection.config,
                    taken.count,
                    taken.position,
                    taken.point_in_time,
                    time.time(),
                    self.replica,
                    taken.files,
                )
                durable.write_file(tmp / MANIFEST, manifest.to_json())
                durable.fsync_dir(tmp)
                progress.check()
                durable.replace(tmp, self.folder / snapshot)
                durable.fsync_dir(self.folder)
            except BaseException:
                durable.remove_tree(tmp)
                raise
            self.records.put(KIND, snapshot, manifest.to_json())
            progress.stage("done")
            return {"snapshot": snapshot}

        return self.operations.start(SNAPSHOT, source, work, params={"collection": source})

    # ---- restoring -----------------------------------------------------------------------------------------------

    def restore(
        self,
        name: str,
        target: str,
        *,
        replace_existing: bool = False,
        allow_model_mismatch: bool = False,
        backend: Backend | None = None,
    ) -> Operation:
        """Start restoring a snapshot into a collection named `target`."""
        manifest = self.get(name, "snapshot")
        check_name(target, "name")
        self._reserve(target)
        if self.store.has(target) and not replace_existing:
            raise EmbedsvcError(
                Reason.COLLECTION_EXISTS,
                f"a collection named '{target}' exists (set replace_existing to restore over it)",
                field="name",
                metadata={"collection": target},
            )
        warnings = self._model_check(manifest, allow_model_mismatch)
        source = self.files(manifest)
        old = manifest.config
        config = replace(
            old,
            name=target,
            created_at=datetime.now(UTC).timestamp(),
            backend=backend or old.backend,
            space=f"collection:{target}" if old.space == f"collection:{old.name}" else old.space,
        )
        config, moved = self._for_backend(config, old.backend)
        warnings += moved
        snapshot = PREFIX + manifest.id

        def work(progress: Progress) -> dict[str, Any]:
            for warning in warnings:
                progress.warn(warning)
            progress.stage("restoring", manifest.count)
            items = snapshot_items(snapshot, source, manifest, progress.check)
            self.store.restore(
                config,
                snapshot,
                source,
                manifest,
                items,
                progress.check,
                progress.units,
                replace=replace_existing,
            )
            progress.stage("done")
            return {"collection": target}

        return self.operations.start(RESTORE, target, work, params={"snapshot": snapshot, "name": target})

    def _for_backend(self, config: CollectionConfig, source: Backend) -> tuple[CollectionConfig, list[str]]:
        """A snapshot's configuration for the backend it is restored into, and a warning for each option left out.
        Moved to a backend that neither rescores nor calibrates (Milvus), the embedded backend's recall target,
        oversampling and indexed fields are left out (Milvus refuses them; its searches and filters work without
        them); either way the index parameters are resolved as CreateCollection resolves them for that backend.
        Options the target has no equivalent of at all (a quantised FLAT on Milvus) are still refused there."""
        if config.backend is source:
            return config, []
        rescoring = self.store.rescoring(config.backend)
        index = config.index
        warnings = []
        if not rescoring:
            dropped = [n for n, v in (("target_recall", index.target_recall), ("oversample", index.oversample)) if v]
            if dropped:
                warnings.append(
                    f"{' and '.join(dropped)} of the index left out: they are the embedded (FAISS) backend's "
                    f"(set nprobe or ef_search on {config.backend.value})"
                )
            index = replace(index, target_recall=0.0, oversample=0)
            if config.indexed_fields:
                names = ", ".join(f.name for f in config.indexed_fields)
                warnings.append(
                    f"indexed fields ({names}) left out: {config.backend.value} has no such index here; filters on "
                    "them work without it"
                )
                config = replace(config, indexed_fields=())
        return replace(config, index=index.resolved(config.dimension, rescoring=rescoring)), warnings

    def _model_check(self, manifest: Manifest, allow_mismatch: bool) -> list[str]:
        """The warnings of restoring a bound collection whose model is not served at its version (refused unless
        `allow_mismatch`)."""
        config = manifest.config
        if not config.model:
            return []
        try:
            served = binding(self.collections.registry, config.model, self.collections.latents).version
        except EmbedsvcError as exc:
            if not allow_mismatch:
                raise EmbedsvcError(
                    exc.reason,
                    f"the snapshot's collection is bound to model '{config.model}' ({config.model_version}), which "
                    f"this server does not serve ({exc.message}); set allow_model_mismatch to restore it anyway",
                    field="snapshot",
                    metadata={"model": config.model, "expected": config.model_version},
                ) from None
            return [f"model '{config.model}' is not served here ({exc.reason}): inputs cannot be embedded until it is"]
        if served == config.model_version:
            return []
        if not allow_mismatch:
            raise EmbedsvcError(
                Reason.MODEL_VERSION_CHANGED,
                f"the snapshot's collection holds vectors of model '{config.model}' {config.model_version}; this "
                f"server serves {served}. Set allow_model_mismatch to restore it anyway (then Reembed it)",
                field="snapshot",
                metadata={"expected": config.model_version, "actual": served},
            )
        return [
            f"model '{config.model}' is served at {served}, not {config.model_version}: the collection's inputs are "
            "refused with MODEL_VERSION_CHANGED until it is re-embedded (Reembed)"
        ]

    # ---- streams -------------------------------------------------------------------------------------------------

    def download(self, name: str, chunk_bytes: int, check: Callable[[], None]) -> Iterator[Chunk]:
        """The manifest, then every file in chunks, each file checked as it goes (DATA_LOSS ends the stream)."""
        manifest = self.get(name)
        size = chunk_bytes or DEFAULT_CHUNK
        ceiling = min(MAX_CHUNK, self.limits.max_message_bytes - 64 * 1024)
        if not MIN_CHUNK <= size <= ceiling:
            raise invalid("chunk_bytes", f"chunk_bytes must be {MIN_CHUNK}..{ceiling}, got {size}")
        source = self.files(manifest)
        snapshot = PREFIX + manifest.id

        def chunks() -> Iterator[Chunk]:
            yield Chunk(manifest=manifest.to_json())
            for entry in manifest.files:
                checker = FileCheck(snapshot, entry)
                offset = 0
                with open_file(snapshot, source, entry.path) as reader:
                    while block := reader.read(size):
                        check()
                        checker.update(block)
                        yield Chunk(path=entry.path, offset=offset, data=block)
                        offset += len(block)
                checker.finish()

        return chunks()

    def upload(self, chunks: Iterator[Chunk], check: Callable[[], None]) -> Manifest:
        """Keep an uploaded snapshot (a new id; the uploaded files checked against their manifest)."""
        first = next(chunks, None)
        if first is None or not first.manifest:
            raise missing("manifest", "the snapshot's manifest (in the first message)")
        try:
            uploaded = Manifest.from_json(first.manifest)
        except ValueError as exc:
            raise invalid("manifest", str(exc)) from None
        limit = self.limits.max_snapshot_upload_bytes
        if uploaded.size_bytes > limit:
            raise limit_exceeded("manifest", "bytes of the snapshot's files", uploaded.size_bytes, limit)
        check_name(uploaded.config.name, "manifest")
        snapshot = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        manifest = uploaded.with_id(snapshot, self.replica)
        name = PREFIX + snapshot
        tmp = self.folder / f"{_TMP}{self.replica}-{snapshot}"
        durable.ensure_dir(self.folder)
        durable.mkdir(tmp)
        try:
            _Receiver(name, tmp, manifest).receive(chunks, check, first)
            durable.write_file(tmp / MANIFEST, manifest.to_json())
            durable.fsync_dir(tmp)
            durable.replace(tmp, self.folder / snapshot)
            durable.fsync_dir(self.folder)
        except BaseException:
            durable.remove_tree(tmp)
            raise
        self.records.put(KIND, snapshot, manifest.to_json())
        return manifest


class _Receiver:
    """Writes an upload's files in the manifest's order, each whole, checking offsets, sizes and checksums (a file
    that sends no chunk must be empty)."""

    def __init__(self, snapshot: str, folder: Path, manifest: Manifest) -> None:
        self.snapshot = snapshot
        self.folder = folder
        self.files = list(manifest.files)
        self.at = -1  # the file being written
        self.checker: FileCheck | None = None
        self.fd: int | None = None

    def receive(self, chunks: Iterator[Chunk], check: Callable[[], None], first: Chunk) -> None:
        try:
            if first.path or first.data:
                self._chunk(first)
            for chunk in chunks:
                check()
                if chunk.manifest:
                    raise invalid("manifest", "the manifest comes in the first message only")
                self._chunk(chunk)
            self._move_to(len(self.files))
        finally:
            self._close()

    def _chunk(self, chunk: Chunk) -> None:
        if self.at < 0 or chunk.path != self.files[self.at].path:
            index = next((n for n in range(self.at + 1, len(self.files)) if self.files[n].path == chunk.path), None)
            if index is None:
                raise invalid("path", f"{chunk.path!r} is not a later file of the manifest (files come in its order)")
            self._move_to(index)
        assert self.checker is not None and self.fd is not None
        if chunk.offset != self.checker.size:
            raise invalid("offset", f"{chunk.path}: offset {chunk.offset}, expected {self.checker.size}")
        self.checker.update(chunk.data)
        durable.write(self.fd, chunk.data)

    def _move_to(self, index: int) -> None:
        """Finish the current file and the ones before `index` that sent nothing, then open file `index`."""
        while self.at < index:
            if self.checker is not None:
                self.checker.finish()
                self._close()
            self.at += 1
            if self.at < len(self.files):
                entry = self.files[self.at]
                target = self.folder / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                self.checker = FileCheck(self.snapshot, entry)

    def _close(self) -> None:
        if self.fd is not None:
            durable.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
        self.checker = None
