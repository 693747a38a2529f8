"""Fusion of a dense and a keyword ranking: hand-checked RRF and weighted cases, defaults and their checks, and
properties (each candidate once, scores explained by their parts, best first)."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedsvc.core.collections.fusion import Fusion, Method, fuse, min_max, rrf, weighted
from embedsvc.errors import EmbedsvcError


def test_rrf_by_hand():
    fused = rrf([("a", 0.9), ("b", 0.8), ("c", 0.7)], [("b", 12.0), ("d", 3.0)], k=60)
    assert [f.key for f in fused] == ["b", "a", "d", "c"]
    b = fused[0]
    assert b.score == pytest.approx(1 / 62 + 1 / 61)
    e = b.explanation
    assert (e.dense_rank, e.dense_score, e.keyword_rank, e.keyword_score) == (2, 0.8, 1, 12.0)
    assert (e.dense_contribution, e.keyword_contribution) == (pytest.approx(1 / 62), pytest.approx(1 / 61))
    d = fused[2].explanation
    assert (d.dense_rank, d.dense_score, d.dense_contribution) == (0, None, 0.0)


def test_rrf_ties_go_to_the_better_keyword_rank_then_the_better_dense_rank():
    fused = rrf([("x", 0.9), ("y", 0.8)], [("y", 5.0), ("x", 4.0)], k=60)  # ranks (1, 2) and (2, 1): a tie
    assert [f.key for f in fused] == ["y", "x"] and fused[0].score == fused[1].score
    assert [f.key for f in rrf([("p", 1.0), ("q", 1.0)], [], k=60)] == ["p", "q"]


def test_weighted_rrf_splits_the_weight():
    fused = rrf([("a", 1.0)], [("b", 1.0)], k=10, dense_weight=0.75)
    assert [f.key for f in fused] == ["a", "b"]
    assert fused[0].score == pytest.approx(0.75 / 11) and fused[1].score == pytest.approx(0.25 / 11)


def test_weighted_by_hand_and_ties_go_to_the_better_keyword_rank():
    fused = weighted([("a", 0.9), ("b", 0.5), ("c", 0.1)], [("b", 10.0), ("d", 5.0)], 0.5)
    assert [(f.key, f.score) for f in fused] == [("b", 0.75), ("a", 0.5), ("d", 0.0), ("c", 0.0)]
    assert fused[0].explanation.dense_contribution == 0.25 and fused[0].explanation.keyword_contribution == 0.5


def test_weighted_negates_l2_distances_and_equal_scores_all_count_one():
    fused = weighted([("near", 0.1), ("far", 0.5)], [], 1.0, dense_lower_is_better=True)
    assert [(f.key, f.score) for f in fused] == [("near", 1.0), ("far", 0.0)]
    assert min_max([3.0, 3.0]) == [1.0, 1.0] and min_max([]) == []


def test_one_empty_side_keeps_the_other_sides_order():
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.8)]
    assert [f.key for f in rrf(dense, [])] == ["a", "b", "c"]
    assert [f.key for f in weighted(dense, [], 0.5)] == ["a", "b", "c"]
    assert [f.key for f in rrf([], [("x", 2.0), ("y", 1.0)])] == ["x", "y"]


def test_defaults_and_collection_defaults():
    assert Fusion().resolved(k=10, max_candidates=1000) == Fusion(Method.WEIGHTED, 60, 0.5, 200)
    assert Fusion(Method.RRF).resolved(10, 1000) == Fusion(Method.RRF, 60, None, 200)
    assert Fusion().resolved(k=300, max_candidates=1000).candidates == 300  # at least k
    collection = Fusion(Method.WEIGHTED, dense_weight=0.7, candidates=200)
    assert Fusion(rrf_k=20).over(collection) == Fusion(Method.WEIGHTED, 20, 0.7, 200)
    assert Fusion(dense_weight=0.0).over(collection).dense_weight == 0.0  # an explicit 0 is not "unset"


@pytest.mark.parametrize(
    ("fusion", "field"),
    [
        (Fusion(rrf_k=10_001), "options.fusion.rrf_k"),
        (Fusion(rrf_k=-1), "options.fusion.rrf_k"),
        (Fusion(dense_weight=1.5), "options.fusion.dense_weight"),
        (Fusion(dense_weight=math.nan), "options.fusion.dense_weight"),
        (Fusion(candidates=5), "options.fusion.candidates"),
        (Fusion(candidates=5000), "options.fusion.candidates"),
    ],
)
def test_bad_parameters_name_their_field(fusion, field):
    with pytest.raises(EmbedsvcError) as info:
        fusion.resolved(k=10, max_candidates=1000)
    assert (info.value.reason, info.value.field) == ("INVALID_VALUE", field)


def test_fuse_cuts_each_side_to_its_candidates():
    dense = [(f"d{i}", 1.0 - i / 10) for i in range(10)]
    keyword = [(f"k{i}", 10.0 - i) for i in range(10)]
    fused = fuse(dense, keyword, Fusion(Method.RRF, 60, None, 3))
    assert sorted(f.key for f in fused) == ["d0", "d1", "d2", "k0", "k1", "k2"]


rankings = st.lists(
    st.tuples(st.sampled_from("abcdefghijkl"), st.floats(-10, 10, allow_nan=False)),
    max_size=12,
    unique_by=lambda p: p[0],
).map(lambda pairs: sorted(pairs, key=lambda p: -p[1]))


@given(dense=rankings, keyword=rankings, weight=st.floats(0, 1), k=st.integers(1, 100))
def test_every_candidate_once_best_first_explained_by_its_parts(dense, keyword, weight, k):
    for fused in (rrf(dense, keyword, k), weighted(dense, keyword, weight)):
        keys = [f.key for f in fused]
        assert sorted(keys) == sorted({key for key, _ in dense} | {key for key, _ in keyword})
        assert all(a.score >= b.score for a, b in itertools.pairwise(fused))
        for f in fused:
            e = f.explanation
            assert e.fused_score == f.score
            assert f.score == pytest.approx(e.dense_contribution + e.keyword_contribution)
            assert (e.dense_rank > 0) == (f.key in dict(dense)) and (e.keyword_rank > 0) == (f.key in dict(keyword))
