"""A failed call as the client reports it: EmbedsvcClientError with the code, the reason and metadata of the server's
ErrorInfo, and the request id."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from embedsvc.client.types import EmbedsvcClientError

# What the server's gRPC itself says when it sheds a call before any handler sees it, and the setting behind it:
# past max_pending_rpcs, grpcio 1.85's core cancels arriving calls ("CANCELLED", with no ErrorInfo; a call this client
# cancelled itself says "Locally cancelled by application!"); past the backstop behind admission control,
# RESOURCE_EXHAUSTED.
_GRPC_REFUSALS = {
    (grpc.StatusCode.CANCELLED, "CANCELLED"): "max_pending_rpcs",
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"): "max_concurrent_rpcs",
}


def error(exc: grpc.RpcError) -> EmbedsvcClientError:
    """The client error of a failed call, with the reason and metadata of the server's ErrorInfo and the call's
    request id (the `x-request-id` the server logged it under)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    trailers = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
    details = trailers.get("grpc-status-details-bin")
    if details is not None:
        found = status_error(status_pb2.Status.FromString(details))
    else:
        found = EmbedsvcClientError(code, message or "", code.name, {})
        limit = _GRPC_REFUSALS.get((code, found.message))
        if limit is not None:  # shed by the server's gRPC: overload like any other, to retry shortly
            found.reason, found.metadata = "OVERLOADED", {"limit": limit}
    found.request_id = trailers.get("x-request-id", "")
    return found


def status_error(status: status_pb2.Status) -> EmbedsvcClientError:
    """The client error a google.rpc.Status describes (a failed stream batch or operation, or a call's trailer)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    reason, metadata = code.name, {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
    return EmbedsvcClientError(code, status.message, reason, metadata)
