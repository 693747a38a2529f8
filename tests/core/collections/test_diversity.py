"""Maximal marginal relevance: hand-checked choices, and the same choices as LangChain's implementation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedsvc.core.collections.diversity import mmr, relevance_of_scores, relevance_to


def test_no_diversity_keeps_the_relevance_order():
    order, _ = mmr(np.array([0.2, 0.9, 0.5]), np.eye(3), k=3, diversity=0.0)
    assert order == [1, 2, 0]


def test_a_near_duplicate_waits_behind_a_different_item():
    vectors = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0]])
    order, marginal = mmr(np.array([1.0, 0.99, 0.5]), vectors, k=3, diversity=0.5)
    assert order == [0, 2, 1]
    assert marginal[0] == pytest.approx(0.5) and marginal[1] == pytest.approx(0.25)


def test_relevance_without_a_query_vector_is_relative_to_the_best_score():
    assert relevance_of_scores(np.array([4.0, 2.0])).tolist() == [1.0, 0.5]
    assert relevance_of_scores(np.array([0.0, 0.0])).tolist() == [1.0, 1.0]
    assert mmr(np.array([]), np.empty((0, 2)), 3, 0.5) == ([], [])


@settings(max_examples=60, deadline=None)
@given(
    data=arrays(np.float64, st.tuples(st.integers(2, 12), st.just(5)), elements=st.floats(-1, 1)),
    query=arrays(np.float64, 5, elements=st.floats(-1, 1)),
    lambda_mult=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    k=st.integers(1, 6),
)
def test_same_choices_as_langchain(data, query, lambda_mult, k):
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    if np.linalg.norm(query) < 1e-3 or (np.linalg.norm(data, axis=1) < 1e-3).any():
        return  # LangChain divides by the norms
    relevance = relevance_to(query, data)
    ours, _ = mmr(relevance, data, k, diversity=1.0 - lambda_mult)
    theirs = maximal_marginal_relevance(query, data.tolist(), lambda_mult=lambda_mult, k=k)
    assert len(ours) == len(theirs) == min(k, len(data))
    # The same picks, up to exact ties (the two compute cosines in another order): where they first differ, both
    # picks have the same marginal relevance.
    for at, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            assert at == 0 or np.isclose(
                marginal(relevance, data, ours[:at], a, lambda_mult),
                marginal(relevance, data, ours[:at], b, lambda_mult),
            )
            assert at > 0 or np.isclose(relevance[a], relevance[b])
            break


def marginal(relevance, data, chosen, candidate, lambda_mult):
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    return lambda_mult * relevance[candidate] - (1 - lambda_mult) * max(unit[candidate] @ unit[c] for c in chosen)
