"""Pure conversions between protobuf messages and domain objects; no I/O, no grpc."""

from __future__ import annotations

import time

import grpc
import numpy as np

from embedsvc import calls
from embedsvc.calls import CallControl
from embedsvc.core.expression import Expression, Term, TermKind, check_weight, parse_expression
from embedsvc.core.provenance import Provenance
from embedsvc.core.registry import ModelInfo, ModelState
from embedsvc.core.words import arithmetic
from embedsvc.core.words.analogies import AnalogyReport, SectionScore
from embedsvc.errors import EmbedsvcError, Reason, check_count, invalid
from embedsvc.limits import Limits
from embedsvc.transport.images_convert import image
from embedsvc.v1 import arithmetic_pb2, common_pb2, models_pb2

_METHODS: dict[int, arithmetic.Method] = {
    arithmetic_pb2.METHOD_UNSPECIFIED: arithmetic.Method.COSADD,
    arithmetic_pb2.METHOD_COSADD: arithmetic.Method.COSADD,
    arithmetic_pb2.METHOD_COSMUL: arithmetic.Method.COSMUL,
}
_STATES = {
    ModelState.LOADING: models_pb2.MODEL_STATE_LOADING,
    ModelState.READY: models_pb2.MODEL_STATE_READY,
    ModelState.FAILED: models_pb2.MODEL_STATE_FAILED,
    ModelState.UNLOADED: models_pb2.MODEL_STATE_UNLOADED,
}


def method(value: int) -> arithmetic.Method:
    try:
        return _METHODS[value]
    except KeyError:
        raise invalid("method", f"unknown method {value}") from None


