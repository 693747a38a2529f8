"""Collections as the API sees them: validation, model binding, queries of every kind, provenance.

Storage, FAISS and durability live in `embedsvc.index`; this module decides what a request means. A collection bound
to a word model embeds raw inputs (words) with it, answers expression queries with the model's 3CosAdd query vector,
and records the model's version: if the model changes, raw inputs are refused (MODEL_VERSION_CHANGED) rather than
mixed into another space.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedsvc.backends.capabilities import Capability
from embedsvc.calls import CallControl
from embedsvc.core.collections import shapes
from embedsvc.core.collections.binding import Binding, bound
from embedsvc.core.collections.checks import check_ids, check_metadata
from embedsvc.core.collections.fence import Fences
from embedsvc.core.collections.filters import parse_filter
from embedsvc.core.collections.gates import Gates
from embedsvc.core.collections.options import PackedQueries, QueryIn, SearchOptions
from embedsvc.core.collections.options import plan as options_plan
from embedsvc.core.collections.planner import Backend as PlannerBackend
from embedsvc.core.collections.planner import Planner, QueryResult, Report
from embedsvc.core.collections.queries import QueryResolver, Resolved, replace_items
from embedsvc.core.expression import Expression
from embedsvc.core.images.codec import ImageInput
from embedsvc.core.images.latents import Latents
from embedsvc.core.paging import PageTokens
from embedsvc.core.provenance import Provenance
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.texts import embedding as texts
from embedsvc.core.texts.shapes import Calibrations, Dtype
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid, limit_exceeded, missing
from embedsvc.index import metadata as stored
from embedsvc.index.aliases import Aliases
from embedsvc.index.backend import Stores, VectorCollection, check_name
from embedsvc.index.state import Records
from embedsvc.index.types import CollectionConfig, Quantization, SearchMode, StoredItem, Upsert
from embedsvc.limits import Limits
from embedsvc.vectors import packed_rows

__all__ = ["CollectionInfo", "Collections", "ItemIn", "PackedQueries", "QueryIn", "SearchOptions", "SearchOutcome"]


@dataclass(frozen=True)
class SearchOutcome:
    """A search's answer: each query's result, the provenance, how it ran, and the collection searched."""

    results: list[QueryResult]
    provenance: Provenance
    report: Report
    collection: VectorCollection


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
class StagedWrite:
    """A batch validated, embedded and in the backend's form (`Collections.stage_upsert`), to be written by
    `Collections.commit`."""

    collection: VectorCollection
    staged: Any
    ids: list[str]
    # The name the caller used (an alias, or the collection's own): checked again when the write commits.
    addressed: str


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
    training: dict[str, int] | None = None  # the index's last training: count, sample, retrain_at (FAISS), or None


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
        calibrations: Calibrations | None = None,
        records: Records | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.limits = limits
        self.latents = latents
        self.aliases = aliases
        self.tokens = tokens or PageTokens(secrets.token_bytes(32))
        # int8/uint8 calibration ranges, shared with EmbedTexts (a new shaped collection quantises as it does).
        self.calibrations = calibrations or Calibrations()
        # Every write commits through its collection's gate (a re-embed watches and holds them: gates.py) and the
        # re-embed fence, whose records replicas share (fence.py; in memory without `records`).
        self.fences = Fences(
            records,
            alias_ttl_s=aliases.ttl_s if aliases is not None else 0.0,
            refresh_aliases=aliases.refresh if aliases is not None else None,
        )
        self.gates = Gates(lambda name: self.aliases.resolve(name) if self.aliases is not None else name, self.fences)

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
        return bound(self.registry, config, self.latents, field)

    @staticmethod
    def _vector(
        collection: VectorCollection, vector: np.ndarray, tag: str, field: str, *, query: bool = False
    ) -> np.ndarray:
        """An item's vector (in the collection's space), or with `query` a query vector (also in its query space)."""
        return shapes.vector_in(collection.config, vector, tag, field, query=query)

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
            if item.image is not None and (item.vector is not None or item.input):
                raise invalid(field, "set one of vector (with or without an input text), input and image")
            if item.vector is not None and item.input:  # the item's text, kept and keyword-indexed, not embedded
                texts.check_text(item.input, field + ".input", self.limits)
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

    def stage_upsert(self, name: str, items: Sequence[ItemIn], control: CallControl | None = None) -> StagedWrite:
        """A batch validated, embedded and in the backend's form, to be written by `commit`."""
        collection, op = self.prepare_upsert(name, items, control)
        return StagedWrite(collection, collection.stage(op), op.ids, name)

    def commit(self, write: StagedWrite) -> int:
        """Write a staged batch (through the collection's gate); the live count afterwards, or -1 (Milvus)."""
        with self.gates.writing(write.collection.config.name, write.addressed, write.ids) as committed:
            count = write.collection.commit(write.staged)
            committed()
        return count

    def upsert(self, name: str, items: Sequence[ItemIn], control: CallControl | None = None) -> tuple[int, int]:
        collection, op = self.prepare_upsert(name, items, control)
        with self.gates.writing(collection.config.name, name, op.ids) as committed:
            count = collection.upsert(op)
            committed()
        return len(op.ids), count

    def delete_items(self, name: str, ids: Sequence[str]) -> tuple[int, int]:
        collection = self._collection(name)
        check_ids(ids, "ids", self.limits)
        with self.gates.writing(collection.config.name, name, ids) as committed:
            deleted = collection.delete(ids)
            committed()
        return deleted

    def get_items(self, name: str, ids: Sequence[str], *, with_vectors: bool) -> tuple[list[StoredItem], list[str]]:
        collection = self._collection(name)
        check_ids(ids, "ids", self.limits)
        found = collection.get(ids, with_vectors=with_vectors)
        items = [f for f in found if f is not None]
        if with_vectors:
            items = self._wire_items(collection.config, items)
        return items, [i for i, f in zip(ids, found, strict=True) if f is None]

    @staticmethod
    def _wire_items(config: CollectionConfig, items: list[StoredItem]) -> list[StoredItem]:
        """Items with their vectors in the collection's wire form (packed bytes again for binary types)."""
        if shapes.dtype_of(config) not in (Dtype.BINARY, Dtype.UBINARY) or not items:
            return items
        rows = shapes.to_wire(np.stack([i.vector for i in items]), config)
        return [replace(i, vector=row) for i, row in zip(items, rows, strict=True)]

    def export(
        self, name: str, batch_size: int, token: str = "", *, stored: bool = False
    ) -> Iterator[tuple[list[StoredItem], str]]:
        """Batches of every item in the order of their ids, each with the token that resumes after it; the vectors in
        the collection's wire form, or with `stored` as the backend holds them (binary types unpacked to +1/-1)."""
        collection = self._collection(name)
        batch_size = batch_size or 1000
        if not 1 <= batch_size <= self.limits.max_upsert_items:
            raise invalid("batch_size", f"batch_size must be 1..{self.limits.max_upsert_items}")
        listing = f"export:{collection.config.name}"
        after = self.tokens.position(token, listing)
        config = collection.config
        return (
            (batch if stored else self._wire_items(config, batch), self.tokens.issue(listing, batch[-1].id))
            for batch in collection.export(batch_size, after)
        )

    # ---- search --------------------------------------------------------------------------------------------------

    def _resolver(self) -> QueryResolver:
        def collection_of(name: str, field: str) -> VectorCollection:
            return self._collection_named(name, field)

        return QueryResolver(self.limits, self._bound_model, collection_of)

    def item_terms(
        self, expressions: Sequence[Expression], space: str, field_of: Callable[[int, int], str]
    ) -> list[Expression]:
        """Expressions for a word model's arithmetic (ArithmeticService), their `item` terms replaced by their items'
        unit vectors, from collections bound to that model (`space`)."""
        out = []
        for e, expression in enumerate(expressions):

            def term_field(t: int, e: int = e) -> str:
                return field_of(e, t)

            replaced, _ = replace_items(expression, space, self._collection_named, self.limits, term_field, unit=True)
            out.append(replaced)
        return out

    def _collection_named(self, name: str, field: str) -> VectorCollection:
        collection = self.store.get(self.resolve(name, field))
        collection.check_ready()
        return collection

    def search(
        self,
        name: str,
        queries: Sequence[QueryIn] | PackedQueries,
        options: SearchOptions,
        *,
        batch: bool,
        control: CallControl | None = None,
    ) -> SearchOutcome:
        """Every query's hits (and groups), the provenance and the retrieval report: a plain dense search straight
        from the backend, anything else through the planner (planner.py)."""
        collection = self._collection(name)
        config = collection.config
        field = "queries" if batch else "query"
        rows: np.ndarray | None = None
        listed: Sequence[QueryIn] = ()
        if isinstance(queries, PackedQueries):
            rows, field = self._packed_queries(collection, queries), "packed_queries"
        else:
            listed = queries
        n_queries = len(rows) if rows is not None else len(listed)
        if batch:
            check_count(field, "queries", n_queries, self.limits.max_queries)
        examples = [q.examples for q in listed if q.examples is not None]
        strategies = {e.strategy for e in examples}
        if len(strategies) > 1:
            raise invalid(field, "every query by example of one call must use the same strategy")
        plan = options_plan(options, config, self.limits, examples=bool(examples))
        for name_, value in (("ef_search", options.ef_search), ("nprobe", options.nprobe)):
            if not 0 <= value <= 65536:
                raise invalid(f"options.{name_}", f"{name_} must be 0..65536, got {value}")
        if not 0 <= options.oversample <= 100:
            raise invalid("options.oversample", f"oversample must be 0..100, got {options.oversample}")
        if not 0.0 <= options.target_recall <= 1.0:
            raise invalid("options.target_recall", f"target_recall must be 0..1, got {options.target_recall}")
        k = plan.k
        if n_queries * k > self.limits.max_result_hits:
            raise limit_exceeded(
                "options.k", "hits in one response (queries x k)", n_queries * k, self.limits.max_result_hits
            )
        if plan.mode is not SearchMode.DENSE:
            if rows is not None:
                raise invalid("options.mode", "packed queries carry no text: they run dense searches only")
            collection.require_keyword_index()
        where = parse_filter(
            options.filter,
            self.limits.max_filter_chars,
            max_depth=self.limits.max_filter_depth,
            max_values=self.limits.max_filter_values,
        )
        reranker = self.registry.model(plan.rerank.model, Capability.PAIRS) if plan.rerank is not None else None
        if rows is not None:
            resolved = [Resolved(vector=row) for row in rows]
        else:
            resolved = self._resolver().resolve(
                collection,
                listed,
                field,
                batch,
                need_vector=plan.mode is not SearchMode.KEYWORD,
                need_text=plan.mode is not SearchMode.DENSE or plan.rerank is not None,
                control=control,
            )
        budget = self.limits.max_message_bytes - 64 * 1024  # room for provenance, report and framing
        report = Report(
            plan.mode,
            fusion=plan.fusion,
            keyword_language=config.keyword if plan.mode is not SearchMode.DENSE else "",
            rerank=plan.rerank,
            rerank_version=reranker.version if reranker is not None else "",
            diversity=plan.diversity,
            diversity_candidates=plan.diversity_candidates,
            example_strategy=next(iter(strategies), ""),
        )
        embeds_texts = any(q.input or q.expression is not None for q in listed)
        if config.query_prompt_name and plan.mode is not SearchMode.KEYWORD and embeds_texts:
            report.query_prompt_name = config.query_prompt_name
        if not plan.staged and not examples:
            vectors = rows if rows is not None else np.stack([r.vector for r in resolved])  # type: ignore[misc]
            searched = collection.search(
                vectors,
                k,
                where=where,
                exclude=[r.own for r in resolved] if rows is None else (),
                ef_search=options.ef_search,
                nprobe=options.nprobe,
                oversample=options.oversample,
                target_recall=options.target_recall,
                exact=options.exact,
                with_metadata=options.include_metadata,
                with_vectors=options.include_vectors,
                max_response_bytes=budget,
            )
            lists, exact = searched
            effective = searched.parameters
            results = [QueryResult(hits) for hits in lists]
            report.dense_candidates = k
        else:
            planner = Planner(
                collection,
                plan,
                PlannerBackend(
                    where,
                    options.ef_search,
                    options.nprobe,
                    options.exact,
                    options.include_metadata,
                    options.include_vectors,
                    budget,
                    oversample=options.oversample,
                    target_recall=options.target_recall,
                ),
                reranker=reranker,
                max_candidates=self.limits.max_candidates,
                report=report,
            )
            results = planner.run(resolved)
            exact = planner.exact
            effective = planner.parameters
        if options.include_vectors and shapes.dtype_of(config) in (Dtype.BINARY, Dtype.UBINARY):
            for result in results:
                for hit in result.hits:
                    if hit.vector is not None and len(hit.vector) == config.dimension:  # each hit once
                        hit.vector = shapes.to_wire(np.asarray(hit.vector)[None], config)[0]
        report.notices = list(dict.fromkeys(report.notices))
        parameters = {"collection": config.name, "k": str(k), "filter": options.filter, "exact": str(exact).lower()}
        if options.ef_search:
            parameters["ef_search"] = str(options.ef_search)
        if options.nprobe:
            parameters["nprobe"] = str(options.nprobe)
        if plan.mode is not SearchMode.DENSE:
            parameters["mode"] = plan.mode.value
        parameters |= effective  # the knobs in effect: nprobe, ef_search, oversample, target and estimated recall
        method = config.index.kind.value
        if config.index.quantization is not Quantization.NONE:
            method += f"+{config.index.quantization.value}"
        provenance = Provenance(config.model, config.model_version, f"{method}/{config.metric.value}", parameters)
        return SearchOutcome(results, provenance, report, collection)

    @staticmethod
    def _packed_queries(collection: VectorCollection, packed: PackedQueries) -> np.ndarray:
        config = collection.config
        rows = packed_rows(
            packed.values,
            dimension=shapes.wire_width(config),
            owner=f"collection '{config.name}'",
            field="packed_queries",
        )
        return shapes.rows_in(config, rows, "packed_queries")
