"""The re-embed fence (core/collections/fence.py) between replicas that share records: what a write through another
replica sees in each state, how the lease bounds what it may have missed, a slow commit, a record that a crashed
operation left, and what a server cleans up at start. The clocks are moved by hand."""

from __future__ import annotations

import json

import pytest

from embedsvc.core.collections import fence as fence_module
from embedsvc.core.collections.fence import JOURNAL, KIND, Fences, Record, State, source_key
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.state import LocalRecords
from tests.helpers import FakeClock

LEASE = 1.0


class Shared(LocalRecords):
    """Records two replicas read and write (one object here, as one Milvus there)."""

    @property
    def shared(self):
        return True


class Replica:
    """One replica's fences over the shared records, with its own clocks."""

    def __init__(self, records, start=1_000.0):
        self.clock = FakeClock(start)
        self.wall = FakeClock(1_700_000_000.0)
        self.refreshed = 0
        self.fences = Fences(
            records,
            lease_s=LEASE,
            expiry_s=60.0,
            renew_s=3600.0,  # the tests renew by hand, never a thread
            clock=self.clock,
            wall=self.wall,
            alias_ttl_s=1.0,
            refresh_aliases=self.refresh,
        )

    def refresh(self):
        self.refreshed += 1

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.wall.advance(seconds)


@pytest.fixture
def records(tmp_path):
    return Shared(tmp_path / "state")


@pytest.fixture
def a(records):
    return Replica(records)


@pytest.fixture
def b(records):
    return Replica(records, start=50.0)  # another machine's monotonic clock: only its own differences count


def refused(call) -> EmbedsvcError:
    with pytest.raises(EmbedsvcError) as info:
        call()
    assert info.value.reason is Reason.COLLECTION_SWITCHING
    return info.value


def test_a_write_through_another_replica_is_journaled_once_it_sees_the_record(a, b):
    b.fences.view("docs")  # B read the records before the re-embed began: it trusts that for a lease
    fence = a.fences.hold("docs", "docs-new", "op1", "replica-a")
    fence.enter(State.JOURNAL)
    early = b.fences.admit("docs", "docs", ["x"], watched=False)
    assert early.journaled is None  # not seen yet: the operation waits a lease before it reads the source
    b.fences.confirm(early)  # committed within the lease: acknowledged
    b.advance(LEASE)
    admission = b.fences.admit("docs", "docs-live", ["y", "z"], watched=False)
    assert admission.journaled == "op1"
    b.fences.confirm(admission)
    assert fence.take() == {"y", "z"} and fence.take() == set()
    # The replica running the operation records its own writes in its gate's watch: nothing is journaled.
    mine = a.fences.admit("docs", "docs", ["w"], watched=True)
    a.fences.confirm(mine)
    assert mine.journaled is None and fence.take() == set()
    fence.close()


def test_fenced_writes_are_refused_retryably_and_switched_ones_through_a_stale_alias(a, b):
    fence = a.fences.hold("docs", "docs-new", "op1", "replica-a")
    fence.enter(State.FENCED)
    error = refused(lambda: b.fences.admit("docs", "docs-live", ["x"], watched=False))
    assert error.metadata == {
        "collection": "docs",
        "target": "docs-new",
        "operation": "operations/op1",
        "state": "fenced",
    }
    refused(lambda: a.fences.admit("docs", "docs", ["x"], watched=True))  # the running replica too, at once
    fence.enter(State.SWITCHED, ["docs-live"])
    b.advance(LEASE)
    error = refused(lambda: b.fences.admit("docs", "docs-live", ["x"], watched=False))
    assert (error.metadata["state"], error.metadata["alias"], b.refreshed) == ("switched", "docs-live", 1)
    by_name = b.fences.admit("docs", "docs", ["x"], watched=False)  # the old collection by its own name
    b.fences.confirm(by_name)
    assert by_name.journaled is None
    assert fence.switched_settle() == 1.0 + fence_module.SETTLE * LEASE
    fence.close()
    b.advance(LEASE)
    b.fences.confirm(b.fences.admit("docs", "docs-live", ["x"], watched=False))
    assert a.fences.view("docs").record.state is State.DONE


def test_a_slow_commit_is_acknowledged_only_when_the_operation_cannot_have_missed_it(a, b):
    fence = a.fences.hold("docs", "docs-new", "op1", "replica-a")
    fence.enter(State.JOURNAL)
    # Journaled before its commit, and the operation has not fenced since: acknowledged however slow.
    slow = b.fences.admit("docs", "docs", ["x"], watched=False)
    b.advance(5 * LEASE)
    b.fences.confirm(slow)
    # Journaled, but the operation fenced while the commit ran: it may have taken the journal before the commit.
    late = b.fences.admit("docs", "docs", ["y"], watched=False)
    fence.enter(State.FENCED)
    b.advance(5 * LEASE)
    error = refused(lambda: b.fences.confirm(late))
    assert (error.metadata["applied"], error.metadata["state"]) == ("unknown", "fenced")
    fence.close()


