"""THE table of what each RPC needs: the role, where its request names collections (checked against a key's scope),
and what the audit log counts. `tests/transport/test_security.py` fails when an RPC of a service is missing here, so
no new RPC ships open."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from embedsvc.settings import Role

READ, WRITE, ADMIN = Role.READ, Role.WRITE, Role.ADMIN


@dataclass(frozen=True)
class Rule:
    role: Role
    # Dotted paths of the request's fields that name collections or aliases ("[]" walks a repeated field).
    collections: tuple[str, ...] = ()
    # A repeated field whose length the audit log records (items written, ids deleted, ...).
    counts: str = ""


_V1 = "/embedsvc.v1."
_POINTS = ("points.collection.collection", "transform[].collection.collection")

RULES: dict[str, Rule] = {
    _V1 + "ServerService/GetServerInfo": Rule(READ),
    _V1 + "ModelService/ListModels": Rule(READ),
    _V1 + "ModelService/GetModel": Rule(READ),
    _V1 + "ModelService/LoadModel": Rule(ADMIN),
    _V1 + "ModelService/UnloadModel": Rule(ADMIN),
    _V1 + "ModelService/ReloadModel": Rule(ADMIN),
    _V1 + "WordService/EmbedWords": Rule(READ),
    _V1 + "WordService/NearestWords": Rule(READ),
    _V1 + "WordService/Similarity": Rule(READ),
    _V1 + "WordService/DoesntMatch": Rule(READ),
    _V1 + "WordService/ExportWords": Rule(READ),
    _V1 + "ArithmeticService/Arithmetic": Rule(READ, ("expressions[].terms[].item.collection",)),
    _V1 + "ArithmeticService/EvaluateAnalogies": Rule(READ),
    _V1 + "TextService/EmbedTexts": Rule(READ),
    _V1 + "TextService/EmbedTextsStream": Rule(READ),
    _V1 + "TextService/TokenizeTexts": Rule(READ),
    _V1 + "TextService/Rerank": Rule(READ, counts="texts"),
    _V1 + "ImageService/EmbedImages": Rule(READ),
    _V1 + "LatentService/EncodeImages": Rule(READ),
    _V1 + "LatentService/DecodeLatents": Rule(READ),
    _V1 + "LatentService/Sample": Rule(READ),
    _V1 + "LatentService/Reconstruct": Rule(READ),
    _V1 + "LatentService/Interpolate": Rule(READ),
    _V1 + "LatentService/CreateDirection": Rule(WRITE),
    _V1 + "LatentService/ListDirections": Rule(READ),
    _V1 + "LatentService/DeleteDirection": Rule(WRITE),
    _V1 + "LatentService/Traverse": Rule(READ),
    _V1 + "LatentService/AnomalyScore": Rule(READ),
    _V1 + "LatentService/Inpaint": Rule(READ),
    _V1 + "MapService/Project": Rule(READ, _POINTS),
    _V1 + "MapService/Cluster": Rule(READ, _POINTS[:1]),
    _V1 + "MapService/Plot": Rule(READ, _POINTS[:1]),
    _V1 + "CollectionService/CreateCollection": Rule(ADMIN, ("name",)),
    _V1 + "CollectionService/GetCollection": Rule(READ, ("name",)),
    _V1 + "CollectionService/ListCollections": Rule(READ),  # lists only the collections the key may touch
    _V1 + "CollectionService/DeleteCollection": Rule(ADMIN, ("name",)),
    _V1 + "CollectionService/Upsert": Rule(WRITE, ("collection",), counts="items"),
    _V1 + "CollectionService/UpsertStream": Rule(WRITE, ("collection",), counts="items"),
    _V1 + "CollectionService/DeleteItems": Rule(WRITE, ("collection",), counts="ids"),
    _V1 + "CollectionService/GetItems": Rule(READ, ("collection",), counts="ids"),
    # Item terms of expressions name collections too (their items' vectors are read).
    _V1 + "CollectionService/Search": Rule(READ, ("collection", "query.expression.terms[].item.collection")),
    _V1 + "CollectionService/BatchSearch": Rule(
        READ, ("collection", "queries[].expression.terms[].item.collection"), counts="queries"
    ),
    _V1 + "CollectionService/Rebuild": Rule(ADMIN, ("name",)),
    _V1 + "CollectionService/ExportItems": Rule(READ, ("collection",)),
    _V1 + "CollectionService/CreateAlias": Rule(ADMIN, ("alias", "collection")),
    _V1 + "CollectionService/UpdateAlias": Rule(ADMIN, ("alias", "collection")),
    _V1 + "CollectionService/DeleteAlias": Rule(ADMIN, ("alias",)),
    _V1 + "CollectionService/ListAliases": Rule(READ, ("collection",)),  # and only aliases the key may touch
    _V1 + "CollectionService/Reembed": Rule(ADMIN, ("collection", "target_name")),
    _V1 + "OperationService/GetOperation": Rule(READ),  # the operation's collection is checked by the servicer
    _V1 + "OperationService/ListOperations": Rule(READ, ("collection",)),
    _V1 + "OperationService/CancelOperation": Rule(ADMIN),
    # Snapshots: the servicer checks the snapshot's collection against the key's scope. Taking, restoring, deleting
    # and moving them are admin work. Download too: a snapshot is a backup leaving the server, and it holds what the
    # collection held then (items deleted since, a collection dropped since), which a read key cannot see through
    # ExportItems; readers export the current items with ExportItems.
    _V1 + "SnapshotService/CreateSnapshot": Rule(ADMIN, ("collection",)),
    _V1 + "SnapshotService/GetSnapshot": Rule(READ),
    _V1 + "SnapshotService/ListSnapshots": Rule(READ, ("collection",)),  # lists only the collections the key may touch
    _V1 + "SnapshotService/DeleteSnapshot": Rule(ADMIN),
    _V1 + "SnapshotService/RestoreSnapshot": Rule(ADMIN, ("name",)),
    _V1 + "SnapshotService/DownloadSnapshot": Rule(ADMIN),
    _V1 + "SnapshotService/UploadSnapshot": Rule(ADMIN),
    # Reflection shows the whole API: it needs a key when auth is on.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Rule(READ),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Rule(READ),
}
# Methods anyone may call, keys or not: health checking (load balancers and orchestrators probe it).
OPEN = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
    }
)


def rule(method: str) -> Rule | None:
    """The rule of a method; None for an open one. Unknown methods need admin (they cannot exist, but fail closed)."""
    if method in OPEN:
        return None
    return RULES.get(method, Rule(ADMIN))


def named_collections(request: Any, paths: tuple[str, ...]) -> Iterator[str]:
    """The collection (or alias) names a request holds at the rule's paths."""
    for path in paths:
        yield from _walk(request, path.split("."))


def _walk(message: Any, parts: list[str]) -> Iterator[str]:
    head, rest = parts[0], parts[1:]
    repeated = head.endswith("[]")
    name = head.removesuffix("[]")
    values = getattr(message, name, None)
    if values is None:
        return
    for value in values if repeated else [values]:
        if not rest:
            if isinstance(value, str):
                yield value
        elif repeated or message.HasField(name):
            yield from _walk(value, rest)


def count(request: Any, field: str) -> int:
    return len(getattr(request, field, ())) if field else 0
