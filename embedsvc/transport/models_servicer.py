"""ModelService: lists and describes the hosted models."""

from __future__ import annotations

import grpc

from embedsvc.core.registry import ModelRegistry
from embedsvc.transport import convert
from embedsvc.v1 import models_pb2, models_pb2_grpc


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(models=[convert.model_info_message(i) for i in self._registry.infos()])

    def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.GetModelResponse:
        return models_pb2.GetModelResponse(model=convert.model_info_message(self._registry.info(request.name)))
