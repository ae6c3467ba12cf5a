"""Parity of the compiled replay with scikit-learn's own transform."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    LabelEncoder,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from bundle.errors import SchemaError
from bundle.steps.replay import FACTORIZE_MIN_ROWS, compile_replay

NUM = [f"n{i}" for i in range(8)]
CAT = [f"c{i}" for i in range(4)]
CATEGORIES = {c: [f"{c}_v{j}" for j in range((k + 1) * 10)] for k, c in enumerate(CAT)}
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frame(n: int, *, seed: int, unseen: float = 0.0, dtype: str = "str") -> pd.DataFrame:
    """The reference tabular input: 8 numeric columns, 4 string columns (10..40 values)."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for c in NUM:
        values = rng.normal(size=n) * 10
        values[rng.random(n) < 0.1] = np.nan
        data[c] = values
    for c in CAT:
        values = np.array(CATEGORIES[c], dtype=object)[rng.integers(0, len(CATEGORIES[c]), n)]
        values[rng.random(n) < unseen] = "never-seen"
        values[rng.random(n) < 0.05] = None
        values[rng.random(n) < 0.05] = np.nan
        data[c] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data)


def _reference(**encoder) -> ColumnTransformer:
    num = Pipeline([("imp", SimpleImputer(strategy="median")), ("sc", StandardScaler())])
    enc = OneHotEncoder(**({"handle_unknown": "ignore"} | encoder))
    cat = Pipeline([("imp", SimpleImputer(strategy="most_frequent")), ("oh", enc)])
    return ColumnTransformer([("num", num, NUM), ("cat", cat, CAT)])


def _quiet(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args)


def _dense(x) -> np.ndarray:
    x = x.toarray() if hasattr(x, "toarray") else x
    return np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x, dtype=np.float64)


def _assert_parity(obj, x, replay=None) -> None:
    """The compiled replay equals obj.transform bit for bit (empty input: right shape)."""
    replay = replay or compile_replay(obj)
    assert replay is not None
    got = _quiet(replay, x)
    assert got.dtype == np.float64
    if len(x) == 0:  # scikit-learn refuses 0 rows; the replay gives an empty batch
        assert got.shape == (0, len(obj.get_feature_names_out()))
        return
    expected = _dense(_quiet(obj.transform, x))
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


REFERENCE = _quiet(_reference().fit, _frame(2000, seed=0))
REFERENCE_REPLAY = compile_replay(REFERENCE)

# ---------------------------------------------------------------------------------------
# The reference pipeline
# ---------------------------------------------------------------------------------------


@st.composite
def reference_frames(draw) -> pd.DataFrame:
    n = draw(st.integers(0, 12))
    finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    numbers = st.one_of(finite, st.just(np.nan))
    data: dict[str, object] = {c: draw(st.lists(numbers, min_size=n, max_size=n)) for c in NUM}
    dtype = draw(st.sampled_from(["str", "object"]))
    for c in CAT:
        values = st.sampled_from([*CATEGORIES[c][:3], "never-seen", "", None, np.nan])
        data[c] = pd.Series(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)
    return pd.DataFrame(
        {c: pd.Series(v, dtype=np.float64) if c in NUM else v for c, v in data.items()}
    )


@HYPOTHESIS
@given(reference_frames())
def test_reference_pipeline_parity(frame):
    _assert_parity(REFERENCE, frame, REFERENCE_REPLAY)


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_reference_pipeline_large_input_factorized(dtype):
    frame = _frame(3 * FACTORIZE_MIN_ROWS, seed=5, unseen=0.02, dtype=dtype)

    _assert_parity(REFERENCE, frame, REFERENCE_REPLAY)


def test_reference_pipeline_one_row_at_a_time():
    frame = _frame(40, seed=6, unseen=0.2, dtype="object")

    for i in range(len(frame)):
        _assert_parity(REFERENCE, frame.iloc[i : i + 1], REFERENCE_REPLAY)


def test_float32_input_is_computed_in_float32_like_scikit_learn():
    frame = _frame(500, seed=12, unseen=0.05).astype({c: np.float32 for c in NUM})

    _assert_parity(REFERENCE, frame, REFERENCE_REPLAY)


def test_object_array_input():
    ct = ColumnTransformer(
        [("sc", StandardScaler(), [0]), ("oh", OneHotEncoder(handle_unknown="ignore"), [1, 2])]
    )
    data = np.array([[1.5, "a", None], [2.0, "b", "x"], [np.nan, "a", "y"]] * 5, dtype=object)
    fitted = ct.fit(data)
    new = np.array([[0.5, "b", None], [3.0, "zz", np.nan], [1.0, None, "x"]], dtype=object)

    _assert_parity(fitted, new)