def vector(message: common_pb2.Vector, field: str) -> np.ndarray:
    # numpy reads the repeated field directly (a list() first took 6 times as long with protobuf's upb runtime).
    values = np.array(message.values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise EmbedsvcError(Reason.NOT_FINITE, "the vector has NaN or infinite components", field=field)
    return values


def vector_message(values: np.ndarray, space: str) -> common_pb2.Vector:
    """A Vector message, parsed from its wire form: the components go in as one packed float32 block instead of one
    Python float each (a third of the time for 384 dimensions). Field numbers are the contract's (common.proto)."""
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    tagged = space.encode()
    wire = (b"\x0a" + _varint(len(data)) + data if data else b"") + (
        b"\x12" + _varint(len(tagged)) + tagged if tagged else b""
    )
    return common_pb2.Vector.FromString(wire)


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer (a length)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def packed_floats(data: bytes, field: str) -> np.ndarray:
    """The flat float32 values of a `packed_*` field (little-endian); whoever knows the dimension cuts the rows."""
    if len(data) % 4:
        raise EmbedsvcError(
            Reason.DIMENSION_MISMATCH,
            f"{field} has {len(data)} bytes, not a whole number of float32 values",
            field=field,
        )
    return np.frombuffer(data, dtype="<f4").astype(np.float32, copy=False)


def packed_vectors_message(rows: np.ndarray, space: str) -> common_pb2.PackedVectors:
    """An (n, d) matrix as one PackedVectors message: float32 little-endian, row-major."""
    rows = np.ascontiguousarray(rows, dtype="<f4")
    return common_pb2.PackedVectors(rows=rows.shape[0], dimension=rows.shape[1], data=rows.tobytes(), space=space)


def provenance_message(p: Provenance) -> common_pb2.Provenance:
    return common_pb2.Provenance(model=p.model, model_version=p.model_version, method=p.method, parameters=p.parameters)


def model_kind(kind: str) -> models_pb2.ModelKind:
    """A kind's proto enum value, by name: "text-encoder" is MODEL_KIND_TEXT_ENCODER."""
    return models_pb2.ModelKind.Value("MODEL_KIND_" + kind.upper().replace("-", "_"))


def latent_operation(name: str) -> models_pb2.LatentOperation:
    """An operation's proto enum value, by name: "anomaly-score" is LATENT_OPERATION_ANOMALY_SCORE."""
    return models_pb2.LatentOperation.Value("LATENT_OPERATION_" + name.upper().replace("-", "_"))


def model_info_message(info: ModelInfo) -> models_pb2.ModelInfo:
    return models_pb2.ModelInfo(
        name=info.name,
        kind=model_kind(info.kind),
        dimension=info.dimension,
        vocabulary_size=info.vocabulary_size,
        device=info.device,
        state=_STATES[info.state],
        version=info.version,
        format=info.format,
        source=info.source,
        has_subwords=info.has_subwords,
        description=info.description,
        space=info.space,
        error=info.error,
        embeds_texts=info.embeds_texts,
        reranks=info.reranks,
        prompts=dict(info.prompts),
        default_prompt_name=info.default_prompt_name,
        max_seq_length=info.max_seq_length,
        image_size=info.image_size,
        image_channels=info.image_channels,
        memory_bytes=info.memory_bytes,
        requires=list(info.requires),
        engine=info.engine,
        precision=info.precision,
        matryoshka_dimensions=list(info.matryoshka_dims),
        any_dimensions=info.any_dimensions,
        quality=(
            models_pb2.Quality(
                mean_cosine=info.quality.mean_cosine,
                min_cosine=info.quality.min_cosine,
                top10_agreement=info.quality.top10_agreement,
                sentences=info.quality.sentences,
            )
            if info.quality is not None
            else None
        ),
        latent_operations=[latent_operation(o) for o in info.latent_operations],
    )


def _term(message: arithmetic_pb2.Term, field: str) -> Term:
    weight = check_weight(message.weight if message.HasField("weight") else 1.0, field + ".weight")
    which = message.WhichOneof("value")
    if which == "word":
        if not message.word:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the word is empty", field=field + ".word")
        return Term(TermKind.WORD, weight, message.word)
    if which == "vector":
        values = vector(message.vector, field + ".vector.values")
        return Term(TermKind.VECTOR, weight, vector=values, space=message.vector.space)
    if which == "text":  # checked (empty, too long) by the text model that evaluates it
        return Term(TermKind.TEXT, weight, message.text)
    if which == "image":
        return Term(TermKind.IMAGE, weight, image=image(message.image, field + ".image"))
    if which == "direction":
        if not message.direction:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the direction name is empty", field=field + ".direction")
        return Term(TermKind.DIRECTION, weight, message.direction)
    if which == "item":
        if not message.item.collection:
            raise EmbedsvcError(
                Reason.MISSING_FIELD, "the item's collection is required", field=field + ".item.collection"
            )
        if not message.item.id:
            raise EmbedsvcError(Reason.MISSING_FIELD, "the item's id is required", field=field + ".item.id")
        return Term(TermKind.ITEM, weight, message.item.id, collection=message.item.collection)
    raise EmbedsvcError(Reason.MISSING_FIELD, "the term has no value", field=field)


def expressions(
    messages: list[arithmetic_pb2.Expression], limits: Limits, field: str | None = None
) -> list[Expression]:
    """Expressions of a request; `field` names a single expression embedded elsewhere (a search query)."""
    check_count("expressions", "expressions", len(messages), limits.max_expressions)
    result: list[Expression] = []
    single = field
    for e, message in enumerate(messages):
        field = single or f"expressions[{e}]"
        if message.text and message.terms:
            raise invalid(field, "set either text or terms, not both")
        if not message.text and not message.terms:
            raise EmbedsvcError(Reason.INVALID_EXPRESSION, "the expression is empty", field=field)
        if message.text:
            result.append(
                parse_expression(
                    message.text,
                    field_name=field + ".text",
                    max_chars=limits.max_expression_chars,
                    max_terms=limits.max_terms,
                )
            )
            continue
        check_count(field + ".terms", "terms", len(message.terms), limits.max_terms)
        result.append(Expression(tuple(_term(t, f"{field}.terms[{i}]") for i, t in enumerate(message.terms))))
    return result


def expression_result_message(result: arithmetic.ExpressionResult, space: str) -> arithmetic_pb2.ExpressionResult:
    message = arithmetic_pb2.ExpressionResult(
        terms=[
            arithmetic_pb2.ResolvedTerm(weight=t.weight, word=t.word, kind=t.kind.value, in_vocabulary=t.in_vocabulary)
            for t in result.terms
        ],
        hits=[
            arithmetic_pb2.ArithmeticHit(
                word=h.word, score=h.score, is_input=h.is_input, contributions=list(h.contributions)
            )
            for h in result.hits
        ],
    )
    if result.query_vector is not None:
        message.query_vector.CopyFrom(vector_message(result.query_vector, space))
    return message


def _section(score: SectionScore) -> arithmetic_pb2.SectionScore:
    return arithmetic_pb2.SectionScore(
        name=score.name, correct=score.correct, incorrect=score.incorrect, accuracy=score.accuracy
    )


def analogy_report_message(report: AnalogyReport, provenance: Provenance) -> arithmetic_pb2.EvaluateAnalogiesResponse:
    return arithmetic_pb2.EvaluateAnalogiesResponse(
        sections=[_section(s) for s in report.sections],
        total=_section(report.total),
        questions=report.questions,
        oov_questions=report.oov_questions,
        skipped_lines=report.skipped_lines,
        provenance=provenance_message(provenance),
    )


def call_control(context: grpc.ServicerContext) -> CallControl:
    """The call's control (its deadline, cancelled when the call ends early): the one the gateway bound, or, for a
    servicer called without the gateway, a new one."""
    bound = calls.current()
    if bound is not None:
        return bound
    remaining = context.time_remaining()
    control = CallControl(deadline=time.monotonic() + remaining if remaining is not None else None)
    context.add_callback(control.cancel)  # also runs when the call completes normally: harmless then
    return control
