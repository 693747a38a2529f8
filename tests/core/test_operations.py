"""Operations: run in the background, report progress, cancel cleanly, and are never lost across a restart."""

import threading

import pytest

from embedsvc.core.operations import Operation, OperationStore
from embedsvc.errors import EmbedsvcError, Reason
from tests.helpers import wait_for


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
    store = OperationStore(tmp_path)
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
    store = OperationStore(tmp_path)
    started = threading.Event()
    op = store.start("rebuild", "c", until_cancelled(started))
    assert started.wait(30)
    store.cancel(op.name)
    done = wait(store, op.name)
    assert done.cancel_requested and done.error.reason == "CANCELLED"
    store.close()


def test_a_running_operation_is_reported_interrupted_after_a_restart(tmp_path):
    store = OperationStore(tmp_path)
    running, died = threading.Event(), threading.Event()
    op = store.start("rebuild", "c", lambda progress: running.set() or (died.wait(30) and {}))
    assert running.wait(30)
    reopened = OperationStore(tmp_path)  # as if the process had died: the first store never closed
    found = reopened.get(op.name)
    assert found.done and found.error.reason == Reason.INTERRUPTED.value and found.end_time is not None
    assert Operation.from_json((tmp_path / f"{op.id}.json").read_bytes()).done  # and recorded so
    reopened.close()
    died.set()
    store._pool.shutdown(wait=True)


def test_a_clean_stop_records_running_operations_as_interrupted(tmp_path):
    store = OperationStore(tmp_path)
    started = threading.Event()
    op = store.start("rebuild", "c", until_cancelled(started))
    assert started.wait(30)
    store.close()
    assert OperationStore(tmp_path).get(op.name).error.reason == Reason.INTERRUPTED.value


def test_failures_and_unknown_names(tmp_path):
    store = OperationStore(tmp_path)

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
