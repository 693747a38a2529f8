"""TextService: texts in, one vector each (in the asked shape), and (query, text) pairs in, relevance scores out
(Rerank), through the models' dynamic batchers; and tokens."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from embedsvc.backends.capabilities import Capability
from embedsvc.calls import CallControl
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.texts import embedding as texts
from embedsvc.core.texts import reranking
from embedsvc.core.texts.embedding import LongTexts
from embedsvc.core.texts.shapes import Calibrations, Dtype
from embedsvc.errors import EmbedsvcError, Reason, invalid, missing
from embedsvc.limits import Limits
from embedsvc.transport import convert
from embedsvc.transport.convert import call_control
from embedsvc.transport.status import to_status
from embedsvc.v1 import text_pb2, text_pb2_grpc

# Failures of the call rather than of one batch: they end the stream.
_CALL_ENDED = frozenset({Reason.CANCELLED, Reason.DEADLINE_EXCEEDED})

DTYPES = {
    text_pb2.EMBEDDING_DTYPE_UNSPECIFIED: Dtype.FLOAT32,
    text_pb2.EMBEDDING_DTYPE_FLOAT32: Dtype.FLOAT32,
    text_pb2.EMBEDDING_DTYPE_INT8: Dtype.INT8,
    text_pb2.EMBEDDING_DTYPE_UINT8: Dtype.UINT8,
    text_pb2.EMBEDDING_DTYPE_BINARY: Dtype.BINARY,
    text_pb2.EMBEDDING_DTYPE_UBINARY: Dtype.UBINARY,
}
DTYPE_VALUES = {d: v for v, d in DTYPES.items() if v != text_pb2.EMBEDDING_DTYPE_UNSPECIFIED}


def long_texts(request: text_pb2.EmbedTextsRequest) -> LongTexts:
    mode, left = request.long_texts, request.truncation_direction == text_pb2.TRUNCATION_DIRECTION_LEFT
    if mode == text_pb2.LONG_TEXT_MODE_CHUNK:
        return LongTexts.CHUNK
    if mode == text_pb2.LONG_TEXT_MODE_REFUSE:
        return LongTexts.REFUSE
    if mode in (text_pb2.LONG_TEXT_MODE_UNSPECIFIED, text_pb2.LONG_TEXT_MODE_TRUNCATE):
        return LongTexts.TRUNCATE_LEFT if left else LongTexts.TRUNCATE
    raise invalid("long_texts", f"unknown long_texts value {mode}")


def dtype(request: text_pb2.EmbedTextsRequest) -> Dtype:
    found = DTYPES.get(request.dtype)
    if found is None:
        raise invalid("dtype", f"unknown dtype value {request.dtype}: float32, int8, uint8, binary or ubinary")
    return found


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, registry: ModelRegistry, limits: Limits) -> None:
        self._registry = registry
        self._limits = limits
        self._calibrations = Calibrations()

    def _embed(self, request: text_pb2.EmbedTextsRequest, control: CallControl) -> text_pb2.EmbedTextsResponse:
        if request.truncation_direction not in (0, 1, 2):
            raise invalid("truncation_direction", f"unknown truncation_direction value {request.truncation_direction}")
        embedded = texts.embed_texts(
            self._registry.model(request.model, Capability.TEXTS),
            list(request.texts),
            self._limits,
            normalize=request.normalize,
            long_texts=long_texts(request),
            dimensions=request.dimensions,
            dtype=dtype(request),
            calibrations=self._calibrations,
            control=control,
            prompt_name=request.prompt_name,
        )
        response = text_pb2.EmbedTextsResponse(
            truncated=embedded.truncated,
            token_counts=embedded.token_counts,
            max_seq_length=embedded.max_seq_length,
            provenance=convert.provenance_message(embedded.provenance),
            warnings=embedded.warnings,
        )
        vectors, space = embedded.vectors, embedded.space
        if not request.packed_results:
            response.vectors.extend([convert.vector_message(v, space) for v in vectors])
        elif embedded.dtype is Dtype.FLOAT32:
            response.packed_vectors.CopyFrom(convert.packed_vectors_message(vectors, space))
        else:
            response.quantized_vectors.CopyFrom(
                text_pb2.QuantizedVectors(
                    rows=vectors.shape[0],
                    dimension=embedded.dimension,
                    dtype=DTYPE_VALUES[embedded.dtype],
                    data=vectors.tobytes(),
                    space=space,
                )
            )
        return response

    def EmbedTexts(
        self, request: text_pb2.EmbedTextsRequest, context: grpc.ServicerContext
    ) -> text_pb2.EmbedTextsResponse:
        return self._embed(request, call_control(context))

    def Rerank(self, request: text_pb2.RerankRequest, context: grpc.ServicerContext) -> text_pb2.RerankResponse:
        texts_in = list(request.texts)
        ranked = reranking.rerank(
            self._registry.model(request.model, Capability.PAIRS),
            request.query,
            texts_in,
            self._limits,
            top_n=request.top_n,
            raw_scores=request.raw_scores,
            truncate=request.truncate,
            control=call_control(context),
        )
        response = text_pb2.RerankResponse(
            truncated=ranked.truncated,
            token_counts=ranked.token_counts,
            max_seq_length=ranked.max_seq_length,
            provenance=convert.provenance_message(ranked.provenance),
        )
        for result in ranked.results:
            response.results.add(
                index=result.index, score=result.score, text=texts_in[result.index] if request.return_text else ""
            )
        return response

    def EmbedTextsStream(
        self, request_iterator: Iterator[text_pb2.EmbedTextsStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[text_pb2.EmbedTextsStreamResponse]:
        """Each batch answered in order; a batch's own failure is answered as its status and the stream goes on,
        while a failure of the call itself (cancelled, deadline passed) ends it."""
        control = call_control(context)
        for position, message in enumerate(request_iterator):
            sequence = message.sequence or position
            try:
                if not message.HasField("batch"):
                    raise missing("batch", "a batch of texts")
                batch = self._embed(message.batch, control)
            except EmbedsvcError as exc:
                if exc.reason in _CALL_ENDED:
                    raise
                yield text_pb2.EmbedTextsStreamResponse(sequence=sequence, error=to_status(exc))
                continue
            yield text_pb2.EmbedTextsStreamResponse(sequence=sequence, batch=batch)

    def TokenizeTexts(
        self, request: text_pb2.TokenizeTextsRequest, context: grpc.ServicerContext
    ) -> text_pb2.TokenizeTextsResponse:
        special = request.add_special_tokens if request.HasField("add_special_tokens") else True
        tokenized = texts.tokenize_texts(
            self._registry.model(request.model, Capability.TEXTS), list(request.texts), self._limits, special=special
        )
        return text_pb2.TokenizeTextsResponse(
            texts=[
                text_pb2.TokenizedText(
                    tokens=[
                        text_pb2.Token(id=t.id, token=t.token, special=t.special, start=t.start, end=t.end)
                        for t in tokens
                    ]
                )
                for tokens in tokenized.texts
            ],
            max_seq_length=tokenized.max_seq_length,
            provenance=convert.provenance_message(tokenized.provenance),
        )
