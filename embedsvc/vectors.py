"""Vectors as every layer handles them: unit rows, and the checks on a vector that enters a space (a model's or a
collection's): its space tag, its length, its values."""

from __future__ import annotations

import numpy as np

from embedsvc.errors import EmbedsvcError, Reason

# The largest magnitude a component of a vector entering a space may have. FAISS computes squared distances in float32,
# which vectors with components near 1e19 overflow (to inf and NaN), and its k-means then aborts the whole process
# (an IVF collection's training); embeddings are many orders of magnitude smaller. At 1e15 a component, the squared
# norm of even 100,000 components stays under 1e35 (float32's largest is 3.4e38).
MAX_COMPONENT = 1e15


def _values_error(values: np.ndarray, what: str, field: str) -> EmbedsvcError | None:
    """None when every component is finite and within MAX_COMPONENT; else NOT_FINITE or LIMIT_EXCEEDED for `what`."""
    largest = float(np.abs(values).max(initial=0.0))  # NaN when any component is NaN
    if largest <= MAX_COMPONENT:
        return None
    if not np.isfinite(values).all():
        return EmbedsvcError(Reason.NOT_FINITE, f"{what} has NaN or infinite components", field=field)
    return EmbedsvcError(
        Reason.LIMIT_EXCEEDED,
        f"{what} has a component of magnitude {largest:.3g}, over the limit of {MAX_COMPONENT:.0e}",
        field=field,
        metadata={"limit": f"{MAX_COMPONENT:.0e}", "actual": f"{largest:.6g}"},
    )


def unit_rows(rows: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """Each row divided by its L2 norm, in the rows' own dtype (float32 rows give gensim's unit vectors bit for bit);
    zero rows stay zero. `norms` (one per row) when the caller has them already."""
    norms = np.linalg.norm(rows, axis=1) if norms is None else norms
    column = norms[:, None]
    return np.divide(rows, column, out=np.zeros(rows.shape, rows.dtype), where=column > 0)


def check_vector(
    vector: np.ndarray, tag: str, *, space: str, dimension: int, owner: str, field: str, also: tuple[str, ...] = ()
) -> np.ndarray:
    """The vector as float32, or SPACE_MISMATCH / DIMENSION_MISMATCH / NOT_FINITE / LIMIT_EXCEEDED (a component over
    MAX_COMPONENT).

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
    error = _values_error(vector, "the vector", field + ".values")
    if error is not None:
        raise error
    return vector.astype(np.float32, copy=False)


def packed_rows(values: np.ndarray, *, dimension: int, owner: str, field: str) -> np.ndarray:
    """A flat float32 array sent packed (`packed_*` fields) as its (n, dimension) rows, every component finite and
    within MAX_COMPONENT."""
    if values.ndim != 1 or values.size % dimension:
        raise EmbedsvcError(
            Reason.DIMENSION_MISMATCH,
            f"{field} has {values.size} float32 values, not whole rows of {dimension} ({owner})",
            field=field,
            metadata={"expected": str(dimension), "actual": str(values.size)},
        )
    rows = values.reshape(-1, dimension)
    if _values_error(rows, "", field) is not None:
        bad = int(np.flatnonzero(~(np.abs(rows) <= MAX_COMPONENT).all(axis=1))[0])
        error = _values_error(rows[bad], f"row {bad}", field)
        assert error is not None
        raise error
    return rows
