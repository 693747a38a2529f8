"""Rerank's domain with a cross-encoder whose scores are known: TEI's semantics (sigmoid or raw scores, best first,
ties in request order, top_n), the checks and their (code, reason), truncation refused or reported, and the call's
deadline and cancellation honoured between the model's batches."""

import threading

import numpy as np
import pytest

from embedsvc.calls import CallControl
from embedsvc.core.texts.batching import Batcher, PairModel
from embedsvc.core.texts.reranking import rerank, sigmoid
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits


class Overlap:
    """A CrossEncoder whose logit is (words the query and text share) - 1; a pair is one token per word plus 3."""

    name = "overlap"
    version = "sha256:0123456789abcdef"
    space = "model:overlap@sha256:0123456789abcdef"
    method = "cross-encoder"

    def __init__(self, max_seq_length: int = 12, on_batch=None) -> None:
        self.max_seq_length = max_seq_length
        self.batches: list[list[tuple[str, str]]] = []
        self.on_batch = on_batch

    def warm_up(self) -> None: ...

    def memory_bytes(self) -> int:
        return 0

    def token_counts(self, pairs):
        return [len(q.split()) + len(t.split()) + 3 for q, t in pairs]

    def score(self, pairs):
        self.batches.append(list(pairs))
        if self.on_batch is not None:
            self.on_batch(len(self.batches))
        return np.array([len(set(q.split()) & set(t.split())) - 1.0 for q, t in pairs], np.float32)


@pytest.fixture
def model():
    encoder = Overlap()
    batcher = Batcher("overlap", encoder.score, max_batch_size=64, max_wait_s=0.0, unit="pairs")
    yield PairModel(encoder, batcher)
    batcher.close()


LIMITS = Limits(max_rerank_texts=5, max_text_chars=40)


def reason(call) -> Reason:
    with pytest.raises(EmbedsvcError) as info:
        call()
    return info.value.reason


def test_results_best_first_with_sigmoid_scores_ties_in_request_order(model):
    texts = ["red fox", "a red fox jumps", "blue sky", "fox", "blue sea"]
    got = rerank(model, "red fox jumps", texts, LIMITS)
    assert [r.index for r in got.results] == [1, 0, 3, 2, 4]  # 2 and 4 tie (logit -1): request order
    assert [r.score for r in got.results] == pytest.approx(1 / (1 + np.exp(-np.array([2.0, 1, 0, -1, -1]))))
    assert got.token_counts == [8, 10, 8, 7, 8] and got.truncated == [] and got.max_seq_length == 12
    assert got.provenance.method == "cross-encoder" and got.provenance.model_version == model.version
    parameters = {"raw_scores": "false", "truncate": "false", "top_n": "0", "max_seq_length": "12"}
    assert got.provenance.parameters == parameters
    raw = rerank(model, "red fox jumps", texts, LIMITS, raw_scores=True, top_n=2)
    assert [(r.index, r.score) for r in raw.results] == [(1, 2.0), (0, 1.0)]


def test_sigmoid_is_stable_for_large_logits():
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0], np.float32)).tolist() == [0.0, 0.5, 1.0]


def test_over_long_pairs_are_refused_unless_truncated(model):
    texts = ["fox", "a b c d e f g h i j", "red"]  # the second is 2 + 10 + 3 = 15 tokens > 12
    with pytest.raises(EmbedsvcError) as info:
        rerank(model, "red fox", texts, LIMITS)
    assert info.value.reason is Reason.LIMIT_EXCEEDED and info.value.field == "texts[1]"
    assert info.value.metadata["limit"] == "12" and info.value.metadata["actual"] == "15"
    got = rerank(model, "red fox", texts, LIMITS, truncate=True)
    assert got.truncated == [1] and len(got.results) == 3


def test_bad_input_by_reason(model):
    assert reason(lambda: rerank(model, "", ["a"], LIMITS)) is Reason.INVALID_VALUE
    assert reason(lambda: rerank(model, "q", [], LIMITS)) is Reason.MISSING_FIELD
    assert reason(lambda: rerank(model, "q", ["a", "  "], LIMITS)) is Reason.INVALID_VALUE
    assert reason(lambda: rerank(model, "q", ["a"] * 6, LIMITS)) is Reason.LIMIT_EXCEEDED
    assert reason(lambda: rerank(model, "q" * 41, ["a"], LIMITS)) is Reason.LIMIT_EXCEEDED
    assert reason(lambda: rerank(model, "q", ["a" * 41], LIMITS)) is Reason.LIMIT_EXCEEDED
    assert reason(lambda: rerank(model, "q", ["a"], LIMITS, top_n=-1)) is Reason.INVALID_VALUE


def test_deadline_and_cancellation_stop_the_work_between_batches():
    control = CallControl()
    encoder = Overlap(on_batch=lambda n: control.cancel() if n == 1 else None)
    batcher = Batcher("overlap", encoder.score, max_batch_size=2, max_wait_s=0.0, unit="pairs")
    try:
        with pytest.raises(EmbedsvcError) as info:
            rerank(PairModel(encoder, batcher), "q", ["a", "b", "c", "d", "e"], LIMITS, control=control)
        assert info.value.reason is Reason.CANCELLED
        batcher.drain()
        batcher._worker.join(timeout=10)  # the worker finishes what it took; the jobs not started are dropped
        assert len(encoder.batches) == 1 and batcher.stats.dropped_jobs >= 1
        expired = CallControl(deadline=0.0)
        assert reason(lambda: rerank(PairModel(encoder, batcher), "q", ["a"], LIMITS, control=expired)) is (
            Reason.DEADLINE_EXCEEDED
        )
    finally:
        batcher.close()


def test_score_through_the_pair_model_uses_the_current_calls_control(model):
    from embedsvc import calls

    control = CallControl(deadline=0.0)
    with calls.bound(control), pytest.raises(EmbedsvcError) as info:
        model.score([("q", "a")])
    assert info.value.reason is Reason.DEADLINE_EXCEEDED
    assert model.score([("red fox", "fox")]).tolist() == [0.0]  # outside a call: no control
    assert model.score([]).shape == (0,)


def test_concurrent_callers_are_merged_into_batches(model):
    results: dict[int, list[int]] = {}
    start = threading.Barrier(8)

    def one(n: int) -> None:
        start.wait()
        results[n] = [r.index for r in rerank(model, f"w{n} x", [f"w{n}", "y", f"w{n} x"], LIMITS).results]

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(order == [2, 0, 1] for order in results.values()) and len(results) == 8
    encoder = model.encoder
    assert sum(len(b) for b in encoder.batches) == 24
