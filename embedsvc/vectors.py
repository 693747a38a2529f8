"""Vectors as every layer handles them: unit rows, and the checks on a vector that enters a space (a model's or a
collection's): its space tag, its length, its values."""

from __future__ import annotations

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason


def unit_rows(rows: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """Each row divided by its L2 norm, in the rows' own dtype (float32 rows give gensim's unit vectors bit for bit);
    zero rows stay zero. `norms` (one per row) when the caller has them already."""
    norms = np.linalg.norm(rows, axis=1) if norms is None else norms
    column = norms[:, None]
    return np.divide(rows, column, out=np.zeros(rows.shape, rows.dtype), where=column > 0)


def check_vector(
    vector: np.ndarray, tag: str, *, space: str, dimension: int, owner: str, field: str, also: tuple[str, ...] = ()
) -> np.ndarray:
    """The vector as float32, or SPACE_MISMATCH / DIMENSION_MISMATCH / NOT_FINITE.

    `field` names the Vector message in the request (its `.space` and `.values` are reported); `owner` is how the
    space is named in messages, for example "model 'glove'". A tag in `also` is accepted too (a collection's query
    vectors may be in its query prompt's space).
    """
    if tag and tag != space and tag not in also:
        raise EmbedsvcError(
            Reason.SPACE_MISMATCH,
            f"the vector belongs to {tag}, not to {space}",
            field=field + ".space",
            metadata={"expected": space, "actual": tag},
        )
    if vector.shape != (dimension,):
        raise EmbedsvcError(
            Reason.DIMENSION_MISMATCH,
            f"the vector has {vector.size} components; {owner} has {dimension}",
            field=field + ".values",
            metadata={"expected": str(dimension), "actual": str(vector.size)},
        )
    if not np.isfinite(vector).all():
        raise EmbedsvcError(Reason.NOT_FINITE, "the vector has NaN or infinite components", field=field + ".values")
    return vector.astype(np.float32, copy=False)


def packed_rows(values: np.ndarray, *, dimension: int, owner: str, field: str) -> np.ndarray:
    """A flat float32 array sent packed (`packed_*` fields) as its (n, dimension) rows, every component finite."""
    if values.ndim != 1 or values.size % dimension:
        raise EmbedsvcError(
            Reason.DIMENSION_MISMATCH,
            f"{field} has {values.size} float32 values, not whole rows of {dimension} ({owner})",
            field=field,
            metadata={"expected": str(dimension), "actual": str(values.size)},
        )
    rows = values.reshape(-1, dimension)
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise EmbedsvcError(Reason.NOT_FINITE, f"row {bad} has NaN or infinite components", field=field)
    return rows
