"""ServerService: the server's versions and limits, for clients to learn before they hit one."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import grpc

from embedsvc import __version__
from embedsvc.limits import Limits
from embedsvc.transport.collections_convert import timestamp
from embedsvc.v1 import server_pb2, server_pb2_grpc

API_VERSION = "v1"


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    def __init__(self, limits: Limits, started: datetime) -> None:
        self._info = server_pb2.GetServerInfoResponse(
            server_version=__version__,
            api_version=API_VERSION,
            start_time=timestamp(started),
            limits=server_pb2.Limits(**dataclasses.asdict(limits)),
        )

    def GetServerInfo(
        self, request: server_pb2.GetServerInfoRequest, context: grpc.ServicerContext
    ) -> server_pb2.GetServerInfoResponse:
        return self._info
