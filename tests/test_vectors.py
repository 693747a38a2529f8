"""The checks on a vector entering a space (vectors.py): finite components, and none past MAX_COMPONENT, whose
squares would overflow FAISS's float32 distances (its k-means then aborts the process: an IVF collection's training)."""

import numpy as np
import pytest

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.vectors import MAX_COMPONENT, check_vector, packed_rows


def reason(call):
    with pytest.raises(EmbedsvcError) as caught:
        call()
    return caught.value


def test_components_up_to_the_limit_pass_and_beyond_it_are_refused_with_the_limit():
    ok = np.full(4, MAX_COMPONENT, np.float32)
    assert check_vector(ok, "", space="s", dimension=4, owner="o", field="v").dtype == np.float32
    huge = np.array([0, -1e19, 0, 0], np.float32)
    error = reason(lambda: check_vector(huge, "", space="s", dimension=4, owner="o", field="v"))
    assert error.reason is Reason.LIMIT_EXCEEDED and error.field == "v.values"
    assert error.metadata == {"limit": "1e+15", "actual": "1e+19"}


def test_nan_and_infinity_stay_not_finite_even_beside_a_huge_component():
    for bad in (np.nan, np.inf, -np.inf):
        values = np.array([1e30, bad, 0, 0], np.float32)
        assert reason(lambda v=values: check_vector(v, "", space="s", dimension=4, owner="o", field="v")).reason is (
            Reason.NOT_FINITE
        )


def test_packed_rows_name_the_first_bad_row_and_its_reason():
    rows = np.zeros((5, 4), np.float32)
    rows[2, 1] = 3e16
    rows[4, 0] = np.nan
    error = reason(lambda: packed_rows(rows.ravel(), dimension=4, owner="o", field="packed"))
    assert error.reason is Reason.LIMIT_EXCEEDED and "row 2" in str(error) and error.field == "packed"
    rows[1, 3] = np.inf
    error = reason(lambda: packed_rows(rows.ravel(), dimension=4, owner="o", field="packed"))
    assert error.reason is Reason.NOT_FINITE and "row 1" in str(error)
    assert packed_rows(np.ones(8, np.float32), dimension=4, owner="o", field="p").shape == (2, 4)
