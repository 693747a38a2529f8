"""The model a collection is bound to, as collections use it: embed raw inputs, compose expression queries.

A collection bound to a word model takes words (looked up; gensim 3CosAdd for expressions); one bound to a text
model takes texts (embedded through the model's batcher; 3CosAdd over unit-normalised text embeddings for
expressions, so `"a day at the beach" - "summer" + "winter"` searches the collection's items); one bound to an image
model (a VAE or an image encoder: any model offering images) takes images, and its expressions are plain weighted sums
of image, vector and direction terms (latent arithmetic: "this digit + 1.5 * thick").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedsvc.backends.capabilities import Capability, ImageEncoder, WordSpace
from embedsvc.calls import CallControl
from embedsvc.core.expression import Expression
from embedsvc.core.images.codec import ImageInput
from embedsvc.core.images.latents import Latents
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.texts import embedding as texts
from embedsvc.core.texts.batching import TextModel
from embedsvc.core.words import arithmetic
from embedsvc.core.words.arithmetic import FieldOf
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.limits import Limits


@dataclass(frozen=True)
class Binding:
    """A bound model: exactly one of `words`, `text` and `images` is set (`latents` goes with `images`)."""

    name: str
    version: str
    space: str
    dimension: int
    words: WordSpace | None = None
    text: TextModel | None = None
    images: ImageEncoder | None = None
    latents: Latents | None = None

    def embed_images(self, images: Sequence[ImageInput], field_of: Callable[[int], str]) -> np.ndarray:
        """Images -> vectors; MODEL_BINDING when the bound model is not an image model."""
        if self.images is None or self.latents is None:
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                f"the collection is bound to '{self.name}', which does not embed images",
                field=field_of(0),
            )
        rows = [self.latents.images(self.images, [image], field_of(n)) for n, image in enumerate(images)]
        return self.images.embed(np.concatenate(rows))

    def embed(
        self, inputs: Sequence[str], field_of: FieldOf, limits: Limits, control: CallControl | None = None
    ) -> np.ndarray:
        """Raw inputs -> vectors (words as stored; texts as the encoder gives them). `field_of(n, None)` names
        input n in errors."""
        if self.images is not None:
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                f"the collection is bound to image model '{self.name}': send images, not text inputs",
                field=field_of(0, None),
            )
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
        """The unit 3CosAdd query vector of each expression, and the inputs (words or texts) each one uses; for image
        models the weighted sum of each expression's terms, and no inputs."""
        if self.images is not None and self.latents is not None:
            composed = self.latents.compose(self.images, expressions, field_of, dimension=self.dimension)
            return composed, [set() for _ in expressions]
        if self.text is not None:
            return texts.compose(self.text, expressions, field_of, limits, control)
        assert self.words is not None
        return arithmetic.compose(self.words, expressions, field_of)


def binding(registry: ModelRegistry, name: str, latents: Latents | None = None) -> Binding:
    """The ready model of that name as a binding (MODEL_NOT_FOUND / MODEL_NOT_READY as the registry says): an image
    model embeds images, a word model words (even one that also embeds texts), any other model texts."""
    offers = registry.offers(name)
    if Capability.IMAGES in offers:
        image_model = registry.model(name, Capability.IMAGES)
        return Binding(
            image_model.name,
            image_model.version,
            image_model.space,
            image_model.dimension,
            images=image_model,
            latents=latents,
        )
    if Capability.WORDS in offers:
        space = registry.model(name, Capability.WORDS)
        return Binding(space.name, space.version, space.space, space.dimension, words=space)
    model = registry.model(name, Capability.TEXTS)
    e = model.encoder
    return Binding(e.name, e.version, e.space, e.dimension, text=model)
