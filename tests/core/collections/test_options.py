"""A search's plan: mode and fusion resolved field by field (request, else the collection's defaults, else the
service's), stage candidates and their limits, and what makes a search more than a plain dense one."""

import pytest

from embedsvc.core.collections.fusion import Fusion, Method
from embedsvc.core.collections.options import RerankIn, SearchOptions, plan
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.types import CollectionConfig, IndexParams, Metric, SearchDefaults, SearchMode
from embedsvc.limits import Limits

LIMITS = Limits(max_candidates=500, max_rerank_candidates=100, max_group_size=10, max_k=300)


def config(**defaults) -> CollectionConfig:
    return CollectionConfig(
        "c", 4, Metric.COSINE, IndexParams().resolved(4), keyword="english", search_defaults=SearchDefaults(**defaults)
    )


def refused(options: SearchOptions, collection: CollectionConfig | None = None, examples: bool = False):
    with pytest.raises(EmbedsvcError) as info:
        plan(options, collection or config(), LIMITS, examples=examples)
    return info.value.reason, info.value.field


def test_a_plain_search_is_dense_and_unstaged():
    p = plan(SearchOptions(), config(), LIMITS, examples=False)
    assert (p.mode, p.k, p.fusion, p.staged, p.explain, p.pool()) == (SearchMode.DENSE, 10, None, False, False, 10)


def test_mode_and_fusion_come_from_the_request_then_the_collection_then_the_service():
    collection = config(mode=SearchMode.HYBRID, fusion="rrf", rrf_k=20)
    p = plan(SearchOptions(), collection, LIMITS, examples=False)
    assert p.mode is SearchMode.HYBRID and p.fusion == Fusion(Method.RRF, 20, None, 200)
    p = plan(SearchOptions(fusion=Fusion(rrf_k=5, candidates=50)), collection, LIMITS, examples=False)
    assert p.fusion == Fusion(Method.RRF, 5, None, 50)
    p = plan(SearchOptions(mode=SearchMode.HYBRID), config(), LIMITS, examples=False)
    assert p.fusion == Fusion(Method.WEIGHTED, 60, 0.5, 200) and p.staged and p.explain
    p = plan(SearchOptions(mode=SearchMode.HYBRID, k=300), config(), LIMITS, examples=False)
    assert p.fusion is not None and p.fusion.candidates == 300  # at least k
    assert plan(SearchOptions(mode=SearchMode.DENSE), collection, LIMITS, examples=False).fusion is None


def test_stage_candidates_and_the_pool():
    p = plan(SearchOptions(k=5, rerank=RerankIn("ce")), config(), LIMITS, examples=False)
    assert p.rerank == RerankIn("ce", 50, False) and p.pool() == 50 and p.explain
    p = plan(SearchOptions(k=40, diversity=0.3), config(), LIMITS, examples=False)
    assert (p.diversity, p.diversity_candidates, p.pool()) == (0.3, 160, 160)
    p = plan(SearchOptions(k=4, group_by="doc", group_size=3), config(), LIMITS, examples=False)
    assert (p.group_size, p.pool(), p.explain) == (3, 12, False)
    p = plan(SearchOptions(diversity=0.0), config(), LIMITS, examples=False)
    assert p.diversity is None and not p.staged  # 0 is no diversification
    assert plan(SearchOptions(), config(), LIMITS, examples=True).explain


def test_limits_and_bad_values():
    assert refused(SearchOptions(mode=SearchMode.HYBRID, fusion=Fusion(candidates=501))) == (
        Reason.LIMIT_EXCEEDED,
        "options.fusion.candidates",
    )
    assert refused(SearchOptions(rerank=RerankIn("ce", 101))) == (Reason.LIMIT_EXCEEDED, "options.rerank.candidates")
    assert refused(SearchOptions(k=20, rerank=RerankIn("ce", 10))) == (
        Reason.INVALID_VALUE,
        "options.rerank.candidates",
    )
    assert refused(SearchOptions(rerank=RerankIn(""))) == (Reason.MISSING_FIELD, "options.rerank.model")
    assert refused(SearchOptions(group_by="d", group_size=11)) == (Reason.LIMIT_EXCEEDED, "options.group_size")
    assert refused(SearchOptions(group_size=2)) == (Reason.INVALID_VALUE, "options.group_size")
    assert refused(SearchOptions(diversity=0.5, diversity_candidates=501)) == (
        Reason.LIMIT_EXCEEDED,
        "options.diversity_candidates",
    )
    assert refused(SearchOptions(diversity_candidates=20)) == (Reason.INVALID_VALUE, "options.diversity_candidates")
    assert refused(SearchOptions(diversity=float("nan"))) == (Reason.INVALID_VALUE, "options.diversity")
    assert refused(SearchOptions(mode=SearchMode.HYBRID, fusion=Fusion(dense_weight=-0.1))) == (
        Reason.INVALID_VALUE,
        "options.fusion.dense_weight",
    )
    assert refused(SearchOptions(mode=SearchMode.KEYWORD), examples=True) == (Reason.INVALID_VALUE, "options.mode")
    assert refused(SearchOptions(k=301)) == (Reason.LIMIT_EXCEEDED, "options.k")
