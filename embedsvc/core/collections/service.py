"""Collections as the API sees them: validation, model binding, queries of every kind, provenance.

Storage, FAISS and durability live in `embedsvc.index`; this module decides what a request means. A collection bound
to a word model embeds raw inputs (words) with it, answers expression queries with the model's 3CosAdd query vector,
and records the model's version: if the model changes, raw inputs are refused (MODEL_VERSION_CHANGED) rather than
mixed into another space.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedsvc.calls import CallControl
from embedsvc.core.collections.binding import Binding, binding
from embedsvc.core.collections.checks import check_id, check_ids, check_metadata
from embedsvc.core.collections.filters import parse_filter
from embedsvc.core.expression import Expression
from embedsvc.core.images.codec import ImageInput
from embedsvc.core.images.latents import Latents
from embedsvc.core.paging import PageTokens
from embedsvc.core.provenance import Provenance
from embedsvc.core.registry import ModelRegistry
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid, limit_exceeded, missing
from embedsvc.index import metadata as stored
from embedsvc.index.aliases import Aliases
from embedsvc.index.backend import Stores, VectorCollection, check_name
from embedsvc.index.types import CollectionConfig, Hit, Quantization, StoredItem, Upsert
from embedsvc.limits import Limits
from embedsvc.vectors import check_vector, packed_rows

DEFAULT_K = 10


@dataclass(frozen=True)
class ItemIn:
    id: str
    vector: np.ndarray | None  # None when `input` is to be embedded
    input: str = ""
    metadata: dict[str, Any] | None = None
    space: str = ""
    # For a collection bound to an image model: the image to embed.
    image: ImageInput | None = None


@dataclass(frozen=True)
class QueryIn:
    vector: np.ndarray | None = None
    space: str = ""
    item_id: str = ""
    input: str = ""
    expression: Expression | None = None
    image: ImageInput | None = None


@dataclass(frozen=True)
class PackedQueries:
    """Query vectors as one flat float32 array, rows of the collection's dimension (the bulk form of BatchSearch)."""

    values: np.ndarray


@dataclass(frozen=True)
class SearchOptions:
    k: int = DEFAULT_K
    filter: str = ""
    ef_search: int = 0
    nprobe: int = 0
    exact: bool = False
    include_metadata: bool = True
    include_vectors: bool = False
    target_recall: float = 0.0
    oversample: int = 0


@dataclass(frozen=True)
class CollectionInfo:
    config: CollectionConfig
    state: str  # recovering, ready, rebuilding, data_loss
    error: str
    count: int = 0
    trained: bool = False
    tombstones: int = 0
    disk_bytes: int = 0
    memory_bytes: int = 0
    create_time: datetime | None = None
    aliases: list[str] = field(default_factory=list)
    checkpoint_error: str = ""
    checkpoint_failures: int = 0
    mapped_bytes: int = 0
    calibration: Any = None  # the recall calibration (index/faiss/calibration.py), or None


