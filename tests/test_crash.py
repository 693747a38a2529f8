"""SIGKILL a real server during concurrent upserts, again and again: nothing acknowledged is lost."""

import pytest

from tests import crash_harness


def check(tmp_path, kills):
    outcome = crash_harness.run(tmp_path / "data", kills, log=lambda _msg: None)
    assert outcome.kills == kills
    assert len(outcome.acknowledged) > kills  # writes were really under way at each kill
    assert outcome.lost == []
    assert outcome.torn == []


def test_sigkill_20_times_loses_nothing(tmp_path):
    check(tmp_path, 20)


@pytest.mark.slow
def test_sigkill_100_times_loses_nothing(tmp_path):
    check(tmp_path, 100)
