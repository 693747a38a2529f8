"""The model a collection is bound to, as collections use it: embed raw inputs, compose expression queries.

A collection bound to a word model takes words (looked up; gensim 3CosAdd for expressions); one bound to a text
model takes texts (embedded through the model's batcher; 3CosAdd over unit-normalised text embeddings for
expressions, so `"a day at the beach" - "summer" + "winter"` searches the collection's items).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedsvc.backends.word_vectors import WordVectors
from embedsvc.core import arithmetic, texts
from embedsvc.core.arithmetic import FieldOf
from embedsvc.core.batching import CallControl
from embedsvc.core.expression import Expression
from embedsvc.core.registry import ModelRegistry, TextModel
from embedsvc.settings import Limits, ModelKind


@dataclass(frozen=True)
class Binding:
    """A bound model: exactly one of `words` and `text` is set."""

    name: str
    version: str
    space: str
    dimension: int
    words: WordVectors | None = None
    text: TextModel | None = None

    def embed(
        self, inputs: Sequence[str], field_of: FieldOf, limits: Limits, control: CallControl | None = None
    ) -> np.ndarray:
        """Raw inputs -> vectors (words as stored; texts as the encoder gives them). `field_of(n, None)` names
        input n in errors."""
        if self.text is not None:
            for n, text in enumerate(inputs):
                texts.check_text(text, field_of(n, None), limits)
            vectors, _, _ = texts.encode(
                self.text, inputs, field_of=lambda n: field_of(n, None), normalize=False, control=control
            )
            return vectors
        assert self.words is not None
        indices = self.words.indices(list(inputs), field_of(0, None))
        return np.stack([self.words.vector(w, i, norm=False) for w, i in zip(inputs, indices, strict=True)])

    def compose(
        self,
        expressions: Sequence[Expression],
        field_of: FieldOf,
        limits: Limits,
        control: CallControl | None = None,
    ) -> tuple[np.ndarray, list[set[str]]]:
        """The unit 3CosAdd query vector of each expression, and the inputs (words or texts) each one uses."""
        if self.text is not None:
            return texts.compose(self.text, expressions, field_of, limits, control)
        assert self.words is not None
        return arithmetic.compose(self.words, expressions, field_of)


def binding(registry: ModelRegistry, name: str) -> Binding:
    """The ready model of that name as a binding (MODEL_NOT_FOUND / MODEL_NOT_READY as the registry says)."""
    if registry.info(name).kind is ModelKind.TEXT_ENCODER:
        model = registry.text_model(name)
        e = model.encoder
        return Binding(e.name, e.version, e.space, e.dimension, text=model)
    space = registry.word_model(name)
    return Binding(space.name, space.version, space.space, space.dimension, words=space)