class Collections:
    """Items and searches of collections (by name or alias); creating, deleting, rebuilding and aliases are in
    `embedsvc.core.collections.admin`."""

    def __init__(
        self,
        store: Stores,
        registry: ModelRegistry,
        limits: Limits,
        latents: Latents | None = None,
        *,
        aliases: Aliases | None = None,
        tokens: PageTokens | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.limits = limits
        self.latents = latents
        self.aliases = aliases
        self.tokens = tokens or PageTokens(secrets.token_bytes(32))

    def resolve(self, name: str, field: str = "collection") -> str:
        """The collection a name (or an alias) stands for."""
        check_name(name, field)
        return self.aliases.resolve(name) if self.aliases is not None else name

    def config(self, name: str, field: str = "collection") -> CollectionConfig:
        """A collection's configuration (cheap: no statistics)."""
        return self.store.get(self.resolve(name, field)).config

    def info(self, name: str, field: str = "name") -> CollectionInfo:
        collection = self.store.get(self.resolve(name, field))
        return self.describe(collection)

    def describe(self, collection: VectorCollection) -> CollectionInfo:
        config = collection.config
        aliases = self.aliases.of(config.name) if self.aliases is not None else []
        created = datetime.fromtimestamp(config.created_at, UTC)
        state = collection.state.value
        if state != "ready":
            return CollectionInfo(config, state, collection.error, create_time=created, aliases=aliases)
        stats = collection.info()
        if collection.rebuilding:
            state = "rebuilding"
        return CollectionInfo(config, state, collection.error, create_time=created, aliases=aliases, **stats)

    # ---- items ---------------------------------------------------------------------------------------------------

    def _collection(self, name: str) -> VectorCollection:
        collection = self.store.get(self.resolve(name))
        collection.check_ready()
        return collection

    def _bound_model(self, collection: VectorCollection, field: str) -> Binding:
        config = collection.config
        if not config.model:
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                f"collection '{config.name}' is not bound to a model, so it takes vectors, not raw inputs",
                field=field,
            )
        model = binding(self.registry, config.model, self.latents)
        if model.version != config.model_version:
            raise EmbedsvcError(
                Reason.MODEL_VERSION_CHANGED,
                f"model '{config.model}' is now {model.version}, but collection '{config.name}' holds vectors of "
                f"{config.model_version}; re-embed its items into a new collection (and switch an alias to it)",
                field=field,
                metadata={"expected": config.model_version, "actual": model.version},
            )
        return model

    @staticmethod
    def _vector(collection: VectorCollection, vector: np.ndarray, tag: str, field: str) -> np.ndarray:
        config = collection.config
        return check_vector(
            vector,
            tag,
            space=config.space,
            dimension=config.dimension,
            owner=f"collection '{config.name}'",
            field=field,
        )

    def prepare_upsert(
        self, name: str, items: Sequence[ItemIn], control: CallControl | None = None
    ) -> tuple[VectorCollection, Upsert]:
        """Validate and embed a batch; nothing is written until `VectorCollection.upsert`."""
        collection = self._collection(name)
        check_ids([i.id for i in items], "items", self.limits)
        dimension = collection.config.dimension
        vectors = np.empty((len(items), dimension), np.float32)
        to_embed: list[int] = []
        images: list[int] = []
        for n, item in enumerate(items):
            field = f"items[{n}]"
            if sum((item.vector is not None, bool(item.input), item.image is not None)) > 1:
                raise invalid(field, "set one of vector, input and image")
            if item.image is not None:
                images.append(n)
            elif item.vector is None:
                if not item.input:
                    raise missing(field + ".vector", "a vector (or an input or image for a bound collection)")
                to_embed.append(n)
            else:
                vectors[n] = self._vector(collection, item.vector, item.space, field + ".vector")
        if images:
            check_count("items", "items with images", len(images), self.limits.max_images_per_request)
            model = self._bound_model(collection, f"items[{images[0]}].image")
            pictures = [items[n].image for n in images]
            vectors[images] = model.embed_images(pictures, lambda i: f"items[{images[i]}].image")  # type: ignore[arg-type]
        if to_embed:
            model = self._bound_model(collection, f"items[{to_embed[0]}].input")
            inputs = [items[n].input for n in to_embed]
            vectors[to_embed] = model.embed(inputs, lambda i, _t: f"items[{to_embed[i]}].input", self.limits, control)
        metadata = [check_metadata(i.metadata, f"items[{n}].metadata", self.limits) for n, i in enumerate(items)]
        stored.check_indexed(collection.config.indexed_fields, metadata)
        return collection, Upsert([i.id for i in items], vectors, metadata, [i.input for i in items])

    def stage_upsert(
        self, name: str, items: Sequence[ItemIn], control: CallControl | None = None
    ) -> tuple[VectorCollection, Any, int]:
        """(collection, staged write, items): a batch validated, embedded and in the backend's form, to be written by
        `collection.commit(staged)`."""
        collection, op = self.prepare_upsert(name, items, control)
        return collection, collection.stage(op), len(op.ids)

    def upsert(self, name: str, items: Sequence[ItemIn], control: CallControl | None = None) -> tuple[int, int]:
        collection, op = self.prepare_upsert(name, items, control)
        return len(op.ids), collection.upsert(op)

    def delete_items(self, name: str, ids: Sequence[str]) -> tuple[int, int]:
        collection = self._collection(name)
        check_ids(ids, "ids", self.limits)
        return collection.delete(ids)

    def get_items(self, name: str, ids: Sequence[str], *, with_vectors: bool) -> tuple[list[StoredItem], list[str]]:
        collection = self._collection(name)
        check_ids(ids, "ids", self.limits)
        found = collection.get(ids, with_vectors=with_vectors)
        return [f for f in found if f is not None], [i for i, f in zip(ids, found, strict=True) if f is None]

    def export(self, name: str, batch_size: int, token: str = "") -> Iterator[tuple[list[StoredItem], str]]:
        """Batches of every item in the order of their ids, each with the token that resumes after it."""
        collection = self._collection(name)
        batch_size = batch_size or 1000
        if not 1 <= batch_size <= self.limits.max_upsert_items:
            raise invalid("batch_size", f"batch_size must be 1..{self.limits.max_upsert_items}")
        listing = f"export:{collection.config.name}"
        after = self.tokens.position(token, listing)
        return ((batch, self.tokens.issue(listing, batch[-1].id)) for batch in collection.export(batch_size, after))

    # ---- search --------------------------------------------------------------------------------------------------

    def search(
        self,
        name: str,
        queries: Sequence[QueryIn] | PackedQueries,
        options: SearchOptions,
        *,
        batch: bool,
        control: CallControl | None = None,
    ) -> tuple[list[list[Hit]], Provenance, VectorCollection]:
        collection = self._collection(name)
        field = "queries" if batch else "query"
        rows: np.ndarray | None = None
        listed: Sequence[QueryIn] = ()
        if isinstance(queries, PackedQueries):
            rows, field = self._packed_queries(collection, queries), "packed_queries"
        else:
            listed = queries
        if batch:
            check_count(field, "queries", len(rows if rows is not None else listed), self.limits.max_queries)
        k = options.k or DEFAULT_K
        if k < 0:
            raise invalid("options.k", f"k must be positive, got {k}")
        if k > self.limits.max_k:
            raise limit_exceeded("options.k", "k", k, self.limits.max_k)
        for name_, value in (("ef_search", options.ef_search), ("nprobe", options.nprobe)):
            if not 0 <= value <= 65536:
                raise invalid(f"options.{name_}", f"{name_} must be 0..65536, got {value}")
        if not 0 <= options.oversample <= 100:
            raise invalid("options.oversample", f"oversample must be 0..100, got {options.oversample}")
        if not 0.0 <= options.target_recall <= 1.0:
            raise invalid("options.target_recall", f"target_recall must be 0..1, got {options.target_recall}")
        n_queries = len(rows) if rows is not None else len(listed)
        if n_queries * k > self.limits.max_result_hits:
            raise limit_exceeded(
                "options.k", "hits in one response (queries x k)", n_queries * k, self.limits.max_result_hits
            )
        where = parse_filter(
            options.filter,
            self.limits.max_filter_chars,
            max_depth=self.limits.max_filter_depth,
            max_values=self.limits.max_filter_values,
        )
        exclude: list[set[str]] = []
        if rows is not None:
            vectors = rows
        else:
            vectors, exclude = self._query_vectors(collection, listed, field, batch, control)
        searched = collection.search(
            vectors,
            k,
            where=where,
            exclude=exclude,
            ef_search=options.ef_search,
            nprobe=options.nprobe,
            oversample=options.oversample,
            target_recall=options.target_recall,
            exact=options.exact,
            with_metadata=options.include_metadata,
            with_vectors=options.include_vectors,
            max_response_bytes=self.limits.max_message_bytes - 64 * 1024,  # room for provenance and framing
        )
        hits, exact = searched
        config = collection.config
        method = config.index.kind.value
        if config.index.quantization is not Quantization.NONE:
            method += f"+{config.index.quantization.value}"
        provenance = Provenance(
            config.model,
            config.model_version,
            f"{method}/{config.metric.value}",
            {"collection": config.name, "k": str(k), "filter": options.filter, "exact": str(exact).lower()}
            | ({"ef_search": str(options.ef_search)} if options.ef_search else {})
            | ({"nprobe": str(options.nprobe)} if options.nprobe else {})
            | searched.parameters,
        )
        return hits, provenance, collection

    @staticmethod
    def _packed_queries(collection: VectorCollection, packed: PackedQueries) -> np.ndarray:
        return packed_rows(
            packed.values,
            dimension=collection.config.dimension,
            owner=f"collection '{collection.config.name}'",
            field="packed_queries",
        )

    def _query_vectors(
        self,
        collection: VectorCollection,
        queries: Sequence[QueryIn],
        field: str,
        batch: bool,
        control: CallControl | None,
    ) -> tuple[np.ndarray, list[set[str]]]:
        config = collection.config
        vectors = np.empty((len(queries), config.dimension), np.float32)
        exclude: list[set[str]] = [set() for _ in queries]
        expressions: list[tuple[int, Expression]] = []
        inputs: list[tuple[int, str]] = []
        pictures: list[tuple[int, ImageInput]] = []
        for q, query in enumerate(queries):
            where = f"{field}[{q}]" if batch else field
            if query.vector is not None:
                vectors[q] = self._vector(collection, query.vector, query.space, where + ".vector")
            elif query.item_id:
                check_id(query.item_id, where + ".item_id", self.limits)
                (item,) = collection.get([query.item_id], with_vectors=True)
                if item is None:
                    raise EmbedsvcError(
                        Reason.ITEM_NOT_FOUND,
                        f"no item {query.item_id!r} in collection '{config.name}'",
                        field=where + ".item_id",
                    )
                vectors[q] = item.vector
                exclude[q] = {query.item_id}
            elif query.input:
                inputs.append((q, query.input))
            elif query.expression is not None:
                expressions.append((q, query.expression))
            elif query.image is not None:
                pictures.append((q, query.image))
            else:
                raise missing(where, "a query (vector, item_id, input, expression or image)")
        if pictures:
            where_image = [(f"{field}[{q}]" if batch else field) + ".image" for q, _ in pictures]
            model = self._bound_model(collection, where_image[0])
            vectors[[q for q, _ in pictures]] = model.embed_images([p for _, p in pictures], lambda n: where_image[n])
        if inputs:  # embedded together: one batch for a text model
            where_input = [(f"{field}[{q}]" if batch else field) + ".input" for q, _ in inputs]
            model = self._bound_model(collection, where_input[0])
            embedded = model.embed([i for _, i in inputs], lambda n, _t: where_input[n], self.limits, control)
            for (q, text), vector in zip(inputs, embedded, strict=True):
                vectors[q] = vector
                exclude[q] = collection.ids_with_inputs({text})
        if expressions:
            first = expressions[0][0]
            model = self._bound_model(collection, (f"{field}[{first}]" if batch else field) + ".expression")
            positions = [q for q, _ in expressions]

            def field_of(e: int, t: int | None) -> str:
                base = f"{field}[{positions[e]}]" if batch else field
                return base + ".expression" + (f".terms[{t}]" if t is not None else "")

            composed, words = model.compose([e for _, e in expressions], field_of, self.limits, control)
            for (q, _), vector, used in zip(expressions, composed, words, strict=True):
                vectors[q] = vector
                exclude[q] = collection.ids_with_inputs(used)
        return vectors, exclude
