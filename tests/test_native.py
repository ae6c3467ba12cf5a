"""Round trips of fitted scikit-learn objects through the pickle-free native format."""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.special
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    LabelBinarizer,
    LabelEncoder,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from bundle.errors import UnsupportedFormatError
from bundle.steps.native import (
    PARAMS_KEY,
    native_imports,
    read_native,
    unsupported_parts,
    write_native,
)
from bundle.steps.registry import KINDS

RNG = np.random.default_rng(0)
NUM_FIT = RNG.normal(size=(60, 3)) * [1, 10, 100] + [0, 5, -50]
NUM_FIT[RNG.random(NUM_FIT.shape) < 0.1] = np.nan
NUM_NEW = RNG.normal(size=(15, 3)) * 20
NUM_NEW[::4, 1] = np.nan
FINITE = RNG.normal(size=(80, 3))
POSITIVE = np.abs(FINITE[:, :2]) * 10 + 0.5
POSITIVE_NEW = np.abs(NUM_NEW[1::4, [0, 2]]) + 0.5
INTS = RNG.integers(-1, 4, size=(40, 2))


def _strings(n: int, *, unseen: bool, seed: int, dtype: str = "str") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colors = np.array(["red", "green", "blue", "teal", "gold"], dtype=object)
    sizes = np.array(["S", "M", "L"], dtype=object)
    color = colors[rng.choice(5, size=n, p=[0.4, 0.3, 0.2, 0.05, 0.05])]
    size = sizes[rng.integers(0, 3, size=n)]
    if unseen:
        color[::5], size[1::7] = "purple", "XXL"
    color[2::9], size[3::11] = None, None
    return pd.DataFrame(
        {"color": pd.Series(color, dtype=dtype), "size": pd.Series(size, dtype=dtype)}
    )


CAT_FIT, CAT_NEW = _strings(80, unseen=False, seed=1), _strings(30, unseen=True, seed=2)
CAT_KNOWN = _strings(30, unseen=False, seed=3)
OBJ_FIT = _strings(80, unseen=False, seed=1, dtype="object")
OBJ_NEW = _strings(30, unseen=True, seed=2, dtype="object")
BIN_FIT = pd.DataFrame({"flag": ["y", "n"] * 20, "color": CAT_FIT["color"].fillna("red")[:40]})
MIXED_FIT = pd.concat(
    [pd.DataFrame(NUM_FIT[:40], columns=["a", "b", "c"]), CAT_FIT[:40].reset_index(drop=True)],
    axis=1,
)
MIXED_NEW = pd.concat(
    [pd.DataFrame(NUM_NEW, columns=["a", "b", "c"]), CAT_NEW[:15].reset_index(drop=True)], axis=1
)


def _num_cat_ct(*, sparse_output: bool = True, **kwargs) -> ColumnTransformer:
    num = Pipeline([("imp", SimpleImputer(strategy="median")), ("sc", StandardScaler())])
    cat = Pipeline(
        [
            ("imp", SimpleImputer(strategy="most_frequent")),
            ("oh", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output)),
        ]
    )
    return ColumnTransformer(
        [("num", num, ["a", "b", "c"]), ("cat", cat, ["color", "size"])], **kwargs
    )


