"""The model a collection is bound to, as collections use it: embed raw inputs, compose expression queries.

A collection bound to a word model takes words (looked up; gensim 3CosAdd for expressions); one bound to a text
model takes texts (embedded through the model's batcher; 3CosAdd over unit-normalised text embeddings for
expressions, so `"a day at the beach" - "summer" + "winter"` searches the collection's items); one bound to an image
model (a VAE or an image encoder: any model offering images) takes images, and its expressions are plain weighted sums
of image, vector and direction terms (latent arithmetic: "this digit + 1.5 * thick").

A collection bound to a text model with prompts embeds documents and queries differently: `embed` (items' inputs)
puts the collection's document prompt before each text, `embed_queries` and `compose` (query texts, text terms) its
query prompt, as sentence-transformers' encode_document and encode_query do. The collection's `space` is the document
prompt's, so an item vector made with the query prompt (or none, when documents have one) is refused as an item
(SPACE_MISMATCH); a query vector may be in `space` or in `query_space`. The prompts are fixed when the collection is
created (`collection_prompts`) and checked at every use (`bound`): a model whose prompt text has changed since then
makes other vectors, and is refused like a new model version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from embedsvc.backends.capabilities import Capability, ImageEncoder, WordSpace
from embedsvc.calls import CallControl
from embedsvc.core.expression import Expression
from embedsvc.core.images.codec import ImageInput
from embedsvc.core.images.latents import Latents
from embedsvc.core.registry import ModelRegistry
from embedsvc.core.texts import embedding as texts
from embedsvc.core.texts.batching import TextModel
from embedsvc.core.texts.embedding import Prompt, named_prompt, prompt_space
from embedsvc.core.words import arithmetic
from embedsvc.core.words.arithmetic import FieldOf
from embedsvc.errors import EmbedsvcError, Reason, invalid
from embedsvc.index.types import CollectionConfig
from embedsvc.limits import Limits


@dataclass(frozen=True)
class Binding:
    """A bound model: exactly one of `words`, `text` and `images` is set (`latents` goes with `images`)."""

    name: str
    version: str
    space: str  # of the documents (items): the document prompt's, when the collection has one
    dimension: int
    words: WordSpace | None = None
    text: TextModel | None = None
    images: ImageEncoder | None = None
    latents: Latents | None = None
    # A text model's prompts for this collection: before items' inputs, and before query texts; and the space of the
    # query vectors (`space` when queries and documents are embedded alike).
    document_prompt: Prompt | None = None
    query_prompt: Prompt | None = None
    query_space: str = ""

    @property
    def model_space(self) -> str:
        """The model's own space (vectors made without a prompt)."""
        return self.space.split(";prompt=", 1)[0]

    @property
    def query_spaces(self) -> tuple[str, ...]:
        """The spaces a query vector may be in: the documents', and the query prompt's."""
        return tuple(dict.fromkeys((self.space, self.query_space or self.space)))

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
        """Items' raw inputs -> vectors in `space` (words as stored; texts as the encoder gives them, after the
        document prompt). `field_of(n, None)` names input n in errors."""
        return self._embed(inputs, field_of, limits, control, self.document_prompt)

    def embed_queries(
        self, inputs: Sequence[str], field_of: FieldOf, limits: Limits, control: CallControl | None = None
    ) -> np.ndarray:
        """Query inputs -> query vectors (in `query_space` when the collection has a query prompt, else `space`)."""
        return self._embed(inputs, field_of, limits, control, self.query_prompt)

    def _embed(
        self,
        inputs: Sequence[str],
        field_of: FieldOf,
        limits: Limits,
        control: CallControl | None,
        prompt: Prompt | None,
    ) -> np.ndarray:
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
                self.text, inputs, field_of=lambda n: field_of(n, None), normalize=False, control=control, prompt=prompt
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
        models the weighted sum of each expression's terms, and no inputs. Text terms get the query prompt; vector
        terms may be in the model's space or either prompt's."""
        if self.images is not None and self.latents is not None:
            composed = self.latents.compose(self.images, expressions, field_of, dimension=self.dimension)
            return composed, [set() for _ in expressions]
        if self.text is not None:
            spaces = (self.model_space, *self.query_spaces)
            return texts.compose(
                self.text, expressions, field_of, limits, control, prompt=self.query_prompt, spaces=spaces
            )
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


# sentence-transformers' encode_document takes the first of these a model has, encode_query "query".
DOCUMENT_PROMPTS = ("document", "passage", "corpus")
QUERY_PROMPTS = ("query",)


def collection_prompts(
    model: Binding, document: str | None, query: str | None, field: str = "prompts"
) -> tuple[Prompt | None, Prompt | None]:
    """A new collection's (document, query) prompts: the names asked for ("" for none), or for None the model's by
    sentence-transformers' conventions. INVALID_VALUE naming the choices for a name the model lacks; MODEL_BINDING
    when prompts are asked of a collection not bound to a text model."""
    if model.text is None:
        if document or query:
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                f"prompts apply to collections bound to a text model; '{model.name}' is not one",
                field=field,
            )
        return None, None
    text = model.text
    prompts = text.encoder.prompts

    def pick(asked: str | None, conventional: tuple[str, ...], key: str) -> Prompt | None:
        if asked is None:
            asked = next((name for name in conventional if name in prompts), "")
        return named_prompt(text, asked, f"{field}.{key}") if asked else None

    return pick(document, DOCUMENT_PROMPTS, "document_prompt_name"), pick(query, QUERY_PROMPTS, "query_prompt_name")


def prompted(model: Binding, document: Prompt | None, query: Prompt | None) -> Binding:
    """The binding with a collection's prompts: documents in the document prompt's space, queries in the query
    prompt's."""
    space = prompt_space(model.space, document)
    queries = prompt_space(model.space, query)
    return replace(
        model,
        space=space,
        document_prompt=document,
        query_prompt=query,
        query_space=queries if queries != space else "",
    )


def bound(
    registry: ModelRegistry, config: CollectionConfig, latents: Latents | None = None, field: str = "model"
) -> Binding:
    """A collection's model, with the collection's prompts. MODEL_VERSION_CHANGED when the model is now another
    version, or one of the collection's prompts now has another text (either would make other vectors)."""
    model = binding(registry, config.model, latents)
    if model.version != config.model_version:
        raise EmbedsvcError(
            Reason.MODEL_VERSION_CHANGED,
            f"model '{config.model}' is now {model.version}, but collection '{config.name}' holds vectors of "
            f"{config.model_version}; re-embed its items into a new collection (and switch an alias to it)",
            field=field,
            metadata={"expected": config.model_version, "actual": model.version},
        )
    if not (config.document_prompt_name or config.query_prompt_name):
        return model
    if model.text is None:
        raise invalid(field, f"collection '{config.name}' has prompts, but '{config.model}' embeds no texts")
    now = model.text.encoder.prompts
    for name, text in (
        (config.document_prompt_name, config.document_prompt),
        (config.query_prompt_name, config.query_prompt),
    ):
        if name and now.get(name) != text:
            raise EmbedsvcError(
                Reason.MODEL_VERSION_CHANGED,
                f"model '{config.model}' prompt {name!r} is now {now.get(name)!r}, but collection '{config.name}' was "
                f"embedded with {text!r}; re-embed its items into a new collection (and switch an alias to it)",
                field=field,
                metadata={"prompt": name, "expected": text, "actual": now.get(name, "")},
            )
    document = Prompt(config.document_prompt_name, config.document_prompt) if config.document_prompt_name else None
    query = Prompt(config.query_prompt_name, config.query_prompt) if config.query_prompt_name else None
    return prompted(model, document, query)
