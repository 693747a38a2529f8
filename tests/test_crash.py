"""SIGKILL a real server during concurrent upserts, again and again: nothing acknowledged is lost, and the keyword
index finds exactly what survived (FAISS and Milvus Lite)."""

import pytest

from benchmarks import crash_harness


def check(tmp_path, kills, backend="faiss"):
    outcome = crash_harness.run(tmp_path / "data", kills, backend=backend, log=lambda _msg: None)
    assert outcome.kills == kills
    assert set(outcome.acknowledged.values()) == set(range(kills))  # writes were really under way at each kill
    assert outcome.lost == []
    assert outcome.torn == []
    assert outcome.keyword_mismatch == []


def test_sigkill_20_times_loses_nothing(tmp_path):
    check(tmp_path, 20)


def test_sigkill_milvus_lite_5_times_loses_nothing(tmp_path):
    pytest.importorskip("pymilvus")
    check(tmp_path, 5, backend="milvus")


@pytest.mark.slow
def test_sigkill_100_times_loses_nothing(tmp_path):
    check(tmp_path, 100)
