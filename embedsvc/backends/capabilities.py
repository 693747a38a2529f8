"""What a hosted model can be asked for: one `Capability` value and one `typing.Protocol` per capability.

A loaded model is a set of parts (`Loaded.parts`), each offered under one or more capabilities; the registry hands a
part out by capability (`ModelRegistry.model(name, Capability.X)`), so the rest of the server depends on these
protocols and never on a backend class. One object may be offered under several capabilities (the VAE's model is its
image encoder, latent decoder, latent encoder, anomaly scorer and inpainter): the registry warms it up and counts its
memory once. The idea is sentence-transformers' `Module`: a small interface per job, composed per model.

Every part has the identity an answer's provenance and space tags need (`name`, `version`, `space`), `warm_up()` (run
once after loading, so the first caller does not pay for thread pools, allocators and page faults) and
`memory_bytes()` (what ListModels reports).

## The capabilities

- WORDS (`WordSpace`): a vocabulary of word vectors with gensim KeyedVectors semantics: lookups, nearest words,
  3CosAdd/3CosMul arithmetic and analogies (core/words runs those over `unit`).
- TEXTS (`TextEncoder`): texts in, one vector each; counts tokens and splits long texts so callers can report
  truncation and chunk; gives a text's tokens with their offsets (TokenizeTexts), cuts a long text so only its end is
  read (left truncation) and says which shorter (Matryoshka) vectors it was trained to give. Its calls are queued:
  the registry hands it out with its dynamic batcher (`core.texts.batching.TextModel`), never bare, so the model runs
  on one worker thread and not on gRPC threads.
- PAIRS (`CrossEncoder`): scores (query, document) pairs for reranking (the cross-encoder kind: a sentence-transformers
  CrossEncoder). Its calls are queued too: the registry hands it out with its batcher (`core.texts.batching.PairModel`,
  itself a `CrossEncoder` whose `score` goes through the batcher under the current call's deadline).
- IMAGES (`ImageEncoder`): images in, one feature vector each (similarity search, image collections, maps).
- LATENT_DECODER (`LatentDecoder`): a generative model's decoder: latents in, images out. `has_prior` says whether
  latents may be drawn from its prior N(0, I) (Sample): a VAE's and a GAN's have one, an autoencoder's does not.
- LATENT_ENCODER (`LatentEncoder`): images into the latent space of the same model's decoder: a latent mean and, where
  the model has a posterior (a VAE), its log-variance. It extends `LatentDecoder` and `ImageEncoder`: everything that
  encodes into a latent space also decodes from it and embeds images as their latents (Reconstruct, Interpolate and
  Traverse from images, directions from example images, image terms of expressions all take one part, so a reload
  between two look-ups can never mix two versions of a model).
- ANOMALY_SCORES (`AnomalyScorer`): how unusual each image is under the model, as a data term and a latent term whose
  sum is the score. A VAE: the negative ELBO (reconstruction NLL + KL to the prior, in nats), a bound on -log p(x).
- INPAINTING (`LatentInpainter`): completes missing pixels by optimising a latent against the known ones.

## How the latent models fit (VAE today; a GAN and a plain autoencoder next)

Each latent operation lives in exactly one place, chosen by the math it needs:

| Operation                                       | Needs             | VAE      | GAN               | Autoencoder  |
|-------------------------------------------------|-------------------|----------|-------------------|--------------|
| Decode; Interpolate, Traverse from latents;     | LATENT_DECODER    | decoder  | generator         | decoder      |
|   directions from latents; map thumbnails       |                   |          |                   |              |
| Sample                                          | + `has_prior`     | N(0, I)  | N(0, I)           | refused      |
| Encode, Reconstruct; image start/end/examples;  | LATENT_ENCODER    | posterior| inversion         | encoder (no  |
|   image terms of DecodeLatents                  |                   |          | (optimisation)    | log-variance)|
| AnomalyScore                                    | ANOMALY_SCORES    | -ELBO    | residual + prior  | refused      |
| Inpaint                                         | INPAINTING        | MAP z    | masked inversion  | refused      |

- A GAN is a decoder with a prior whose encoder is an optimisation: its kind offers LATENT_ENCODER through a part
  whose `encode` inverts the generator (restarts, Adam on a pixel loss plus a prior term, a step budget, checking
  `embedsvc.calls.check()` between steps so deadlines and cancellation hold) and returns no log-variance. Inpainting is
  the same inversion restricted to the known pixels, and its anomaly score the inversion's residual (data term) plus
  the prior term -log p(z) (latent term), so it offers INPAINTING and ANOMALY_SCORES with its own `*_method` names.
- An autoencoder is an encoder and a decoder with no prior and no likelihood: `has_prior` is False (core refuses
  Sample) and it does not offer ANOMALY_SCORES or INPAINTING. ANOMALY_SCORES, INPAINTING and LATENT_ENCODER are
  declared `part_of` LATENT_DECODER below, so asking a latent model for one it lacks is OPERATION_NOT_SUPPORTED
  (FAILED_PRECONDITION), while asking a word model for one is MODEL_KIND_MISMATCH (INVALID_ARGUMENT).
- Provenance names come from the parts (`decode_method`, `encode_method`, `reconstruct_method`, `score_method`,
  `inpaint_method`): core never writes "vae-..." itself, so a new latent kind touches its backend module, the kinds
  table, the `ModelKind` proto enum and its tests, and nothing in core or transport.

## Adding a capability

A value in `Capability`, its protocol here, its entries in `DESCRIBED` and `PROTOCOLS` (a test fails until both
have one), one `@overload` of `ModelRegistry.model` in core/registry.py, and the core module that uses it.
docs/architecture.md lists every file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np


class Capability(StrEnum):
    """What a hosted model can be asked for; a model may offer several (minilm-static: words and texts)."""

    WORDS = "words"
    TEXTS = "texts"
    PAIRS = "pairs"
    IMAGES = "images"
    LATENT_DECODER = "latent-decoder"
    LATENT_ENCODER = "latent-encoder"
    ANOMALY_SCORES = "anomaly-scores"
    INPAINTING = "inpainting"


@dataclass(frozen=True)
class ImageShape:
    """What an image model reads: channels (1 grey, 3 RGB) and a square side in pixels."""

    channels: int
    size: int


# ---- the protocols ---------------------------------------------------------------------------------------------------
# Members are read-only properties, so that a part may hold them as plain attributes or compute them.


@runtime_checkable
class Part(Protocol):
    """What every part has: its identity (provenance names the model and version; vectors carry the space), a warm-up
    and its memory."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def space(self) -> str:
        """The tag of the vectors it makes: "model:<name>@<version>"."""
        ...

    def warm_up(self) -> None:
        """Run once after loading, before the model is READY: one small call of each kind the part answers."""
        ...

    def memory_bytes(self) -> int:
        """Bytes of the weights and tables the part holds itself (not those of a model it builds on)."""
        ...