def test_column_order_and_extra_columns_do_not_matter():
    frame = _frame(25, seed=7, unseen=0.1)
    shuffled = frame[list(reversed(frame.columns))].assign(extra=1.0)

    np.testing.assert_array_equal(REFERENCE_REPLAY(shuffled), _dense(REFERENCE.transform(frame)))


def test_requested_dtype():
    frame = _frame(30, seed=8)
    replay = compile_replay(REFERENCE, dtype=np.float32)

    got = replay(frame)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, REFERENCE_REPLAY(frame).astype(np.float32))


def test_missing_columns_are_named():
    frame = _frame(3, seed=9).drop(columns=["n3", "c2"])

    with pytest.raises(
        SchemaError,
        match=r"Input is missing 2 of the columns ColumnTransformer reads:\n- n3\n- c2\n"
        r"Add these columns; their order does not matter\.",
    ):
        REFERENCE_REPLAY(frame)


def test_unseen_category_error_names_column_and_values():
    strict = _quiet(_reference(handle_unknown="error").fit, _frame(2000, seed=0))
    frame = _frame(30, seed=10).assign(c2=["zz", "aa"] * 15)

    with pytest.raises(ValueError, match=r"Found unknown categories \[.+\] in column 2 during"):
        strict.transform(frame)
    with pytest.raises(
        SchemaError,
        match=r"Found unknown categories \['aa', 'zz'\] in column 2 \('c2'\) during transform: "
        r"OneHotEncoder\(handle_unknown='error'\) knows 30 categories for it\. Map these values",
    ) as info:
        compile_replay(strict)(frame)
    assert info.value.column == "c2"


# ---------------------------------------------------------------------------------------
# Every transformer with a fast form, with its options
# ---------------------------------------------------------------------------------------

RNG = np.random.default_rng(3)
NUMBERS = RNG.normal(size=(50, 3)) * [1, 10, 100]
NUMBERS[RNG.random(NUMBERS.shape) < 0.1] = np.nan
NEW_NUMBERS = np.r_[RNG.normal(size=(20, 3)) * 30, [[np.nan, np.nan, np.nan]]]
FINITE = RNG.normal(size=(60, 3))
NEW_FINITE = RNG.normal(size=(25, 3)) * 3
INTS = RNG.integers(-1, 4, size=(40, 2))


def _strings(n: int, seed: int, *, unseen: bool, dtype: str = "str") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    color = np.array(["red", "green", "blue", "teal", "gold"], dtype=object)[
        rng.choice(5, size=n, p=[0.4, 0.3, 0.2, 0.05, 0.05])
    ]
    size = np.array(["S", "M", "L"], dtype=object)[rng.integers(0, 3, size=n)]
    if unseen:
        color[::5], size[1::7] = "purple", "XXL"
    color[2::9], size[3::11] = None, np.nan
    return pd.DataFrame(
        {"color": pd.Series(color, dtype=dtype), "size": pd.Series(size, dtype=dtype)}
    )


STRINGS, NEW_STRINGS = _strings(80, 1, unseen=False), _strings(40, 2, unseen=True)
KNOWN_STRINGS = _strings(40, 3, unseen=False)
OBJECTS, NEW_OBJECTS = (
    _strings(80, 1, unseen=False, dtype="object"),
    _strings(40, 2, unseen=True, dtype="object"),
)
BINARY = pd.DataFrame({"flag": ["y", "n"] * 20, "color": STRINGS["color"].fillna("red")[:40]})

