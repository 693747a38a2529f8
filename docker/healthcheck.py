#!/opt/venv/bin/python
"""The container's health check: exit 0 when the server says SERVING on gRPC health, 1 otherwise.

The image's HEALTHCHECK and the compose files run it as `embedsvc-healthcheck`. Health checking is open to all, so it
needs no key. It asks 127.0.0.1:50051 (the image's port); EMBEDSVC_HEALTH_TARGET names another address. A server with
[server.tls] needs a check of its own (a plaintext call to a TLS port fails).
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    target = os.environ.get("EMBEDSVC_HEALTH_TARGET", "127.0.0.1:50051")
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=8)
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
