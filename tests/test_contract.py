"""The input contract end to end: every raw input is replayed exactly or refused early.

Refusals are checked on real bundles (real Keras models, real scikit-learn steps), and a
hypothesis suite throws generated valid and malformed inputs at a tabular and an image
bundle: each call returns finite values equal to the reference pipeline's, or raises
SchemaError, never anything else.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle import Bundle, ExtraColumnsWarning, SchemaError, StepError

NUMERIC = ["age", "income", "score", "visits"]
PLANS, REGIONS = ["basic", "plus", "pro"], ["north", "south", "east", "west"]


@pytest.fixture(scope="module")
def closed_bundle():
    """No imputer on 'score', an encoder that refuses unseen plans; ignores unseen regions."""
    import keras
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, 200),
            "score": rng.normal(0, 1, 200),
            "plan": rng.choice(PLANS, 200),
            "region": rng.choice(REGIONS, 200),
        }
    )
    ct = ColumnTransformer(
        [
            ("imputed", SimpleImputer(), ["income"]),
            ("scaled", StandardScaler(), ["score"]),
            ("plan", OneHotEncoder(), ["plan"]),
            ("region", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ]
    ).fit(frame)
    width = ct.transform(frame.iloc[:1]).shape[1]
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(2, activation="softmax")])
    return Bundle(model, preprocess=ct, input_example=frame, name="closed"), frame


def test_nan_in_a_column_without_imputer_is_refused(closed_bundle):
    bundle, frame = closed_bundle
    rows = frame.iloc[:5].copy()
    rows.loc[rows.index[[1, 3]], "score"] = np.nan
    with pytest.raises(SchemaError, match=r"Column 'score' has missing values .* in 2 of 5 rows"):
        bundle.predict(rows)


def test_nan_in_an_imputed_column_is_accepted(closed_bundle):
    bundle, frame = closed_bundle
    rows = frame.iloc[:5].copy()
    rows["income"] = np.nan
    assert np.isfinite(bundle.predict(rows)).all()


def test_unseen_category_for_a_strict_encoder_is_refused(closed_bundle):
    bundle, frame = closed_bundle
    rows = frame.iloc[:3].copy()
    rows["plan"] = ["gold", "basic", "gold"]
    with pytest.raises(
        SchemaError,
        match=r"(?s)Column 'plan' has 1 value never seen.*'gold'.*"
        r"Known values \(3\): 'basic', 'plus', 'pro'",
    ):
        bundle.predict(rows)


def test_unseen_category_for_an_ignoring_encoder_is_accepted(closed_bundle):
    bundle, frame = closed_bundle
    rows = frame.iloc[:3].copy()
    rows["region"] = "atlantis"
    assert np.isfinite(bundle.predict(rows)).all()


def test_extra_columns_warn_once_or_are_refused_when_strict(closed_bundle):
    bundle, frame = closed_bundle
    rows = frame.iloc[:3].assign(customer_id=[1, 2, 3])
    with pytest.warns(ExtraColumnsWarning, match="customer_id") as caught:
        bundle.predict(rows)
    assert len([w for w in caught if issubclass(w.category, ExtraColumnsWarning)]) == 1
    with pytest.raises(SchemaError, match="customer_id"):
        bundle.predict(rows, strict=True)


def test_validate_lists_every_problem_without_predicting(closed_bundle):
    bundle, frame = closed_bundle
    rows = frame.iloc[:4].drop(columns=["income"]).copy()
    rows["plan"] = "gold"
    rows.loc[rows.index[0], "score"] = np.nan
    problems = bundle.validate(rows)
    assert len(problems) == 3
    text = "\n".join(problems)
    assert "income" in text and "'gold'" in text and "score" in text
    assert bundle.validate(frame.iloc[:4]) == []


def test_a_step_failing_on_valid_input_is_wrapped(tmp_path):
    import keras
    from sklearn.preprocessing import FunctionTransformer

    def refuse_large(x):
        if np.max(x) > 100:
            raise ArithmeticError("value too large for this transform")
        return x

    X = np.random.default_rng(0).normal(size=(50, 2))
    step = FunctionTransformer(refuse_large).fit(X)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    bundle = Bundle(model, preprocess=step, input_example=X)
    failed = r"Preprocess step 0 \(.*FunctionTransformer\) failed"
    with pytest.raises(StepError, match=failed) as err:
        bundle.predict(np.array([[1.0, 500.0]]))
    assert isinstance(err.value.__cause__, ArithmeticError)
    assert err.value.step.startswith("preprocess[0]")


# ---------------------------------------------------------------- hypothesis: tabular
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def valid_rows(draw):
    n = draw(st.integers(0, 6))
    data = {
        "age": draw(st.lists(st.integers(18, 90), min_size=n, max_size=n)),
        "income": draw(st.lists(st.one_of(finite, st.just(np.nan)), min_size=n, max_size=n)),
        "score": draw(st.lists(finite, min_size=n, max_size=n)),
        "visits": draw(st.lists(st.integers(0, 20), min_size=n, max_size=n)),
        "plan": draw(st.lists(st.sampled_from([*PLANS, "unseen"]), min_size=n, max_size=n)),
        "region": draw(st.lists(st.sampled_from(REGIONS), min_size=n, max_size=n)),
    }
    frame = pd.DataFrame(data)
    frame["income"] = frame["income"].astype("float64")
    order = draw(st.permutations(list(frame.columns)))
    form = draw(st.sampled_from(["frame", "records", "columns"]))
    frame = frame[order]
    if form == "records":
        return frame, frame.to_dict(orient="records")
    if form == "columns":
        return frame, {c: frame[c].tolist() for c in frame.columns}
    return frame, frame


bad_values = st.one_of(
    st.text(max_size=5),
    st.none(),
    st.floats(allow_nan=True),
    st.integers(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@st.composite
def malformed_rows(draw):
    _, valid = draw(valid_rows().filter(lambda pair: len(pair[0]) > 0))
    frame = pd.DataFrame(valid) if not isinstance(valid, pd.DataFrame) else valid.copy()
    mutation = draw(st.sampled_from(["drop", "garbage", "type"]))
    column = draw(st.sampled_from(list(frame.columns)))
    if mutation == "drop":
        return frame.drop(columns=[column])
    if mutation == "garbage":
        records = frame.to_dict(orient="records")
        records[0][column] = draw(bad_values)
        return records
    return draw(
        st.one_of(
            st.text(max_size=5),
            st.integers(),
            st.sets(st.integers(), max_size=2),
            st.just(object()),
        )
    )


def _reference_scores(parts, frame):
    preprocess, _, model = parts
    return model.predict(preprocess.transform(frame), verbose=0)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=valid_rows())
def test_valid_tabular_input_equals_the_reference_pipeline(tabular_bundle, tabular_parts, case):
    _, bundle = tabular_bundle
    frame, raw = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtraColumnsWarning)
        scores = bundle.predict(raw, postprocess=False)
    assert scores.shape == (len(frame), 3)
    assert np.isfinite(scores).all()
    if len(frame):
        canonical = frame[["age", "income", "score", "visits", "plan", "region"]]
        np.testing.assert_allclose(
            scores, _reference_scores(tabular_parts, canonical), rtol=1e-5, atol=1e-6
        )


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=malformed_rows())
def test_malformed_tabular_input_only_raises_schema_error(tabular_bundle, raw):
    _, bundle = tabular_bundle
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtraColumnsWarning)
            result = bundle.predict(raw, postprocess=False)
    except SchemaError:
        return
    assert np.isfinite(result).all()  # an accepted mutation (e.g. NaN where imputed)


# ---------------------------------------------------------------- hypothesis: images
@st.composite
def image_inputs(draw):
    shape = draw(
        st.sampled_from(
            [
                (8, 8, 1),
                (1, 8, 8, 1),
                (3, 8, 8, 1),
                (0, 8, 8, 1),
                (64,),
                (1, 64),
                (2, 8, 8),
                (2, 1, 8, 8),
                (8, 8),
                (2, 8, 8, 3),
            ]
        )
    )
    dtype = draw(st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "U1"]))
    values = draw(st.sampled_from(["small", "nan", "huge", "negative"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    array = rng.integers(0, 256, size=shape).astype("float64")
    if values == "nan" and array.size:
        array.flat[0] = np.nan
    elif values == "huge" and array.size:
        array.flat[0] = 1e300
    elif values == "negative" and array.size:
        array.flat[0] = -5
    if dtype == "U1":
        return array.astype(str)
    with np.errstate(invalid="ignore", over="ignore"):
        return array.astype(dtype) if dtype != "bool" else array > 100


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=image_inputs())
def test_image_input_is_replayed_or_refused(image_bundle, image_parts, raw):
    _, bundle = image_bundle
    try:
        scores = bundle.predict(raw)
    except SchemaError:
        return
    batch = raw if raw.ndim == 4 else raw[np.newaxis]
    assert scores.shape == (len(batch), 2)
    assert np.isfinite(scores).all()
    if len(batch):
        expected = image_parts.predict(batch.astype("float32"), verbose=0)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- infinity
@pytest.fixture(scope="module")
def infinity_bundle():
    """'scaled' refuses infinity (StandardScaler), 'raw' passes it through, 'bounded' goes
    through tanh first (infinity becomes 1), 'logged' through log (log(0) is -inf inside)."""
    import keras
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "scaled": rng.normal(0, 1, 100),
            "raw": rng.normal(0, 1, 100),
            "bounded": rng.normal(0, 1, 100),
            "logged": rng.uniform(1, 5, 100),
        }
    )
    ct = ColumnTransformer(
        [
            ("scaled", StandardScaler(), ["scaled"]),
            ("raw", "passthrough", ["raw"]),
            ("bounded", make_pipeline(FunctionTransformer(np.tanh), StandardScaler()), ["bounded"]),
            ("logged", make_pipeline(FunctionTransformer(np.log), StandardScaler()), ["logged"]),
        ]
    ).fit(frame)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    return Bundle(model, preprocess=ct, input_example=frame, name="finite"), frame


def test_infinity_is_refused_by_the_contract_naming_the_column(infinity_bundle):
    bundle, frame = infinity_bundle
    rows = frame.iloc[:3].copy()
    rows["scaled"] = [1.0, np.inf, -np.inf]
    assert bundle.input_schema.to_dict()["columns"][0]["refuses_infinity"] is True
    with pytest.raises(
        SchemaError,
        match=r"Column 'scaled' has infinite values in 2 of 3 rows \(rows 1, 2\), which its "
        r"preprocessing refuses: scikit-learn's transformers take finite numbers only",
    ) as err:
        bundle.predict(rows)
    assert err.value.column == "scaled"
    assert "passed the bundle's input checks" not in str(err.value)
    assert any("'scaled' has infinite values" in p for p in bundle.validate(rows))


def test_infinity_passes_where_no_step_refuses_it(infinity_bundle):
    bundle, frame = infinity_bundle
    rows = frame.iloc[:3].copy()
    rows["raw"] = [np.inf, 1.0, 2.0]
    rows["bounded"] = [np.inf, -np.inf, 0.5]  # tanh maps them to +-1 before the scaler
    columns = {c["name"]: c for c in bundle.input_schema.to_dict()["columns"]}
    assert "refuses_infinity" not in columns["raw"] and "refuses_infinity" not in columns["bounded"]
    assert bundle.validate(rows) == []
    out = bundle.predict(rows)
    assert np.isfinite(out[1:]).all()


def test_a_step_refusing_what_the_contract_cannot_see_raises_schema_error(infinity_bundle):
    """log(0) is -inf inside the pipeline: the scaler after it refuses it. That is an input
    problem, reported as SchemaError naming the step, not a StepError."""
    bundle, frame = infinity_bundle
    rows = frame.iloc[:2].copy()
    rows["logged"] = [0.0, 2.0]
    with pytest.raises(
        SchemaError,
        match=r"Preprocess step 0 \(sklearn\.compose\.ColumnTransformer\) refused the input: "
        r"Input column 0 \('logged'\) contains NaN or infinity",
    ) as err:
        bundle.predict(rows)
    assert "passed the bundle's input checks" not in str(err.value)
    assert not isinstance(err.value, StepError)


def test_array_input_refuses_infinity_when_every_column_does(tmp_path):
    import keras
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(4).normal(size=(50, 3))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    bundle = Bundle(model, preprocess=StandardScaler().fit(x), input_example=x)
    loaded = Bundle.load(bundle.save(tmp_path / "root"))
    assert loaded.input_schema.to_dict()["refuses_infinity"] is True
    bad = x[:2].copy()
    bad[1, 2] = np.inf
    with pytest.raises(
        SchemaError, match=r"Input has infinite values in 1 of 2 samples \(sample 1\)"
    ):
        loaded.predict(bad)


def test_columns_named_by_integers_are_reached_from_text_names(tmp_path):
    """A model trained on pd.DataFrame(array) has columns 0, 1, 2: the stored example (a
    Parquet file: text names) failed the bundle's own replay at save ("missing 0 ... did you
    mean 0?"), and JSON records, Parquet and CSV files, whose names are always text, could
    never match them."""
    import keras
    from sklearn.preprocessing import StandardScaler

    from bundle.drift import DriftThresholds

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(64, 3)))
    scaler = StandardScaler().fit(frame)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    path = Bundle(model, preprocess=scaler, input_example=frame, name="unnamed").save(
        tmp_path / "root"
    )
    loaded = Bundle.load(path)
    expected = model.predict(scaler.transform(frame).astype("float32"), verbose=0)
    records = [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
    frame.to_parquet(tmp_path / "rows.parquet")  # pandas writes the names as "0", "1", "2"
    assert np.abs(loaded.predict(frame) - expected).max() <= 1e-6
    assert np.abs(loaded.predict(records) - expected).max() <= 1e-6
    assert loaded.verify().ok
    report = loaded.drift(tmp_path / "rows.parquet", thresholds=DriftThresholds(min_rows=10))
    assert [f.missing_current for f in report.features if f.role == "input"] == [0.0] * 3
    assert not report.has_drift