CASES = [
    ("standard", StandardScaler(), NUMBERS, NEW_NUMBERS),
    ("standard-no-mean", StandardScaler(with_mean=False), NUMBERS, NEW_NUMBERS),
    ("minmax-clip", MinMaxScaler(feature_range=(-2, 3), clip=True), NUMBERS, NEW_NUMBERS),
    ("maxabs-clip", MaxAbsScaler(clip=True), NUMBERS, NEW_NUMBERS),
    ("robust", RobustScaler(quantile_range=(10.0, 90.0), unit_variance=True), NUMBERS, NEW_NUMBERS),
    ("robust-no-centering", RobustScaler(with_centering=False), NUMBERS, NEW_NUMBERS),
    ("impute-mean-indicator", SimpleImputer(add_indicator=True), NUMBERS, NEW_NUMBERS),
    ("impute-median", SimpleImputer(strategy="median"), NUMBERS, NEW_NUMBERS),
    ("impute-constant", SimpleImputer(strategy="constant", fill_value=-7.5), NUMBERS, NEW_NUMBERS),
    (
        "impute-frequent-ints",
        SimpleImputer(strategy="most_frequent", missing_values=-1),
        INTS,
        INTS[::-1],
    ),
    (
        "impute-empty-dropped",
        SimpleImputer(),
        np.c_[NUMBERS, np.full(50, np.nan)],
        np.c_[NEW_NUMBERS, NEW_NUMBERS[:, :1]],
    ),
    (
        "impute-empty-kept",
        SimpleImputer(keep_empty_features=True, add_indicator=True),
        np.c_[NUMBERS, np.full(50, np.nan)],
        np.c_[NEW_NUMBERS, NEW_NUMBERS[:, :1]],
    ),
    ("onehot-error", OneHotEncoder(), STRINGS, KNOWN_STRINGS),
    ("onehot-ignore", OneHotEncoder(handle_unknown="ignore"), STRINGS, NEW_STRINGS),
    ("onehot-object-none", OneHotEncoder(handle_unknown="ignore"), OBJECTS, NEW_OBJECTS),
    ("onehot-first", OneHotEncoder(drop="first", handle_unknown="ignore"), STRINGS, NEW_STRINGS),
    (
        "onehot-if-binary",
        OneHotEncoder(drop="if_binary", sparse_output=False),
        BINARY,
        BINARY[::-1],
    ),
    (
        "onehot-drop-array",
        OneHotEncoder(drop=["green", "M"], dtype=np.float32),
        STRINGS,
        KNOWN_STRINGS,
    ),
    (
        "onehot-infrequent",
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=6),
        STRINGS,
        NEW_STRINGS,
    ),
    (
        "onehot-warn-max",
        OneHotEncoder(handle_unknown="warn", max_categories=3),
        STRINGS,
        NEW_STRINGS,
    ),
    (
        "onehot-infrequent-first",
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.1, drop="first"),
        STRINGS,
        NEW_STRINGS,
    ),
    (
        "onehot-ignore-infrequent",
        OneHotEncoder(handle_unknown="ignore", max_categories=2),
        OBJECTS,
        NEW_OBJECTS,
    ),
    (
        "onehot-numbers",
        OneHotEncoder(handle_unknown="ignore"),
        NUMBERS.round(),
        NEW_NUMBERS.round(),
    ),
    ("onehot-ints", OneHotEncoder(handle_unknown="ignore", dtype=int), INTS, INTS[::-1] + 1),
    ("ordinal-error", OrdinalEncoder(), STRINGS, KNOWN_STRINGS),
    (
        "ordinal-unknown",
        OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
        ),
        STRINGS,
        NEW_STRINGS,
    ),
    (
        "ordinal-unknown-nan",
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
        OBJECTS,
        NEW_OBJECTS,
    ),
    (
        "ordinal-infrequent",
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=99, min_frequency=6),
        STRINGS,
        NEW_STRINGS,
    ),
    (
        "ordinal-max-int",
        OrdinalEncoder(max_categories=2, dtype=np.int32, encoded_missing_value=-1),
        STRINGS,
        KNOWN_STRINGS,
    ),
    ("kbins-onehot", KBinsDiscretizer(n_bins=4, strategy="uniform"), FINITE, NEW_FINITE),
    (
        "kbins-dense-quantile",
        KBinsDiscretizer(n_bins=[2, 3, 5], encode="onehot-dense"),
        FINITE,
        NEW_FINITE,
    ),
    (
        "kbins-ordinal-kmeans",
        KBinsDiscretizer(n_bins=3, encode="ordinal", strategy="kmeans"),
        FINITE,
        NEW_FINITE,
    ),
    ("kbins-float32", KBinsDiscretizer(n_bins=3, dtype=np.float32), FINITE, NEW_FINITE),
    ("poly", PolynomialFeatures(degree=3), FINITE, NEW_FINITE),
    (
        "poly-interaction",
        PolynomialFeatures(interaction_only=True, include_bias=False),
        FINITE,
        NEW_FINITE,
    ),
    ("poly-min-degree", PolynomialFeatures(degree=(2, 3)), FINITE, NEW_FINITE),
    (
        "poly-min-degree-no-bias",
        PolynomialFeatures(degree=(2, 3), include_bias=False, order="F"),
        FINITE,
        NEW_FINITE,
    ),
    ("poly-zero", PolynomialFeatures(degree=0), FINITE, NEW_FINITE),
    ("function-ufunc", FunctionTransformer(np.log1p), np.abs(FINITE), np.abs(NEW_FINITE)),
    (
        "function-validate",
        FunctionTransformer(scipy.special.expit, validate=True),
        FINITE,
        NEW_FINITE,
    ),
    ("function-identity", FunctionTransformer(), NUMBERS, NEW_NUMBERS),
    (
        "pipeline",
        Pipeline(
            [
                ("imp", SimpleImputer(add_indicator=True)),
                ("skip", "passthrough"),
                ("poly", PolynomialFeatures()),
            ]
        ),
        NUMBERS,
        NEW_NUMBERS,
    ),
    (
        "pipeline-after-onehot",
        Pipeline([("oh", OneHotEncoder(handle_unknown="ignore")), ("sc", MaxAbsScaler())]),
        STRINGS,
        NEW_STRINGS,
    ),
    (
        "ct-indices-mask-slice",
        ColumnTransformer(
            [
                ("sc", StandardScaler(), [0, 2]),
                ("mm", MinMaxScaler(), [True, False, False, True]),
                ("pass", "passthrough", slice(1, 3)),
                ("gone", "drop", [3]),
            ],
            remainder="drop",
            transformer_weights={"mm": 2.0},
        ),
        np.c_[NUMBERS, FINITE[:50, :1]],
        np.c_[NEW_NUMBERS, NEW_FINITE[:21, :1]],
    ),
    (
        "ct-remainder-estimator",
        ColumnTransformer([("sc", RobustScaler(), [1])], remainder=SimpleImputer()),
        NUMBERS,
        NEW_NUMBERS,
    ),
    (
        "ct-remainder-passthrough",
        ColumnTransformer([("sc", RobustScaler(), [1])], remainder="passthrough"),
        NUMBERS,
        NEW_NUMBERS,
    ),
    (
        "ct-pandas-dropped-column-absent",
        ColumnTransformer(
            [
                ("oh", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                ("sc", StandardScaler(), ["x"]),
            ],
            sparse_threshold=0,
        ),
        STRINGS.assign(x=np.arange(80.0)),
        NEW_STRINGS.drop(columns="size").assign(x=np.arange(40.0) - 3),
    ),
    (
        "union",
        FeatureUnion(
            [
                ("sc", StandardScaler()),
                ("gone", "drop"),
                ("raw", "passthrough"),
                ("kb", KBinsDiscretizer(n_bins=3)),
            ],
            transformer_weights={"sc": 0.5, "raw": 3.0},
        ),
        FINITE,
        NEW_FINITE,
    ),
]


