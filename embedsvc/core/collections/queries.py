"""Queries into what a search runs on: each query's vector (for the dense side, and diversity's relevance), its text
(for the keyword side and the rerank stage), its own items (left out of its hits unless keep_inputs), and for search
by example with the best-score strategy, the examples' vectors.

- a vector is checked against the collection (space, dimension, finite); an item id gives that item's vector; an input
  is embedded by the bound model (only when a vector is needed: a keyword search of an input embeds nothing), and the
  items embedded from that same input are its own; an expression is composed by the bound model after its `item`
  terms are replaced by their items' vectors (unit length for word and text models, whose other terms are unit
  length too; as stored for image models, whose expressions are plain sums); an image is embedded;
- examples: the positive and negative items' vectors (ITEM_NOT_FOUND for an unknown id), averaged into one query
  vector or kept for the best-score strategy; the examples are the query's own items;
- the text is `keyword_text`, else `input`, at most limits.max_text_chars characters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedsvc.calls import CallControl
from embedsvc.core.collections import examples as by_example
from embedsvc.core.collections.binding import Binding
from embedsvc.core.collections.checks import check_id
from embedsvc.core.collections.options import ExamplesIn, QueryIn, Strategy
from embedsvc.core.expression import Expression, Term, TermKind
from embedsvc.core.images.codec import ImageInput
from embedsvc.errors import EmbedsvcError, Reason, check_count, limit_exceeded, missing
from embedsvc.index.backend import VectorCollection
from embedsvc.limits import Limits
from embedsvc.vectors import check_vector, unit_rows

# (collection, field) -> the bound model, checked (MODEL_BINDING, MODEL_VERSION_CHANGED).
BoundModel = Callable[[VectorCollection, str], Binding]
# (name or alias, field) -> that collection, ready.
CollectionOf = Callable[[str, str], VectorCollection]


@dataclass
class Resolved:
    vector: np.ndarray | None = None
    text: str = ""
    own: set[str] = field(default_factory=set)
    # Best-score examples: their vectors (rows), positive and negative.
    positives: np.ndarray | None = None
    negatives: np.ndarray | None = None


def item_not_found(item_id: str, collection: str, where: str) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.ITEM_NOT_FOUND,
        f"no item {item_id!r} in collection '{collection}'",
        field=where,
        metadata={"collection": collection, "id": item_id},
    )


class QueryResolver:
    def __init__(self, limits: Limits, bound_model: BoundModel, collection_of: CollectionOf) -> None:
        self.limits = limits
        self.bound_model = bound_model
        self.collection_of = collection_of

    def resolve(
        self,
        collection: VectorCollection,
        queries: Sequence[QueryIn],
        field_name: str,
        batch: bool,
        *,
        need_vector: bool,
        need_text: bool,
        control: CallControl | None = None,
    ) -> list[Resolved]:
        """Each query resolved; `need_vector`: a dense side (or diversity) needs its vector; `need_text`: a keyword
        side needs its text (MISSING_FIELD otherwise)."""
        config = collection.config
        out = [Resolved() for _ in queries]
        inputs: list[tuple[int, str]] = []
        expressions: list[tuple[int, Expression]] = []
        pictures: list[tuple[int, ImageInput]] = []
        where = [f"{field_name}[{q}]" if batch else field_name for q in range(len(queries))]
        for q, query in enumerate(queries):
            resolved = out[q]
            text = query.keyword_text or query.input
            if text:
                name = ".keyword_text" if query.keyword_text else ".input"
                if len(text) > self.limits.max_text_chars:
                    raise limit_exceeded(where[q] + name, "characters", len(text), self.limits.max_text_chars)
                resolved.text = text
            if query.vector is not None:
                resolved.vector = check_vector(
                    query.vector,
                    query.space,
                    space=config.space,
                    dimension=config.dimension,
                    owner=f"collection '{config.name}'",
                    field=where[q] + ".vector",
                    also=(config.query_space,) if config.query_space else (),  # made with its query prompt
                )
            elif query.item_id:
                check_id(query.item_id, where[q] + ".item_id", self.limits)
                (item,) = collection.get([query.item_id], with_vectors=True)
                if item is None:
                    raise item_not_found(query.item_id, config.name, where[q] + ".item_id")
                resolved.vector = item.vector
                resolved.own = {query.item_id}
            elif query.input:
                resolved.own = collection.ids_with_inputs({query.input})
                if need_vector:
                    inputs.append((q, query.input))
            elif query.expression is not None:
                expressions.append((q, query.expression))
            elif query.image is not None:
                pictures.append((q, query.image))
            elif query.examples is not None:
                self._examples(collection, query.examples, resolved, where[q] + ".examples")
            elif not query.keyword_text:
                raise missing(where[q], "a query (vector, item_id, input, expression, image, examples or keyword_text)")
            if need_text and not resolved.text:
                raise missing(
                    where[q] + ".keyword_text", "a query text (input or keyword_text) for keyword and hybrid searches"
                )
        if pictures:
            fields = [where[q] + ".image" for q, _ in pictures]
            model = self.bound_model(collection, fields[0])
            rows = model.embed_images([p for _, p in pictures], lambda n: fields[n])
            for (q, _), row in zip(pictures, rows, strict=True):
                out[q].vector = row
        if inputs:  # embedded together: one batch for a text model
            fields = [where[q] + ".input" for q, _ in inputs]
            model = self.bound_model(collection, fields[0])
            embedded = model.embed_queries([i for _, i in inputs], lambda n, _t: fields[n], self.limits, control)
            for (q, _), row in zip(inputs, embedded, strict=True):
                out[q].vector = row
        if expressions:
            self._compose(collection, expressions, out, where, control)
        if need_vector:
            for q, resolved in enumerate(out):
                if resolved.vector is None and resolved.positives is None and resolved.negatives is None:
                    raise missing(where[q], "a query vector (vector, item_id, input, expression, image or examples)")
        return out

    def _compose(
        self,
        collection: VectorCollection,
        expressions: list[tuple[int, Expression]],
        out: list[Resolved],
        where: list[str],
        control: CallControl | None,
    ) -> None:
        first = expressions[0][0]
        model = self.bound_model(collection, where[first] + ".expression")
        positions = [q for q, _ in expressions]

        def field_of(e: int, t: int | None) -> str:
            return where[positions[e]] + ".expression" + (f".terms[{t}]" if t is not None else "")

        plain: list[Expression] = []
        items: list[set[str]] = []
        for e, (_, expression) in enumerate(expressions):

            def term_field(t: int, e: int = e) -> str:
                return field_of(e, t)

            replaced, own = self._items(collection, model, expression, term_field)
            plain.append(replaced)
            items.append(own)
        composed, used = model.compose(plain, field_of, self.limits, control)
        for (q, _), vector, inputs, own in zip(expressions, composed, used, items, strict=True):
            out[q].vector = vector
            out[q].own = collection.ids_with_inputs(inputs) | own if inputs else own

    def _items(
        self, collection: VectorCollection, model: Binding, expression: Expression, field_of: Callable[[int], str]
    ) -> tuple[Expression, set[str]]:
        """The expression with its item terms as vector terms, and the ids of those items in this collection."""
        config = collection.config
        replaced, items = replace_items(
            expression, config.space, self.collection_of, self.limits, field_of, unit=model.images is None
        )
        return replaced, {item_id for name, item_id in items if name == config.name}

    def _examples(self, collection: VectorCollection, examples: ExamplesIn, out: Resolved, where: str) -> None:
        ids = [*examples.positive, *examples.negative]
        check_count(where, "example ids", len(ids), self.limits.max_examples)
        if examples.strategy == Strategy.AVERAGE_VECTOR and not examples.positive:
            raise missing(where + ".positive_ids", "a positive example (the average-vector strategy starts from one)")
        fields = [f"{where}.positive_ids[{i}]" for i in range(len(examples.positive))] + [
            f"{where}.negative_ids[{i}]" for i in range(len(examples.negative))
        ]
        for item_id, at in zip(ids, fields, strict=True):
            check_id(item_id, at, self.limits)
        found = collection.get(ids, with_vectors=True)
        for item, item_id, at in zip(found, ids, fields, strict=True):
            if item is None:
                raise item_not_found(item_id, collection.config.name, at)
        d = collection.config.dimension
        rows = np.stack([i.vector for i in found if i is not None]).astype(np.float32).reshape(-1, d)
        positives, negatives = rows[: len(examples.positive)], rows[len(examples.positive) :]
        out.own = set(ids)
        if examples.strategy == Strategy.AVERAGE_VECTOR:
            out.vector = by_example.average_vector(positives, negatives, collection.config.metric)
        else:
            out.positives, out.negatives = positives, negatives


def replace_items(
    expression: Expression,
    space: str,
    collection_of: CollectionOf,
    limits: Limits,
    field_of: Callable[[int], str],
    *,
    unit: bool,
) -> tuple[Expression, set[tuple[str, str]]]:
    """The expression with each `item` term replaced by a vector term: its item's vector (unit length with `unit`, as
    word and text terms are), from a collection of `space` (SPACE_MISMATCH otherwise; ITEM_NOT_FOUND for an unknown
    id). Also returns the (collection, id) of every item used."""
    if all(t.kind is not TermKind.ITEM for t in expression.terms):
        return expression, set()
    terms: list[Term] = []
    used: set[tuple[str, str]] = set()
    for t, term in enumerate(expression.terms):
        if term.kind is not TermKind.ITEM:
            terms.append(term)
            continue
        at = field_of(t) + ".item"
        check_id(term.value, at + ".id", limits)
        owner = collection_of(term.collection, at + ".collection")
        if owner.config.space != space:
            raise EmbedsvcError(
                Reason.SPACE_MISMATCH,
                f"item {term.value!r} of collection '{owner.config.name}' is in space {owner.config.space}, not "
                f"{space}",
                field=at + ".collection",
                metadata={"expected": space, "actual": owner.config.space},
            )
        (item,) = owner.get([term.value], with_vectors=True)
        if item is None:
            raise item_not_found(term.value, owner.config.name, at + ".id")
        vector = np.asarray(item.vector, np.float32)
        if unit:
            vector = unit_rows(vector[None])[0]
        terms.append(Term(TermKind.VECTOR, term.weight, vector=vector, space=space))
        used.add((owner.config.name, term.value))
    return Expression(tuple(terms)), used
