"""THE table of the API's services: for each service of `protos/embedsvc/v1/`, its generated modules, descriptor and
stub.

Everything that lists services derives from this table: the server registers, health-checks and reflects them
(`transport/services.py` adds each one's servicer factory and health group), the HTTP gateway routes them and
describes them in OpenAPI, the client builds its stubs from it, and the tests check that it holds exactly the services
of the proto files. It imports generated code only (and grpcio's health service), so the light client may import it;
anything server-side about a service belongs in `transport/services.py`.

Adding a service: its proto file, one entry here, one in `transport/services.py`, its servicer and its tests
(docs/architecture.md, "Adding a service").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedsvc.v1 import (
    arithmetic_pb2,
    arithmetic_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    latent_pb2,
    latent_pb2_grpc,
    maps_pb2,
    maps_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
    text_pb2,
    text_pb2_grpc,
    words_pb2,
    words_pb2_grpc,
)


@dataclass(frozen=True)
class Service:
    """One gRPC service: its name in the proto file, its generated modules (`*_pb2`, `*_pb2_grpc`) and a short name
    (the attribute that holds its stub in the client's call table, `client._calls.<short>`)."""

    name: str
    messages: ModuleType
    grpc: ModuleType
    short: str

    @property
    def descriptor(self) -> ServiceDescriptor:
        return self.messages.DESCRIPTOR.services_by_name[self.name]

    @property
    def full_name(self) -> str:
        """`embedsvc.v1.WordService`: the name health checks and reflection use."""
        return self.descriptor.full_name

    @property
    def stub(self) -> Callable[[Any], Any]:
        """The generated stub class: `stub(channel)` (a blocking or an asyncio channel)."""
        return getattr(self.grpc, f"{self.name}Stub")

    @property
    def add_to_server(self) -> Callable[[Any, Any], None]:
        """The generated `add_<name>Servicer_to_server(servicer, server)`."""
        return getattr(self.grpc, f"add_{self.name}Servicer_to_server")

    def methods(self) -> Iterator[tuple[str, MethodDescriptor]]:
        """Each RPC's path (`/embedsvc.v1.WordService/EmbedWords`) and descriptor, in proto order."""
        for method in self.descriptor.methods:
            yield f"/{self.full_name}/{method.name}", method


SERVER = Service("ServerService", server_pb2, server_pb2_grpc, "server")
MODELS = Service("ModelService", models_pb2, models_pb2_grpc, "models")
WORDS = Service("WordService", words_pb2, words_pb2_grpc, "words")
ARITHMETIC = Service("ArithmeticService", arithmetic_pb2, arithmetic_pb2_grpc, "arith")
TEXT = Service("TextService", text_pb2, text_pb2_grpc, "text")
IMAGES = Service("ImageService", images_pb2, images_pb2_grpc, "images")
LATENT = Service("LatentService", latent_pb2, latent_pb2_grpc, "latent")
MAPS = Service("MapService", maps_pb2, maps_pb2_grpc, "maps")
COLLECTIONS = Service("CollectionService", collections_pb2, collections_pb2_grpc, "collections")
OPERATIONS = Service("OperationService", operations_pb2, operations_pb2_grpc, "operations")
SNAPSHOTS = Service("SnapshotService", snapshots_pb2, snapshots_pb2_grpc, "snapshots")

# Every service of protos/embedsvc/v1, in the order the API documents them.
SERVICES: tuple[Service, ...] = (
    SERVER,
    MODELS,
    WORDS,
    ARITHMETIC,
    TEXT,
    IMAGES,
    LATENT,
    MAPS,
    COLLECTIONS,
    OPERATIONS,
    SNAPSHOTS,
)

# grpc.health.v1.Health: not ours (grpcio's servicer answers it), but every server has it and the client calls it.
HEALTH = Service("Health", health_pb2, health_pb2_grpc, "health")
