"""Tests for bundle/contract/: infer the input contract, validate and coerce raw input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle.contract import (
    MAX_CATEGORIES,
    ArraySchema,
    InputSchema,
    MultiInputSchema,
    TabularSchema,
    infer_schema,
    schema_from_hints,
)
from bundle.errors import ExtraColumnsWarning, ManifestError, SchemaError

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- fixtures


def churn_frame() -> pd.DataFrame:
    """One column of every kind, as a training script would have it."""
    return pd.DataFrame(
        {
            "age": np.array([31, 45, 27, 60], dtype=np.int64),
            "monthly_spend": [10.5, np.nan, 99.0, 42.0],
            "tenure_months": np.array([1, 24, 7, 60], dtype=np.int16),
            "city": ["Berlin", "Paris", "Rome", "Paris"],
            "plan": pd.Categorical(["basic", "pro", "basic", "plus"], ["basic", "plus", "pro"]),
            "signup": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]),
            "active": [True, False, True, True],
            "note": pd.Series(["a", None, "b", "c"], dtype=object),
            "weight": np.array([1.0, 2.5, 3.0, 4.0], dtype=np.float32),
        }
    )


@pytest.fixture
def churn() -> pd.DataFrame:
    return churn_frame()


@pytest.fixture
def schema(churn: pd.DataFrame) -> TabularSchema:
    return infer_schema(churn, closed_categories={"city": ["Berlin", "Paris", "Rome"]})


@pytest.fixture
def image_schema() -> ArraySchema:
    return infer_schema(np.zeros((4, 28, 28, 1), dtype=np.float32))


@pytest.fixture
def vector_schema() -> ArraySchema:
    return infer_schema(np.zeros((4, 10), dtype=np.float32))


def record(**changes: object) -> dict:
    """One valid JSON record for the churn schema, with `changes` applied."""
    row = {
        "age": 40,
        "monthly_spend": 12.5,
        "tenure_months": 3,
        "city": "Rome",
        "plan": "pro",
        "signup": "2024-05-01T12:00:00",
        "active": False,
        "note": "x",
        "weight": 1.5,
    }
    row.update(changes)
    return row


def all_schemas() -> dict[str, InputSchema]:
    frame = churn_frame()
    return {
        "tabular": infer_schema(frame, closed_categories={"city": ["Berlin", "Paris", "Rome"]}),
        "array": infer_schema(np.zeros((2, 28, 28, 1), dtype=np.float32)),
        "strings": infer_schema(np.array([["a"], ["b"]], dtype=object)),
        "multi": infer_schema({"image": np.zeros((4, 8), np.float32), "meta": frame}),
        "nullable": infer_schema(
            pd.DataFrame(
                {
                    "i": pd.array([1, None], dtype="Int64"),
                    "b": pd.array([True, None], dtype="boolean"),
                    "f": pd.array([1.5, None], dtype="Float64"),
                    "s": pd.array(["a", None], dtype="string[pyarrow]"),
                    "p": pd.Series(["a", "b"], dtype=pd.ArrowDtype(pa.string())),
                    "t": pd.to_datetime(["2024-01-01T00:00:00Z", None]),
                }
            )
        ),
        "hints": schema_from_hints(
            feature_names=["a", "b"], categories={"b": ["x", "y"]}, closed_categories={"b": ["x"]}
        ),
        "model_inputs": schema_from_hints(
            model_inputs={"img": ((None, 3), "float32"), "txt": ((1,), "string")}
        ),
    }


# --------------------------------------------------------------------------- inference


def test_infer_tabular_records_kind_dtype_missing_categories_and_range(schema):
    columns = {column.name: column for column in schema.columns}
    assert schema.kind == "tabular"
    assert schema.names == list(churn_frame().columns)
    assert {name: c.kind for name, c in columns.items()} == {
        "age": "integer",
        "monthly_spend": "float",
        "tenure_months": "integer",
        "city": "string",
        "plan": "categorical",
        "signup": "datetime",
        "active": "bool",
        "note": "string",
        "weight": "float",
    }
    assert columns["tenure_months"].dtype == "int16"
    assert columns["weight"].dtype == "float32"
    assert columns["city"].dtype == f"str[{churn_frame()['city'].dtype.storage}]"
    assert columns["note"].dtype == "object"
    assert columns["monthly_spend"].has_missing and not columns["age"].has_missing
    assert (columns["age"].minimum, columns["age"].maximum) == (27, 60)
    assert (columns["monthly_spend"].minimum, columns["monthly_spend"].maximum) == (10.5, 99.0)
    assert columns["city"].categories == ("Berlin", "Paris", "Rome")
    assert columns["city"].closed_categories == ("Berlin", "Paris", "Rome")
    assert columns["plan"].dtype_categories == ("basic", "plus", "pro")
    assert columns["note"].missing_value == "none"


def test_infer_records_nan_as_the_missing_value_of_an_object_column():
    frame = pd.DataFrame({"note": pd.Series(["a", np.nan], dtype=object)})
    assert infer_schema(frame).columns[0].missing_value == "nan"


def test_infer_caps_categories_and_flags_truncation():
    frame = pd.DataFrame({"id": [f"user-{i:05d}" for i in range(MAX_CATEGORIES + 1)]})
    column = infer_schema(frame).columns[0]
    assert len(column.categories) == MAX_CATEGORIES and column.categories_truncated


def test_infer_array_records_sample_shape_dtype_and_nan():
    example = np.zeros((5, 28, 28, 1), dtype=np.float32)
    example[0, 0, 0, 0] = np.nan
    schema = infer_schema(example)
    assert (schema.kind, schema.shape, schema.dtype) == ("array", (28, 28, 1), "float32")
    assert schema.value_kind == "float" and schema.has_missing


def test_infer_multi_keys_one_schema_per_model_input():
    image, meta = np.zeros((4, 8), np.float32), churn_frame()
    schema = infer_schema([image, meta], input_names=["image", "meta"])
    assert isinstance(schema, MultiInputSchema)
    assert isinstance(schema.inputs["image"], ArraySchema)
    assert isinstance(schema.inputs["meta"], TabularSchema)
    assert infer_schema({"meta": meta, "image": image}, input_names=["image", "meta"]) == schema


def test_infer_missing_handled_allows_nan_the_example_did_not_have(churn):
    schema = infer_schema(churn, missing_handled=["age"])
    assert schema.coerce([record(age=None)])["age"].isna().all()
    arrays = infer_schema(np.zeros((2, 3)), missing_handled=["*", "0"])  # "0": a step's name
    assert np.isnan(arrays.coerce([[np.nan, 1, 2]])).any()


def test_infer_closed_categories_with_a_missing_value_accept_missing(churn):
    schema = infer_schema(churn, closed_categories={"city": ["Berlin", "Rome", np.nan]})
    city = schema.columns[3]
    assert city.closed_categories == ("Berlin", "Rome") and city.missing_handled


def test_infer_refuses_hints_about_columns_the_example_lacks(churn):
    with pytest.raises(
        ValueError, match=r"missing_handled names 1 column not in the example:\n- agee"
    ):
        infer_schema(churn, missing_handled=["agee"])


def test_infer_refuses_examples_it_cannot_read():
    with pytest.raises(TypeError, match=r"pass a pandas DataFrame, a numpy array"):
        infer_schema([[1, 2]])
    with pytest.raises(ValueError, match="batch axis"):
        infer_schema(np.array(1.0))


def test_schema_from_hints_without_an_example():
    tabular = schema_from_hints(feature_names=["a", "b"], closed_categories={"b": ["x"]})
    assert [c.kind for c in tabular.columns] == ["any", "any"]
    assert tabular.columns[1].closed_categories == ("x",)
    assert schema_from_hints(n_features=3) == ArraySchema(shape=(3,))
    single = schema_from_hints(model_inputs={"x": ((None, 3), "float32")})
    assert single == ArraySchema((None, 3), "float32", "float", None, False)
    multi = schema_from_hints(model_inputs={"a": ((2,), "float32"), "b": ((1,), "string")})
    assert isinstance(multi, MultiInputSchema) and multi.inputs["b"].value_kind == "string"
    assert schema_from_hints() is None


def test_hinted_columns_are_accepted_as_given_but_closed_ones_are_checked():
    schema = schema_from_hints(feature_names=["a", "b"], closed_categories={"b": ["x", "y"]})
    frame = schema.coerce([{"a": "anything", "b": "x"}])
    assert frame.to_dict("records") == [{"a": "anything", "b": "x"}]
    with pytest.raises(SchemaError, match=r"Column 'b' has 1 value never seen at training"):
        schema.coerce([{"a": 1, "b": "z"}])


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", list(all_schemas()))
def test_to_dict_from_dict_round_trips_through_json(name):
    schema = all_schemas()[name]
    text = json.dumps(schema.to_dict(), allow_nan=False)
    assert InputSchema.from_dict(json.loads(text)) == schema


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "table"}, "unknown kind 'table'; known kinds: tabular, array, image, multi"),
        ({"extra": 1}, "Unknown keys in a tabular schema: extra"),
        ({"columns": [{"name": "a", "kind": "float", "dtype": "float64", "x": 1}]}, "Unknown keys"),
        ({"columns": [{"name": "a", "kind": "float"}]}, "Missing keys in a column: dtype"),
        ({"columns": [{"name": "a", "kind": "float", "dtype": "flaot64"}]}, "unknown dtype"),
        ({"columns": [{"name": "a", "kind": "number", "dtype": "float64"}]}, "Unknown column kind"),
        (
            {"columns": [{"name": "a", "kind": "float", "dtype": "float64", "has_missing": "no"}]},
            r"Values of the wrong type in a column: has_missing='no'",
        ),
        (
            {"columns": [{"name": "a", "kind": "any", "dtype": None}] * 2},
            "Column names must be unique; repeated: a",
        ),
        (
            {"columns": {"a": 1}},
            r"Values of the wrong type in a tabular schema: columns=\{'a': 1\}",
        ),
    ],
)
def test_from_dict_is_strict(change, message):
    with pytest.raises(ManifestError, match=message) as caught:
        InputSchema.from_dict({"kind": "tabular", "columns": [], **change})
    assert str(caught.value).startswith("The manifest's input_schema is not one keras-bundle")
    assert not isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "schema",
    [
        None,
        [],
        {"kind": 3},
        {"kind": "array"},
        {"kind": "array", "shape": "x", "dtype": "float32"},
        {"kind": "tabular", "columns": [None]},
        {
            "kind": "tabular",
            "columns": [{"name": "a", "kind": "categorical", "dtype": "category", "categories": 5}],
        },
        {"kind": "multi", "inputs": {"a": {"kind": "multi"}}},
        {"kind": "multi", "inputs": [1]},
    ],
)
def test_a_malformed_schema_is_a_manifest_error_never_a_raw_exception(schema):
    with pytest.raises(ManifestError, match=r"^The manifest's input_schema is not one"):
        InputSchema.from_dict(schema)


def test_schema_restores_exact_training_dtypes_after_a_round_trip():
    schema = all_schemas()["nullable"]
    restored = InputSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    rows = [{"i": 1, "b": True, "f": 2.0, "s": "q", "p": "r", "t": "2024-01-01T00:00:00Z"}]
    assert (
        restored.coerce(rows).dtypes.to_dict()
        == schema.coerce(rows).dtypes.to_dict()
        == {
            "i": pd.Int64Dtype(),
            "b": pd.BooleanDtype(),
            "f": pd.Float64Dtype(),
            "s": pd.StringDtype("pyarrow"),
            "p": pd.ArrowDtype(pa.string()),
            "t": pd.DatetimeTZDtype("us", "UTC"),
        }
    )


# --------------------------------------------------------------------------- accepted forms


def test_a_canonical_frame_passes_through_unchanged(schema, churn):
    pd.testing.assert_frame_equal(schema.coerce(churn), churn)


@pytest.mark.parametrize(
    "form",
    ["records", "columnar", "one_row_dict", "series", "rows", "object_array", "reordered"],
)
def test_every_accepted_tabular_form_gives_the_same_canonical_frame(schema, form):
    rows = [record(), record(age=41, city="Paris", note=None, monthly_spend=None)]
    expected = schema.coerce(pd.DataFrame(rows))
    names = schema.names
    raw = {
        "records": rows,
        "columnar": {name: [row[name] for row in rows] for name in names},
        "one_row_dict": rows[0],
        "series": pd.Series(rows[0]),
        "rows": [[row[name] for name in names] for row in rows],
        "object_array": np.array([[row[name] for name in names] for row in rows], dtype=object),
        "reordered": pd.DataFrame(rows)[names[::-1]],
    }[form]
    got = schema.coerce(raw)
    pd.testing.assert_frame_equal(got, expected.iloc[: len(got)])


def test_empty_input_gives_an_empty_canonical_result(schema, churn, image_schema):
    for raw in ([], churn.iloc[:0], {name: [] for name in schema.names}):
        empty = schema.coerce(raw)
        assert len(empty) == 0 and list(empty.columns) == schema.names
        assert empty.dtypes.to_dict() == churn.dtypes.to_dict()
    for raw in ([], np.zeros((0, 28, 28, 1))):
        array = image_schema.coerce(raw)
        assert array.shape == (0, 28, 28, 1) and array.dtype == np.float32


# --------------------------------------------------------------------------- coercions


def test_coerce_int_and_bool_to_float(schema):
    frame = schema.coerce([record(monthly_spend=12), record(monthly_spend=True)])
    assert frame["monthly_spend"].dtype == np.float64
    assert frame["monthly_spend"].tolist() == [12.0, 1.0]


def test_coerce_float64_to_float32_when_training_used_float32(schema, vector_schema):
    assert schema.coerce([record(weight=0.1)])["weight"].dtype == np.float32
    array = vector_schema.coerce(np.full((2, 10), 0.1, dtype=np.float64))
    assert array.dtype == np.float32 and np.allclose(array, 0.1)


def test_coerce_int_to_narrower_int_only_when_every_value_fits(schema):
    frame = schema.coerce(
        pd.DataFrame([record(tenure_months=300)]).astype({"tenure_months": "int64"})
    )
    assert frame["tenure_months"].dtype == np.int16
    with pytest.raises(SchemaError, match=r"Column 'tenure_months' expects values that fit int16"):
        schema.coerce([record(tenure_months=40_000)])


@pytest.mark.parametrize(
    "value", [-(2**63) - 1, 2**63, "-9223372036854775809", "9223372036854775808", -(2**70)]
)
def test_int64_bounds_are_exact_on_both_sides(value):
    """Beyond int64, a JSON int or numeric text parses to float64, where -2**63 - 1 rounds
    to -2**63: the bound is checked on the exact integer, below as above."""
    schema = infer_schema(pd.DataFrame({"count": np.array([1, 2], "int64"), "x": [0.5, 1.5]}))
    expected = (
        r"Column 'count' expects values that fit int64 \(-9,223,372,036,854,775,808 to "
        r"9,223,372,036,854,775,807\), but 1 of 1 value is not in range:\n- row 0: "
    )
    for raw in ([{"count": value, "x": 1.0}], {"count": [value], "x": [1.0]}):
        with pytest.raises(SchemaError, match=expected):
            schema.coerce(raw)
    edge = schema.coerce([{"count": -(2**63), "x": 1.0}, {"count": 2**63 - 1, "x": 1.0}])
    assert edge["count"].tolist() == [-(2**63), 2**63 - 1]
    array = infer_schema(np.zeros((1, 2), "int64"))
    with pytest.raises(SchemaError, match=r"fit int64 .*\n- index \(0, 0\): "):
        array.coerce([[value, 1]])


def test_coerce_int_to_uint8_when_it_fits():
    schema = infer_schema(np.zeros((2, 4), dtype=np.uint8))
    assert schema.coerce([[0, 1, 2, 255]]).dtype == np.uint8
    with pytest.raises(
        SchemaError, match=r"expects values that fit uint8 \(0 to 255\).*\n- index \(0, 0\): -1"
    ):
        schema.coerce([[-1, 1, 2, 256]])


def test_coerce_whole_floats_to_int(schema):
    assert schema.coerce([record(age=52.0)])["age"].tolist() == [52]


def test_coerce_numeric_strings_only_when_every_value_converts(schema):
    frame = schema.coerce([record(age="52", monthly_spend="3.5")])
    assert frame[["age", "monthly_spend"]].to_dict("records") == [{"age": 52, "monthly_spend": 3.5}]
    with pytest.raises(SchemaError, match=r"Column 'age' expects integers \(int64\)"):
        schema.coerce([record(age="52"), record(age="fifty")])


@pytest.mark.parametrize(
    ("column", "raw_dtype", "values"),
    [
        ("age", "Int64", [1, 2]),
        ("age", "int64[pyarrow]", [1, 2]),
        ("monthly_spend", "Float64", [1.5, None]),
        ("monthly_spend", "double[pyarrow]", [1.5, None]),
        ("active", "boolean", [True, False]),
        ("active", "bool[pyarrow]", [True, False]),
        ("city", "string[pyarrow]", ["Rome", "Paris"]),
        ("city", "string", ["Rome", "Paris"]),
        ("city", pd.ArrowDtype(pa.large_string()), ["Rome", "Paris"]),
        ("note", "string[pyarrow]", ["x", None]),
        ("plan", "string[pyarrow]", ["pro", "basic"]),
    ],
)
def test_coerce_nullable_and_pyarrow_dtypes_to_the_training_dtype(
    schema, churn, column, raw_dtype, values
):
    raw = pd.DataFrame([record(), record()])
    raw[column] = pd.array(values, dtype=raw_dtype)
    frame = schema.coerce(raw)
    assert frame[column].dtype == churn[column].dtype
    expected = [None if value is None else value for value in values]
    got = [None if pd.isna(value) else value for value in frame[column]]
    assert got == expected


def test_coerce_gives_missing_values_the_sentinel_training_used():
    example = pd.DataFrame(
        {
            "none": pd.Series(["a", None], dtype=object),
            "nan": pd.Series(["a", np.nan], dtype=object),
        }
    )
    schema = infer_schema(example)
    raw = pd.DataFrame({"none": pd.array([pd.NA, "b"], dtype="string"), "nan": [None, "b"]})
    frame = schema.coerce(raw)
    assert frame["none"].iloc[0] is None
    assert isinstance(frame["nan"].iloc[0], float) and np.isnan(frame["nan"].iloc[0])


def test_coerce_an_int_column_with_allowed_missing_values_to_float64(churn):
    schema = infer_schema(churn, missing_handled=["age"])
    frame = schema.coerce([record(age=None), record(age=3)])
    assert frame["age"].dtype == np.float64 and frame["age"].isna().tolist() == [True, False]


def test_coerce_strings_to_the_training_categorical_dtype(schema, churn):
    frame = schema.coerce([record(plan="plus")])
    assert frame["plan"].dtype == churn["plan"].dtype and frame["plan"].tolist() == ["plus"]


def test_coerce_datetimes_from_iso_strings_and_other_timezones():
    example = pd.DataFrame(
        {"naive": pd.to_datetime(["2024-01-01"]), "utc": pd.to_datetime(["2024-01-01T00:00Z"])}
    )
    schema = infer_schema(example)
    raw = pd.DataFrame(
        {
            "naive": ["2024-05-01T12:00:00"],
            "utc": pd.to_datetime(["2024-05-01T12:00:00"]).tz_localize("Europe/Berlin"),
        }
    )
    frame = schema.coerce(raw)
    assert frame.dtypes.to_dict() == example.dtypes.to_dict()
    assert frame["utc"].iloc[0] == pd.Timestamp("2024-05-01T10:00:00Z")


def test_coerce_adds_the_batch_axis_to_a_single_sample(image_schema, vector_schema, schema):
    assert image_schema.coerce(np.zeros((28, 28, 1))).shape == (1, 28, 28, 1)
    assert vector_schema.coerce([0.0] * 10).shape == (1, 10)
    assert infer_schema(np.zeros(5)).coerce(3.0).shape == (1,)
    assert (
        len(schema.coerce(np.array([record()[name] for name in schema.names], dtype=object))) == 1
    )


def test_coerce_text_arrays_to_the_training_object_dtype():
    schema = infer_schema(np.array([["a"], ["b"]], dtype=object))
    array = schema.coerce([["hello"], ["world"]])
    assert array.dtype == object and array.tolist() == [["hello"], ["world"]]
    assert schema.coerce(["one"]).shape == (1, 1)


def test_coerce_reorders_dataframe_columns_by_name(schema, churn):
    shuffled = churn[list(reversed(churn.columns))]
    assert list(schema.coerce(shuffled).columns) == list(churn.columns)


def test_coerce_drops_extra_columns_with_one_warning_naming_them(schema, churn):
    raw = churn.assign(zip_code="10115", customer_id=1)
    with pytest.warns(
        ExtraColumnsWarning, match=r"Ignoring 2 input columns.*\n- customer_id\n- zip_code"
    ) as caught:
        frame = schema.coerce(raw)
    assert len(caught) == 1 and caught[0].message.extra == ["zip_code", "customer_id"]
    assert list(frame.columns) == list(churn.columns)


def test_coerce_takes_an_array_positionally_for_a_tabular_schema():
    schema = infer_schema(pd.DataFrame({"b": [1.0], "a": [2.0]}))
    frame = schema.coerce(np.array([[10.0, 20.0]]))
    assert frame.to_dict("records") == [{"b": 10.0, "a": 20.0}]


def test_coerce_keeps_the_index_of_a_dataframe(schema, churn):
    raw = churn.set_axis(["a", "a", "b", "c"]).astype({"age": "float64"})
    assert list(schema.coerce(raw).index) == ["a", "a", "b", "c"]


def test_coerce_multi_input_dict(churn):
    schema = infer_schema({"image": np.zeros((4, 8), np.float32), "meta": churn})
    canonical = schema.coerce({"image": np.ones((2, 8)), "meta": [record(), record()]})
    assert canonical["image"].dtype == np.float32 and len(canonical["meta"]) == 2
    assert schema.n_rows(canonical) == 2


# --------------------------------------------------------------------------- refusals


def test_refuse_missing_columns_listing_all_with_a_certain_did_you_mean(schema, churn):
    raw = churn.drop(columns=["monthly_spend", "tenure_months"]).assign(monthly_spnd=1.0)
    expected = (
        "Input is missing 2 of the 9 columns that the bundle expects:\n"
        "- monthly_spend\n- tenure_months\n"
        "The input also has 1 column the bundle does not know:\n"
        "- monthly_spnd  (did you mean 'monthly_spend'?)\n"
        "Rename or add these columns. Column order does not matter for a DataFrame."
    )
    with pytest.raises(SchemaError, match=re.escape(expected)) as caught:
        schema.coerce(raw)
    assert caught.value.column == "monthly_spend"


def test_no_did_you_mean_when_the_match_is_ambiguous():
    schema = infer_schema(pd.DataFrame({"color_a": [1.0], "color_b": [1.0]}))
    with pytest.raises(SchemaError, match=r"- color_c\nRename") as caught:
        schema.coerce(pd.DataFrame({"color_c": [1.0]}))
    assert "did you mean" not in str(caught.value)


def test_refuse_unknown_columns_with_strict(schema, churn):
    with pytest.raises(SchemaError, match=r"Input has 1 column the bundle does not know:\n- zip\n"):
        schema.coerce(churn.assign(zip="1"), strict=True)


def test_refuse_wrong_feature_count_with_both_shapes(vector_schema):
    expected = (
        "Input has shape (32, 9), but the bundle expects (None, 10): "
        "9 features per sample instead of 10."
    )
    with pytest.raises(SchemaError, match=re.escape(expected)) as caught:
        vector_schema.coerce(np.zeros((32, 9)))
    assert caught.value.column == "axis 1"


def test_refuse_wrong_column_count_for_positional_tabular_input(schema):
    with pytest.raises(
        SchemaError,
        match=r"Input has shape \(2, 8\), but the bundle expects \(None, 9\): "
        r"8 columns instead of 9\.\n"
        r"Array input is matched to the columns by position, in training order:\n- age\n",
    ):
        schema.coerce(np.zeros((2, 8)))


def test_refuse_a_flattened_image_with_a_reshape_hint(image_schema):
    expected = (
        "Input has shape (1, 784), but the bundle expects (None, 28, 28, 1).\n"
        "784 = 28*28*1: the image looks flattened. Use x.reshape(-1, 28, 28, 1)."
    )
    with pytest.raises(SchemaError, match=re.escape(expected)):
        image_schema.coerce(np.zeros((1, 784)))


@pytest.mark.parametrize("shape", [(1, 783), (1, 785), (784, 1), (2, 28, 28, 3)])
def test_no_reshape_hint_when_the_sizes_do_not_match(image_schema, shape):
    with pytest.raises(SchemaError, match=r"Pass an array of shape \(n, 28, 28, 1\)") as caught:
        image_schema.coerce(np.zeros(shape))
    assert "reshape" not in str(caught.value) and "moveaxis" not in str(caught.value)


def test_refuse_a_missing_channel_axis_with_a_hint(image_schema):
    with pytest.raises(
        SchemaError, match=r"The channel axis is missing\. Use x\.reshape\(-1, 28, 28, 1\)"
    ):
        image_schema.coerce(np.zeros((5, 28, 28)))


def test_refuse_channels_first_images_with_a_moveaxis_hint():
    schema = infer_schema(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(
        SchemaError, match=r"looks first \(channels-first\).*np\.moveaxis\(x, 1, -1\)"
    ):
        schema.coerce(np.zeros((4, 3, 32, 32)))


def test_refuse_strings_in_a_numeric_column_naming_values_and_rows(schema):
    rows = [record(), record(age="n/a"), record(), record(age="abc")]
    expected = (
        "Column 'age' expects integers (int64), but 2 of 4 values are not numbers:\n"
        "- row 1: 'n/a'\n- row 3: 'abc'\n"
    )
    with pytest.raises(SchemaError, match=re.escape(expected)) as caught:
        schema.coerce(rows)
    assert caught.value.column == "age"


def test_refuse_missing_values_where_training_had_none(schema):
    rows = [record(), record(age=None), record(age=np.nan)]
    expected = (
        "Column 'age' has missing values (NaN/None) in 2 of 3 rows (rows 1, 2), but the training "
        "example had none and no preprocessing step imputes them.\n"
        "Fill or drop these rows before predicting."
    )
    with pytest.raises(SchemaError, match=re.escape(expected)):
        schema.coerce(rows)


def test_refuse_nan_in_an_array_where_training_had_none(vector_schema):
    raw = np.zeros((3, 10))
    raw[2, 4] = np.nan
    with pytest.raises(
        SchemaError, match=r"Input has missing values \(NaN/None\) in 1 of 3 samples \(sample 2\)"
    ):
        vector_schema.coerce(raw)


def test_refuse_a_category_never_seen_in_a_closed_column(schema):
    rows = [record(city="Lisbon"), record(city="Oslo"), record(city="Lisbon")]
    expected = (
        "Column 'city' has 2 values never seen at training, which its encoder refuses:\n"
        "- 'Lisbon'  (2 rows)\n- 'Oslo'  (1 row)\n"
        "Known values (3): 'Berlin', 'Paris', 'Rome'\n"
        "Map these to a known value, or refit the encoder with handle_unknown='ignore'."
    )
    with pytest.raises(SchemaError, match=re.escape(expected)):
        schema.coerce(rows)


def test_unseen_values_pass_in_an_open_column(schema):
    assert schema.coerce([record(note="never seen")])["note"].tolist() == ["never seen"]


def test_refuse_a_value_the_categorical_dtype_cannot_hold(schema):
    with pytest.raises(
        SchemaError, match=r"which its training dtype \(category\) cannot hold:\n- 'gold'"
    ):
        schema.coerce([record(plan="gold")])


def test_refuse_multi_input_dicts_with_missing_or_extra_keys(churn):
    schema = infer_schema({"image": np.zeros((2, 4)), "meta": churn})
    expected = (
        "Input is missing 1 of the 2 inputs that the bundle expects:\n- image\n"
        "The input also has 1 key the bundle does not know:\n- imgae  (did you mean 'image'?)\n"
        "Pass a dict keyed by the model's input names: image, meta."
    )
    with pytest.raises(SchemaError, match=re.escape(expected)):
        schema.coerce({"imgae": np.zeros((1, 4)), "meta": [record()]})
    with pytest.raises(SchemaError, match=r"Input has 1 key the bundle does not know:\n- labels\n"):
        schema.coerce({"image": np.zeros((1, 4)), "meta": [record()], "labels": [1]})


def test_refuse_multi_inputs_with_different_row_counts(churn):
    schema = infer_schema({"image": np.zeros((2, 4)), "meta": churn})
    with pytest.raises(
        SchemaError, match=r"different numbers of rows:\n- image: 3 rows\n- meta: 1 row"
    ):
        schema.coerce({"image": np.zeros((3, 4)), "meta": [record()]})


def test_refuse_values_outside_float32_range_instead_of_making_inf(vector_schema, schema):
    raw = np.zeros((2, 10))
    raw[1, 3] = 1e39
    expected = (
        "Input expects values within float32's finite range (±3.40282e+38), but 1 of 20 values "
        "is not within range:\n- index (1, 3): 1e+39\n"
    )
    with pytest.raises(SchemaError, match=re.escape(expected)):
        vector_schema.coerce(raw)
    with pytest.raises(SchemaError, match=r"Column 'weight' expects values within float32's"):
        schema.coerce([record(weight=-1e39)])
    assert np.isinf(vector_schema.coerce(np.full((1, 10), np.inf))).all()  # inf is not lost


def test_refuse_fractions_in_an_integer_column(schema):
    with pytest.raises(
        SchemaError, match=r"Column 'age' expects whole numbers \(int64\).*\n- row 0: 2\.5"
    ):
        schema.coerce([record(age=2.5)])


@pytest.mark.parametrize("raw", [{1, 2}, "age=3", 42, object()])
def test_refuse_unsupported_raw_types_listing_the_accepted_ones(schema, raw):
    with pytest.raises(
        SchemaError, match=r"is not supported\. This bundle accepts:\n- a pandas DataFrame"
    ):
        schema.coerce(raw)


def test_refuse_unsupported_raw_types_for_arrays(image_schema):
    with pytest.raises(
        SchemaError, match=r"Input of type dict is not supported\. This bundle accepts:\n- a numpy"
    ):
        image_schema.coerce({"x": 1})


def test_refuse_values_of_the_wrong_kind(schema):
    with pytest.raises(
        SchemaError, match=r"Column 'city' expects strings \(str\), but got int64 values\."
    ):
        schema.coerce(pd.DataFrame([record(), record()]).assign(city=[1, 2]))
    with pytest.raises(
        SchemaError, match=r"Column 'active' expects booleans \(bool\), but 1 of 1 value is not"
    ):
        schema.coerce([record(active="yes")])


def test_refuse_naive_datetimes_for_a_timezone_aware_column():
    schema = infer_schema(pd.DataFrame({"t": pd.to_datetime(["2024-01-01T00:00Z"])}))
    with pytest.raises(
        SchemaError, match=r"Column 't' expects datetimes .* but got naive datetimes\.\nLocalize"
    ):
        schema.coerce([{"t": "2024-05-01T12:00:00"}])


def test_refuse_ragged_rows_and_mixed_dicts(schema, vector_schema):
    rows = [[record()[name] for name in schema.names], [1, 2]]
    with pytest.raises(
        SchemaError, match=r"Input has 1 of 2 rows without 9 values.*\n- row 1: 2 values"
    ):
        schema.coerce(rows)
    with pytest.raises(SchemaError, match=r"mixes lists \('age'\) and single values"):
        schema.coerce({**record(), "age": [1, 2]})
    with pytest.raises(
        SchemaError, match=r"could not be read as an array: its nested lists have different"
    ):
        vector_schema.coerce([[1.0] * 10, [1.0] * 9])


def test_messages_cap_lists_at_five_and_never_dump_the_array(vector_schema):
    raw = np.full((10_000, 10), "x", dtype=object)
    with pytest.raises(SchemaError) as caught:
        vector_schema.coerce(raw)
    message = str(caught.value)
    assert message.count("\n- ") == 5 and "... (99,995 more)" in message
    assert len(message) < 600


# --------------------------------------------------------------------------- problems, str, rows


def test_problems_lists_every_problem_at_once(schema):
    rows = [record(age="x", city="Lisbon", active=None, weight=1e39)]
    problems = schema.problems(rows)
    assert [p.split(" ", 2)[1] for p in problems] == ["'age'", "'city'", "'active'", "'weight'"]
    with pytest.raises(SchemaError, match=r"\(4 problems\)") as caught:
        schema.coerce(rows)
    assert caught.value.problems == problems


def test_problems_is_empty_for_good_input_and_never_raises(schema, image_schema):
    assert schema.problems([record()]) == []
    for raw in (object(), None, [[{}]], {"age": {"nested": 1}}, [1, {"a": 1}], np.array("x")):
        assert schema.problems(raw) and image_schema.problems(raw)


def test_problems_does_not_warn_about_extra_columns(schema, churn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert schema.problems(churn.assign(extra=1)) == []


def test_str_is_an_aligned_table(schema, image_schema):
    text = str(schema)
    lines = text.splitlines()
    assert lines[0] == "Tabular input: 9 columns, matched by name (order does not matter)"
    assert lines[1].split() == ["column", "kind", "dtype", "missing", "range", "/", "categories"]
    header_kind = lines[1].index("kind")
    assert all(line[header_kind - 2 : header_kind] == "  " for line in lines[2:])
    assert "age            integer" in text and "27 .. 60" in text
    assert "closed: 'Berlin', 'Paris', 'Rome'" in text
    assert "'basic', 'plus', 'pro'" in text
    assert "(None, 28, 28, 1)" in str(image_schema) and "float32" in str(image_schema)
    multi = infer_schema({"image": np.zeros((2, 3)), "meta": churn_frame()})
    assert "input 'image'" in str(multi) and "input 'meta'" in str(multi)


def test_n_rows(schema, image_schema):
    assert schema.n_rows(schema.coerce([record()] * 3)) == 3
    assert image_schema.n_rows(image_schema.coerce(np.zeros((7, 28, 28, 1)))) == 7


def test_import_does_not_need_keras_or_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["keras"] = None
        sys.modules["tensorflow"] = None
        import bundle.contract
        assert "keras" not in {name.split(".")[0] for name in sys.modules if sys.modules[name]}
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_contract_imports_only_numpy_pandas_and_errors():
    imports: set[str] = set()
    for path in (REPO / "bundle" / "contract").glob("*.py"):
        found = re.findall(r"^(?:from|import) ([\w.]+)", path.read_text(), re.MULTILINE)
        imports |= set(found)
    absolute = {name.split(".")[0] for name in imports if not name.startswith(".")}
    assert absolute - set(sys.stdlib_module_names) <= {"numpy", "pandas"}
    siblings = {f".{path.stem}" for path in (REPO / "bundle" / "contract").glob("*.py")}
    assert {name for name in imports if name.startswith(".")} <= {"..errors", *siblings}


# --------------------------------------------------------------------------- properties

PROPERTY_EXAMPLE = pd.DataFrame(
    {
        "a": np.array([0.5], dtype=np.float32),
        "b": np.array([1], dtype=np.int16),
        "c": pd.Series(["x"], dtype=object),
        "d": pd.Categorical(["x"], categories=["x", "y", "z"]),
    }
)
PROPERTY_SCHEMA = infer_schema(PROPERTY_EXAMPLE, closed_categories={"d": ["x", "y", "z"]})
PROPERTY_ARRAY = infer_schema(np.zeros((1, 3, 2), dtype=np.float32))

valid_rows = st.lists(
    st.tuples(
        st.floats(-1e6, 1e6, width=32),
        st.integers(-(2**15), 2**15 - 1),
        st.text("abc", max_size=3),
        st.sampled_from(["x", "y", "z"]),
    ),
    max_size=6,
)


def canonical_frame(rows: list[tuple]) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    return pd.DataFrame(
        {
            "a": np.array(columns[0], dtype=np.float32),
            "b": np.array(columns[1], dtype=np.int16),
            "c": pd.Series(list(columns[2]), dtype=object),
            "d": pd.Categorical(list(columns[3]), categories=["x", "y", "z"]),
        }
    )


PRESENTATIONS = {
    "frame": lambda frame: frame,
    "shuffled": lambda frame: frame[["d", "b", "c", "a"]],
    "float64": lambda frame: frame.astype({"a": "float64", "b": "int64"}),
    "records": lambda frame: frame.astype({"d": object}).to_dict("records"),
    "columnar": lambda frame: {name: frame[name].tolist() for name in frame.columns},
    "rows": lambda frame: frame.astype(object).to_numpy().tolist(),
    "text_numbers": lambda frame: frame.astype({"a": "float64"}).astype({"a": str, "b": str}),
    "nullable": lambda frame: frame.astype({"a": "Float64", "b": "Int64", "c": "string[pyarrow]"}),
    "arrow": lambda frame: frame.astype({"a": "double[pyarrow]", "d": pd.ArrowDtype(pa.string())}),
}

MUTATIONS = {
    "drop_column": lambda frame, i: frame.drop(columns="b"),
    "text_in_number": lambda frame, i: frame.astype({"a": object}).assign(
        a=_put(frame["a"], i, "oops")
    ),
    "nan_in_number": lambda frame, i: frame.astype({"a": "float64"}).assign(
        a=_put(frame["a"], i, np.nan)
    ),
    "none_in_text": lambda frame, i: frame.assign(c=_put(frame["c"], i, None)),
    "unseen_category": lambda frame, i: frame.astype({"d": object}).assign(
        d=_put(frame["d"], i, "w")
    ),
    "int_overflow": lambda frame, i: frame.astype({"b": "int64"}).assign(
        b=_put(frame["b"], i, 2**15)
    ),
    "fraction": lambda frame, i: frame.astype({"b": "float64"}).assign(b=_put(frame["b"], i, 0.5)),
    "float32_overflow": lambda frame, i: frame.astype({"a": "float64"}).assign(
        a=_put(frame["a"], i, 1e39)
    ),
}


def _put(series: pd.Series, i: int, value: object) -> list:
    values = series.astype(object).tolist()
    values[i % len(values)] = value
    return values


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(max_size=2), children, max_size=5
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=valid_rows, presentation=st.sampled_from(sorted(PRESENTATIONS)))
def test_property_valid_inputs_coerce_to_the_canonical_frame(rows, presentation):
    expected = canonical_frame(rows)
    got = PROPERTY_SCHEMA.coerce(PRESENTATIONS[presentation](expected))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=valid_rows.filter(bool), mutation=st.sampled_from(sorted(MUTATIONS)), at=st.integers(0, 5)
)
def test_property_malformed_inputs_raise_schema_error(rows, mutation, at):
    raw = MUTATIONS[mutation](canonical_frame(rows), at)
    with pytest.raises(SchemaError):
        PROPERTY_SCHEMA.coerce(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=json_values)
def test_property_arbitrary_json_coerces_or_raises_schema_error(raw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtraColumnsWarning)
        for schema, check in (
            (PROPERTY_SCHEMA, _is_canonical_frame),
            (PROPERTY_ARRAY, _is_canonical_array),
        ):
            try:
                canonical = schema.coerce(raw)
            except SchemaError as err:
                assert err.problems and schema.problems(raw) == err.problems
            else:
                check(canonical)


array_inputs = st.one_of(
    st.builds(
        np.full,
        st.sampled_from([(3, 2), (1, 3, 2), (4, 3, 2), (0, 3, 2), (6,), (2, 2, 3), (2, 6)]),
        st.sampled_from([0, 1.5, -7, np.nan, np.inf, 1e39, True, "2.5", "x", None]),
    ),
    st.builds(
        lambda shape, dtype: np.ones(shape, dtype=dtype),
        st.sampled_from([(3, 2), (2, 3, 2)]),
        st.sampled_from([np.float64, np.int64, np.uint8, np.bool_, np.float16, object, str]),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=array_inputs, as_list=st.booleans())
def test_property_arrays_coerce_exactly_or_raise_schema_error(raw, as_list):
    try:
        canonical = PROPERTY_ARRAY.coerce(raw.tolist() if as_list else raw)
    except SchemaError:
        return
    _is_canonical_array(canonical)
    expected = raw.reshape(-1, 3, 2).astype(np.float64) if raw.dtype != object else None
    if expected is not None:
        np.testing.assert_array_equal(canonical, expected.astype(np.float32))


def _is_canonical_frame(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["a", "b", "c", "d"]
    assert frame.dtypes.to_dict() == PROPERTY_EXAMPLE.dtypes.to_dict()


def _is_canonical_array(array: np.ndarray) -> None:
    assert isinstance(array, np.ndarray) and array.dtype == np.float32
    assert array.shape[1:] == (3, 2) and not np.isnan(array).any()


def test_column_names_are_matched_by_their_text_and_ambiguity_is_refused():
    """Recorded 0, 1 are reached from "0", "1" (JSON, CSV, Parquet) and recorded "0", "1"
    from a DataFrame's 0, 1; the canonical frame keeps the recorded names, old schemas
    (integer names in JSON) included. Where text cannot tell columns apart, it refuses."""
    frame = pd.DataFrame({0: [1.5, 2.5], 1: ["a", "b"]})
    schema = InputSchema.from_dict(infer_schema(frame).to_dict())  # as stored: 0 and 1 as ints
    assert schema.names == [0, 1]
    expected = pd.DataFrame({0: [1.5, 2.5], 1: ["a", "b"]})
    records = [{"0": 1.5, "1": "a"}, {"0": 2.5, "1": "b"}]
    for raw in (records, {"0": [1.5, 2.5], "1": ["a", "b"]}, frame.rename(columns=str)):
        got = schema.coerce(raw)
        assert list(got.columns) == [0, 1]
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)
    text = infer_schema(frame.rename(columns=str))
    assert list(text.coerce(frame).columns) == ["0", "1"]
    with pytest.raises(SchemaError, match=r"2 columns that name the bundle's column 0: 0 and '0'"):
        schema.coerce(frame.assign(**{"0": [9.0, 9.0]}))
    both = infer_schema(pd.DataFrame({0: [1.0], "0": [2.0]}))
    with pytest.raises(SchemaError, match=r"no column 0, and its column '0' cannot stand for it"):
        both.coerce([{"0": 2.0}])
    with pytest.raises(SchemaError, match=r"missing 1 of the 2 columns"):
        schema.coerce([{"0": 1.5}])
