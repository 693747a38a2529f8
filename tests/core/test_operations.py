"""Operations: run in the background, report progress, cancel cleanly, and are never lost across a restart."""

import threading
import time

import pytest

from embedsvc.core.operations import Operation, OperationStore
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.state import LocalRecords


def opened(folder, **options):
    """A store over the records in `folder`, settled as at a server's start."""
    store = OperationStore(LocalRecords(folder), "replica-a", **options)
    store.recover()
    return store


def wait(store, name, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = store.get(name)
        if op.done:
            return op
        time.sleep(0.01)
    raise AssertionError(f"{name} still running")


def test_progress_result_and_deduplication(tmp_path):
    store = opened(tmp_path)
    release = threading.Event()

    def work(progress):
        progress.stage("indexing", 10)
        progress.units(4)
        release.wait(5)
        return {"collection": "c"}

    op = store.start("rebuild", "c", work)
    assert store.start("rebuild", "c", work).id == op.id  # one rebuild per collection at a time
    time.sleep(0.2)
    running = store.get(op.name)
    assert (running.stage, running.done_units, running.total_units, running.done) == ("indexing", 4, 10, False)
    release.set()
    done = wait(store, op.name)
    assert done.done and done.error is None and done.result == {"collection": "c"} and done.end_time is not None
    assert store.list("c")[0].id == op.id and store.list("other") == []
    store.close()


def test_cancel_stops_at_the_next_check(tmp_path):
    store = opened(tmp_path)

    def work(progress):
        while True:
            progress.check()
            time.sleep(0.01)

    op = store.start("rebuild", "c", work)
    store.cancel(op.name)
    done = wait(store, op.name)
    assert done.cancel_requested and done.error.reason == "CANCELLED"
    store.close()


def test_a_running_operation_is_reported_interrupted_after_a_restart(tmp_path):
    store = opened(tmp_path)
    died = threading.Event()
    op = store.start("rebuild", "c", lambda progress: died.wait(30) and {})
    time.sleep(0.1)
    reopened = opened(tmp_path)  # as if the process had died: the first store never closed
    found = reopened.get(op.name)
    assert found.done and found.error.reason == Reason.INTERRUPTED.value and found.end_time is not None
    assert Operation.from_json((tmp_path / "operations" / f"{op.id}.json").read_bytes()).done  # and recorded so
    reopened.close()
    died.set()
    store._pool.shutdown(wait=True)


def test_a_clean_stop_records_running_operations_as_interrupted(tmp_path):
    store = opened(tmp_path)

    def work(progress):
        while True:
            progress.check()
            time.sleep(0.01)

    op = store.start("rebuild", "c", work)
    time.sleep(0.05)
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
