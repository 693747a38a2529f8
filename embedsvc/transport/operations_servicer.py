"""OperationService: long-running operations (Rebuild) as google.longrunning-compatible Operation messages."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2

from embedsvc.core.collections.admin import CollectionAdmin
from embedsvc.core.operations import Operation
from embedsvc.settings import Role
from embedsvc.transport import auth
from embedsvc.transport.collections_convert import info_message, timestamp
from embedsvc.transport.status import to_status
from embedsvc.v1 import operations_pb2, operations_pb2_grpc


def operation_message(op: Operation, admin: CollectionAdmin) -> operations_pb2.Operation:
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
    )
    message = operations_pb2.Operation(name=op.name, done=op.done)
    message.metadata.Pack(metadata)
    if op.error is not None:
        message.error.CopyFrom(to_status(op.error.as_error()))
    elif op.done:
        result = admin.operation_result(op)
        packed = any_pb2.Any()
        if result is not None:
            packed.Pack(info_message(result))
        message.response.CopyFrom(packed)
    return message


class OperationServicer(operations_pb2_grpc.OperationServiceServicer):
    def __init__(self, admin: CollectionAdmin) -> None:
        self._admin = admin
        self._operations = admin.operations

    def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.GetOperationResponse:
        op = self._operations.get(request.name)
        auth.authorize(auth.CURRENT.get(), Role.READ, [op.collection])
        return operations_pb2.GetOperationResponse(operation=operation_message(op, self._admin))

    def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        page = self._admin.list_operations(request.page_size, request.page_token, request.collection, auth.visible)
        return operations_pb2.ListOperationsResponse(
            operations=[operation_message(op, self._admin) for op in page.entries],
            next_page_token=page.next_page_token,
        )

    def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.CancelOperationResponse:
        auth.authorize(auth.CURRENT.get(), Role.ADMIN, [self._operations.get(request.name).collection])
        op = self._operations.cancel(request.name)
        return operations_pb2.CancelOperationResponse(operation=operation_message(op, self._admin))
