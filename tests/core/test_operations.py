"""Operations: run in the background, report progress, cancel cleanly, and are never lost across a restart."""

import threading
import time

import pytest

from embedsvc.core.operations import Operation, OperationStore
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.state import LocalRecords
from tests.helpers import wait_for


def opened(folder, **options):
    """A store over the records in `folder`, settled as at a server's start."""
    store = OperationStore(LocalRecords(folder), "replica-a", **options)
    store.recover()
    return store


def wait(store, name, timeout=30):
    return wait_for(lambda: (op := store.get(name)).done and op, timeout, f"operation {name} to finish")


def until_cancelled(started):
    """Work that says it started, then runs until it is cancelled (or the server stops), checking as real work does
    between chunks; it waits without polling."""

    def work(progress):
        woken = threading.Event()
        progress.control.wake_on_cancel(woken)
        started.set()
        assert woken.wait(30), "the operation was never cancelled"
        progress.check()  # raises CANCELLED
        return {}

    return work


def test_progress_result_and_deduplication(tmp_path):
    store = opened(tmp_path)
    release = threading.Event()

    reported = threading.Event()

    def work(progress):
        progress.stage("indexing", 10)
        progress.units(4)
        reported.set()
        assert release.wait(30)
        return {"collection": "c"}

    op = store.start("rebuild", "c", work)
    assert store.start("rebuild", "c", work).id == op.id  # one rebuild per collection at a time
    assert reported.wait(30)
    running = store.get(op.name)
    assert (running.stage, running.done_units, running.total_units, running.done) == ("indexing", 4, 10, False)
    release.set()
    done = wait(store, op.name)
    assert done.done and done.error is None and done.result == {"collection": "c"} and done.end_time is not None
    assert store.list("c")[0].id == op.id and store.list("other") == []
    store.close()


def test_cancel_stops_at_the_next_check(tmp_path):
    store = opened(tmp_path)
    started = threading.Event()
    op = store.start("rebuild", "c", until_cancelled(started))
    assert started.wait(30)
    store.cancel(op.name)
    done = wait(store, op.name)
    assert done.cancel_requested and done.error.reason == "CANCELLED"
    store.close()


def test_a_running_operation_is_reported_interrupted_after_a_restart(tmp_path):
    store = opened(tmp_path)
    running, died = threading.Event(), threading.Event()
    op = store.start("rebuild", "c", lambda progress: running.set() or (died.wait(30) and {}))
    assert running.wait(30)
    reopened = opened(tmp_path)  # as if the process had died: the first store never closed
    found = reopened.get(op.name)
    assert found.done and found.error.reason == Reason.INTERRUPTED.value and found.end_time is not None
    assert Operation.from_json((tmp_path / "operations" / f"{op.id}.json").read_bytes()).done  # and recorded so
    reopened.close()
    died.set()
    store._pool.shutdown(wait=True)


def test_a_clean_stop_records_running_operations_as_interrupted(tmp_path):
    store = opened(tmp_path)
    started = threading.Event()
    op = store.start("rebuild", "c", until_cancelled(started))
    assert started.wait(30)
    store.close()
    assert opened(tmp_path).get(op.name).error.reason == Reason.INTERRUPTED.value


def test_failures_and_unknown_names(tmp_path):
    store = opened(tmp_path)

    def fails(progress):
        raise EmbedsvcError(Reason.STORAGE_FULL, "disk full")

    def crashes(progress):
        raise RuntimeError("secret internals")

    assert wait(store, store.start("rebuild", "a", fails).name).error.reason == "STORAGE_FULL"
    crashed = wait(store, store.start("rebuild", "b", crashes).name).error
    assert crashed.reason == "INTERNAL" and "secret" not in crashed.message
    with pytest.raises(EmbedsvcError) as info:
        store.get("operations/nope")
    assert info.value.reason is Reason.OPERATION_NOT_FOUND
    store.close()


