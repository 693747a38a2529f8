import grpc
from google.rpc import error_details_pb2

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.transport.status import DOMAIN, RETRY_AFTER, STATUS_CODES, to_status
from embedsvc.v1 import errors_pb2


def test_every_reason_has_a_code_and_a_proto_value():
    assert set(STATUS_CODES) == set(Reason)
    proto = {n.removeprefix("ERROR_REASON_") for n in errors_pb2.ErrorReason.keys()} - {"UNSPECIFIED"}  # noqa: SIM118
    assert proto == {r.value for r in Reason}


def test_status_details():
    status = to_status(EmbedsvcError(Reason.OUT_OF_VOCABULARY, "gone", field="words[2]", metadata={"words": "x"}))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "OUT_OF_VOCABULARY",
        DOMAIN,
        {"words": "x", "field": "words[2]"},
    )
    assert bad.field_violations[0].field == "words[2]"


def test_the_domain_names_the_service_not_the_version():
    assert DOMAIN == "embedsvc"


def test_retryable_reasons_carry_retry_info_and_others_do_not():
    for reason in Reason:
        status = to_status(EmbedsvcError(reason, "x"))
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        if reason in RETRY_AFTER:
            info = error_details_pb2.RetryInfo()
            assert len(retry) == 1 and retry[0].Unpack(info)
            assert info.retry_delay.ToNanoseconds() == int(RETRY_AFTER[reason] * 1e9) > 0
        else:
            assert retry == [], reason
    assert set(RETRY_AFTER) == {
        Reason.MODEL_NOT_READY,
        Reason.COLLECTION_NOT_READY,
        Reason.OVERLOADED,
        Reason.STORAGE_ERROR,
        Reason.RATE_LIMITED,
        Reason.COLLECTION_SWITCHING,
    }
