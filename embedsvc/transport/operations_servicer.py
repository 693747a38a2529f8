"""OperationService: long-running operations (Rebuild, Reembed, CreateSnapshot, RestoreSnapshot) as
google.longrunning-compatible Operation messages."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2

from embedsvc.core.collections.admin import CollectionAdmin
from embedsvc.core.collections.reembed import REEMBED
from embedsvc.core.collections.snapshots import SNAPSHOT, Snapshots
from embedsvc.core.operations import Operation
from embedsvc.errors import EmbedsvcError
from embedsvc.settings import Role
from embedsvc.transport import auth
from embedsvc.transport.collections_convert import info_message, snapshot_message, timestamp
from embedsvc.transport.status import to_status
from embedsvc.v1 import collections_pb2, operations_pb2, operations_pb2_grpc


@dataclass(frozen=True)
class Outcomes:
    """What turns an operation into its message: the domain objects its result names."""

    admin: CollectionAdmin
    snapshots: Snapshots

    def response(self, op: Operation) -> any_pb2.Any:
        """A finished operation's result, packed (empty when what it made is gone)."""
        packed = any_pb2.Any()
        info = self.admin.operation_result(op)
        result = op.result or {}
        if op.kind == SNAPSHOT:
            with contextlib.suppress(EmbedsvcError):
                packed.Pack(snapshot_message(self.snapshots.get(f"snapshots/{result.get('snapshot', '')}")))
        elif op.kind == REEMBED:
            packed.Pack(
                collections_pb2.ReembedResult(
                    collection=info_message(info) if info is not None else None,
                    source=result.get("source", ""),
                    switched_aliases=result.get("switched_aliases", []),
                    reembedded=result.get("reembedded", 0),
                    dropped=result.get("dropped", 0),
                    dropped_sample=result.get("dropped_sample", []),
                )
            )
        elif info is not None:
            packed.Pack(info_message(info))
        return packed

    def message(self, op: Operation) -> operations_pb2.Operation:
        metadata = operations_pb2.OperationMetadata(
            kind=op.kind,
            collection=op.collection,
            stage=op.stage,
            done_units=op.done_units,
            total_units=op.total_units,
            create_time=timestamp(op.create_time),
            update_time=timestamp(op.update_time),
            end_time=timestamp(op.end_time),
            cancel_requested=op.cancel_requested,
            units_per_second=op.rate,
            eta_seconds=op.eta_s,
            replica=op.replica,
            warnings=op.warnings,
        )
        if op.kind == REEMBED:
            d = op.details
            metadata.reembed.CopyFrom(
                operations_pb2.ReembedProgress(
                    source=d.get("source", op.collection),
                    target=d.get("target", op.params.get("target", "")),
                    model=d.get("model", op.params.get("model", "")),
                    model_version=d.get("model_version", op.params.get("version", "")),
                    aliases=d.get("aliases", []),
                    unembeddable=d.get("unembeddable", 0),
                    unembeddable_sample=d.get("unembeddable_sample", []),
                    caught_up=d.get("caught_up", 0),
                )
            )
        message = operations_pb2.Operation(name=op.name, done=op.done)
        message.metadata.Pack(metadata)
        if op.error is not None:
            message.error.CopyFrom(to_status(op.error.as_error()))
        elif op.done:
            message.response.CopyFrom(self.response(op))
        return message


class OperationServicer(operations_pb2_grpc.OperationServiceServicer):
    def __init__(self, admin: CollectionAdmin, outcomes: Outcomes) -> None:
        self._admin = admin
        self._operations = admin.operations
        self._outcomes = outcomes

    def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.GetOperationResponse:
        op = self._operations.get(request.name)
        auth.authorize(auth.CURRENT.get(), Role.READ, [op.collection])
        return operations_pb2.GetOperationResponse(operation=self._outcomes.message(op))

    def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        page = self._admin.list_operations(request.page_size, request.page_token, request.collection, auth.visible)
        return operations_pb2.ListOperationsResponse(
            operations=[self._outcomes.message(op) for op in page.entries],
            next_page_token=page.next_page_token,
        )

    def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.CancelOperationResponse:
        auth.authorize(auth.CURRENT.get(), Role.ADMIN, [self._operations.get(request.name).collection])
        op = self._operations.cancel(request.name)
        return operations_pb2.CancelOperationResponse(operation=self._outcomes.message(op))