@runtime_checkable
class WordSpace(Part, Protocol):
    """A read-only vocabulary of word vectors with gensim KeyedVectors semantics."""

    @property
    def words(self) -> list[str]:
        """The vocabulary, most frequent first (gensim's index_to_key)."""
        ...

    @property
    def index(self) -> Mapping[str, int]:
        """word -> row (gensim's key_to_index)."""
        ...

    @property
    def vectors(self) -> np.ndarray:
        """(size, dimension) float32 as loaded (possibly memory-mapped)."""
        ...

    @property
    def unit(self) -> np.ndarray:
        """The rows unit-normalised (a zero row stays zero), C-contiguous float32: what cosine search runs over."""
        ...

    @property
    def has_subwords(self) -> bool:
        """True for fastText: words outside the vocabulary are built from character n-grams."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def size(self) -> int: ...

    def indices(self, words: Sequence[str], field: str | None = None) -> list[int | None]:
        """Row of each word; None for an unknown word of a subword model; OUT_OF_VOCABULARY (naming `field`)
        otherwise."""
        ...

    def vector(self, word: str, index: int | None, *, norm: bool) -> np.ndarray:
        """The word's vector (unit length with `norm`), built from n-grams when `index` is None."""
        ...

    def folded_vocabulary(self, restrict_vocab: int, case_sensitive: bool) -> tuple[dict[str, int], np.ndarray]:
        """gensim evaluate_word_analogies' ok_vocab and each of the first restrict_vocab rows' canonical row."""
        ...

    def frequencies(self) -> np.ndarray:
        """p(w) per row: the file's counts when it has them, else Zipf's law over the rank (SIF weights)."""
        ...


@dataclass(frozen=True)
class TokenSpan:
    """One token of a text: its id, its vocabulary string, whether the tokenizer added it, and the characters of the
    text it covers (text[start:end]; 0, 0 for special tokens)."""

    id: int
    token: str
    special: bool
    start: int
    end: int


