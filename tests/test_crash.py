"""SIGKILL a real server during concurrent upserts, again and again: nothing acknowledged is lost, and the keyword
index finds exactly what survived (FAISS and Milvus Lite)."""

import pytest

from benchmarks import crash_harness
from tests import crash_lifecycle


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


def test_sigkill_during_snapshots_restores_and_a_reembed_leaves_nothing_half_made(tmp_path):
    outcome = crash_lifecycle.run(tmp_path / "data", rounds=6, log=lambda _msg: None)
    assert outcome.kills == 6 and outcome.problems == []
    assert outcome.cut.get("snapshot", 0) + outcome.cut.get("restore", 0) >= 2, outcome.cut  # kills hit them part-way
    assert outcome.cut.get("reembed", 0) >= 1, outcome.cut