# (id, factory, fit data, new data). Every option that changes fitted behaviour appears.
CASES = [
    ("standard", lambda: StandardScaler(), NUM_FIT, NUM_NEW),
    ("standard-no-mean", lambda: StandardScaler(with_mean=False), NUM_FIT, NUM_NEW),
    ("standard-no-std", lambda: StandardScaler(with_std=False), NUM_FIT, NUM_NEW),
    ("standard-none", lambda: StandardScaler(with_mean=False, with_std=False), NUM_FIT, NUM_NEW),
    ("minmax", lambda: MinMaxScaler(), NUM_FIT, NUM_NEW),
    ("minmax-range-clip", lambda: MinMaxScaler(feature_range=(-2, 3), clip=True), NUM_FIT, NUM_NEW),
    ("maxabs", lambda: MaxAbsScaler(), NUM_FIT, NUM_NEW),
    ("maxabs-clip", lambda: MaxAbsScaler(clip=True), NUM_FIT, NUM_NEW),
    ("robust", lambda: RobustScaler(), NUM_FIT, NUM_NEW),
    (
        "robust-options",
        lambda: RobustScaler(with_centering=False, quantile_range=(10.0, 90.0), unit_variance=True),
        NUM_FIT,
        NUM_NEW,
    ),
    ("robust-no-scaling", lambda: RobustScaler(with_scaling=False), NUM_FIT, NUM_NEW),
    ("impute-mean", lambda: SimpleImputer(), NUM_FIT, NUM_NEW),
    (
        "impute-median-indicator",
        lambda: SimpleImputer(strategy="median", add_indicator=True),
        NUM_FIT,
        NUM_NEW,
    ),
    (
        "impute-most-frequent",
        lambda: SimpleImputer(strategy="most_frequent"),
        INTS.astype(float),
        NUM_NEW[:, :2],
    ),
    (
        "impute-constant",
        lambda: SimpleImputer(strategy="constant", fill_value=-7.5),
        NUM_FIT,
        NUM_NEW,
    ),
    ("impute-callable", lambda: SimpleImputer(strategy=np.median), NUM_FIT, NUM_NEW),
    ("impute-marker", lambda: SimpleImputer(missing_values=-1, strategy="mean"), INTS, INTS[::-1]),
    (
        "impute-empty-dropped",
        lambda: SimpleImputer(),
        np.c_[NUM_FIT, np.full(60, np.nan)],
        np.c_[NUM_NEW, NUM_NEW[:, :1]],
    ),
    (
        "impute-empty-kept",
        lambda: SimpleImputer(keep_empty_features=True, add_indicator=True),
        np.c_[NUM_FIT, np.full(60, np.nan)],
        np.c_[NUM_NEW, NUM_NEW[:, :1]],
    ),
    ("impute-str-frequent", lambda: SimpleImputer(strategy="most_frequent"), CAT_FIT, CAT_NEW),
    (
        "impute-str-constant",
        lambda: SimpleImputer(strategy="constant", fill_value="missing", add_indicator=True),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "impute-none-marker",
        lambda: SimpleImputer(missing_values=None, strategy="most_frequent"),
        OBJ_FIT,
        OBJ_NEW,
    ),
    ("missing-indicator-all", lambda: MissingIndicator(features="all"), NUM_FIT, NUM_NEW),
    ("onehot-error", lambda: OneHotEncoder(), CAT_FIT, CAT_KNOWN),
    (
        "onehot-ignore-dense",
        lambda: OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        CAT_FIT,
        CAT_NEW,
    ),
    ("onehot-object", lambda: OneHotEncoder(handle_unknown="ignore"), OBJ_FIT, OBJ_NEW),
    (
        "onehot-first",
        lambda: OneHotEncoder(drop="first", handle_unknown="ignore"),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "onehot-if-binary",
        lambda: OneHotEncoder(drop="if_binary", sparse_output=False),
        BIN_FIT,
        BIN_FIT[::-1],
    ),
    (
        "onehot-drop-array",
        lambda: OneHotEncoder(drop=["green", "M"], dtype=np.float32),
        CAT_FIT,
        CAT_KNOWN,
    ),
    (
        "onehot-infrequent",
        lambda: OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=6),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "onehot-max-categories-warn",
        lambda: OneHotEncoder(handle_unknown="warn", max_categories=3, sparse_output=False),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "onehot-infrequent-first",
        lambda: OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=0.1, drop="first"
        ),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "onehot-numeric-int",
        lambda: OneHotEncoder(handle_unknown="ignore", dtype=int),
        INTS,
        INTS[::-1] + 1,
    ),
    (
        "onehot-given-categories",
        lambda: OneHotEncoder(
            categories=[["blue", "green", "red", "teal", "gold"], ["L", "M", "S"]]
        ),
        CAT_FIT.fillna({"color": "red", "size": "S"}),
        CAT_KNOWN.fillna({"color": "gold", "size": "L"}),
    ),
    ("ordinal-error", lambda: OrdinalEncoder(), CAT_FIT, CAT_KNOWN),
    (
        "ordinal-unknown",
        lambda: OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
        ),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "ordinal-unknown-nan",
        lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
        OBJ_FIT,
        OBJ_NEW,
    ),
    (
        "ordinal-infrequent",
        lambda: OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=99, min_frequency=6
        ),
        CAT_FIT,
        CAT_NEW,
    ),
    (
        "ordinal-max-categories-int",
        lambda: OrdinalEncoder(max_categories=2, dtype=np.int32, encoded_missing_value=-1),
        CAT_FIT,
        CAT_KNOWN,
    ),
    (
        "kbins-onehot-uniform",
        lambda: KBinsDiscretizer(n_bins=4, strategy="uniform"),
        FINITE,
        FINITE[::-3] * 3,
    ),
    (
        "kbins-dense-quantile",
        lambda: KBinsDiscretizer(n_bins=[2, 3, 5], encode="onehot-dense"),
        FINITE,
        FINITE[::-3],
    ),
    (
        "kbins-ordinal-kmeans",
        lambda: KBinsDiscretizer(n_bins=3, encode="ordinal", strategy="kmeans", dtype=np.float32),
        FINITE,
        FINITE[::-3],
    ),
    ("poly", lambda: PolynomialFeatures(), FINITE, FINITE[::-2]),
    (
        "poly-options",
        lambda: PolynomialFeatures(
            degree=(2, 3), interaction_only=True, include_bias=False, order="F"
        ),
        FINITE,
        FINITE[::-2],
    ),
    ("poly-bias-min-degree", lambda: PolynomialFeatures(degree=(2, 3)), FINITE, FINITE[::-2]),
    (
        "function-log1p",
        lambda: FunctionTransformer(
            np.log1p, np.expm1, validate=True, feature_names_out="one-to-one"
        ),
        POSITIVE,
        POSITIVE_NEW,
    ),
    (
        "function-scipy",
        lambda: FunctionTransformer(scipy.special.expit, scipy.special.logit),
        FINITE,
        FINITE[:7],
    ),
    (
        "function-kwargs",
        lambda: FunctionTransformer(np.round, kw_args={"decimals": 1}),
        FINITE,
        FINITE[:7],
    ),
    ("function-identity", lambda: FunctionTransformer(), CAT_FIT, CAT_NEW),
    (
        "pipeline",
        lambda: Pipeline(
            [
                ("imp", SimpleImputer(add_indicator=True)),
                ("skip", "passthrough"),
                ("sc", RobustScaler()),
            ]
        ),
        NUM_FIT,
        NUM_NEW,
    ),
    (
        "pipeline-pandas-output",
        lambda: Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]).set_output(
            transform="pandas"
        ),
        pd.DataFrame(NUM_FIT, columns=["a", "b", "c"]),
        pd.DataFrame(NUM_NEW, columns=["a", "b", "c"]),
    ),
    ("ct-names", lambda: _num_cat_ct(), MIXED_FIT, MIXED_NEW),
    ("ct-names-dense", lambda: _num_cat_ct(sparse_threshold=0), MIXED_FIT, MIXED_NEW),
    (
        "ct-short-names-weights",
        lambda: _num_cat_ct(verbose_feature_names_out=False, transformer_weights={"num": 2.0}),
        MIXED_FIT,
        MIXED_NEW,
    ),
    (
        "ct-indices-remainder",
        lambda: ColumnTransformer(
            [("sc", StandardScaler(), [0, 2]), ("skip", "drop", [1])], remainder="passthrough"
        ),
        np.c_[NUM_FIT, FINITE[:60, :1]],
        np.c_[NUM_NEW, FINITE[:15, :1]],
    ),
    (
        "ct-mask-slice-remainder-est",
        lambda: ColumnTransformer(
            [
                ("mm", MinMaxScaler(), [True, False, True, False]),
                ("pass", "passthrough", slice(1, 2)),
            ],
            remainder=RobustScaler(),
        ),
        np.c_[NUM_FIT, FINITE[:60, :1]],
        np.c_[NUM_NEW, FINITE[:15, :1]],
    ),
    (
        "ct-selector-pandas",
        lambda: ColumnTransformer(
            [
                ("num", SimpleImputer(), make_column_selector(dtype_include="number")),
                (
                    "cat",
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                    make_column_selector(dtype_exclude="number"),
                ),
            ]
        ).set_output(transform="pandas"),
        MIXED_FIT,
        MIXED_NEW,
    ),
    (
        "union",
        lambda: FeatureUnion(
            [
                ("sc", StandardScaler()),
                ("gone", "drop"),
                ("raw", "passthrough"),
                ("mm", MinMaxScaler()),
            ],
            transformer_weights={"sc": 0.5, "raw": 3.0},
        ),
        NUM_FIT,
        NUM_NEW,
    ),
]
CASES_BY_ID = {c[0]: c[1] for c in CASES}
TARGET_CASES = [
    ("label-encoder-str", LabelEncoder, np.array(["b", "a", "c", "a"]), np.array(["c", "a"])),
    ("label-encoder-int", LabelEncoder, np.array([3, 1, 7, 1]), np.array([7, 3])),
    (
        "label-binarizer-binary",
        lambda: LabelBinarizer(neg_label=-1, pos_label=2),
        np.array(["no", "yes", "no"]),
        np.array(["yes", "no"]),
    ),
    ("label-binarizer-multi", LabelBinarizer, np.array([0, 2, 1, 2]), np.array([1, 2, 0])),
    (
        "label-binarizer-sparse",
        lambda: LabelBinarizer(sparse_output=True),
        np.array(["x", "y", "z"]),
        np.array(["z", "x"]),
    ),
]