@runtime_checkable
class TextEncoder(Part, Protocol):
    """Texts in, one float32 row each. `encode` runs on one thread at a time (the model's batch worker); the rest may
    be called from any thread."""

    @property
    def dimension(self) -> int: ...

    @property
    def max_seq_length(self) -> int:
        """Tokens read per text (0: unlimited); longer texts are truncated, or chunked on request."""
        ...

    @property
    def device(self) -> str: ...

    @property
    def method(self) -> str:
        """What provenance reports: "sentence-transformers", "model2vec", "mean", "sif"."""
        ...

    @property
    def prompts(self) -> Mapping[str, str]:
        """Named prompts, name -> the text put before an input (sentence-transformers' `prompts`); the callers put
        it there (core/texts), `encode` never adds one itself."""
        ...

    @property
    def default_prompt_name(self) -> str:
        """The prompt a call that names none gets (sentence-transformers' default_prompt_name); "" for none."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimension) float32, each text truncated to max_seq_length tokens, not normalised."""
        ...

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text, untruncated, as the model counts them (special tokens included)."""
        ...

    def chunks(self, text: str, prompt: str = "") -> list[str]:
        """The text as consecutive windows, each with `prompt` before it, that each fit in max_seq_length tokens."""
        ...

    def unembeddable(self, texts: list[str]) -> list[int]:
        """Positions of texts this encoder cannot embed (checked before they are queued)."""
        ...

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        """Dimensions the model was trained to be truncated to (a Matryoshka loss), largest first; () when not."""
        ...

    @property
    def any_dimensions(self) -> bool:
        """The operator allows truncation to any dimensions (allow_any_dimensions)."""
        ...

    def tokens(self, text: str, special: bool = True) -> list[TokenSpan]:
        """The text's tokens, untruncated, with the special tokens the model adds when `special`."""
        ...

    def tail(self, text: str, prompt: str = "") -> str | None:
        """`prompt` then the end of a text, together at most max_seq_length tokens, the text cut at a word boundary so
        that it tokenizes to the same tokens as the end of the whole text; prompt + text when they fit; None when this
        tokenizer's tokens cannot be cut so (left truncation is then refused)."""
        ...