def test_a_slow_commit_from_before_a_reembed_journals_itself_for_it(a, b):
    before = b.fences.admit("docs", "docs", ["x"], watched=False)  # no re-embed yet
    fence = a.fences.hold("docs", "docs-new", "op1", "replica-a")
    fence.enter(State.JOURNAL)  # began while the write committed: its fill may have read before the commit
    b.advance(2 * LEASE)
    b.fences.confirm(before)
    assert fence.take() == {"x"}
    # A re-embed that began and ended during a commit leaves a record of another setting: the write cannot know.
    again = b.fences.admit("docs", "docs", ["y"], watched=False)
    fence.enter(State.SWITCHED)
    fence.close()
    b.advance(2 * LEASE)
    assert refused(lambda: b.fences.confirm(again)).metadata["applied"] == "unknown"
    # Nothing changed during a slow commit: acknowledged.
    quiet = b.fences.admit("docs", "docs", ["z"], watched=False)
    b.advance(10 * LEASE)
    b.fences.confirm(quiet)


def test_a_record_whose_operation_died_stops_counting_when_it_expires(a, b):
    fence = a.fences.hold("docs", "docs-new", "op1", "replica-a")
    fence.enter(State.FENCED)  # and the replica running it dies: nobody renews the record
    refused(lambda: b.fences.admit("docs", "docs", ["x"], watched=False))
    b.advance(30.0)
    refused(lambda: b.fences.admit("docs", "docs", ["x"], watched=False))
    b.advance(31.0)
    admitted = b.fences.admit("docs", "docs", ["x"], watched=False)
    assert admitted.journaled is None
    b.fences.confirm(admitted)
    # The operation itself knows its record may have lapsed (writes went by unjournaled): it begins again.
    a.advance(31.0)
    assert fence.lapsed
    fence.enter(State.JOURNAL)
    assert not fence.lapsed


def test_at_start_a_server_releases_the_fences_of_operations_that_no_longer_run(records, a, b):
    for source, operation, replica in (("mine", "op1", "replica-a"), ("gone", "op2", "replica-c")):
        fence = a.fences.hold(source, f"{source}-new", operation, replica)
        fence.enter(State.FENCED)
    other = b.fences.hold("theirs", "theirs-new", "op3", "replica-b")
    other.enter(State.JOURNAL)
    a.fences._append("op2", ["left"])
    a.fences._append("op3", ["kept"])
    # Restarted: op1 was this replica's (it resumes from its own record), op2 is finished; op3 runs on B.
    released = a.fences.recover("replica-a", running=lambda op: op in ("op1", "op3"))
    assert sorted(r.source for r in released) == ["gone", "mine"]
    b.advance(LEASE)
    for source in ("mine", "gone"):
        assert b.fences.view(source).record.state is State.DONE
        b.fences.confirm(b.fences.admit(source, source, ["x"], watched=False))
    assert b.fences.admit("theirs", "theirs", ["y"], watched=False).journaled == "op3"
    assert sorted(records.list(JOURNAL)) != [] and other.take() == {"kept", "y"}
    assert all(not k.startswith("op2/") for k in records.list(JOURNAL))
    other.close()
    assert records.list(JOURNAL) == {}


def test_a_large_write_is_journaled_in_records_the_shared_state_can_hold(a, b):
    fence = a.fences.hold("docs", "docs-new", "op1", "replica-a")
    fence.enter(State.JOURNAL)
    ids = [f"{n:04d}-" + "x" * 250 for n in range(1000)]  # about 256 kB of ids
    b.advance(LEASE)
    b.fences.confirm(b.fences.admit("docs", "docs", ids, watched=False))
    entries = a.fences.records.list(JOURNAL)
    assert len(entries) > 4 and max(len(v) for v in entries.values()) <= 60_000
    assert fence.take() == set(ids)
    fence.close()


def test_records_are_keyed_by_any_collection_name_and_read_back(records, a):
    fence = a.fences.hold("a..b", "a..b-new", "op1", "replica-a")  # '..' is a valid collection name, not a key
    fence.enter(State.SWITCHED, ["live"])
    raw = records.get(KIND, source_key("a..b"))
    record = Record.from_json(raw)
    assert (record.source, record.state, record.aliases) == ("a..b", State.SWITCHED, ("live",))
    assert json.loads(raw)["operation"] == "op1"
    fence.close()


def test_unshared_records_have_no_lease(tmp_path):
    fences = Fences(LocalRecords(tmp_path / "state"), lease_s=5.0)
    assert fences.lease_s == 0.0
    fence = fences.hold("docs", "docs-new", "op1", "r")
    fence.enter(State.FENCED)
    with pytest.raises(EmbedsvcError):
        fences.admit("docs", "docs", ["x"], watched=False)
    fence.settle(lambda: None)  # nothing to wait for
    fence.close()
    fences.confirm(fences.admit("docs", "docs", ["x"], watched=False))
