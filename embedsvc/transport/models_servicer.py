"""ModelService: lists and describes the hosted models; loads, unloads and reloads them at run time."""

from __future__ import annotations

import grpc

from embedsvc.core.paging import PageTokens, page_size
from embedsvc.core.registry import ModelRegistry, spec_from_config
from embedsvc.errors import missing
from embedsvc.limits import Limits
from embedsvc.transport import convert
from embedsvc.v1 import models_pb2, models_pb2_grpc


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry, tokens: PageTokens, limits: Limits) -> None:
        self._registry = registry
        self._tokens = tokens
        self._limits = limits

    def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        page = self._tokens.page(
            self._registry.infos(),
            lambda info: info.name,
            listing="models",
            token=request.page_token,
            size=page_size(request.page_size, self._limits.max_page_size),
        )
        return models_pb2.ListModelsResponse(
            models=[convert.model_info_message(i) for i in page.entries], next_page_token=page.next_page_token
        )

    def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.GetModelResponse:
        return models_pb2.GetModelResponse(model=convert.model_info_message(self._registry.info(request.name)))

    def LoadModel(
        self, request: models_pb2.LoadModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.LoadModelResponse:
        name = _name(request.name)
        spec = spec_from_config(name, request.config) if request.config else None
        return models_pb2.LoadModelResponse(model=convert.model_info_message(self._registry.load(name, spec)))

    def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.UnloadModelResponse:
        info = self._registry.unload(_name(request.name))
        return models_pb2.UnloadModelResponse(model=convert.model_info_message(info))

    def ReloadModel(
        self, request: models_pb2.ReloadModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.ReloadModelResponse:
        name = _name(request.name)
        spec = spec_from_config(name, request.config) if request.config else None
        return models_pb2.ReloadModelResponse(model=convert.model_info_message(self._registry.reload(name, spec)))


def _name(name: str) -> str:
    if not name:
        raise missing("name", "the model's name")
    return name
