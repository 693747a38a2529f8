"""What tests share besides fixtures: waiting for a condition with a deadline, a clock a test moves by hand, and the one
way to assert that a call was refused (its gRPC code, reason and field).

Tests never synchronise by sleeping: they wait on an event, poll a condition with `wait_for`, or control time with a
`FakeClock` where the code under test reads one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from embedsvc.client import EmbedsvcClientError

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "the condition", every: float = 0.01) -> T:
    """Poll `condition` until it returns something true and return that; fail the test, saying `what` it waited for,
    once `timeout` seconds pass. The deadline is a bound on a hang, never a claim about speed: choose it generous."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(every)


class FakeClock:
    """A monotonic clock that moves only when the test says: inject it where code reads `time.monotonic`."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_refused(
    call: Callable[[], object], code: grpc.StatusCode, reason: str, field: str | None = None
) -> EmbedsvcClientError:
    """Run `call` (a client call) and assert that it fails with this gRPC code and machine-readable reason, and with
    this offending field when one is given; return the error for further checks (metadata, message)."""
    with pytest.raises(EmbedsvcClientError) as info:
        call()
    error = info.value
    want: tuple[object, ...] = (code, reason) if field is None else (code, reason, field)
    got: tuple[object, ...] = (error.code, error.reason) if field is None else (error.code, error.reason, error.field)
    assert got == want, f"refused with {got}, not {want}: {error.message}"
    return error


def reason_of(error: grpc.RpcError) -> str | None:
    """The machine-readable reason (google.rpc.ErrorInfo) of a raw gRPC error, for tests that call a stub directly."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            info = error_details_pb2.ErrorInfo()
            assert status_pb2.Status.FromString(value).details[0].Unpack(info)
            return str(info.reason)
    return None
