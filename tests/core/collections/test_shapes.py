"""A shaped collection's two vector forms (core/collections/shapes.py): the wire form in and out, the stored form in
between, and why the stored form searches as the quantised type's own metric does (integer dot products; Hamming
distance for binary types, for every metric)."""

from __future__ import annotations

import numpy as np
import pytest

from embedsvc.core.collections.shapes import Shape, rows_in, to_stored, to_wire, vector_in
from embedsvc.core.texts.shapes import Dtype, quantize
from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.types import CollectionConfig, IndexParams, Metric


def config(dimension: int, dtype: str, space: str = "collection:c/x") -> CollectionConfig:
    return CollectionConfig("c", dimension, Metric.INNER_PRODUCT, IndexParams(), space=space, dtype=dtype)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between packed rows of a and of b: (len(a), len(b))."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(axis=-1).astype(np.int64)


@pytest.mark.parametrize("dimension", [384, 100])  # 100: the last byte is padded with zero bits
@pytest.mark.parametrize("dtype", [Dtype.BINARY, Dtype.UBINARY])
def test_binary_rows_round_trip_and_rank_as_hamming(dimension, dtype):
    rng = np.random.default_rng(0)
    floats = rng.normal(size=(50, dimension)).astype(np.float32)
    wire = quantize(floats, dtype)  # what EmbedTexts sends: packed, int8 for binary, uint8 for ubinary
    assert wire.shape == (50, -(-dimension // 8))
    c = config(dimension, dtype.value)
    stored = rows_in(c, wire.astype(np.float32), "x")
    assert stored.shape == (50, dimension) and set(np.unique(stored)) == {-1.0, 1.0}
    np.testing.assert_array_equal(to_wire(stored, c), wire.astype(np.float32))
    unsigned = quantize(floats, Dtype.UBINARY)
    h = hamming(unsigned, unsigned)
    ip = stored @ stored.T
    np.testing.assert_array_equal(ip, dimension - 2 * h)  # inner product = d - 2h
    unit = stored / np.sqrt(dimension)
    np.testing.assert_allclose(unit @ unit.T, 1 - 2 * h / dimension, atol=1e-6)  # cosine
    l2 = ((stored[:, None, :] - stored[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(l2, 4 * h)  # squared L2


@pytest.mark.parametrize("dtype", [Dtype.INT8, Dtype.UINT8])
def test_scalar_rows_are_stored_as_they_are_and_dot_as_integers(dtype):
    rng = np.random.default_rng(1)
    floats = rng.normal(size=(20, 384)).astype(np.float32)
    ranges = np.vstack((floats.min(axis=0), floats.max(axis=0)))
    wire = quantize(floats, dtype, ranges)
    stored = rows_in(config(384, dtype.value), wire.astype(np.float32), "x")
    np.testing.assert_array_equal(stored, wire.astype(np.float32))
    # |int8 dot| < 384 * 128^2 < 2^24: float32 holds the integer dot products exactly.
    exact = wire.astype(np.int64) @ wire.astype(np.int64).T
    if dtype is Dtype.INT8:
        np.testing.assert_array_equal((stored @ stored.T).astype(np.int64), exact)
    else:  # uint8 sums pass 2^24: float32-rounded, relatively 1e-7
        np.testing.assert_allclose(stored @ stored.T, exact, rtol=1e-6)


def test_shape_apply_equals_embed_texts_pipeline():
    """Shape.apply is EmbedTexts' pipeline (unit, cut, unit, quantise) followed by the stored form."""
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(10, 64)).astype(np.float32) * 3
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    cut = unit[:, :32] / np.linalg.norm(unit[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(Shape(32, Dtype.FLOAT32).apply(raw), cut, atol=1e-6)
    bits = Shape(32, Dtype.UBINARY).apply(raw)
    np.testing.assert_array_equal(bits, np.where(cut > 0, 1.0, -1.0))
    ranges = np.vstack((cut.min(axis=0), cut.max(axis=0))).astype(np.float32)
    other = ranges * 0.5
    shape = Shape(32, Dtype.INT8, ranges, other)
    np.testing.assert_array_equal(shape.apply(raw), quantize(cut, Dtype.INT8, ranges))
    np.testing.assert_array_equal(shape.apply(raw, query=True), quantize(cut, Dtype.INT8, other))


@pytest.mark.parametrize(
    ("dtype", "values"),
    [("int8", [128.0]), ("int8", [1.5]), ("uint8", [-1.0]), ("ubinary", [256.0]), ("binary", [-129.0])],
)
def test_values_outside_the_type_are_refused(dtype, values):
    width = Dtype(dtype).width(8)
    row = np.zeros(width, np.float32)
    row[0] = values[0]
    with pytest.raises(EmbedsvcError) as info:
        to_stored(row[None], Dtype(dtype), 8, "items[0].vector.values")
    assert info.value.reason is Reason.INVALID_VALUE
    assert info.value.field == "items[0].vector.values" and info.value.metadata["dtype"] == dtype
    with pytest.raises(EmbedsvcError) as info:  # a float vector's length instead of the packed width
        vector_in(config(16, "ubinary"), np.zeros(16, np.float32), "", "v")
    assert info.value.reason is Reason.DIMENSION_MISMATCH and info.value.metadata["expected"] == "2"


def test_tags_compare_whole_in_both_directions():
    shaped = config(16, "ubinary", space="model:m@v/ubinary")
    plain = config(16, "", space="model:m@v")
    with pytest.raises(EmbedsvcError) as info:
        vector_in(shaped, np.zeros(16, np.float32), "model:m@v", "v")
    assert info.value.reason is Reason.SPACE_MISMATCH
    with pytest.raises(EmbedsvcError) as info:
        vector_in(plain, np.zeros(2, np.float32), "model:m@v/ubinary", "v")
    assert info.value.reason is Reason.SPACE_MISMATCH
    np.testing.assert_array_equal(
        vector_in(shaped, np.array([255.0, 0.0]), "model:m@v/ubinary", "v"), [1] * 8 + [-1] * 8
    )
