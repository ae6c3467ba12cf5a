"""bundle/contract/plain.py: JSON records and columns straight to the canonical frame.

The fast path must never disagree with the full one: whenever it accepts an input, the
frame is exactly the full path's (values, dtypes, index), and whatever the full path refuses
or converts with a warning, the fast path leaves to it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bundle import SchemaError
from bundle.contract import infer_schema
from bundle.contract.plain import plain_frame

EXAMPLE = pd.DataFrame(
    {
        "f": [0.5, 1.5, -2.0, 3.25],
        "fm": [1.0, np.nan, 2.0, 4.0],  # missing values seen: allowed
        "i": np.array([1, 2, 3, 4], dtype=np.int64),
        "b": [True, False, True, True],
        "s": pd.array(["a", "b", "c", "a"], dtype="str"),
        "o": np.array(["x", "y", "x", "y"], dtype=object),
        "c": pd.Categorical(["lo", "hi", "lo", "mid"], categories=["lo", "mid", "hi"]),
    }
)


@pytest.fixture(scope="module")
def schema():
    return infer_schema(EXAMPLE, closed_categories={"o": ["x", "y"]})


def fast(schema, raw):
    return plain_frame(schema.columns, schema._known_sets, schema._index, schema._names, raw)


def full(schema, raw):
    """The full path's answer: the same input in a form the fast path does not take."""
    if isinstance(raw, list):
        raw = tuple(raw)
    elif all(isinstance(v, list) for v in raw.values()):
        raw = {k: tuple(v) for k, v in raw.items()}
    else:  # one row: as one-row columns
        raw = {k: (v,) for k, v in raw.items()}
    assert fast(schema, raw) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return schema.coerce(raw), [w.message for w in caught]
        except SchemaError as exc:
            return exc, [w.message for w in caught]


ROW = {"f": 1.0, "fm": 2.0, "i": 3, "b": False, "s": "b", "o": "y", "c": "mid"}


def test_a_typical_row_takes_the_fast_path_and_equals_the_full_one(schema):
    for raw in ([ROW, {**ROW, "fm": None}], ROW, {k: [v, v] for k, v in ROW.items()}):
        got = fast(schema, raw)
        assert got is not None
        expected, caught = full(schema, raw)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert got.dtypes.tolist() == expected.dtypes.tolist() and not caught
        pd.testing.assert_frame_equal(schema.coerce(raw), expected, check_exact=True)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"f": None}, "missing where training had none"),
        ({"f": math.nan}, "NaN where training had none"),
        ({"f": "1.5"}, "text to parse"),
        ({"f": True}, "a bool in a float column"),
        ({"f": 2**60}, "an integer not exact as float64"),
        ({"i": 1.0}, "a float in an int column"),
        ({"i": 2**64}, "an integer past int64"),
        ({"i": None}, "missing in an int column"),
        ({"b": 1}, "a number in a bool column"),
        ({"s": None}, "missing text"),
        ({"s": 3}, "a number in a text column"),
        ({"o": "z"}, "a category the encoder refuses"),
        ({"c": "huge"}, "a value the categorical dtype cannot hold"),
        ({"extra": 1}, "a column training did not have"),
    ],
)
def test_anything_to_convert_or_refuse_goes_to_the_full_path(schema, change, why):
    row = {**ROW, **change}
    assert fast(schema, [row]) is None, why
    if "extra" not in change:
        assert fast(schema, {k: [v] for k, v in row.items()}) is None, why
        row.pop("i" if "f" in change else "f")
        assert fast(schema, [row]) is None  # a column missing


def test_shapes_the_fast_path_leaves_alone(schema):
    assert fast(schema, []) is None
    assert fast(schema, [ROW, [1, 2]]) is None
    assert fast(schema, {**{k: [v] for k, v in ROW.items()}, "f": 1.0}) is None  # mixed
    assert fast(schema, {k: [v, v] if k != "f" else [v] for k, v in ROW.items()}) is None
    assert fast(schema, {k: np.array([[v]]) for k, v in ROW.items()}) is None
    assert fast(schema, [ROW, ROW, ROW]).shape == (3, 7)


def test_numpy_columns_of_the_training_dtypes(schema):
    columns = {
        "f": np.array([1.0, 2.0]),
        "fm": np.array([np.nan, 2.0]),
        "i": np.array([1, 2], dtype=np.int64),
        "b": np.array([True, False]),
        "s": np.array(["a", "c"], dtype=object),
        "o": np.array(["x", "x"], dtype=object),
        "c": np.array(["lo", "hi"], dtype=object),
    }
    got = fast(schema, columns)
    assert got is not None
    columns["f"][0] = 99.0  # the frame does not share the caller's memory
    assert got["f"].tolist() == [1.0, 2.0]
    expected = schema.coerce(pd.DataFrame({k: list(v) for k, v in columns.items()}))
    expected.loc[0, "f"] = 1.0
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert fast(schema, {**columns, "i": np.array([1.0, 2.0])}) is None  # float for int64


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a", "b", "c", "x", "y", "z", "lo", "mid", "hi", "", "1.5"]),
)
# Mostly values of the column's own type (so the fast path often answers), some anything.
OWN = {
    "f": st.floats(allow_nan=False, allow_infinity=True) | st.integers(-(2**53), 2**53),
    "fm": st.floats(allow_nan=True) | st.none() | st.integers(-5, 5),
    "i": st.integers(-(2**63), 2**63 - 1),
    "b": st.booleans(),
    "s": st.sampled_from(["a", "b", "c", "never seen", "a"]),
    "o": st.sampled_from(["x", "y"]),
    "c": st.sampled_from(["lo", "mid", "hi"]),
}
rows = st.fixed_dictionaries(
    {
        name: st.integers(0, 19).flatmap(lambda k, own=OWN[name]: values if k == 0 else own)
        for name in EXAMPLE.columns
    }
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(rows, min_size=1, max_size=4), as_columns=st.booleans())
def test_the_fast_path_agrees_with_the_full_path(schema, records, as_columns):
    """Property: when the fast path answers, the full path gives the same frame, silently."""
    raw = {k: [r[k] for r in records] for k in EXAMPLE.columns} if as_columns else records
    got = fast(schema, raw)
    expected, caught = full(schema, raw)
    event("fast path" if got is not None else "full path only")
    if got is None:
        return
    assert not isinstance(expected, Exception), f"fast accepted what full refuses: {expected}"
    assert not caught
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.dtypes.tolist() == expected.dtypes.tolist()