def _fit(factory, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory().fit(data)


def _call(method, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method(data)


def _outcome(method, data):
    """(result, None), or (None, exception type) when the method raises."""
    try:
        return _call(method, data), None
    except Exception as exc:  # compared between original and rebuilt
        return None, type(exc)


def _assert_same(left, right) -> None:
    """Outputs are equal in type, dtype, shape and values (NaN equal to NaN)."""
    assert type(left) is type(right)
    if sparse.issparse(left):
        left, right = left.toarray(), right.toarray()
    if isinstance(left, pd.DataFrame):
        assert list(left.columns) == list(right.columns)
        left, right = left.to_numpy(), right.to_numpy()
    left, right = np.asarray(left), np.asarray(right)
    assert left.dtype == right.dtype and left.shape == right.shape
    assert pd.isna(left).tolist() == pd.isna(right).tolist()
    assert left[~pd.isna(left)].tolist() == right[~pd.isna(right)].tolist()


def _assert_same_state(left, right, path="") -> None:
    """Every attribute of the rebuilt object equals the original's, recursively."""
    if isinstance(left, BaseEstimator):
        assert type(left) is type(right), path
        assert vars(left).keys() == vars(right).keys(), path
        for name, value in vars(left).items():
            _assert_same_state(value, getattr(right, name), f"{path}.{name}")
    elif isinstance(left, (list, tuple)):
        assert type(left) is type(right) and len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_same_state(a, b, f"{path}[{i}]")
    elif isinstance(left, dict):
        assert list(left) == list(right), path
        for key in left:
            _assert_same_state(left[key], right[key], f"{path}[{key!r}]")
    elif isinstance(left, np.ndarray):
        assert isinstance(right, np.ndarray) and left.dtype == right.dtype, path
        assert left.shape == right.shape, path
        for a, b in zip(left.ravel().tolist(), right.ravel().tolist(), strict=True):
            _assert_same_state(a, b, path)
    elif isinstance(left, make_column_selector):
        assert isinstance(right, list), path  # stored as the columns it selected at fit
    elif isinstance(left, float) and np.isnan(left):
        assert type(left) is type(right) and np.isnan(right), path
    elif callable(left) and not isinstance(left, type):
        assert left is right, path
    else:
        assert type(left) is type(right) and left == right, path


def _round_trip(obj, tmp_path):
    path = tmp_path / "step.npz"
    write_native(obj, path)
    return read_native(path), path


@pytest.mark.parametrize(
    ("factory", "fit_data", "new_data"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_round_trip_transforms_identically(factory, fit_data, new_data, tmp_path):
    original = _fit(factory, fit_data)
    assert unsupported_parts(original) == []
    rebuilt, _ = _round_trip(original, tmp_path)

    _assert_same_state(original, rebuilt)
    expected = _call(original.transform, new_data)
    _assert_same(expected, _call(rebuilt.transform, new_data))
    if hasattr(original, "inverse_transform"):
        inverse, error = _outcome(original.inverse_transform, expected)
        rebuilt_inverse, rebuilt_error = _outcome(rebuilt.inverse_transform, expected)
        assert error is rebuilt_error  # e.g. no indicator to invert: both refuse alike
        if error is None:
            _assert_same(inverse, rebuilt_inverse)
    if hasattr(original, "get_feature_names_out") and (
        not isinstance(original, FunctionTransformer) or original.feature_names_out is not None
    ):
        assert list(original.get_feature_names_out()) == list(rebuilt.get_feature_names_out())


@pytest.mark.parametrize(
    ("factory", "fit_y", "new_y"), [c[1:] for c in TARGET_CASES], ids=[c[0] for c in TARGET_CASES]
)
def test_round_trip_target_transformers(factory, fit_y, new_y, tmp_path):
    original = factory().fit(fit_y)
    rebuilt, _ = _round_trip(original, tmp_path)

    _assert_same_state(original, rebuilt)
    encoded = original.transform(new_y)
    _assert_same(encoded, rebuilt.transform(new_y))
    _assert_same(original.inverse_transform(encoded), rebuilt.inverse_transform(encoded))


def test_file_loads_without_pickle_and_keeps_params_inside(tmp_path):
    original = _fit(_num_cat_ct, MIXED_FIT)
    _, path = _round_trip(original, tmp_path)

    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    assert all(array.dtype.kind != "O" for array in arrays.values())
    params = json.loads(str(arrays[PARAMS_KEY][()]))
    assert params["format"] == "keras-bundle.native" and params["version"] == 1
    assert params["root"]["class"] == "sklearn.compose.ColumnTransformer"


def test_rebuilt_set_output_pandas_survives(tmp_path):
    original = _fit(
        lambda: _num_cat_ct(sparse_output=False).set_output(transform="pandas"), MIXED_FIT
    )
    rebuilt, _ = _round_trip(original, tmp_path)

    result = rebuilt.transform(MIXED_NEW)
    assert isinstance(result, pd.DataFrame)
    _assert_same(original.transform(MIXED_NEW), result)


def test_callable_columns_are_stored_resolved(tmp_path):
    original = _fit(CASES_BY_ID["ct-selector-pandas"], MIXED_FIT)
    rebuilt, _ = _round_trip(original, tmp_path)

    assert [cols for *_, cols in rebuilt.transformers] == [["a", "b", "c"], ["color", "size"]]


def test_unfitted_object_round_trips_its_params(tmp_path):
    original = _num_cat_ct(remainder=StandardScaler())
    rebuilt, _ = _round_trip(original, tmp_path)

    _assert_same_state(original, rebuilt)
    assert rebuilt.remainder is not original.remainder


def test_shared_sub_estimator_stays_shared(tmp_path):
    original = _fit(
        lambda: ColumnTransformer([("a", "passthrough", [0])], remainder=StandardScaler()), NUM_FIT
    )
    rebuilt, _ = _round_trip(original, tmp_path)

    assert rebuilt._remainder[1] is rebuilt.remainder


def test_native_imports_lists_classes_and_functions():
    fitted = _fit(
        lambda: Pipeline([("log", FunctionTransformer(np.log1p)), ("sc", StandardScaler())]),
        POSITIVE,
    )

    assert native_imports(fitted) == [
        "numpy.log1p",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing.FunctionTransformer",
        "sklearn.preprocessing.StandardScaler",
    ]


def test_every_codec_is_exercised():
    """Every kind's storage round trip is covered here or by the registry's conformance
    test (tests/test_kinds.py), which walks every kind."""
    used = {type(c[1]()) for c in CASES + TARGET_CASES}
    assert used <= set(KINDS)


# ---------------------------------------------------------------------------------------
# Refusals: unsupported objects on write, hostile or unknown files on read.
# ---------------------------------------------------------------------------------------


class MyEncoder(TransformerMixin, BaseEstimator):
    """A user-defined transformer: has no native codec."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def _ct_with(step) -> ColumnTransformer:
    cat = Pipeline([("imp", SimpleImputer(strategy="most_frequent")), ("enc", step)])
    return ColumnTransformer([("num", StandardScaler(), ["a"]), ("cat", cat, ["color"])])


def test_unsupported_parts_names_the_path():
    fitted = _fit(lambda: _ct_with(MyEncoder()), MIXED_FIT)

    parts = unsupported_parts(fitted, name="ct")
    assert len(parts) == 1
    assert parts[0].startswith(
        "ColumnTransformer 'ct' > transformers['cat'] > Pipeline > steps['enc'] ("
    )
    assert parts[0].endswith("MyEncoder)")


@pytest.mark.parametrize(
    ("obj", "pattern"),
    [
        (MyEncoder(), r"MyEncoder \(.*MyEncoder\)"),
        (
            FunctionTransformer(lambda x: x + 1),
            r"FunctionTransformer > func \(function .*<lambda>, not a function of numpy",
        ),
        (
            FunctionTransformer(os.system),
            r"FunctionTransformer > func \(function \w+\.system, not a function of numpy",
        ),
        (
            _ct_with(MyEncoder()),
            r"ColumnTransformer > transformers\['cat'\] > Pipeline > steps\['enc'\] "
            r"\(.*MyEncoder\)",
        ),
        (
            SimpleImputer(missing_values=pd.NA),
            r"SimpleImputer > missing_values \(pandas\..*NAType\)",
        ),
        (
            ColumnTransformer([("n", StandardScaler(), make_column_selector())]),
            r"ColumnTransformer > transformers\['n'\]\[2\] "
            r"\(sklearn\.compose\..*make_column_selector\)",
        ),
    ],
    ids=["custom-class", "lambda", "os-system", "nested-custom", "pandas-na", "unfitted-selector"],
)
def test_write_refuses_unsupported_parts(obj, pattern, tmp_path):
    assert unsupported_parts(obj)
    with pytest.raises(
        UnsupportedFormatError,
        match=r"Cannot store \w+ without pickle: 1 part\(s\) have no native codec:\n- " + pattern,
    ) as info:
        write_native(obj, tmp_path / "step.npz")
    assert "store the step with joblib (loading it then needs trusted=True)" in str(info.value)
    assert not (tmp_path / "step.npz").exists()


def test_fitted_copies_are_reported_once():
    fitted = _fit(
        lambda: ColumnTransformer([("a", StandardScaler(), ["a"])], remainder=MyEncoder()),
        MIXED_FIT[["a", "b"]],
    )

    assert len(unsupported_parts(fitted)) == 1
    assert unsupported_parts(fitted)[0].startswith("ColumnTransformer > remainder (")


def test_unknown_fitted_attribute_is_refused(tmp_path):
    fitted = StandardScaler().fit(FINITE)
    fitted.extra_state_ = 1

    assert unsupported_parts(fitted) == [
        "StandardScaler > extra_state_ (attribute the native codec does not know)"
    ]


def _rewrite_params(path, edit) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    params = json.loads(str(arrays[PARAMS_KEY][()]))
    edit(params)
    arrays[PARAMS_KEY] = np.array(json.dumps(params))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.fixture
def log_step(tmp_path):
    path = tmp_path / "log.npz"
    write_native(FunctionTransformer(np.log1p).fit(POSITIVE), path)
    return path


def _set_func(name):
    def edit(params):
        params["root"]["params"]["func"]["name"] = name

    return edit


def test_read_refuses_os_system_without_calling_it(log_step, tmp_path):
    marker = tmp_path / "pwned"
    _rewrite_params(log_step, _set_func("os.system"))

    with pytest.raises(
        UnsupportedFormatError,
        match=r"Refusing function 'os\.system': a native step may only call NumPy ufuncs",
    ):
        read_native(log_step)
    assert not marker.exists()


def test_read_refuses_unknown_module_without_importing_it(log_step):
    _rewrite_params(log_step, _set_func("evil_module_never_imported.run"))

    with pytest.raises(UnsupportedFormatError, match=r"Nothing was imported"):
        read_native(log_step)
    assert "evil_module_never_imported" not in sys.modules


@pytest.mark.parametrize(
    "name", ["numpy.load", "numpy.ndarray", "numpy._private", "numpy.lib.npyio.load"]
)
def test_read_refuses_dangerous_numpy_names(log_step, name):
    _rewrite_params(log_step, _set_func(name))

    with pytest.raises(UnsupportedFormatError, match=rf"Refusing function '{name}'"):
        read_native(log_step)


def test_read_refuses_unknown_class_and_lists_known_codecs(log_step):
    def edit(params):
        params["root"]["class"] = "evil.Backdoor"

    _rewrite_params(log_step, edit)

    with pytest.raises(
        UnsupportedFormatError,
        match=r"names class 'evil\.Backdoor', which has no native codec; nothing was "
        r"imported\. Known codecs: sklearn\.compose\.ColumnTransformer, ",
    ) as info:
        read_native(log_step)
    assert "sklearn.preprocessing.StandardScaler" in str(info.value)
    assert "evil" not in sys.modules


@pytest.mark.parametrize("vectorizer", [CountVectorizer, TfidfVectorizer, HashingVectorizer])
@pytest.mark.parametrize("source", ["filename", "file"])
def test_read_refuses_a_vectorizer_that_would_open_the_files_its_input_names(
    tmp_path, vectorizer, source
):
    """input='filename' makes transform open() every document as a path: a hand-edited step
    read a server's files named by a request (and hung on /dev/zero). write_native refuses
    it; the reader must too, before anything reads the input."""
    path = tmp_path / "text.npz"
    write_native(vectorizer().fit(["alpha beta", "gamma delta"]), path)

    def edit(params):
        params["root"]["params"]["input"] = source

    _rewrite_params(path, edit)
    with pytest.raises(
        UnsupportedFormatError,
        match=rf"text\.npz stores a {vectorizer.__name__} with a configuration no native step "
        rf"holds: input='{source}' reads files named in the input at prediction time",
    ):
        read_native(path)


def test_read_refuses_unknown_attribute(log_step):
    def edit(params):
        params["root"]["state"]["__class__"] = "x"

    _rewrite_params(log_step, edit)

    with pytest.raises(
        UnsupportedFormatError,
        match=r"gives FunctionTransformer 1 fitted attribute\(s\) its codec does not "
        r"know:\n- __class__",
    ):
        read_native(log_step)


def test_read_refuses_newer_format_version(log_step):
    def edit(params):
        params["version"] = 99

    _rewrite_params(log_step, edit)

    with pytest.raises(
        UnsupportedFormatError,
        match=r"uses native format version 99; this keras-bundle reads versions 1 to 1\. "
        r"Upgrade keras-bundle\.",
    ):
        read_native(log_step)


def test_read_refuses_pickled_object_array(log_step):
    def edit(params):
        params["root"]["state"]["feature_names_in_"] = {"__type__": "ndarray", "key": "evil"}

    _rewrite_params(log_step, edit)
    with np.load(log_step, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    with open(log_step, "wb") as handle:  # np.savez pickles object arrays
        np.savez(handle, **arrays, evil=np.array([print], dtype=object))

    with pytest.raises(
        UnsupportedFormatError,
        match=r"is not a readable native step: malformed tree: ValueError: Object arrays cannot",
    ):
        read_native(log_step)


@pytest.mark.parametrize("content", [b"not a zip file", b""], ids=["garbage", "empty"])
def test_read_refuses_non_native_files(tmp_path, content):
    path = tmp_path / "step.npz"
    path.write_bytes(content)

    with pytest.raises(UnsupportedFormatError, match=r"step\.npz is not a readable native step"):
        read_native(path)


def _words(document: str) -> list[str]:
    return document.split()


def test_a_vectorizer_with_a_custom_tokenizer_is_refused_natively_and_needs_trust(tmp_path):
    """A tokenizer callable is Python code no native step replays: storage refuses it by
    name, the bundle stores the step by value, and loading it needs trusted=True."""
    import keras

    from bundle import Bundle
    from bundle.errors import UnsafeLoadError
    from bundle.steps.storage import choose_serializer

    docs = pd.DataFrame({"text": ["alpha beta", "beta gamma", "gamma delta alpha"]})
    step = ColumnTransformer(
        [("words", TfidfVectorizer(tokenizer=_words, token_pattern=None), "text")]
    ).fit(docs)
    with pytest.raises(
        UnsupportedFormatError, match=r"TfidfVectorizer > tokenizer \(function .*_words"
    ):
        write_native(step, tmp_path / "step.npz")
    assert choose_serializer(step) != "native"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    path = Bundle(model, preprocess=step, input_example=docs, name="words").save(tmp_path / "r")
    with pytest.raises(UnsafeLoadError, match=r"trusted=True"):
        Bundle.load(path)
    dense = np.asarray(sparse.csr_matrix(step.transform(docs)).todense(), dtype="float32")
    expected = model.predict(dense, verbose=0)
    got = Bundle.load(path, trusted=True).predict(docs)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
