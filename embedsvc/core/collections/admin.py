"""Collections' lifecycle: create, list, delete, rebuild (a long-running operation) and aliases. Re-embeds
(reembed.py) and snapshots (snapshots.py) build on it.

Collection names and aliases share one namespace; every change to either takes `_names`, so a collection and an alias
can never be created under the same name, and a collection cannot be deleted while an alias points at it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from embedsvc.core.collections.binding import (
    binding,
    collection_prompts,
    collection_shape,
    prompted,
    shape_fields,
    shaped,
)
from embedsvc.core.collections.checks import check_indexed_fields
from embedsvc.core.collections.fusion import Fusion, Method
from embedsvc.core.collections.service import CollectionInfo, Collections
from embedsvc.core.operations import Operation, OperationStore, Progress
from embedsvc.core.paging import Page, page_size
from embedsvc.core.texts.shapes import Dtype
from embedsvc.errors import EmbedsvcError, Reason, invalid, limit_exceeded, missing
from embedsvc.index.aliases import Alias, Aliases, not_found
from embedsvc.index.backend import VectorCollection, check_name
from embedsvc.index.keyword.analyzer import check_language
from embedsvc.index.types import (
    Backend,
    CollectionConfig,
    IndexedField,
    IndexParams,
    Metric,
    SearchDefaults,
    SearchMode,
)

REBUILD = "rebuild"
# Whether the caller may see a collection (listings leave the others out); the transport knows the caller.
Visible = Callable[[str], bool]


def _everything(name: str) -> bool:
    return True


@dataclass(frozen=True)
class KeywordSpec:
    """A CreateCollection's keyword index: its language ("" = English) and whether to have one (None: yes)."""

    language: str = ""
    enabled: bool | None = None


