"""SnapshotService: snapshots of collections (taken and restored as operations), and their files as streams."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from embedsvc.core.collections.snapshots import Chunk, Snapshots
from embedsvc.index.snapshot_files import Manifest
from embedsvc.settings import Role
from embedsvc.transport import auth, convert
from embedsvc.transport import collections_convert as cc
from embedsvc.transport.operations_servicer import Outcomes
from embedsvc.v1 import snapshots_pb2, snapshots_pb2_grpc


class SnapshotServicer(snapshots_pb2_grpc.SnapshotServiceServicer):
    def __init__(self, snapshots: Snapshots, outcomes: Outcomes) -> None:
        self._snapshots = snapshots
        self._outcomes = outcomes

    def _authorize(self, name: str, role: Role, field: str = "name") -> None:
        """The caller may touch the snapshot's collection (a key's collection scope covers its snapshots)."""
        manifest = self._snapshots.get(name, field)
        auth.authorize(auth.CURRENT.get(), role, [manifest.config.name])

    def CreateSnapshot(
        self, request: snapshots_pb2.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.CreateSnapshotResponse:
        operation = self._snapshots.create(request.collection)
        return snapshots_pb2.CreateSnapshotResponse(operation=self._outcomes.message(operation))

    def GetSnapshot(
        self, request: snapshots_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.GetSnapshotResponse:
        self._authorize(request.name, Role.READ)
        return snapshots_pb2.GetSnapshotResponse(snapshot=cc.snapshot_message(self._snapshots.get(request.name)))

    def ListSnapshots(
        self, request: snapshots_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.ListSnapshotsResponse:
        page = self._snapshots.list_page(request.page_size, request.page_token, request.collection, auth.visible)
        return snapshots_pb2.ListSnapshotsResponse(
            snapshots=[cc.snapshot_message(m) for m in page.entries], next_page_token=page.next_page_token
        )

    def DeleteSnapshot(
        self, request: snapshots_pb2.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.DeleteSnapshotResponse:
        self._authorize(request.name, Role.ADMIN)
        self._snapshots.delete(request.name)
        return snapshots_pb2.DeleteSnapshotResponse()

    def RestoreSnapshot(
        self, request: snapshots_pb2.RestoreSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.RestoreSnapshotResponse:
        self._authorize(request.snapshot, Role.ADMIN, "snapshot")
        operation = self._snapshots.restore(
            request.snapshot,
            request.name,
            replace_existing=request.replace_existing,
            allow_model_mismatch=request.allow_model_mismatch,
            backend=cc.backend(request.backend),
        )
        return snapshots_pb2.RestoreSnapshotResponse(operation=self._outcomes.message(operation))

    def DownloadSnapshot(
        self, request: snapshots_pb2.DownloadSnapshotRequest, context: grpc.ServicerContext
    ) -> Iterator[snapshots_pb2.DownloadSnapshotResponse]:
        self._authorize(request.name, Role.ADMIN)
        control = convert.call_control(context)
        for chunk in self._snapshots.download(request.name, request.chunk_bytes, control.check):
            yield snapshots_pb2.DownloadSnapshotResponse(
                manifest=chunk.manifest, path=chunk.path, offset=chunk.offset, data=chunk.data
            )

    def UploadSnapshot(
        self, request_iterator: Iterator[snapshots_pb2.UploadSnapshotRequest], context: grpc.ServicerContext
    ) -> snapshots_pb2.UploadSnapshotResponse:
        control = convert.call_control(context)
        chunks = (Chunk(r.manifest, r.path, r.offset, r.data) for r in request_iterator)

        def authorized() -> Iterator[Chunk]:
            first = next(chunks, None)
            if first is not None:
                try:
                    name = Manifest.from_json(first.manifest).config.name
                except ValueError:
                    name = ""
                auth.authorize(auth.CURRENT.get(), Role.ADMIN, [name])
                yield first
                yield from chunks

        manifest = self._snapshots.upload(authorized(), control.check)
        return snapshots_pb2.UploadSnapshotResponse(snapshot=cc.snapshot_message(manifest))
