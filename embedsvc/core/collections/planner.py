"""The search planner: how a search with keyword or hybrid candidates, a rerank stage, diversity, grouping, examples
or kept inputs runs (a plain dense search goes straight to the backend: service.py).

Per query, in the API's order (protos/embedsvc/v1/retrieval.proto):
1. candidates: the dense side (the backend's nearest neighbours of the query vector), the keyword side (its BM25
   search of the query text), or both, fused (fusion.py); each side asked for the fusion's candidates (hybrid) or for
   the pool the later stages need (Plan.pool). The query's own items are left out by the backend, so each side still
   returns as many as asked, unless keep_inputs keeps them (then they are marked is_input). Queries by example with
   the best-score strategy take the union of each example's nearest neighbours, scored against every example.
   A keyword query with no terms (only stopwords) or no match gives no keyword candidates: a keyword search then
   has no hits, and a hybrid search answers the dense ranking alone; either way with a notice.
2. the rerank stage: the best `rerank.candidates` reordered by a cross-encoder (rerank.py);
3. diversity: maximal marginal relevance among the best `diversity_candidates` (diversity.py);
4. grouping (grouping.py) or the first k. Grouping asks the sides for more candidates (x4, up to
   limits.max_candidates) until k groups of group_size are complete or the sides run out; with a rerank stage or
   diversity, their candidates are what it groups.
Queries run in chunks (each a dense call and a keyword call for all its queries), so a large BatchSearch holds one
chunk's candidates at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from embedsvc import calls
from embedsvc.backends.capabilities import CrossEncoder
from embedsvc.core.collections import diversity as mmr
from embedsvc.core.collections import examples as by_example
from embedsvc.core.collections.explanation import Candidate, Explanation
from embedsvc.core.collections.fusion import Fusion, fuse
from embedsvc.core.collections.grouping import MISSING, group_hits
from embedsvc.core.collections.options import Plan, RerankIn
from embedsvc.core.collections.queries import Resolved
from embedsvc.core.collections.rerank import rerank
from embedsvc.index import metadata as stored
from embedsvc.index.backend import VectorCollection
from embedsvc.index.filtering import Filter
from embedsvc.index.types import HIT_OVERHEAD, Hit, Metric, SearchMode, response_too_large

# Queries whose candidates are gathered at once.
CHUNK = 64
# Grouping asks for this many times more candidates each round.
_GROWTH = 4


class Notice(StrEnum):
    KEYWORD_QUERY_EMPTY = "keyword_query_empty"
    NO_KEYWORD_MATCH = "no_keyword_match"
    GROUPS_INCOMPLETE = "groups_incomplete"
    RERANK_MISSING_TEXT = "rerank_missing_text"


@dataclass(frozen=True)
class GroupOut:
    """A group: its shared value (None with `has_value` false: the group of one item lacking the field) and its hits'
    positions in QueryResult.hits."""

    value: Any
    has_value: bool
    members: list[int]


@dataclass
class QueryResult:
    hits: list[Hit]
    explanations: list[Explanation] | None = None  # one per hit, when the plan explains
    own: set[str] = field(default_factory=set)  # hits that are the query's own items (kept with keep_inputs)
    groups: list[GroupOut] | None = None  # with group_by


@dataclass
class Report:
    """How a search ran (the API's RetrievalReport)."""

    mode: SearchMode
    fusion: Fusion | None = None
    dense_candidates: int = 0
    keyword_candidates: int = 0
    keyword_language: str = ""
    rerank: RerankIn | None = None
    rerank_version: str = ""
    diversity: float | None = None
    diversity_candidates: int = 0
    example_strategy: str = ""
    notices: list[tuple[int, Notice]] = field(default_factory=list)
    # The collection's query prompt, when the search embedded query texts with it (inputs, text terms).
    query_prompt_name: str = ""


@dataclass(frozen=True)
class Backend:
    """The backend search parameters a request gives (filter, ANN knobs, response budget)."""

    where: Filter | None
    ef_search: int
    nprobe: int
    exact: bool
    include_metadata: bool
    include_vectors: bool
    max_response_bytes: int
    oversample: int = 0  # quantised indexes: candidates per hit (0: the collection's, or its target's)
    target_recall: float = 0.0  # 0: the collection's own


@dataclass
class _Ranked:
    candidates: list[Candidate]
    exhausted: bool  # the sides returned fewer than asked: more cannot be had


class Planner:
    def __init__(
        self,
        collection: VectorCollection,
        plan: Plan,
        backend: Backend,
        *,
        reranker: CrossEncoder | None,
        max_candidates: int,
        report: Report,
    ) -> None:
        self.collection = collection
        self.plan = plan
        self.backend = backend
        self.reranker = reranker
        self.max_candidates = max_candidates
        self.report = report
        # What the stages need from the candidates beyond what the caller asked for.
        self.need_metadata = backend.include_metadata or bool(plan.group_by)
        self.need_vectors = backend.include_vectors or plan.diversity is not None
        self.lower_is_better = collection.config.metric is Metric.L2
        self.exact = True
        # The dense searches' effective parameters (nprobe, ef_search, oversample, target and estimated recall).
        self.parameters: dict[str, str] = {}

    def run(self, resolved: Sequence[Resolved]) -> list[QueryResult]:
        results: list[QueryResult] = []
        for start in range(0, len(resolved), CHUNK):
            calls.check()
            chunk = list(resolved[start : start + CHUNK])
            results.extend(self._chunk(chunk, start))
        self._check_budget(results)
        return results

    # ---- one chunk -----------------------------------------------------------------------------------------------

    def _chunk(self, queries: list[Resolved], offset: int) -> list[QueryResult]:
        plan = self.plan
        depth = plan.fusion.candidates if plan.fusion is not None else plan.pool()
        out: list[QueryResult | None] = [None] * len(queries)
        todo = list(range(len(queries)))
        while todo:
            ranked = self._rank([queries[q] for q in todo], depth, [offset + q for q in todo])
            again = []
            for q, found in zip(todo, ranked, strict=True):
                result, complete = self._stages(queries[q], found, offset + q)
                can_grow = not complete and not found.exhausted and depth < self.max_candidates
                if can_grow and plan.rerank is None and plan.diversity is None:
                    again.append(q)
                    continue
                if not complete:
                    self.report.notices.append((offset + q, Notice.GROUPS_INCOMPLETE))
                out[q] = result
            todo = again
            depth = min(depth * _GROWTH, self.max_candidates)
        return [r for r in out if r is not None]

    def _rank(self, queries: list[Resolved], depth: int, positions: list[int]) -> list[_Ranked]:
        """Each query's candidates, best first, before the stages."""
        mode = self.plan.mode
        exclude = [set() if self.plan.keep_inputs else q.own for q in queries]
        dense: list[list[Hit]] = [[] for _ in queries]
        keyword: list[list[Hit] | None] = [None for _ in queries]
        by_vector = [i for i, q in enumerate(queries) if q.vector is not None]
        if mode is not SearchMode.KEYWORD and by_vector:
            vectors = np.stack([np.asarray(queries[i].vector) for i in by_vector])
            found = self._dense(vectors, depth, [exclude[i] for i in by_vector])
            for i, hits in zip(by_vector, found, strict=True):
                dense[i] = hits
            self.report.dense_candidates = max(self.report.dense_candidates, depth)
        if mode is not SearchMode.DENSE:
            self.report.keyword_candidates = max(self.report.keyword_candidates, depth)
            found_keywords = self.collection.keyword_search(
                [q.text for q in queries],
                depth,
                where=self.backend.where,
                exclude=exclude,
                with_metadata=self.need_metadata,
                with_vectors=self.need_vectors,
                max_response_bytes=self.backend.max_response_bytes,
            )
            for i, result in enumerate(found_keywords):
                if not result.terms:
                    self.report.notices.append((positions[i], Notice.KEYWORD_QUERY_EMPTY))
                elif not result.hits:
                    self.report.notices.append((positions[i], Notice.NO_KEYWORD_MATCH))
                keyword[i] = result.hits
        out = []
        for i, query in enumerate(queries):
            if query.positives is not None:
                out.append(self._best_score(query, depth, exclude[i]))
            elif mode is SearchMode.KEYWORD:
                hits = keyword[i] or []
                out.append(_Ranked([_keyword_candidate(r, h) for r, h in enumerate(hits, 1)], len(hits) < depth))
            elif mode is SearchMode.DENSE or not keyword[i]:
                out.append(_Ranked([_dense_candidate(r, h) for r, h in enumerate(dense[i], 1)], len(dense[i]) < depth))
            else:
                out.append(self._fused(dense[i], keyword[i] or [], depth))
        return out

    def _dense(self, vectors: np.ndarray, k: int, exclude: list[set[str]]) -> list[list[Hit]]:
        searched = self.collection.search(
            vectors,
            k,
            where=self.backend.where,
            exclude=exclude,
            ef_search=self.backend.ef_search,
            nprobe=self.backend.nprobe,
            oversample=self.backend.oversample,
            target_recall=self.backend.target_recall,
            exact=self.backend.exact,
            with_metadata=self.need_metadata,
            with_vectors=self.need_vectors,
            max_response_bytes=self.backend.max_response_bytes,
        )
        hits, exact = searched
        self.exact = self.exact and exact
        self.parameters |= searched.parameters
        return hits

    def _fused(self, dense: list[Hit], keyword: list[Hit], depth: int) -> _Ranked:
        assert self.plan.fusion is not None
        fusion = replace(self.plan.fusion, candidates=depth)
        by_id = {h.id: h for h in keyword} | {h.id: h for h in dense}
        fused = fuse(
            [(h.id, h.score) for h in dense],
            [(h.id, h.score) for h in keyword],
            fusion,
            dense_lower_is_better=self.lower_is_better,
        )
        candidates = []
        for f in fused:
            hit = by_id[str(f.key)]
            hit.score = f.score
            candidates.append(Candidate(hit, f.explanation))
        return _Ranked(candidates, len(dense) < depth and len(keyword) < depth)

    def _best_score(self, query: Resolved, depth: int, exclude: set[str]) -> _Ranked:
        """Queries by example, best-score strategy: the union of each example's nearest neighbours, scored."""
        positives = query.positives if query.positives is not None else np.empty((0, 0), np.float32)
        negatives = query.negatives if query.negatives is not None else np.empty((0, 0), np.float32)
        examples = np.concatenate([r for r in (positives, negatives) if r.size])
        lists = self.collection.search(
            examples,
            depth,
            where=self.backend.where,
            exclude=[exclude] * len(examples),
            ef_search=self.backend.ef_search,
            nprobe=self.backend.nprobe,
            oversample=self.backend.oversample,
            target_recall=self.backend.target_recall,
            exact=self.backend.exact,
            with_metadata=self.need_metadata,
            with_vectors=True,
            max_response_bytes=self.backend.max_response_bytes,
        )
        hits_of, exact = lists
        self.exact = self.exact and exact
        self.parameters |= lists.parameters
        seen: dict[str, Hit] = {}
        for hits in hits_of:
            for hit in hits:
                seen.setdefault(hit.id, hit)
        hits = list(seen.values())
        if not hits:
            return _Ranked([], True)
        metric = self.collection.config.metric
        vectors = np.stack([np.asarray(h.vector) for h in hits])
        scores, best_p, best_n = by_example.best_score(vectors, positives, negatives, metric)
        order = np.argsort(-scores, kind="stable")
        candidates = []
        for i in order.tolist():
            hit = hits[i]
            hit.score = float(scores[i])
            explanation = Explanation(
                best_positive=float(best_p[i]) if np.isfinite(best_p[i]) else None,
                best_negative=float(best_n[i]) if np.isfinite(best_n[i]) else None,
            )
            candidates.append(Candidate(hit, explanation))
        return _Ranked(candidates, all(len(h) < depth for h in hits_of))

    # ---- stages --------------------------------------------------------------------------------------------------

    def _stages(self, query: Resolved, ranked: _Ranked, position: int) -> tuple[QueryResult, bool]:
        """The rerank stage, diversity, then grouping or the first k; and whether grouping is complete."""
        plan = self.plan
        candidates = ranked.candidates
        if plan.rerank is not None or plan.diversity is not None:
            for rank, candidate in enumerate(candidates, 1):
                candidate.explanation = replace(candidate.explanation, candidate_rank=rank)
        if plan.rerank is not None and self.reranker is not None:
            done = rerank(
                self.reranker, query.text, candidates[: plan.rerank.candidates], raw_scores=plan.rerank.raw_scores
            )
            candidates = done.candidates
            if done.missing_text:
                self.report.notices.append((position, Notice.RERANK_MISSING_TEXT))
        if plan.diversity is not None:
            candidates = self._diversify(query, candidates[: plan.diversity_candidates])
        complete = True
        groups = None
        if plan.group_by:
            grouped = group_hits(
                candidates,
                lambda c: (c.hit.metadata or {}).get(plan.group_by, MISSING),
                plan.k,
                plan.group_size,
                own_key=lambda c: c.hit.id,
            )
            complete = grouped.complete
            chosen: dict[str, int] = {}
            kept: list[Candidate] = []
            groups = []
            for group in grouped.groups:
                members = []
                for candidate in group.hits:
                    if candidate.hit.id not in chosen:
                        chosen[candidate.hit.id] = len(kept)
                        kept.append(candidate)
                    members.append(chosen[candidate.hit.id])
                has_value = group.value is not None
                groups.append(GroupOut(group.value, has_value, members))
            candidates = kept
        else:
            candidates = candidates[: plan.k]
        for candidate in candidates:
            if not self.backend.include_metadata:
                candidate.hit.metadata = None
            if not self.backend.include_vectors:
                candidate.hit.vector = None
        own = {c.hit.id for c in candidates if c.hit.id in query.own} if plan.keep_inputs else set()
        result = QueryResult(
            [c.hit for c in candidates],
            [c.explanation for c in candidates] if plan.explain else None,
            own,
            groups,
        )
        return result, complete

    def _diversify(self, query: Resolved, pool: list[Candidate]) -> list[Candidate]:
        if not pool:
            return pool
        assert self.plan.diversity is not None
        vectors = np.stack([np.asarray(c.hit.vector, np.float32) for c in pool])
        if query.vector is not None and self.plan.mode is not SearchMode.KEYWORD:
            relevance = mmr.relevance_to(query.vector, vectors)
        else:
            relevance = mmr.relevance_of_scores(np.array([c.hit.score for c in pool]))
        wanted = len(pool) if self.plan.group_by else self.plan.k
        order, marginal = mmr.mmr(relevance, vectors, wanted, self.plan.diversity)
        chosen = []
        for position, value in zip(order, marginal, strict=True):
            candidate = pool[position]
            candidate.explanation = replace(candidate.explanation, mmr_score=value)
            chosen.append(candidate)
        return chosen

    def _check_budget(self, results: list[QueryResult]) -> None:
        """The response's size, counted as the backends count it (they counted the candidates, chunk by chunk)."""
        limit = self.backend.max_response_bytes
        if not limit:
            return
        vector_bytes = 4 * self.collection.config.dimension if self.backend.include_vectors else 0
        spent = 0
        for result in results:
            for hit in result.hits:
                spent += HIT_OVERHEAD + vector_bytes + len(hit.id.encode()) + len(hit.input.encode())
                if hit.metadata:
                    spent += stored.size_bytes(hit.metadata)
            if spent > limit:
                raise response_too_large(spent, limit)


def _dense_candidate(rank: int, hit: Hit) -> Candidate:
    return Candidate(hit, Explanation(dense_rank=rank, dense_score=hit.score))


def _keyword_candidate(rank: int, hit: Hit) -> Candidate:
    return Candidate(hit, Explanation(keyword_rank=rank, keyword_score=hit.score))
