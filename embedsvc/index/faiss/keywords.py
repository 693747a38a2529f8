"""Keyword searches of a collection: BM25 through its keyword index, with the same allowed items as a vector search.

The keyword index (contents.py) is keyed by item id and changes only under the contents' write lock, so a search run
under the read lock sees exactly the store's live items: every hit's id has a live slot, whose metadata, input and
vector the hit carries. The allowed items are the planner's (planning.py: live, matching the filter, evaluated off the
lock and completed under it) minus the query's excluded ids; the index is told them as a test over ids, their share
(which sizes its first fetch) and, for a selective filter, the allowed ids themselves (it then searches among them
only). So a filtered keyword search returns the best k allowed items exactly, whatever the filter's selectivity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from embedsvc import calls
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.faiss.contents import Contents
from embedsvc.index.faiss.planning import Budget, Planner, Steps
from embedsvc.index.filtering import Filter
from embedsvc.index.keyword.index import Allowed
from embedsvc.index.types import Hit, KeywordHits


def missing_index(name: str) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.KEYWORD_INDEX_MISSING,
        f"collection '{name}' has no keyword index (create it with one: CreateCollectionRequest.keyword), so it "
        "answers dense searches only",
        field="options.mode",
        metadata={"collection": name},
    )


class KeywordSearch:
    """Runs the keyword searches of one collection's contents."""

    def __init__(self, contents: Contents, planner: Planner) -> None:
        self.contents = contents
        self.planner = planner

    def search(
        self,
        texts: Sequence[str],
        k: int,
        *,
        steps: Steps,
        where: Filter | None = None,
        exclude: Sequence[set[str]] = (),
        with_metadata: bool = True,
        with_vectors: bool = False,
        max_response_bytes: int = 0,
    ) -> list[KeywordHits]:
        contents = self.contents
        if contents.keyword is None:
            raise missing_index(contents.config.name)
        plan = self.planner.filter_plan(where) if where is not None else None  # indexed fields answer their part
        matched = self.planner.match(plan, steps.filter_items) if plan is not None else None
        budget = Budget(max_response_bytes, with_metadata, 4 * contents.config.dimension if with_vectors else 0)
        results: list[KeywordHits] = []
        for q, text in enumerate(texts):
            calls.check()
            skip = exclude[q] if q < len(exclude) else set()
            with contents.rw.read():
                keyword, store = contents.keyword, contents.store
                assert keyword is not None
                mask = self.planner.allowed(plan, matched, steps.filter_items) if plan is not None else None
                found = keyword.search(text, k, self._allowed(mask, skip))
                slot_of = store.slot_of
                slots = np.array([slot_of[i] for i in found.ids], dtype=np.int64)
                budget.spend(store.sizes, slots)
                ids, meta, inputs, vectors = store.ids, store.meta, store.inputs, store.vectors
                hits = [
                    Hit(
                        s,
                        ids[s],
                        score,
                        meta[s] if with_metadata else None,
                        inputs[s],
                        vectors[s].copy() if with_vectors else None,
                    )
                    for s, score in zip(slots.tolist(), found.scores.tolist(), strict=True)
                ]
            results.append(KeywordHits(hits, found.terms))
        return results

    def _allowed(self, mask: np.ndarray | None, skip: set[str]) -> Allowed | None:
        """The index's view of the allowed items (called under the read lock): None when every item is."""
        if mask is None and not skip:
            return None
        store = self.contents.store
        slot_of = store.slot_of

        def test(ids: Sequence[str]) -> np.ndarray:
            slots = np.fromiter((slot_of.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
            ok = slots >= 0
            if mask is not None:
                ok[ok] = mask[slots[ok]]
            if skip:
                ok &= np.fromiter((i not in skip for i in ids), dtype=bool, count=len(ids))
            return ok

        if mask is None:
            return Allowed(test)
        eligible = int(mask.sum())

        def allowed_ids() -> Iterable[str]:
            ids = store.ids
            return (ids[s] for s in np.flatnonzero(mask).tolist() if ids[s] not in skip)

        return Allowed(test, share=eligible / max(store.count, 1), ids=allowed_ids)
