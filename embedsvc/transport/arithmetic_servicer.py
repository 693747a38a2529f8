"""ArithmeticService: batched vector expressions and analogy evaluation."""

from __future__ import annotations

import grpc

from embedsvc.backends.capabilities import Capability
from embedsvc.core.collections.service import Collections
from embedsvc.core.provenance import provenance
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.words import arithmetic
from embedsvc.core.words.analogies import GENSIM_RESTRICT_VOCAB, evaluate_analogies, parse_analogies
from embedsvc.errors import limit_exceeded, missing
from embedsvc.limits import Limits
from embedsvc.transport import convert
from embedsvc.v1 import arithmetic_pb2, arithmetic_pb2_grpc


class ArithmeticServicer(arithmetic_pb2_grpc.ArithmeticServiceServicer):
    def __init__(self, registry: ModelRegistry, limits: Limits, collections: Collections | None = None) -> None:
        self._registry = registry
        self._limits = limits
        self._collections = collections

    def Arithmetic(
        self, request: arithmetic_pb2.ArithmeticRequest, context: grpc.ServicerContext
    ) -> arithmetic_pb2.ArithmeticResponse:
        space = self._registry.model(request.model, Capability.WORDS)
        options = arithmetic.check_options(
            arithmetic.Options(
                method=convert.method(request.method),
                top_n=request.top_n or arithmetic.DEFAULT_TOP_N,
                restrict_vocab=request.restrict_vocab,
                keep_inputs=request.keep_inputs,
                return_query_vector=request.return_query_vector,
                return_contributions=request.return_contributions,
            ),
            self._limits,
        )
        arithmetic.check_result_hits(len(request.expressions), options, self._limits)
        expressions = convert.expressions(list(request.expressions), self._limits)
        if self._collections is not None:  # item terms: vectors of items in collections bound to this model
            expressions = self._collections.item_terms(
                expressions, space.space, lambda e, t: f"expressions[{e}].terms[{t}]"
            )
        results = arithmetic.evaluate(space, expressions, options)
        return arithmetic_pb2.ArithmeticResponse(
            results=[convert.expression_result_message(r, space.space) for r in results],
            provenance=convert.provenance_message(provenance(space, options.method.value, options.parameters())),
        )

    def EvaluateAnalogies(
        self, request: arithmetic_pb2.EvaluateAnalogiesRequest, context: grpc.ServicerContext
    ) -> arithmetic_pb2.EvaluateAnalogiesResponse:
        space = self._registry.model(request.model, Capability.WORDS)
        if not request.analogies:
            raise missing("analogies", "the analogy file's content")
        if len(request.analogies) > self._limits.max_analogy_bytes:
            raise limit_exceeded(
                "analogies", "analogy file size in bytes", len(request.analogies), self._limits.max_analogy_bytes
            )
        method = convert.method(request.method)
        restrict_vocab = request.restrict_vocab or GENSIM_RESTRICT_VOCAB
        report = evaluate_analogies(
            space,
            parse_analogies(request.analogies),
            restrict_vocab=restrict_vocab,
            case_sensitive=request.case_sensitive,
            dummy4unknown=request.dummy4unknown,
            method=method,
        )
        parameters = {
            "restrict_vocab": str(restrict_vocab),
            "case_sensitive": str(request.case_sensitive).lower(),
            "dummy4unknown": str(request.dummy4unknown).lower(),
        }
        return convert.analogy_report_message(report, provenance(space, method.value, parameters))