@pytest.mark.parametrize(
    ("obj", "fit_data", "new_data"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_transformer_parity(obj, fit_data, new_data):
    fitted = _quiet(obj.fit, fit_data)
    replay = compile_replay(fitted)

    _assert_parity(fitted, new_data, replay)
    for i in (0, len(new_data) - 1):
        _assert_parity(fitted, new_data[i : i + 1], replay)
    assert replay(new_data[:0]).shape == (
        0,
        _dense(_quiet(fitted.transform, new_data[:1])).shape[1],
    )


STRING_CASES = [c for c in CASES if isinstance(c[2], pd.DataFrame)]


@pytest.mark.parametrize(
    ("obj", "fit_data", "new_data"), [c[1:] for c in STRING_CASES], ids=[c[0] for c in STRING_CASES]
)
def test_large_string_input_parity(obj, fit_data, new_data):
    fitted = _quiet(obj.fit, fit_data)
    repeats = -(-FACTORIZE_MIN_ROWS // len(new_data))
    large = pd.concat([new_data] * repeats, ignore_index=True)

    _assert_parity(fitted, large)


ARRAY_CASES = [c for c in CASES if isinstance(c[2], np.ndarray)]


@pytest.mark.parametrize(
    ("obj", "fit_data"), [c[1:3] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES]
)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_numeric_parity_on_generated_arrays(obj, fit_data, data):
    fitted = _quiet(obj.fit, fit_data)
    n = data.draw(st.integers(0, 6))
    if fit_data.dtype.kind == "i":
        values = st.integers(-1, 5)
    else:
        values = st.one_of(
            st.integers(-3, 3).map(float), st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf])
        )
    x = np.array(
        data.draw(st.lists(values, min_size=n * fit_data.shape[1], max_size=n * fit_data.shape[1]))
    )
    x = x.reshape(n, fit_data.shape[1]).astype(fit_data.dtype)
    replay = compile_replay(fitted)
    if n == 0:
        width = _dense(_quiet(fitted.transform, fit_data[:1])).shape[1]
        assert replay(x).shape == (0, width)
        return
    try:
        expected = _dense(_quiet(fitted.transform, x))
    except ValueError:  # NaN or infinity where scikit-learn refuses them: so does the replay
        with pytest.raises(ValueError):
            _quiet(replay, x)
        return
    np.testing.assert_array_equal(_quiet(replay, x), expected)


@pytest.mark.parametrize("dtype", ["str", "object"])
@pytest.mark.parametrize(
    "encoder",
    [
        OneHotEncoder(handle_unknown="ignore", drop="first"),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, drop="if_binary"),
        OneHotEncoder(handle_unknown="warn", max_categories=3),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, max_categories=3),
    ],
    ids=["onehot-ignore-first", "onehot-infrequent-if-binary", "onehot-warn", "ordinal"],
)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_encoder_parity_on_generated_strings(encoder, dtype, data):
    fitted = _quiet(encoder.fit, OBJECTS if dtype == "object" else STRINGS)
    values = st.sampled_from(["red", "green", "teal", "gold", "S", "L", "purple", None, np.nan])
    n = data.draw(st.integers(1, 10))
    frame = pd.DataFrame(
        {
            c: pd.Series(data.draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)
            for c in ("color", "size")
        }
    )

    _assert_parity(fitted, frame)