@runtime_checkable
class CrossEncoder(Part, Protocol):
    """Scores (query, document) pairs jointly (reranking): the cross-encoder kind (backends/cross_encoders.py), a
    sentence-transformers CrossEncoder on ONNX Runtime or torch. `score` runs on one thread at a time (the model's
    batch worker) unless the part is the registry's batched one."""

    @property
    def max_seq_length(self) -> int:
        """Tokens read per pair, query and document together (0: unlimited)."""
        ...

    @property
    def method(self) -> str:
        """What provenance reports: "cross-encoder"."""
        ...

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """(len(pairs),) float32 raw relevance scores (the classifier's logit; callers apply the sigmoid), each pair
        truncated to max_seq_length tokens as sentence-transformers' CrossEncoder truncates it (longest first)."""
        ...

    def token_counts(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Tokens of each pair as the model reads it (special tokens included), untruncated."""
        ...


@runtime_checkable
class ImageEncoder(Part, Protocol):
    """Images in, one feature vector each. Inputs are float32 (N, C, H, W) in [0, 1] at `shape`; each encoder applies
    its own normalisation."""

    @property
    def shape(self) -> ImageShape: ...

    @property
    def dimension(self) -> int: ...

    @property
    def device(self) -> str: ...

    @property
    def method(self) -> str:
        """What provenance reports: "vae-mean", "torchvision", "torchscript"."""
        ...

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 in [0, 1] -> (N, dimension) float32."""
        ...


@runtime_checkable
class LatentDecoder(Part, Protocol):
    """A generative model's decoder: (N, latent_dim) latents -> (N, C, H, W) images in [0, 1] at `shape`."""

    @property
    def shape(self) -> ImageShape: ...

    @property
    def latent_dim(self) -> int: ...

    @property
    def has_prior(self) -> bool:
        """True when latents may be drawn from the prior N(0, I) (Sample); an autoencoder has none."""
        ...

    @property
    def decode_method(self) -> str:
        """Provenance of Decode and of the frames of Interpolate and Traverse' decoding: "vae-decode"."""
        ...

    def decode(self, latents: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class LatentEncoder(LatentDecoder, ImageEncoder, Protocol):
    """Images into the latent space of the same model's decoder. As an image encoder, `embed` is the latent mean."""

    @property
    def encode_method(self) -> str:
        """Provenance of Encode: "vae-encode"."""
        ...

    @property
    def reconstruct_method(self) -> str:
        """Provenance of Reconstruct (encode, then decode the mean): "vae-reconstruct"."""
        ...

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C, H, W) in [0, 1] -> (latent means, log-variances), each (N, latent_dim) float32; None for the
        log-variances of a model without a posterior (an autoencoder, a GAN's inversion). An encoder that optimises
        (an inversion) calls `embedsvc.calls.check()` between steps."""
        ...


@runtime_checkable
class AnomalyScorer(Part, Protocol):
    """How unusual each image is under the model: higher is more unusual."""

    @property
    def shape(self) -> ImageShape: ...

    @property
    def score_method(self) -> str:
        """Provenance of AnomalyScore: "negative-elbo"."""
        ...

    def anomaly_terms(self, images: np.ndarray, *, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(data term, latent term) per image; the score is their sum. A VAE: (reconstruction NLL, KL(q(z|x) || p(z)))
        in nats. samples = 0: deterministic (z at the mean); samples > 0: a Monte Carlo average (seeded), where the
        score is an expectation."""
        ...


@runtime_checkable
class LatentInpainter(Part, Protocol):
    """Completes missing pixels by optimising a latent against the known ones (checking `embedsvc.calls.check()`
    between steps)."""

    @property
    def shape(self) -> ImageShape: ...

    @property
    def inpaint_method(self) -> str:
        """Provenance of Inpaint: "map-latent-inpainting"."""
        ...

    def inpaint(
        self, images: np.ndarray, known: np.ndarray, *, steps: int, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W) images and a mask of the same shape (1 known, 0 missing) -> (completed images, the latents
        found); known pixels are kept as given."""
        ...


PROTOCOLS: Mapping[Capability, type] = {
    Capability.WORDS: WordSpace,
    Capability.TEXTS: TextEncoder,
    Capability.PAIRS: CrossEncoder,
    Capability.IMAGES: ImageEncoder,
    Capability.LATENT_DECODER: LatentDecoder,
    Capability.LATENT_ENCODER: LatentEncoder,
    Capability.ANOMALY_SCORES: AnomalyScorer,
    Capability.INPAINTING: LatentInpainter,
}


# ---- how errors speak of them ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Described:
    """How errors name a capability.

    `what` completes "model 'x' is a <kind> model, not ..." (MODEL_KIND_MISMATCH). A capability that is `part_of`
    another is an optional part of the models offering that one: a model of that family without it is refused with
    OPERATION_NOT_SUPPORTED, "model 'x' is a <kind> model, which cannot <lacking>", and a model outside the family
    with the family's MODEL_KIND_MISMATCH. `instead` replaces the mismatch message for a model that offers another
    capability (keys), with what to do instead; {name}, {kind} and {a_kind} ("an autoencoder") are filled in.
    """

    what: str
    part_of: Capability | None = None
    lacking: str = ""
    instead: Mapping[Capability, str] = field(default_factory=dict)


DESCRIBED: Mapping[Capability, Described] = {
    Capability.WORDS: Described(
        "a word-vectors model",
        instead={
            Capability.TEXTS: "model '{name}' is {a_kind} model, not a word-vectors model: it embeds texts "
            "(TextService.EmbedTexts) and has no vocabulary; for arithmetic, search a collection bound to it with an "
            "expression query",
        },
    ),
    Capability.TEXTS: Described(
        "a model that embeds texts",
        instead={
            Capability.WORDS: "model '{name}' is {a_kind} model without a sentence mode; configure an averaged-words "
            'text encoder over it (format = "averaged-words", words = "{name}")',
        },
    ),
    Capability.PAIRS: Described("a cross-encoder (a model that scores query-document pairs)"),
    Capability.IMAGES: Described("an image model"),
    Capability.LATENT_DECODER: Described("a generative latent model"),
    Capability.LATENT_ENCODER: Described(
        "a generative latent model", part_of=Capability.LATENT_DECODER, lacking="encode images into its latent space"
    ),
    Capability.ANOMALY_SCORES: Described(
        "a generative latent model",
        part_of=Capability.LATENT_DECODER,
        lacking="score images (it has no likelihood to score them by)",
    ),
    Capability.INPAINTING: Described(
        "a generative latent model", part_of=Capability.LATENT_DECODER, lacking="complete missing pixels"
    ),
}
