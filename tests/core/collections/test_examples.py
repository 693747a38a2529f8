"""Search by example: the average-vector query and the best-score strategy, by hand and by property."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedsvc.core.collections.examples import average_vector, best_score, similarity, squash
from embedsvc.index.types import Metric


def test_average_vector_by_hand():
    positives, negatives = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    # cosine: unit-normalised first: mean [0.5, 0.5]; 2 x mean - [1, 0] = [0, 1]
    assert average_vector(positives, negatives, Metric.COSINE).tolist() == [0.0, 1.0]
    assert average_vector(positives, negatives[:0], Metric.COSINE).tolist() == [0.5, 0.5]
    # inner product: as given: mean [1, 0.5]; 2 x mean - [1, 0] = [1, 1]
    assert average_vector(positives, negatives, Metric.INNER_PRODUCT).tolist() == [1.0, 1.0]


def test_similarity_is_higher_closer_for_every_metric():
    a, b = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 1.0]])
    assert similarity(a, b, Metric.L2).tolist() == [[-25.0, -1.0]]
    assert similarity(b, b, Metric.INNER_PRODUCT).tolist() == [[25.0, 4.0], [4.0, 1.0]]
    assert similarity(b, b, Metric.COSINE)[0, 1] == pytest.approx(0.8)


def test_best_score_by_hand():
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    score, p, n = best_score(candidates, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), Metric.COSINE)
    assert p.tolist() == pytest.approx([1.0, 0.0, 0.7071], abs=1e-4)
    assert n.tolist() == pytest.approx([0.0, 1.0, 0.7071], abs=1e-4)
    # first: closer to the positive: squash(1) = 0.75; second: closer to the negative: -squash(1); third: a tie
    # goes to the negative side.
    assert score.tolist() == pytest.approx([0.75, -0.75, -float(squash(np.array(0.70710678)))], abs=1e-6)
    only_negative, _, _ = best_score(candidates, np.empty((0, 2)), np.array([[0.0, 1.0]]), Metric.COSINE)
    assert np.argsort(-only_negative).tolist() == [0, 2, 1]  # the least like the negative first


@given(
    candidates=arrays(np.float64, (20, 3), elements=st.floats(-1, 1)),
    positives=arrays(np.float64, (2, 3), elements=st.floats(-1, 1)),
    negatives=arrays(np.float64, (2, 3), elements=st.floats(-1, 1)),
    metric=st.sampled_from(list(Metric)),
)
def test_items_closer_to_a_positive_rank_above_items_closer_to_a_negative(candidates, positives, negatives, metric):
    score, p, n = best_score(candidates, positives, negatives, metric)
    positive_side = p > n
    if positive_side.any() and (~positive_side).any():
        assert score[positive_side].min() > score[~positive_side].max()
    assert np.all((score > 0) == positive_side)