def test_warn_matches_scikit_learn_warning():
    fitted = _quiet(OneHotEncoder(handle_unknown="warn", max_categories=3).fit, STRINGS)
    message = (
        r"Found unknown categories in columns \[0, 1\] during transform\. "
        r"These unknown categories will be encoded as the infrequent category\."
    )

    with pytest.warns(UserWarning, match=message):
        fitted.transform(NEW_STRINGS)
    with pytest.warns(UserWarning, match=message):
        compile_replay(fitted)(NEW_STRINGS)


def test_ordinal_error_names_column():
    fitted = OrdinalEncoder().fit(STRINGS)

    with pytest.raises(
        SchemaError,
        match=r"Found unknown categories \['XXL'\] in column 1 \('size'\) during transform: "
        r"OrdinalEncoder\(handle_unknown='error'\) knows 4 categories for it\.",
    ):
        compile_replay(fitted)(NEW_STRINGS.assign(color="red"))


@pytest.mark.parametrize(
    ("obj", "bad", "pattern"),
    [
        (
            KBinsDiscretizer(n_bins=3),
            np.nan,
            r"Input column 1 contains NaN or infinity: KBinsDiscretizer cannot bin it\.",
        ),
        (
            StandardScaler(),
            np.inf,
            r"Input column 1 contains NaN or infinity: this step allows NaN but, like "
            r"scikit-learn, refuses infinity\.",
        ),
        (
            PolynomialFeatures(),
            np.nan,
            r"Input column 1 contains NaN or infinity: PolynomialFeatures cannot",
        ),
    ],
    ids=["kbins-nan", "scaler-inf", "poly-nan"],
)
def test_refuses_what_scikit_learn_refuses(obj, bad, pattern):
    fitted = obj.fit(FINITE)
    x = NEW_FINITE.copy()
    x[3, 1] = bad

    with pytest.raises(ValueError):
        fitted.transform(x)
    with pytest.raises(SchemaError, match=pattern):
        compile_replay(fitted)(x)


def test_wrong_array_shape_is_refused():
    fitted = StandardScaler().fit(FINITE)

    with pytest.raises(
        SchemaError,
        match=r"Input has shape \(3,\), but StandardScaler expects \(n_samples, 3\)\. Pass a 2-D",
    ):
        compile_replay(fitted)(FINITE[0])


class Custom(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


@pytest.mark.parametrize(
    "obj",
    [
        Custom().fit(FINITE),
        FunctionTransformer(lambda x: x * 2).fit(FINITE),
        FunctionTransformer(np.round).fit(FINITE),
        LabelEncoder().fit(["a", "b"]),
        ColumnTransformer([("c", Custom(), [0]), ("s", StandardScaler(), [1])]).fit(FINITE),
        SimpleImputer(strategy="most_frequent").fit(STRINGS),
        SimpleImputer(missing_values=pd.NA, strategy="most_frequent").fit(
            pd.DataFrame({"a": pd.array([1, None, 2], dtype="Int64")})
        ),
    ],
    ids=[
        "custom",
        "lambda",
        "non-ufunc",
        "label-encoder",
        "ct-with-custom",
        "string-output",
        "pandas-na",
    ],
)
def test_no_fast_form_returns_none(obj):
    assert compile_replay(obj) is None
