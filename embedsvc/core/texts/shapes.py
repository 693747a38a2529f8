"""The shapes text vectors leave the server in: Matryoshka truncation (fewer dimensions, re-normalised), quantised
number types (int8, uint8, binary, ubinary, as sentence-transformers' `quantize_embeddings` and Infinity's
`--embedding-dtype` define them), the calibration the scalar types need, and the space tag of each shape.

A shape is another space. Tags grow from the model's by facets, in this order:

    model:<name>@<version>[;prompt=<name>][/dim=<n>][/<dtype>]
    e.g.  model:minilm@sha256:1a2b3c4d5e6f7a8b;prompt=query/dim=128/int8

in the order the server makes the vector: the prompt is put before the text (`embedding.prompt_space`: only for a
prompt that adds text), the model encodes, then the vector is truncated (`/dim=<n>` when n is below the model's
dimension) and quantised (`/<dtype>` for every type but float32). Prompt names hold no '/', so the facets parse back
unambiguously. A collection or a model compares tags whole, so a truncated or quantised vector sent where the model's
own vectors (or a prompt's) belong is SPACE_MISMATCH; collections hold only unshaped vectors.

Dimensions. Keeping the first n components of a vector means something only for a model trained so (a Matryoshka
loss: every prefix of the listed sizes was trained to be an embedding on its own). Such a model serves any n from the
smallest trained size up to its dimension; below that, or for a model not trained so (all-MiniLM-L6-v2 was not), the
request is refused (DIMENSIONS_NOT_SUPPORTED) unless the operator allowed any dimensions for the model, and then the
answer carries a warning. The prefix is unit-normalised again: a prefix of a unit vector is not one, and every
Matryoshka recipe compares prefixes by cosine.

Scalar quantisation (int8, uint8) maps each component to 256 buckets between its calibration minimum and maximum
(sentence-transformers' formula: floor((x - min) / ((max - min) / 255)), clipped to 0..255; int8 subtracts 128). The
ranges come from the model itself: the unit-normalised vectors (truncated first, for fewer dimensions) of a fixed set
of real sentences, CALIBRATION_SENTENCES of gensim's Lee news corpus (installed with the server), per component min
and max, as Infinity derives its ranges from a calibration dataset (percentile 100). They are computed at the first
int8 or uint8 request for a model version (about a second) and kept; the provenance names the set and a digest of the
ranges. Binary types need no calibration: one bit per component, set where it is > 0, packed by numpy.packbits.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from enum import StrEnum

import numpy as np

from embedsvc.backends.capabilities import TextEncoder
from embedsvc.calls import CallControl
from embedsvc.corpus import lee_sentences
from embedsvc.errors import EmbedsvcError, Reason, invalid
from embedsvc.vectors import unit_rows

# The calibration set: this many sentences of gensim's Lee background corpus, in order.
CALIBRATION_SENTENCES = 1000
CALIBRATION_NAME = f"lee-background-{CALIBRATION_SENTENCES}"

# How the calibration reaches a model: texts -> float32 rows (through the model's batcher).
EmbedFn = Callable[[list[str], CallControl | None], np.ndarray]


class Dtype(StrEnum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"

    @property
    def calibrated(self) -> bool:
        return self in (Dtype.INT8, Dtype.UINT8)

    @property
    def numpy(self) -> type[np.generic]:
        return np.float32 if self is Dtype.FLOAT32 else np.int8 if self in (Dtype.INT8, Dtype.BINARY) else np.uint8

    def width(self, dimension: int) -> int:
        """Values per row of vectors of `dimension` components."""
        return -(-dimension // 8) if self in (Dtype.BINARY, Dtype.UBINARY) else dimension


def space_of(model_space: str, dimensions: int, native: int, dtype: Dtype) -> str:
    """The tag of vectors of this shape: the model's space, then /dim=<n> (fewer dimensions), then /<dtype>."""
    space = model_space
    if 0 < dimensions < native:
        space += f"/dim={dimensions}"
    if dtype is not Dtype.FLOAT32:
        space += f"/{dtype.value}"
    return space


