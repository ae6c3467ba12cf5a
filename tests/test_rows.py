"""bundle/contract/rows.py: the one way rows of canonical values are counted, cut, joined."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bundle.contract import concat_rows, n_rows, slice_rows


def test_every_form_is_counted_sliced_and_joined_alike():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": list("wxyz")}, index=[7, 8, 9, 10])
    array = np.arange(12.0).reshape(4, 3)
    forms = [frame, array, {"x": array, "t": frame}, [array, array * 2]]
    for value in forms:
        assert n_rows(value) == 4
        head, tail = slice_rows(value, 0, 1), slice_rows(value, 1, 4)
        assert n_rows(head) == 1 and n_rows(tail) == 3
        joined = concat_rows([head, tail])
        if isinstance(value, dict):
            np.testing.assert_array_equal(joined["x"], array)
            assert joined["t"]["b"].tolist() == list("wxyz")
            assert list(joined["t"].index) == [0, 1, 2, 3]  # a fresh index, never realigned
        elif isinstance(value, list):
            np.testing.assert_array_equal(joined[1], array * 2)
        elif isinstance(value, pd.DataFrame):
            assert joined["a"].tolist() == [1.0, 2.0, 3.0, 4.0]
        else:
            np.testing.assert_array_equal(joined, array)
    assert slice_rows(None, 0, 3) is None
    assert concat_rows([array]) is array
    assert n_rows({}) == 0
