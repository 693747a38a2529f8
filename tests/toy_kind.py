"""A throwaway model kind, built the way a real one is (one module and one entry in the kinds table), to show what a
new kind costs and to test the registry and the latent RPCs on a latent model that is not a VAE.

"linear-ae" is a plain autoencoder on 8x8 grey images: the encoder projects the pixels onto 4 fixed orthonormal
directions, the decoder maps a latent back through the transposed projection. It has an encoder and a decoder but no
prior and no likelihood, so Sample, AnomalyScore and Inpaint must be refused, and Encode returns no log-variances.
Nothing here is shipped: tests register it with `registered()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embedsvc.backends import kinds
from embedsvc.backends.base import Capability, ImageShape, Kind, LoadContext, Loaded, ModelSpec, Options, int_value

SHAPE = ImageShape(1, 8)
LATENT_DIM = 4


class ToyFormat(StrEnum):
    GENERATED = "generated"


@dataclass(frozen=True)
class LinearAEOptions(Options):
    kind: ClassVar[str] = "linear-ae"

    format: ToyFormat = ToyFormat.GENERATED
    path: Path | None = None
    seed: int = 0


class LinearAutoencoder:
    """One object offered under three capabilities: image encoder, latent encoder and latent decoder."""

    method = "linear-mean"
    decode_method = "linear-decode"
    encode_method = "linear-encode"
    reconstruct_method = "linear-reconstruct"
    has_prior = False
    device = "cpu"
    shape = SHAPE
    latent_dim = LATENT_DIM
    dimension = LATENT_DIM

    def __init__(self, name: str, seed: int) -> None:
        pixels = SHAPE.channels * SHAPE.size * SHAPE.size
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((pixels, LATENT_DIM)))
        self.basis = q.astype(np.float32)  # (64, 4), orthonormal columns
        self.name = name
        self.version = f"seed-{seed}"
        self.space = f"model:{name}@{self.version}"
        self.warm_ups = 0

    def warm_up(self) -> None:
        self.warm_ups += 1
        self.decode(self.encode(np.zeros((1, *self.image_dims), np.float32))[0])

    def memory_bytes(self) -> int:
        return int(self.basis.nbytes)

    @property
    def image_dims(self) -> tuple[int, int, int]:
        return SHAPE.channels, SHAPE.size, SHAPE.size

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, None]:
        return images.reshape(len(images), -1).astype(np.float32) @ self.basis, None

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.encode(images)[0]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        pixels = np.clip(np.asarray(latents, np.float32) @ self.basis.T, 0.0, 1.0)
        return pixels.reshape(len(latents), *self.image_dims)


OFFERS = frozenset({Capability.IMAGES, Capability.LATENT_ENCODER, Capability.LATENT_DECODER})


class LinearAEKind(Kind):
    name = LinearAEOptions.kind
    keys = frozenset({"seed"})

    def parse(self, where: str, entry: Mapping[str, Any]) -> LinearAEOptions:
        return LinearAEOptions(seed=int_value(where, entry, "seed", 0, 0, 2**31))

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return OFFERS

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        model = LinearAutoencoder(spec.name, spec.options.seed)
        return Loaded(
            dimension=LATENT_DIM,
            version=model.version,
            source="generated",
            image_shape=SHAPE,
            parts=dict.fromkeys(OFFERS, model),
            engine="numpy",
        )


KIND = LinearAEKind()


@contextmanager
def registered(*extra: Kind) -> Iterator[None]:
    """The kinds table with this kind (and any `extra` ones) in it, for the duration."""
    added = {k.name: k for k in (KIND, *extra)}
    kinds.KINDS.update(added)
    try:
        yield
    finally:
        for name in added:
            del kinds.KINDS[name]


# ---- a cross-encoder (Capability.PAIRS) for the rerank stage of searches -------------------------------------------


@dataclass(frozen=True)
class OverlapOptions(Options):
    kind: ClassVar[str] = "toy-cross-encoder"

    format: ToyFormat = ToyFormat.GENERATED
    path: Path | None = None


class WordOverlap:
    """Scores a (query, text) pair by the words they share: raw score 2 x shared - 1 (a logit), plus a small
    tie-breaker by the text's length. It counts the pairs it scored, so tests see what the rerank stage sent."""

    method = "word-overlap"
    device = "cpu"
    max_seq_length = 128

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = "overlap-1"
        self.space = f"model:{name}@{self.version}"
        self.pairs_scored = 0

    def warm_up(self) -> None:
        self.score([("a", "a")])

    def memory_bytes(self) -> int:
        return 0

    @staticmethod
    def raw(query: str, text: str) -> float:
        shared = set(query.lower().split()) & set(text.lower().split())
        return 2.0 * len(shared) - 1.0 - len(text) / 1e6

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.pairs_scored += len(pairs)
        return np.array([self.raw(q, t) for q, t in pairs], dtype=np.float32)

    def token_counts(self, pairs: list[tuple[str, str]]) -> list[int]:
        return [len(q.split()) + len(t.split()) + 3 for q, t in pairs]


class OverlapKind(Kind):
    name = OverlapOptions.kind
    keys = frozenset()

    def parse(self, where: str, entry: Mapping[str, Any]) -> OverlapOptions:
        return OverlapOptions()

    def offers(self, spec: ModelSpec) -> frozenset[Capability]:
        return frozenset({Capability.PAIRS})

    def load(self, spec: ModelSpec, context: LoadContext) -> Loaded:
        model = WordOverlap(spec.name)
        return Loaded(dimension=0, version=model.version, source="generated", parts={Capability.PAIRS: model})


CROSS_ENCODER_KIND = OverlapKind()
