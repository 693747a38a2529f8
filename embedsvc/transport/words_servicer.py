"""WordService: embed words, nearest words, similarity, the odd one out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from embedsvc.backends.capabilities import Capability
from embedsvc.core.provenance import provenance
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.words import arithmetic
from embedsvc.core.words import lookups as words
from embedsvc.limits import Limits
from embedsvc.transport import convert
from embedsvc.v1 import words_pb2, words_pb2_grpc


class WordServicer(words_pb2_grpc.WordServiceServicer):
    def __init__(self, registry: ModelRegistry, limits: Limits) -> None:
        self._registry = registry
        self._limits = limits

    def EmbedWords(
        self, request: words_pb2.EmbedWordsRequest, context: grpc.ServicerContext
    ) -> words_pb2.EmbedWordsResponse:
        space = self._registry.model(request.model, Capability.WORDS)
        embedded = words.embed(space, list(request.words), self._limits, normalize=request.normalize)
        return words_pb2.EmbedWordsResponse(
            vectors=[convert.vector_message(v, space.space) for v in embedded.vectors],
            in_vocabulary=embedded.in_vocabulary,
            provenance=convert.provenance_message(
                provenance(space, "lookup", {"normalize": str(request.normalize).lower()})
            ),
        )

    def NearestWords(
        self, request: words_pb2.NearestWordsRequest, context: grpc.ServicerContext
    ) -> words_pb2.NearestWordsResponse:
        space = self._registry.model(request.model, Capability.WORDS)
        top_n = request.top_n or arithmetic.DEFAULT_TOP_N
        lists = words.nearest(
            space, list(request.words), self._limits, top_n=top_n, restrict_vocab=request.restrict_vocab
        )
        return words_pb2.NearestWordsResponse(
            results=[
                words_pb2.NeighbourList(word=w, neighbours=[words_pb2.ScoredWord(word=n, score=s) for n, s in hits])
                for w, hits in zip(request.words, lists, strict=True)
            ],
            provenance=convert.provenance_message(
                provenance(space, "cosine", {"top_n": str(top_n), "restrict_vocab": str(request.restrict_vocab)})
            ),
        )

    def Similarity(
        self, request: words_pb2.SimilarityRequest, context: grpc.ServicerContext
    ) -> words_pb2.SimilarityResponse:
        space = self._registry.model(request.model, Capability.WORDS)
        sims = words.similarity(space, [(p.first, p.second) for p in request.pairs], self._limits)
        return words_pb2.SimilarityResponse(
            similarities=sims, provenance=convert.provenance_message(provenance(space, "cosine"))
        )

    def DoesntMatch(
        self, request: words_pb2.DoesntMatchRequest, context: grpc.ServicerContext
    ) -> words_pb2.DoesntMatchResponse:
        space = self._registry.model(request.model, Capability.WORDS)
        ranking = words.doesnt_match(space, list(request.words), self._limits)
        return words_pb2.DoesntMatchResponse(
            odd_one_out=ranking.odd_one_out,
            ranking=[words_pb2.ScoredWord(word=w, score=s) for w, s in ranking.ranking],
            provenance=convert.provenance_message(provenance(space, "cosine to centroid")),
        )

    def ExportWords(
        self, request: words_pb2.ExportWordsRequest, context: grpc.ServicerContext
    ) -> Iterator[words_pb2.ExportWordsResponse]:
        space = self._registry.model(request.model, Capability.WORDS)
        chunks = words.export(
            space,
            self._limits,
            start=request.start,
            limit=request.limit,
            batch_size=request.batch_size,
            include_vectors=request.include_vectors,
            normalize=request.normalize,
        )
        for chunk in chunks:
            yield words_pb2.ExportWordsResponse(
                start=chunk.start,
                words=chunk.words,
                vectors=b"" if chunk.vectors is None else chunk.vectors.astype("<f4", copy=False).tobytes(),
                dimension=space.dimension,
                vocabulary_size=space.size,
                space=space.space,
            )
