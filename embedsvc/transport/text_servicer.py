"""TextService: texts in, one vector each, through the model's dynamic batcher."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from embedsvc.backends.capabilities import Capability
from embedsvc.calls import CallControl
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.texts import embedding as texts
from embedsvc.errors import EmbedsvcError, Reason, invalid, missing
from embedsvc.limits import Limits
from embedsvc.transport import convert
from embedsvc.transport.convert import call_control
from embedsvc.transport.status import to_status
from embedsvc.v1 import text_pb2, text_pb2_grpc

# Failures of the call rather than of one batch: they end the stream.
_CALL_ENDED = frozenset({Reason.CANCELLED, Reason.DEADLINE_EXCEEDED})


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, registry: ModelRegistry, limits: Limits) -> None:
        self._registry = registry
        self._limits = limits

    def _embed(self, request: text_pb2.EmbedTextsRequest, control: CallControl) -> text_pb2.EmbedTextsResponse:
        if request.prompt_name:  # accepted on the wire, not acted on yet: refused rather than ignored
            raise invalid("prompt_name", "prompts are not served by this server version yet")
        embedded = texts.embed_texts(
            self._registry.model(request.model, Capability.TEXTS),
            list(request.texts),
            self._limits,
            normalize=request.normalize,
            chunk=request.long_texts == text_pb2.LONG_TEXT_MODE_CHUNK,
            control=control,
        )
        return text_pb2.EmbedTextsResponse(
            vectors=[convert.vector_message(v, embedded.space) for v in embedded.vectors],
            truncated=embedded.truncated,
            token_counts=embedded.token_counts,
            max_seq_length=embedded.max_seq_length,
            provenance=convert.provenance_message(embedded.provenance),
        )

    def EmbedTexts(
        self, request: text_pb2.EmbedTextsRequest, context: grpc.ServicerContext
    ) -> text_pb2.EmbedTextsResponse:
        return self._embed(request, call_control(context))

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
