"""Collections of a shaped space (issue 31): fewer dimensions and/or a quantised number type, as EmbedTexts makes
them (`core/texts/shapes.py`), and the two forms their vectors take.

- The wire form is what EmbedTexts returns and what callers send: int8/uint8 values, or ceil(dimension / 8) packed
  bytes for binary (-128..127) and ubinary (0..255), `dtype.width(dimension)` numbers a vector.
- The stored form is what backends hold and search: float32 rows of `dimension` components. int8 and uint8 values
  are stored as they are (every integer of -128..255 is a float32, so inner products are the integer dot products
  while they stay under 2^24); binary and ubinary are unpacked to +1 (bit set) and -1 (bit clear), so that for bit
  strings at Hamming distance h the inner product is dimension - 2h, the cosine 1 - 2h / dimension and the squared
  L2 distance 4h: every metric ranks exactly as Hamming, and FAISS and Milvus need no binary index of their own.

Vectors enter in the wire form (checked: whole numbers in the type's range) and leave in it again (GetItems,
ExportItems, hits with vectors); everything between (search, examples, diversity) uses the stored form.

A collection bound to a text model with a shape embeds its items' inputs and its queries' texts through `Shape.apply`:
unit-normalised, cut to the dimensions and unit-normalised again, quantised with the collection's own calibration
ranges (fixed when it was created and stored with it, so a restart, which recomputes the server's ranges for
EmbedTexts, never changes the collection's vectors), then put in the stored form.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from embedsvc.core.texts.shapes import Dtype, quantize, space_of, truncate
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.types import CollectionConfig
from embedsvc.vectors import check_vector, unit_rows

# The values each quantised type's wire form takes.
_RANGES = {
    Dtype.INT8: (-128, 127),
    Dtype.UINT8: (0, 255),
    Dtype.BINARY: (-128, 127),
    Dtype.UBINARY: (0, 255),
}


def dtype_of(config: CollectionConfig) -> Dtype:
    return Dtype(config.dtype) if config.dtype else Dtype.FLOAT32


def wire_width(config: CollectionConfig) -> int:
    """Numbers per vector in the wire form."""
    return dtype_of(config).width(config.dimension)


def encode_ranges(ranges: np.ndarray | None) -> str:
    return base64.b64encode(np.asarray(ranges, "<f4").tobytes()).decode("ascii") if ranges is not None else ""


def decode_ranges(text: str, dimension: int) -> np.ndarray | None:
    return np.frombuffer(base64.b64decode(text), "<f4").reshape(2, dimension) if text else None


def to_stored(rows: np.ndarray, dtype: Dtype, dimension: int, field: str) -> np.ndarray:
    """Rows in the wire form -> the stored form, (n, dimension) float32; INVALID_VALUE for values that are not whole
    numbers of the type's range."""
    rows = np.asarray(rows, np.float32)
    if dtype is Dtype.FLOAT32:
        return rows
    low, high = _RANGES[dtype]
    bad = (rows != np.round(rows)) | (rows < low) | (rows > high)
    if bad.any():
        row, column = (int(x[0]) for x in np.nonzero(bad))
        raise EmbedsvcError(
            Reason.INVALID_VALUE,
            f"a {dtype.value} vector's values are whole numbers of {low}..{high}; value {column} of row {row} is "
            f"{rows[row, column]:g}",
            field=field,
            metadata={"dtype": dtype.value, "min": str(low), "max": str(high)},
        )
    if dtype.calibrated:
        return rows
    return unpack_bits(rows, dtype, dimension)


def unpack_bits(rows: np.ndarray, dtype: Dtype, dimension: int) -> np.ndarray:
    """Packed binary or ubinary rows (as numbers) -> +1/-1 float32 rows of `dimension` components."""
    packed = (rows.astype(np.int16) + (128 if dtype is Dtype.BINARY else 0)).astype(np.uint8)
    bits = np.unpackbits(packed, axis=-1)[..., :dimension]
    return bits.astype(np.float32) * 2 - 1


def to_wire(rows: np.ndarray, config: CollectionConfig) -> np.ndarray:
    """Stored rows (n, dimension) -> the wire form (n, width) float32: packed bytes again for binary types."""
    dtype = dtype_of(config)
    if dtype not in (Dtype.BINARY, Dtype.UBINARY):
        return rows
    packed = np.packbits(np.asarray(rows) > 0, axis=-1).astype(np.float32)
    return packed - 128 if dtype is Dtype.BINARY else packed


def vector_in(config: CollectionConfig, vector: np.ndarray, tag: str, field: str, *, query: bool = False) -> np.ndarray:
    """A vector sent to the collection (an item's, or with `query` a query's, which may also be in its query space):
    SPACE_MISMATCH / DIMENSION_MISMATCH / NOT_FINITE, INVALID_VALUE for a quantised value out of its type; the
    stored form."""
    dtype = dtype_of(config)
    width = dtype.width(config.dimension)
    checked = check_vector(
        vector,
        tag,
        space=config.space,
        dimension=width,
        owner=f"collection '{config.name}'" + _form(dtype, config.dimension),
        field=field,
        also=(config.query_space,) if query and config.query_space else (),
    )
    return to_stored(checked[None], dtype, config.dimension, field + ".values")[0]


def _form(dtype: Dtype, dimension: int) -> str:
    if dtype is Dtype.FLOAT32:
        return ""
    if dtype.calibrated:
        return f" ({dtype.value})"
    return f" ({dtype.value}: {dimension} bits, packed 8 to a value)"


def rows_in(config: CollectionConfig, rows: np.ndarray, field: str) -> np.ndarray:
    """Packed rows sent to the collection (already (n, width)): the stored form."""
    return to_stored(rows, dtype_of(config), config.dimension, field)


@dataclass(frozen=True)
class Shape:
    """A bound text collection's shape: the dimensions its model's vectors are cut to (0: all), the number type, and
    the int8/uint8 calibration ranges of its documents' space and of its queries' (None: the documents')."""

    dimensions: int
    dtype: Dtype
    ranges: np.ndarray | None = None
    query_ranges: np.ndarray | None = None
    calibration: str = ""

    def space(self, space: str, native: int) -> str:
        """The tag of vectors of this shape made in `space` (a model's or a prompt's) of a `native`-dimensional
        model."""
        return space_of(space, self.dimensions, native, self.dtype)

    def apply(self, vectors: np.ndarray, *, query: bool = False) -> np.ndarray:
        """A text model's vectors -> this shape's stored form, as EmbedTexts(dimensions, dtype) would give them:
        unit-normalised, cut and unit-normalised again, quantised."""
        unit = unit_rows(np.asarray(vectors, np.float32))
        if self.dimensions and self.dimensions < unit.shape[1]:
            unit = truncate(unit, self.dimensions)
        if self.dtype is Dtype.FLOAT32:
            return unit
        ranges = self.query_ranges if query and self.query_ranges is not None else self.ranges
        quantised = quantize(unit, self.dtype, ranges).astype(np.float32)
        if self.dtype.calibrated:
            return quantised
        return unpack_bits(quantised, self.dtype, unit.shape[1])