class CollectionAdmin:
    def __init__(self, collections: Collections, aliases: Aliases, operations: OperationStore) -> None:
        self.collections = collections
        self.store = collections.store
        self.limits = collections.limits
        self.tokens = collections.tokens
        self.aliases = aliases
        self.operations = operations
        self._names = threading.Lock()

    # ---- collections ---------------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        dimension: int,
        metric: Metric | None,
        index: IndexParams,
        model: str,
        *,
        backend: Backend | None = None,
        indexed_fields: Sequence[IndexedField] = (),
        keyword: KeywordSpec | None = None,
        search_defaults: SearchDefaults | None = None,
        document_prompt: str | None = None,
        query_prompt: str | None = None,
        dimensions: int = 0,
        dtype: Dtype = Dtype.FLOAT32,
    ) -> CollectionInfo:
        """`keyword`: the keyword index (None: one in English for a collection bound to a text model, none
        otherwise; on a backend that cannot hold one, none unless asked for, which is then BACKEND_UNSUPPORTED).
        `search_defaults`: what searches get when they do not say (checked here). `indexed_fields`: metadata fields
        indexed for filters (at most limits.max_indexed_fields). `document_prompt` / `query_prompt`: a text-bound
        collection's prompt names ("" for none, None for the model's conventional ones: "document", "passage" or
        "corpus"; "query"). `dimensions` / `dtype`: its shape (shapes.py): a text-bound collection's Matryoshka
        dimensions and number type, or an unbound one's number type."""
        check_name(name)
        check_indexed_fields(indexed_fields, self.limits)
        if metric is None:
            raise missing("metric", "the metric")
        model_version = space = query_space = ""
        shape: dict[str, Any] = {}
        text_model = False
        document = query = None
        if not model and (document_prompt or query_prompt):
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                "prompts apply to collections bound to a text model (set `model`)",
                field="prompts",
            )
        if model:
            bound = binding(self.collections.registry, model, self.collections.latents)
            text_model = bound.text is not None
            document, query = collection_prompts(bound, document_prompt, query_prompt)
            bound = prompted(bound, document, query)
            bound = shaped(bound, collection_shape(bound, dimensions, dtype, self.collections.calibrations))
            shape = shape_fields(bound)
            query_space = bound.query_space
            if dimension and dimension != bound.dimension:
                raise EmbedsvcError(
                    Reason.DIMENSION_MISMATCH,
                    f"model '{model}' has dimension {bound.dimension}, not {dimension}",
                    field="dimension",
                    metadata={"expected": str(bound.dimension), "actual": str(dimension)},
                )
            dimension, model_version, space = bound.dimension, bound.version, bound.space
        elif dimensions:
            raise invalid(
                "shape.dimensions",
                "shape.dimensions cuts a bound model's vectors; a collection without a model has the `dimension` it "
                "is given",
            )
        elif dtype is not Dtype.FLOAT32:
            shape = {"dtype": dtype.value}
            space = f"collection:{name}/{dtype.value}"
        if dimension <= 0:
            raise missing("dimension", "a positive dimension (or a model)")
        if dimension > self.limits.max_dimension:
            raise limit_exceeded("dimension", "dimension", dimension, self.limits.max_dimension)
        backend = backend or self.store.default
        resolved = index.resolved(dimension, rescoring=self.store.rescoring(backend))
        for field, message in resolved.problems(dimension):
            raise invalid(field, message)
        language = self._keyword(keyword, text_model, backend)
        defaults = self._search_defaults(search_defaults or SearchDefaults(), language, name)
        config = CollectionConfig(
            name,
            dimension,
            metric,
            resolved,
            model,
            model_version,
            space or f"collection:{name}",
            created_at=datetime.now(UTC).timestamp(),
            backend=backend,
            indexed_fields=tuple(indexed_fields),
            keyword=language,
            search_defaults=defaults,
            document_prompt_name=document.name if document else "",
            document_prompt=document.text if document else "",
            query_prompt_name=query.name if query else "",
            query_prompt=query.text if query else "",
            query_space=query_space,
            **shape,
        )
        return self.collections.describe(self.create_config(config))

    def create_config(self, config: CollectionConfig) -> VectorCollection:
        """Create a collection of a checked configuration (its name not an alias's)."""
        with self._names:
            self.reserve(config.name)
            return self.store.create(config)

    def reserve(self, name: str) -> None:
        """COLLECTION_EXISTS when an alias has this name (collections and aliases share one namespace)."""
        if self.aliases.get(name) is not None:
            raise EmbedsvcError(
                Reason.COLLECTION_EXISTS,
                f"'{name}' is an alias; collections and aliases share one namespace",
                field="name",
                metadata={"collection": name},
            )

    def _keyword(self, spec: KeywordSpec | None, text_model: bool, backend: Backend | None) -> str:
        """The new collection's keyword language ("" for none)."""
        wanted = text_model if spec is None else spec.enabled is not False
        if not wanted:
            return ""
        language = check_language(spec.language if spec is not None else "")
        unsupported = self.store.keyword_unsupported(backend)
        if unsupported is not None:
            if spec is None:
                return ""  # the default on a backend without full-text search: a dense-only collection
            unsupported.field = "keyword"
            raise unsupported
        return language

    def _search_defaults(self, defaults: SearchDefaults, language: str, name: str) -> SearchDefaults:
        if defaults.mode is not SearchMode.DENSE and not language:
            raise EmbedsvcError(
                Reason.KEYWORD_INDEX_MISSING,
                f"search_defaults.mode {defaults.mode.value} needs a keyword index, which collection '{name}' would "
                "not have (set `keyword`, or bind it to a text model)",
                field="search_defaults.mode",
                metadata={"collection": name},
            )
        method = Method(defaults.fusion) if defaults.fusion else None
        fusion = Fusion(method, defaults.rrf_k, defaults.dense_weight, defaults.candidates)
        fusion.resolved(1, 2**31 - 1, field="search_defaults.fusion")  # the ranges (rrf_k, dense_weight)
        if defaults.candidates > self.limits.max_candidates:
            raise limit_exceeded(
                "search_defaults.fusion.candidates", "candidates", defaults.candidates, self.limits.max_candidates
            )
        if defaults.candidates < 0:
            raise invalid("search_defaults.fusion.candidates", "candidates must not be negative")
        return defaults

    def list_page(self, size: int, token: str, visible: Visible = _everything) -> Page[CollectionInfo]:
        """Collections by name, those `visible` says the caller may see."""
        names = [n for n in self.store.names() if visible(n)]
        page = self.tokens.page(
            names,
            str,
            listing="collections",
            token=token,
            size=page_size(size, self.limits.max_page_size),
        )
        return Page([self.collections.describe(self.store.get(n)) for n in page.entries], page.next_page_token)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._names:
            if self.aliases.get(name) is not None:
                raise invalid("name", f"'{name}' is an alias; delete it with DeleteAlias, or name the collection")
            pointing = self.aliases.of(name)
            if pointing:
                raise EmbedsvcError(
                    Reason.COLLECTION_HAS_ALIASES,
                    f"collection '{name}' has aliases ({', '.join(pointing)}); delete or switch them first",
                    field="name",
                    metadata={"collection": name, "aliases": ",".join(pointing)},
                )
            self.store.delete(name)

    def rebuild(self, name: str) -> Operation:
        """Start (or find) the rebuild of a collection; it runs in the background."""
        collection = self.store.get(self.collections.resolve(name, "name"))
        collection.check_ready()

        def work(progress: Progress) -> dict[str, Any]:
            collection.rebuild(progress.stage, progress.units, progress.check)
            progress.stage("done")
            return {"collection": collection.config.name}

        return self.operations.start(REBUILD, collection.config.name, work)

    # ---- aliases -------------------------------------------------------------------------------------------------

    def create_alias(self, alias: str, collection: str) -> Alias:
        check_name(alias, "alias")
        check_name(collection, "collection")
        with self._names:
            if self.aliases.get(alias) is not None or alias in self.store.names():
                raise EmbedsvcError(
                    Reason.ALIAS_EXISTS,
                    f"the name '{alias}' is taken (by an alias or a collection)",
                    field="alias",
                    metadata={"alias": alias},
                )
            self._target(collection)
            return self.aliases.set(alias, collection)

    def update_alias(self, alias: str, collection: str) -> tuple[Alias, str]:
        """Point an alias elsewhere; returns it and the collection it pointed at before."""
        check_name(alias, "alias")
        check_name(collection, "collection")
        with self._names:
            current = self.aliases.get(alias)
            if current is None:
                raise not_found(alias)
            self._target(collection)
            return self.aliases.set(alias, collection), current.collection

    def switch_aliases(self, aliases: list[str] | None, source: str, target: str) -> list[str]:
        """Point these aliases (None: every alias of `source`) from `source` to `target`, each atomically; an alias
        pointing elsewhere by now is left alone. The aliases switched."""
        switched = []
        with self._names:
            for alias in aliases if aliases is not None else self.aliases.of(source):
                current = self.aliases.get(alias)
                if current is not None and current.collection == source:
                    self.aliases.set(alias, target)
                    switched.append(alias)
        return switched

    def delete_alias(self, alias: str) -> None:
        check_name(alias, "alias")
        with self._names:
            self.aliases.delete(alias)

    def list_aliases(self, size: int, token: str, collection: str = "", visible: Visible = _everything) -> Page[Alias]:
        found = [
            a
            for a in self.aliases.all()
            if (not collection or a.collection == collection) and visible(a.alias) and visible(a.collection)
        ]
        return self.tokens.page(
            found,
            lambda a: a.alias,
            listing=f"aliases:{collection}",
            token=token,
            size=page_size(size, self.limits.max_page_size),
        )

    def _target(self, collection: str) -> None:
        """An alias points at a real collection (not at another alias)."""
        if self.aliases.get(collection) is not None:
            raise invalid("collection", f"'{collection}' is an alias; an alias must name a collection")
        self.store.get(collection)  # COLLECTION_NOT_FOUND

    # ---- operations ----------------------------------------------------------------------------------------------

    def operation_result(self, operation: Operation) -> CollectionInfo | None:
        """The collection a finished rebuild, re-embed or restore produced, described now (None if it was deleted
        since, or for another kind)."""
        if not operation.done or operation.error is not None or not operation.result:
            return None
        name = operation.result.get("collection")
        if not isinstance(name, str):
            return None
        try:
            return self.collections.describe(self.store.get(name))
        except EmbedsvcError:
            return None

    def list_operations(
        self, size: int, token: str, collection: str = "", visible: Visible = _everything
    ) -> Page[Operation]:
        return self.tokens.page(
            [op for op in self.operations.list(collection) if visible(op.collection)],
            lambda op: op.id,
            listing=f"operations:{collection}",
            token=token,
            size=page_size(size, self.limits.max_page_size),
            descending=True,
        )