def check_dimensions(encoder: TextEncoder, dimensions: int, field: str = "dimensions") -> list[str]:
    """Whether the model serves `dimensions` (0: its own): the warnings of the answer, or INVALID_VALUE (out of
    range) / DIMENSIONS_NOT_SUPPORTED (not trained for so few, and not allowed by the operator)."""
    native = encoder.dimension
    if dimensions == 0 or dimensions == native:
        return []
    if not 0 < dimensions < native:
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"dimensions must be 1 to {native} (the dimension of model '{encoder.name}'), got {dimensions}",
            field=field,
            metadata={"max": str(native), "actual": str(dimensions)},
        )
    trained = encoder.matryoshka_dims
    if trained and dimensions >= min(trained):
        return []
    untrained = (
        f"model '{encoder.name}' was trained with a Matryoshka loss down to {min(trained)} dimensions, not {dimensions}"
        if trained
        else f"model '{encoder.name}' was not trained with a Matryoshka loss: its first {dimensions} components are "
        "not an embedding on their own"
    )
    if encoder.any_dimensions:
        return [untrained + "; served because the operator allows any dimensions for it (expect lower quality)"]
    metadata = {"model": encoder.name, "max": str(native), "actual": str(dimensions)}
    if trained:
        metadata["min"] = str(min(trained))
    raise EmbedsvcError(
        Reason.DIMENSIONS_NOT_SUPPORTED,
        untrained
        + (f"; it serves {min(trained)} to {native}" if trained else "")
        + " (an operator can allow any dimensions with allow_any_dimensions = true)",
        field=field,
        metadata=metadata,
    )


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Matryoshka truncation: the first `dimensions` components of each row, unit-normalised again."""
    return unit_rows(np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32))


def quantize(vectors: np.ndarray, dtype: Dtype, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float rows in another number type, exactly as sentence-transformers' quantize_embeddings computes them with
    these `ranges` ((2, dimension): per component min and max; int8 and uint8 only)."""
    if dtype is Dtype.FLOAT32:
        return vectors.astype(np.float32, copy=False)
    if dtype in (Dtype.BINARY, Dtype.UBINARY):
        bits = np.packbits(vectors > 0, axis=-1)
        return bits if dtype is Dtype.UBINARY else (bits.astype(np.int16) - 128).astype(np.int8)
    assert ranges is not None
    starts = ranges[0].astype(np.float32)
    steps = (ranges[1].astype(np.float32) - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    buckets = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return buckets.astype(np.uint8) if dtype is Dtype.UINT8 else (buckets - 128).astype(np.int8)


def calibration_texts() -> list[str]:
    """The calibration sentences: the first CALIBRATION_SENTENCES sentences of gensim's Lee background corpus."""
    return lee_sentences(CALIBRATION_SENTENCES)


class Calibrations:
    """The calibration vectors of each model version (computed once, through the model's own batcher) and the int8
    ranges they give for each number of dimensions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}
        self._ranges: dict[tuple[str, int], tuple[np.ndarray, str]] = {}

    def ranges(
        self,
        encoder: TextEncoder,
        embed: EmbedFn,
        dimensions: int,
        field: str = "dtype",
        control: CallControl | None = None,
        space: str = "",
    ) -> tuple[np.ndarray, str]:
        """(2, dimensions) per-component min and max over the calibration set, and its description for provenance.
        `space` (default: the model's) names what `embed` gives: a prompt's vectors are calibrated on their own."""
        space = space or encoder.space
        key = (space, dimensions)
        with self._lock:
            found = self._ranges.get(key)
        if found is not None:
            return found
        vectors = self._calibration_vectors(encoder, embed, field, control, space)
        unit = truncate(vectors, dimensions) if dimensions < vectors.shape[1] else unit_rows(vectors)
        ranges = np.vstack((unit.min(axis=0), unit.max(axis=0))).astype(np.float32)
        digest = hashlib.sha256(ranges.tobytes()).hexdigest()[:16]
        described = (ranges, f"{CALIBRATION_NAME} ({len(unit)} sentences), ranges sha256:{digest}")
        with self._lock:
            self._ranges[key] = described
        return described

    def _calibration_vectors(
        self, encoder: TextEncoder, embed: EmbedFn, field: str, control: CallControl | None, space: str
    ) -> np.ndarray:
        with self._lock:
            found = self._vectors.get(space)
        if found is not None:
            return found
        texts = calibration_texts()
        bad = set(encoder.unembeddable(texts))
        texts = [t for n, t in enumerate(texts) if n not in bad]
        if len(texts) < 100:
            raise invalid(
                field,
                f"model '{encoder.name}' embeds only {len(texts)} of the {CALIBRATION_SENTENCES} English calibration "
                "sentences: int8 and uint8 need at least 100 (binary and ubinary need none)",
            )
        vectors = embed(texts, control)
        with self._lock:
            self._vectors.setdefault(space, vectors)
            return self._vectors[space]