class Shared(LocalRecords):
    """Records two stores read and write as replicas do over Milvus (one object here, as one Milvus there)."""

    @property
    def shared(self):
        return True


def test_a_resumable_operation_continues_after_a_restart_with_its_parameters(tmp_path):
    store = opened(tmp_path, resumable=("reembed",))
    died = threading.Event()
    op = store.start("reembed", "c", lambda progress: died.wait(30) and {}, params={"source": "c", "n": 3})
    reopened = opened(tmp_path, resumable=("reembed",))  # as if the process had died
    assert not reopened.get(op.name).done  # not reported interrupted: it will resume
    seen = []

    def build(record):
        seen.append(record.params)

        def work(progress):
            progress.stage("filling", 10)
            progress.units(10)
            return {"collection": record.params["source"]}

        return work

    assert [o.id for o in reopened.resume("reembed", build)] == [op.id]
    done = wait(reopened, op.name)
    assert seen == [{"source": "c", "n": 3}] and done.error is None and done.result == {"collection": "c"}
    died.set()
    store.close()
    reopened.close()


def test_a_clean_stop_leaves_a_resumable_operation_unfinished(tmp_path):
    store = opened(tmp_path, resumable=("reembed",))
    started = threading.Event()
    op = store.start("reembed", "c", until_cancelled(started))
    assert started.wait(30)
    store.close()
    again = opened(tmp_path, resumable=("reembed",))
    assert again.get(op.name).stage == "paused" and not again.get(op.name).done
    again.close()


def test_cancel_through_another_replica_stops_the_running_one(tmp_path):
    records = Shared(tmp_path)
    a = OperationStore(records, "replica-a")
    b = OperationStore(records, "replica-b")
    cleaned = threading.Event()

    def work(progress):
        progress.stage("filling", 100)
        try:
            for n in range(100_000):
                progress.check()
                progress.units(n % 100)
                time.sleep(0.005)  # the work itself (paced, not a wait): it runs until the cancel stops it
        finally:
            cleaned.set()
        return {}

    op = a.start("reembed", "c", work)
    wait_for(lambda: b.get(op.name).stage == "filling")  # B sees A's operation
    assert b.get(op.name).replica == "replica-a"
    assert b.cancel(op.name).cancel_requested
    done = wait(b, op.name)
    assert done.error.reason == "CANCELLED" and done.cancel_requested and cleaned.is_set()
    assert records.get("operation-cancels", op.id) is None  # the cancel record is gone with the operation
    a.close()
    b.close()


def test_progress_has_a_rate_and_an_eta_and_reaches_other_replicas(tmp_path):
    records = Shared(tmp_path)
    a = OperationStore(records, "replica-a")
    b = OperationStore(records, "replica-b")
    release = threading.Event()

    def work(progress):
        progress.stage("filling", 1000)
        progress.units(250)
        progress.details(target="t")
        release.wait(10)
        progress.units(500)
        return {}

    op = a.start("reembed", "c", work)
    wait_for(lambda: a.get(op.name).done_units == 250)
    running = a.get(op.name)
    assert running.rate > 0 and running.eta_s == pytest.approx(750 / running.rate)
    wait_for(lambda: b.get(op.name).done_units == 250, timeout=5)  # written at most once a second
    release.set()
    assert wait(b, op.name).details == {"target": "t"}
    a.close()
    b.close()


def test_an_operation_of_another_replica_is_neither_interrupted_nor_resumed_here(tmp_path):
    records = Shared(tmp_path)
    a = OperationStore(records, "replica-a")
    blocked = threading.Event()
    op = a.start("rebuild", "c", lambda progress: blocked.wait(30) and {})
    b = OperationStore(records, "replica-b", resumable=("reembed",))
    b.recover()
    assert not b.get(op.name).done  # B does not call A's running operation interrupted
    assert b.resume("rebuild", lambda record: lambda progress: {}) == []
    blocked.set()
    wait(a, op.name)
    a.close()
    b.close()
