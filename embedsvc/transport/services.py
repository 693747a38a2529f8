"""The server's half of the table of services (`embedsvc/api.py` is the other half): for each service, the servicer
that answers it and its health group.

`Server` registers, health-checks and reflects exactly these; a test checks that this table and `api.SERVICES` hold
the same services, and that every RPC of them has a role in `transport/roles.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from embedsvc import api
from embedsvc.core.collections.admin import CollectionAdmin
from embedsvc.core.collections.reembed import Reembedder
from embedsvc.core.collections.service import Collections
from embedsvc.core.collections.snapshots import Snapshots
from embedsvc.core.images.latents import Latents
from embedsvc.core.maps.projection import Maps
from embedsvc.core.paging import PageTokens
from embedsvc.core.registry import ModelRegistry
from embedsvc.limits import Limits
from embedsvc.transport.arithmetic_servicer import ArithmeticServicer
from embedsvc.transport.collections_servicer import CollectionServicer
from embedsvc.transport.latent_servicer import ImageServicer, LatentServicer
from embedsvc.transport.maps_servicer import MapServicer
from embedsvc.transport.models_servicer import ModelServicer
from embedsvc.transport.operations_servicer import OperationServicer, Outcomes
from embedsvc.transport.server_servicer import ServerServicer
from embedsvc.transport.snapshots_servicer import SnapshotServicer
from embedsvc.transport.text_servicer import TextServicer
from embedsvc.transport.words_servicer import WordServicer


class Health(enum.Enum):
    """When a service's health check says SERVING."""

    ALWAYS = "from the start, while models load"
    MODELS = "once every model is loaded and warmed up and collections are recovered"


@dataclass(frozen=True)
class Domain:
    """What the servicers are built from: the server's domain objects (`Server` makes them)."""

    registry: ModelRegistry
    limits: Limits
    tokens: PageTokens
    started: datetime
    latents: Latents
    collections: Collections
    admin: CollectionAdmin
    reembedder: Reembedder
    snapshots: Snapshots

    @property
    def outcomes(self) -> Outcomes:
        return Outcomes(self.admin, self.snapshots)


@dataclass(frozen=True)
class Hosted:
    """A service as this server hosts it."""

    service: api.Service
    health: Health
    servicer: Callable[[Domain], object]


ALWAYS, MODELS = Health.ALWAYS, Health.MODELS

HOSTED: tuple[Hosted, ...] = (
    Hosted(api.SERVER, ALWAYS, lambda d: ServerServicer(d.limits, d.started)),
    Hosted(api.MODELS, ALWAYS, lambda d: ModelServicer(d.registry, d.tokens, d.limits)),
    Hosted(api.WORDS, MODELS, lambda d: WordServicer(d.registry, d.limits)),
    Hosted(api.ARITHMETIC, MODELS, lambda d: ArithmeticServicer(d.registry, d.limits, d.collections)),
    Hosted(api.TEXT, MODELS, lambda d: TextServicer(d.registry, d.limits)),
    Hosted(api.IMAGES, MODELS, lambda d: ImageServicer(d.latents)),
    Hosted(api.LATENT, MODELS, lambda d: LatentServicer(d.latents)),
    Hosted(api.MAPS, MODELS, lambda d: MapServicer(Maps(d.latents, d.collections, d.limits))),
    Hosted(api.COLLECTIONS, MODELS, lambda d: CollectionServicer(d.admin, d.reembedder, d.outcomes)),
    Hosted(api.OPERATIONS, ALWAYS, lambda d: OperationServicer(d.admin, d.outcomes)),
    Hosted(api.SNAPSHOTS, MODELS, lambda d: SnapshotServicer(d.snapshots, d.outcomes)),
)


def names(health: Health) -> tuple[str, ...]:
    """The full names of the hosted services in one health group."""
    return tuple(h.service.full_name for h in HOSTED if h.health is health)
