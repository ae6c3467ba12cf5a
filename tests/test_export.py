"""bundle/export.py: the whole pipeline as one TensorFlow SavedModel.

Parity is the contract: for the same raw rows, the exported ``serving_default`` signature
returns the scores of ``Bundle.predict(postprocess=False)`` (float32 within 1e-6) and the
labels of ``Bundle.predict``. Hypothesis draws the rows (NaN, missing strings, unseen
categories, 0 and 1 rows) from each bundle's input contract.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle import Bundle, SchemaError, StepError, UnsupportedFormatError
from bundle.errors import BundleError
from bundle.export import INFO_FILE, export_saved_model, signature_name

REPO = Path(__file__).resolve().parent.parent
SEED = 0
ATOL = RTOL = 1e-6
EXAMPLES = 60  # hypothesis examples per bundle


# ---------------------------------------------------------------------------------------
# Helpers: a client of the exported model
# ---------------------------------------------------------------------------------------


class Served:
    """An exported SavedModel loaded back, called the way TF Serving calls it."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.path = path
        self.info = json.loads((path / INFO_FILE).read_text())
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        self.token = self.info["missing_token"]

    def feeds(self, raw) -> dict:
        """Signature tensors for a DataFrame (or an array for an array bundle)."""
        import tensorflow as tf

        feeds = {}
        for spec in self.info["inputs"]:
            if spec["column"] == "input" and not isinstance(raw, pd.DataFrame):
                feeds[spec["name"]] = tf.constant(np.asarray(raw), dtype=spec["dtype"])
                continue
            values = raw[spec["column"]]
            if spec["dtype"] == "string":
                text = [self.token if _missing(v) else v for v in values.astype(object)]
                feeds[spec["name"]] = tf.constant(np.asarray(text, dtype=object), tf.string)
            else:
                feeds[spec["name"]] = tf.constant(values.to_numpy(), dtype=spec["dtype"])
        return feeds

    def __call__(self, raw) -> dict[str, np.ndarray]:
        result = self.function(**self.feeds(raw))
        out = {key: value.numpy() for key, value in result.items()}
        for key, value in out.items():
            if value.dtype == object:  # tf.string comes back as bytes
                out[key] = np.array([v.decode() for v in value.tolist()], dtype=object)
        return out


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def assert_parity(bundle: Bundle, served: Served, raw) -> None:
    """The exported graph returns what Bundle.predict returns, for the same raw input."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown categories under drop=: sklearn warns
        expected_scores = bundle.predict(raw, postprocess=False)
        try:
            expected = bundle.predict(raw) if bundle.postprocess else None
        except StepError:
            # Bundle.predict cannot inverse_transform 0 rows (scikit-learn refuses empty
            # input; reported); the graph returns 0 predictions.
            assert len(raw) == 0
            expected = np.zeros((0, *expected_scores.shape[1:]), expected_scores.dtype)
    got = served(raw)
    np.testing.assert_allclose(got["scores"], expected_scores, rtol=RTOL, atol=ATOL, equal_nan=True)
    assert got["scores"].dtype == np.float32
    if expected is None:
        assert set(got) == {"scores"}
        return
    key = "labels" if "labels" in got else "predictions"
    if key == "predictions":
        np.testing.assert_allclose(got[key], expected, rtol=RTOL, atol=ATOL, equal_nan=True)
    else:
        assert got[key].tolist() == np.asarray(expected).tolist()


def rows_strategy(bundle: Bundle, columns: dict | None = None, max_rows: int = 12):
    """DataFrames drawn from the bundle's input contract: NaN and missing text where the
    contract allows them, unseen text, 0 to `max_rows` rows.

    `columns` overrides the value strategy of some columns.
    """
    schema = bundle.input_schema.to_dict()
    columns = columns or {}

    def column_values(spec):
        name, kind = spec["name"], spec["kind"]
        allows = spec["has_missing"] is not False or spec["missing_handled"]
        if name in columns:
            return columns[name]
        if kind == "float":
            low, high = spec["minimum"], spec["maximum"]
            span = (high - low) or 1.0
            values = st.floats(low - span, high + span, allow_nan=False, width=64)
            return st.one_of(values, st.just(math.nan)) if allows else values
        if kind == "integer":
            return st.integers(int(spec["minimum"]) - 5, int(spec["maximum"]) + 5)
        if kind == "bool":
            return st.booleans()
        known = list(spec["closed_categories"] or spec["categories"] or ["a"])
        unseen = st.text("abcxyz", min_size=1, max_size=3)
        choices = [st.sampled_from(known)]
        if spec["closed_categories"] is None:
            choices.append(unseen)
        if allows:
            choices.append(st.none())
        return st.one_of(*choices)

    specs = schema["columns"]

    @st.composite
    def frames(draw):
        n = draw(st.integers(0, max_rows))
        data = {s["name"]: draw(st.lists(column_values(s), min_size=n, max_size=n)) for s in specs}
        return pd.DataFrame(
            {
                s["name"]: pd.Series(data[s["name"]], dtype=_pandas_dtype(s), name=s["name"])
                for s in specs
            }
        )

    return frames()


def _pandas_dtype(spec):
    if spec["kind"] in ("string", "categorical"):
        return object
    return spec["dtype"]


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# ---------------------------------------------------------------------------------------
# Bundles: every TensorFlow form is exercised by at least one of them
# ---------------------------------------------------------------------------------------


def _save_and_load(bundle: Bundle, root: Path) -> Bundle:
    return Bundle.load(bundle.save(root))  # native steps only: trusted=False loads them


def _dense_model(width: int, units: int, activation: str, seed: int = SEED):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((width,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(units, activation=activation),
        ]
    )


def wide_frame(n: int, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(0, 2, n),
            "b": rng.uniform(-5, 5, n).astype("float32"),
            "c": rng.integers(-50, 50, n).astype("int32"),
            "d": rng.exponential(3, n),
            "e": rng.exponential(10, n),
            "f": rng.random(n) < 0.3,
            "g": rng.choice(["x", "y", "z"], n).astype(object),
            "h": rng.choice(["red", "green", "blue", "teal"], n),
            "i": rng.choice(list("abcdefgh"), n, p=[0.4, 0.3, 0.15, 0.1, 0.02, 0.01, 0.01, 0.01]),
        }
    )
    frame.loc[rng.random(n) < 0.1, "a"] = np.nan
    frame.loc[rng.random(n) < 0.1, "g"] = None
    return frame


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory):
    """Scalers (clip, float32, int32), imputer + indicator, KBins both ways, log1p,
    FeatureUnion, weighted PolynomialFeatures, ordinal (missing + unknown codes), one-hot
    of numbers, with a NaN category, with drop and with infrequent categories, bool
    passthrough; a sigmoid + LabelEncoder."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import FeatureUnion, make_pipeline
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

    frame = wide_frame(400)
    preprocess = ColumnTransformer(
        [
            ("a", make_pipeline(SimpleImputer(add_indicator=True), RobustScaler()), ["a"]),
            ("b", MinMaxScaler(feature_range=(-1, 1), clip=True), ["b"]),
            ("c", MaxAbsScaler(clip=True), ["c"]),
            ("c_codes", OneHotEncoder(handle_unknown="ignore"), ["c"]),  # number categories
            ("d", KBinsDiscretizer(n_bins=4, encode="onehot-dense", strategy="uniform"), ["d"]),
            (
                "e",
                make_pipeline(
                    FunctionTransformer(np.log1p),
                    FeatureUnion(
                        [
                            ("std", StandardScaler()),
                            ("bins", KBinsDiscretizer(n_bins=3, encode="ordinal")),
                        ]
                    ),
                ),
                ["e"],
            ),
            (
                "poly",
                make_pipeline(SimpleImputer(strategy="median"), PolynomialFeatures(degree=2)),
                ["a", "b", "c"],
            ),
            (
                "g",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
                ),
                ["g"],
            ),
            ("g_nan", OneHotEncoder(handle_unknown="ignore"), ["g"]),  # a NaN category
            ("h", OneHotEncoder(drop="first", handle_unknown="ignore"), ["h"]),
            ("i", OneHotEncoder(min_frequency=10, handle_unknown="infrequent_if_exist"), ["i"]),
        ],
        remainder="passthrough",
        transformer_weights={"poly": 0.5},
    )
    features = preprocess.fit_transform(frame)
    labels = LabelEncoder().fit(["no", "yes"])
    model = _dense_model(features.shape[1], 1, "sigmoid")
    bundle = Bundle(
        model, preprocess=preprocess, postprocess=labels, input_example=frame, name="wide"
    )
    return _save_and_load(bundle, tmp_path_factory.mktemp("wide") / "wide")


@pytest.fixture(scope="module")
def array_bundle(tmp_path_factory):
    """A float32 array regressor: two preprocess steps (imputer + indicator, interaction
    polynomial + MaxAbsScaler), a target StandardScaler postprocess."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, PolynomialFeatures, StandardScaler

    rng = np.random.default_rng(SEED)
    x = rng.normal(0, 3, (300, 4)).astype("float32")
    x[rng.random(x.shape) < 0.05] = np.nan
    y = rng.normal(50, 10, (300, 1))
    impute = SimpleImputer(strategy="median", add_indicator=True).fit(x)
    expand = make_pipeline(
        PolynomialFeatures(degree=3, interaction_only=True, include_bias=False), MaxAbsScaler()
    ).fit(impute.transform(x))
    target = StandardScaler().fit(y)
    width = expand.transform(impute.transform(x[:2])).shape[1]
    model = _dense_model(width, 1, "linear")
    bundle = Bundle(
        model, preprocess=[impute, expand], postprocess=target, input_example=x, name="arr"
    )
    return _save_and_load(bundle, tmp_path_factory.mktemp("array") / "arr")


def mixed_frame(n: int, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "n1": rng.normal(0, 1, n),
            "n2": rng.normal(5, 2, n),
            "count": rng.integers(0, 4, n),
            "s1": rng.choice(["p", "q", "r"], n).astype(object),
            "s2": rng.choice(["on", "off"], n),
        }
    )
    frame.loc[rng.random(n) < 0.15, "n1"] = np.nan
    frame.loc[rng.random(n) < 0.15, "s1"] = None
    return frame


@pytest.fixture(scope="module")
def mixed_bundle(tmp_path_factory):
    """MissingIndicator (so predict runs scikit-learn's own transform), an object-dtype
    imputer over an int and a text column, a closed one-hot column; a LabelBinarizer of
    integer classes."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelBinarizer, OneHotEncoder

    frame = mixed_frame(300)
    preprocess = ColumnTransformer(
        [
            ("ind", MissingIndicator(features="all"), ["n1", "n2"]),
            ("num", SimpleImputer(strategy="constant", fill_value=0.0), ["n1", "n2"]),
            (
                "mixed",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                ["count", "s1"],
            ),
            ("count", SimpleImputer(strategy="most_frequent"), ["count"]),  # stays int64
            ("closed", OneHotEncoder(handle_unknown="error", drop="if_binary"), ["s2"]),
        ]
    )
    features = preprocess.fit_transform(frame)
    labels = LabelBinarizer().fit([10, 20, 30])
    model = _dense_model(features.shape[1], 3, "softmax")
    bundle = Bundle(
        model, preprocess=preprocess, postprocess=labels, input_example=frame, name="mixed"
    )
    return _save_and_load(bundle, tmp_path_factory.mktemp("mixed") / "mixed")


@pytest.fixture(scope="module")
def churn(tabular_bundle):
    """The shared tabular bundle (conftest), loaded back from disk."""
    path, _ = tabular_bundle
    return Bundle.load(path)


def _export(bundle: Bundle, root: Path, **options) -> Served:
    return Served(export_saved_model(bundle, root / "model" / "1", **options))


@pytest.fixture(scope="module")
def served_churn(churn, tmp_path_factory):
    return _export(churn, tmp_path_factory.mktemp("export-churn"))


@pytest.fixture(scope="module")
def served_wide(wide_bundle, tmp_path_factory):
    return _export(wide_bundle, tmp_path_factory.mktemp("export-wide"))


@pytest.fixture(scope="module")
def served_array(array_bundle, tmp_path_factory):
    return _export(array_bundle, tmp_path_factory.mktemp("export-array"))


@pytest.fixture(scope="module")
def served_mixed(mixed_bundle, tmp_path_factory):
    return _export(mixed_bundle, tmp_path_factory.mktemp("export-mixed"))


# ---------------------------------------------------------------------------------------
# Parity, drawn by hypothesis
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_parity_churn(churn, served_churn, data):
    assert_parity(churn, served_churn, data.draw(rows_strategy(churn)))


@SETTINGS
@given(data=st.data())
def test_parity_wide(wide_bundle, served_wide, data):
    positive = st.one_of(st.floats(0, 200, allow_nan=False), st.just(0.0))
    rows = rows_strategy(wide_bundle, {"d": positive, "e": positive})
    assert_parity(wide_bundle, served_wide, data.draw(rows))


@SETTINGS
@given(data=st.data())
def test_parity_mixed(mixed_bundle, served_mixed, data):
    assert_parity(mixed_bundle, served_mixed, data.draw(rows_strategy(mixed_bundle)))


@SETTINGS
@given(
    rows=st.integers(0, 12).flatmap(
        lambda n: st.lists(
            st.lists(
                st.one_of(st.floats(-20, 20, allow_nan=False, width=32), st.just(math.nan)),
                min_size=4,
                max_size=4,
            ),
            min_size=n,
            max_size=n,
        )
    )
)
def test_parity_array(array_bundle, served_array, rows):
    assert_parity(array_bundle, served_array, np.asarray(rows, dtype=np.float32).reshape(-1, 4))


def test_parity_image_bundle_without_steps(image_bundle, image_data, tmp_path):
    path, _ = image_bundle
    bundle = Bundle.load(path)
    served = _export(bundle, tmp_path)
    images, _ = image_data
    for batch in (images[:0], images[:1], images):
        assert_parity(bundle, served, batch)
    assert served.info["inputs"] == [
        {
            "name": "input",
            "column": "input",
            "dtype": "uint8",
            "training_dtype": "uint8",
            "shape": [None, 8, 8, 1],
        }
    ]


@pytest.mark.parametrize("n", [0, 1, 100])
def test_parity_on_training_rows(wide_bundle, served_wide, mixed_bundle, served_mixed, n):
    """Empty, one-row and larger batches of realistic rows, NaNs and missing text included."""
    assert_parity(wide_bundle, served_wide, wide_frame(n, seed=7))
    assert_parity(mixed_bundle, served_mixed, mixed_frame(n, seed=7))


def test_unseen_categories_are_handled_like_predict(wide_bundle, served_wide):
    rows = wide_frame(6, seed=3)
    rows["g"] = ["x", "unseen", None, "z", "w", None]  # ordinal: unknown -1, missing -2
    rows["h"] = ["red", "purple", "blue", "?", "teal", "green"]  # drop='first' + ignore
    rows["i"] = ["a", "e", "zz", "h", "b", "qq"]  # rare and unseen -> infrequent column
    assert_parity(wide_bundle, served_wide, rows)


def test_parity_of_nan_scores_and_labels(wide_bundle, served_wide):
    """NaN that reaches the model (column 'b' is imputed in one branch only) gives NaN
    scores; labels decode them as predict does (NaN > 0.5 is False)."""
    rows = wide_frame(3, seed=4)
    rows["b"] = np.array([np.nan, 1.0, np.nan], dtype="float32")
    assert_parity(wide_bundle, served_wide, rows)
    assert np.isnan(served_wide(rows)["scores"][[0, 2]]).all()


# ---------------------------------------------------------------------------------------
# The signature
# ---------------------------------------------------------------------------------------


def test_signature_of_a_tabular_bundle(served_churn):
    function = served_churn.function
    _, inputs = function.structured_input_signature
    assert {name: spec.dtype.name for name, spec in inputs.items()} == {
        "age": "float64",
        "income": "float64",
        "score": "float64",
        "visits": "int64",
        "plan": "string",
        "region": "string",
    }
    assert all(spec.shape.as_list() == [None] for spec in inputs.values())
    outputs = function.structured_outputs
    assert {name: spec.dtype.name for name, spec in outputs.items()} == {
        "labels": "string",
        "scores": "float32",
    }
    assert outputs["scores"].shape.as_list() == [None, 3]


def test_labels_are_strings_and_predictions_are_values(served_churn, served_array):
    rows = make_rows(2)
    assert served_churn(rows)["labels"].tolist()[0] in {"churn", "stay", "upgrade"}
    out = served_array(np.zeros((2, 4), np.float32))
    assert set(out) == {"scores", "predictions"}


def make_rows(n: int) -> pd.DataFrame:
    from conftest import make_tabular_frame

    return make_tabular_frame(n, seed=11)[0]


def test_info_file_describes_the_export(served_wide):
    info = served_wide.info
    assert info["format"] == "keras-bundle.saved_model"
    assert info["bundle"]["name"] == "wide"
    assert info["missing_token"] == ""
    by_column = {spec["column"]: spec for spec in info["inputs"]}
    assert by_column["c"]["dtype"] == "int64" and by_column["c"]["training_dtype"] == "int32"
    assert by_column["b"]["dtype"] == "float32"
    assert by_column["f"]["dtype"] == "bool"
    assert set(info["outputs"]) == {"scores", "labels"}


@pytest.mark.slow
def test_saved_model_cli_lists_the_signature(served_churn):
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(served_churn.path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "signature_def['serving_default']" in text
    for name, dtype in [("age", "DT_DOUBLE"), ("visits", "DT_INT64"), ("plan", "DT_STRING")]:
        pattern = rf"inputs\['{name}'\] tensor_info:\s+dtype: (\w+)\s+shape: \(-1\)"
        assert re.search(pattern, text)[1] == dtype
    assert "outputs['labels'] tensor_info:" in text
    assert "outputs['scores'] tensor_info:" in text


@pytest.mark.slow
def test_loads_in_a_process_without_keras_bundle(churn, served_churn, tmp_path):
    """The SavedModel needs TensorFlow only: keras-bundle is not importable in the child."""
    rows = make_rows(20)
    rows.loc[rows.index[:3], "plan"] = None
    rows.loc[rows.index[3:5], "region"] = "atlantis"
    expected_scores = churn.predict(rows, postprocess=False)
    expected_labels = churn.predict(rows).astype(str)
    feeds = {name: t.numpy() for name, t in served_churn.feeds(rows).items()}
    np.savez(tmp_path / "case.npz", **{f"in_{k}": v for k, v in feeds.items()})
    code = f"""
        import sys
        from pathlib import Path
        sys.modules["keras"] = None  # TensorFlow alone: Keras is not needed either
        repo = Path({str(REPO)!r}).resolve()
        sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != repo]
        try:
            import bundle
        except ImportError:
            pass
        else:
            raise SystemExit("keras-bundle is importable: " + str(bundle.__file__))
        import numpy as np
        import tensorflow as tf
        data = np.load("case.npz", allow_pickle=True)
        feeds = {{k[3:]: tf.constant(data[k]) for k in data.files}}
        model = tf.saved_model.load({str(served_churn.path)!r})
        out = model.signatures["serving_default"](**feeds)
        np.save("scores.npy", out["scores"].numpy())
        np.save("labels.npy", np.array([v.decode() for v in out["labels"].numpy()]))
        assert "bundle" not in sys.modules
        print("ok")
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), expected_scores, atol=ATOL)
    assert np.load(tmp_path / "labels.npy").tolist() == expected_labels.tolist()


# ---------------------------------------------------------------------------------------
# Checks inside the graph: InvalidArgumentError naming the column
# ---------------------------------------------------------------------------------------


def _invalid(served: Served, raw, match: str) -> None:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        served.function(**served.feeds(raw))


def test_unknown_category_under_handle_unknown_error(mixed_bundle, served_mixed):
    rows = mixed_frame(4, seed=5)
    rows["s2"] = ["on", "maybe", "off", "on"]
    with pytest.raises(SchemaError, match="s2"):
        mixed_bundle.predict(rows)
    _invalid(served_mixed, rows, r"Column `s2` has values training never saw(.|\n)*maybe")


def test_missing_value_where_training_had_none(wide_bundle, served_wide):
    rows = wide_frame(3, seed=6)
    rows["d"] = [1.0, np.nan, 2.0]
    with pytest.raises(SchemaError, match="'d'"):
        wide_bundle.predict(rows)
    _invalid(served_wide, rows, r"Column `d` has missing values \(NaN\)")


def test_missing_text_where_training_had_none(mixed_bundle, served_mixed):
    rows = mixed_frame(3, seed=6)
    rows["s2"] = ["on", None, "off"]
    with pytest.raises(SchemaError, match="s2"):
        mixed_bundle.predict(rows)
    _invalid(served_mixed, rows, r"Column `s2` has missing values \(the empty string\)")


def test_infinity_is_refused_like_scikit_learn(wide_bundle, served_wide):
    rows = wide_frame(3, seed=8)
    rows["e"] = [1.0, np.inf, 2.0]
    with pytest.raises(BundleError):
        wide_bundle.predict(rows)
    _invalid(served_wide, rows, r"input column(.|\n)*`e`(.|\n)*infinity")


def test_integer_out_of_the_training_dtype_range(served_wide):
    import tensorflow as tf

    feeds = served_wide.feeds(wide_frame(2, seed=9))
    feeds["c"] = tf.constant([1, 2**40], tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)Column `c`.*int32"):
        served_wide.function(**feeds)


def test_columns_of_different_lengths(served_churn):
    import tensorflow as tf

    feeds = served_churn.feeds(make_rows(3))
    feeds["age"] = tf.constant([30.0], tf.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same number of rows"):
        served_churn.function(**feeds)


# ---------------------------------------------------------------------------------------
# Refusals: nothing written, every unsupported part named
# ---------------------------------------------------------------------------------------


def test_unsupported_steps_are_refused_before_writing(tabular_data, tmp_path):
    import keras
    from sklearn.compose import ColumnTransformer
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    frame, _ = tabular_data
    frame = frame.fillna(0.0)
    preprocess = ColumnTransformer(
        [
            ("q", make_pipeline(RBFSampler(n_components=3, random_state=0)), ["age"]),
            ("clip", FunctionTransformer(np.clip, kw_args={"a_min": 0, "a_max": 1}), ["score"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    ).fit(frame)
    width = preprocess.transform(frame[:1]).shape[1]
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(1)])
    bundle = Bundle(model, preprocess=preprocess, input_example=frame[:20], name="odd")
    out = tmp_path / "serving" / "odd" / "1"
    with pytest.raises(UnsupportedFormatError) as caught:
        export_saved_model(bundle, out)
    message = str(caught.value)
    assert "Cannot export bundle 'odd' as one TensorFlow graph: 2 part(s)" in message
    assert (
        "preprocess[0] ColumnTransformer > transformers['q'] Pipeline > "
        "steps['rbfsampler'] RBFSampler: "
        "sklearn.kernel_approximation.RBFSampler has no TensorFlow form; known: "
    ) in message
    assert "QuantileTransformer" in message  # the known classes are listed
    assert "transformers['clip'] FunctionTransformer: func with keyword arguments" in message
    assert "Nothing was written" in message
    assert len(caught.value.found) == 2
    assert not out.exists()
    assert not (tmp_path / "serving" / "odd").exists() or not any(
        (tmp_path / "serving" / "odd").iterdir()
    )


def test_an_unmapped_ufunc_is_refused(tabular_data, tmp_path):
    import keras
    from sklearn.preprocessing import FunctionTransformer

    frame, _ = tabular_data
    numbers = frame[["age", "score"]]
    step = FunctionTransformer(np.spacing).fit(numbers)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    bundle = Bundle(model, preprocess=step, input_example=numbers[:10], name="ufunc")
    with pytest.raises(UnsupportedFormatError, match=r"func=spacing has no TensorFlow form"):
        export_saved_model(bundle, tmp_path / "1")


def test_missing_token_that_is_a_category_is_refused(tabular_data, tabular_parts, tmp_path):
    preprocess, labels, model = tabular_parts
    frame, _ = tabular_data
    bundle = Bundle(model, preprocess=preprocess, postprocess=labels, input_example=frame[:50])
    with pytest.raises(UnsupportedFormatError, match=r"token 'pro' is also a known value"):
        export_saved_model(bundle, tmp_path / "1", missing_token="pro")
    served = _export(bundle, tmp_path, missing_token="<NA>")
    rows = make_rows(4)
    rows.loc[rows.index[0], "plan"] = None
    assert served.info["missing_token"] == "<NA>"
    assert_parity(bundle, served, rows)


def test_existing_directory_is_not_overwritten_unless_asked(churn, tmp_path):
    out = tmp_path / "1"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"(?s)already exists.*overwrite=True"):
        export_saved_model(churn, out)
    assert (out / "keep.txt").read_text() == "mine"
    assert export_saved_model(churn, out, overwrite=True) == out
    assert (out / "saved_model.pb").exists() and not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["1"]  # no staging directory left


def test_signature_names_are_safe_and_collisions_refused(tmp_path):
    import keras

    assert signature_name("monthly spend") == "monthly_spend"
    assert signature_name("2nd") == "arg_2nd"
    assert signature_name("_x") == "arg__x"
    frame = pd.DataFrame({"monthly spend": [1.0, 2.0], "2nd": [3.0, 4.0]})
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    served = _export(Bundle(model, input_example=frame, name="names"), tmp_path)
    assert [spec["name"] for spec in served.info["inputs"]] == ["monthly_spend", "arg_2nd"]
    assert_parity(Bundle(model, input_example=frame), served, frame)
    clash = pd.DataFrame({"a b": [1.0], "A_b": [2.0]})
    with pytest.raises(UnsupportedFormatError, match=r"'a b', 'A_b' would share"):
        export_saved_model(Bundle(model, input_example=clash), tmp_path / "2")


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def test_mapped_ufuncs_match_numpy():
    import scipy.special
    import tensorflow as tf

    from bundle.steps.functions import apply_ufunc as _apply_ufunc
    from bundle.steps.functions import ufunc_table as _ufunc_table

    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.5, -3.5, 1e-300, 7e2]
    for func in _ufunc_table():
        for dtype in (np.float64, np.float32):
            x = np.array(special, dtype=dtype)
            with np.errstate(all="ignore"):
                expected = func(x)
            got = _apply_ufunc(func, tf.constant(x), "test").numpy()
            assert got.dtype == expected.dtype, func
            np.testing.assert_allclose(
                got, expected, rtol=1e-6 if dtype == np.float32 else 1e-12, err_msg=func.__name__
            )
        ints = np.array([-3, 0, 5], dtype=np.int64)
        if func is np.reciprocal:
            continue
        with np.errstate(all="ignore"):
            expected = func(ints)
        got = _apply_ufunc(func, tf.constant(ints), "test").numpy()
        assert got.dtype == expected.dtype, func
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=func.__name__)
    assert scipy.special.expit in _ufunc_table()


def test_argmax_matches_numpy_on_ties_and_nan():
    import tensorflow as tf

    from bundle.steps.graph import first_argmax as _first_argmax

    scores = np.array(
        [[1, 1, 1], [np.nan, 2, 2], [1, np.nan, 3], [-np.inf] * 3, [0, 5, 5], [np.nan] * 3],
        dtype=np.float32,
    )
    assert _first_argmax(tf.constant(scores)).numpy().tolist() == np.argmax(scores, 1).tolist()


def _replay(step, x):
    """Run `step`'s TensorFlow form eagerly on array `x` (float64 output, like predict)."""
    import tensorflow as tf

    from bundle.steps.graph import Context, GraphBuild, TensorFrame, compile_graph

    build = GraphBuild(missing_token="")
    node = compile_graph(step, Context(x.shape[1], None, type(step).__name__, build=build))
    assert not build.problems, build.problems
    out = node.run(TensorFrame.of(tf.constant(x))).to(np.float64).numpy()
    assert out.shape == (len(x), node.n_out)
    return out


def _codec_cases():
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.preprocessing import (
        FunctionTransformer,
        KBinsDiscretizer,
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        PolynomialFeatures,
        RobustScaler,
        StandardScaler,
    )

    numeric = [
        StandardScaler(),
        StandardScaler(with_mean=False),
        StandardScaler(with_std=False),
        MinMaxScaler(feature_range=(-2, 3), clip=True),
        MinMaxScaler(),
        MaxAbsScaler(clip=True),
        RobustScaler(with_centering=False),
        RobustScaler(quantile_range=(10, 90)),
        SimpleImputer(strategy="mean", add_indicator=True),
        SimpleImputer(strategy="median"),
        SimpleImputer(strategy="most_frequent"),
        SimpleImputer(strategy="constant", fill_value=7, keep_empty_features=True),
        MissingIndicator(),
        MissingIndicator(features="all"),
        KBinsDiscretizer(n_bins=3, encode="ordinal", strategy="uniform"),
        KBinsDiscretizer(n_bins=4, encode="onehot-dense", strategy="quantile"),
        KBinsDiscretizer(n_bins=3, encode="onehot", strategy="kmeans", dtype=np.float32),
        PolynomialFeatures(degree=3),
        PolynomialFeatures(degree=(2, 3), include_bias=False),
        PolynomialFeatures(degree=2, interaction_only=True),
        FunctionTransformer(np.sqrt),
        FunctionTransformer(np.abs, validate=True),
        FunctionTransformer(),
    ]
    categorical = [
        OneHotEncoder(handle_unknown="ignore"),
        OneHotEncoder(drop="first", handle_unknown="ignore"),
        OneHotEncoder(drop="if_binary", sparse_output=False),
        OneHotEncoder(max_categories=3, handle_unknown="infrequent_if_exist"),
        OneHotEncoder(min_frequency=20, drop="first", handle_unknown="infrequent_if_exist"),
        OrdinalEncoder(),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
        OrdinalEncoder(min_frequency=20, handle_unknown="use_encoded_value", unknown_value=-9),
    ]
    return numeric, categorical


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_numeric_form_matches_scikit_learn(dtype):
    """Every numeric form gives scikit-learn's transform, float64 and float32 input alike."""
    numeric, _ = _codec_cases()
    rng = np.random.default_rng(SEED)
    train = rng.normal(3, 2, (200, 3)).astype(dtype)
    train[rng.random(train.shape) < 0.1] = np.nan
    test = rng.normal(3, 4, (50, 3)).astype(dtype)
    test[rng.random(test.shape) < 0.1] = np.nan
    for step in numeric:
        name = repr(step)
        nan_free = "Imputer" not in name and "Indicator" not in name and "Scaler" not in name
        fit_x, test_x = (np.nan_to_num(train), np.nan_to_num(test)) if nan_free else (train, test)
        if "sqrt" in name:
            fit_x, test_x = np.abs(fit_x), np.abs(test_x)
        if "keep_empty" in name:
            fit_x = fit_x.copy()
            fit_x[:, 1] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step.fit(fit_x)
            expected = step.transform(test_x)
        expected = np.asarray(expected.toarray() if hasattr(expected, "toarray") else expected)
        got = _replay(step, test_x)
        np.testing.assert_array_equal(got, expected.astype(np.float64), err_msg=name)


def test_each_categorical_form_matches_scikit_learn():
    _, categorical = _codec_cases()
    rng = np.random.default_rng(SEED)
    train = rng.choice([1, 2, 3, 4, 5, 6, 7], (300, 2), p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.04, 0.01])
    test = rng.integers(0, 9, (60, 2))  # 0 and 8 never seen
    for step in categorical:
        step.fit(train.astype(np.float64))
        known = step.handle_unknown == "error"
        x = np.where(np.isin(test, train), test, 1) if known else test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = step.transform(x.astype(np.float64))
        expected = np.asarray(expected.toarray() if hasattr(expected, "toarray") else expected)
        got = _replay(step, x.astype(np.float64))
        np.testing.assert_array_equal(got, expected.astype(np.float64), err_msg=repr(step))


def test_each_postprocess_form_matches_scikit_learn():
    import tensorflow as tf
    from sklearn.preprocessing import (
        FunctionTransformer,
        LabelBinarizer,
        MaxAbsScaler,
        MinMaxScaler,
        RobustScaler,
        StandardScaler,
    )

    from bundle.steps.graph import GraphBuild, decode_graph

    rng = np.random.default_rng(SEED)
    y = rng.normal(10, 5, (100, 2))
    scores = rng.random((40, 2)).astype(np.float32)
    cases = [
        (StandardScaler().fit(y), scores),
        (MinMaxScaler((-1, 2)).fit(y), scores),
        (MaxAbsScaler().fit(y), scores),
        (RobustScaler().fit(y), scores),
        (FunctionTransformer(np.log1p, inverse_func=np.expm1, check_inverse=False).fit(y), scores),
        (LabelBinarizer().fit(["a", "b", "c"]), rng.random((40, 3)).astype(np.float32)),
        (LabelBinarizer().fit(["no", "yes"]), scores[:, :1]),
        (LabelBinarizer(neg_label=-1).fit([3, 7]), scores[:, :1] * 2 - 1),
        (LabelBinarizer().fit([[0, 1], [1, 1]]), scores),
    ]
    for step, values in cases:
        build = GraphBuild(missing_token="")
        run = decode_graph(step, "inverse_transform", [None, values.shape[1]], "post", build)
        assert not build.problems, build.problems
        got = run(tf.constant(values)).numpy()
        expected = np.asarray(step.inverse_transform(values))
        if got.dtype == object:
            got = np.array([v.decode() for v in got.tolist()])
        assert got.dtype.kind == expected.dtype.kind or expected.dtype == object, step
        if isinstance(step, FunctionTransformer):  # TF's and NumPy's expm1 differ by an ULP
            np.testing.assert_allclose(got, expected, rtol=RTOL, err_msg=repr(step))
            continue
        np.testing.assert_array_equal(got.astype(expected.dtype), expected, err_msg=repr(step))


def test_none_as_the_missing_value_of_object_columns(tmp_path):
    """Object columns that held None in training: the token stands for None, which an
    encoder knows as a category and `SimpleImputer(missing_values=None)` imputes."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    rng = np.random.default_rng(SEED)

    def objects(values, n):
        return pd.Series(rng.choice(values, n).tolist(), dtype=object)

    frame = pd.DataFrame({"t": objects(["a", "b", None], 200), "u": objects(["x", None], 200)})
    preprocess = ColumnTransformer(
        [
            ("t", OneHotEncoder(handle_unknown="ignore"), ["t"]),
            (
                "u",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent", missing_values=None), OrdinalEncoder()
                ),
                ["u"],
            ),
        ]
    ).fit(frame)
    model = _dense_model(preprocess.transform(frame[:1]).shape[1], 2, "softmax")
    bundle = Bundle(model, preprocess=preprocess, input_example=frame, name="nones")
    assert bundle.input_schema.to_dict()["columns"][0]["missing_value"] == "none"
    served = _export(bundle, tmp_path)
    rows = pd.DataFrame(
        {
            "t": pd.Series(["a", None, "zz", "b"], dtype=object),
            "u": pd.Series([None, "x", "x", None], dtype=object),
        }
    )
    assert_parity(bundle, served, rows)


# --------------------------------------------------------------------------- images


def _pets_files(pets_folder: Path) -> list[str]:
    return sorted(str(p) for p in pets_folder.rglob("*.*"))


@pytest.mark.slow
@pytest.mark.parametrize("resize", ["plain", "crop"])
def test_an_image_bundle_exports_encoded_images_in(pets_bundle, pets_folder, tmp_path, resize):
    """The graph decodes JPEG and PNG strings as image_dataset_from_directory did."""
    import tensorflow as tf

    from bundle import ImageInput

    path, model = pets_bundle
    loaded = Bundle.load(path)
    if resize == "crop":  # the same model, read with a centre crop and bicubic resizing
        image = ImageInput(size=(16, 16), crop_to_aspect_ratio=True, interpolation="bicubic")
        loaded = Bundle(model, image=image, postprocess=loaded.postprocess, name="pets")
    files = _pets_files(pets_folder)
    out = loaded.export(tmp_path / "pets" / "1")
    function = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert function.structured_input_signature[1]["input"].dtype == tf.string
    encoded = tf.constant([Path(f).read_bytes() for f in files])
    result = function(input=encoded)
    expected = loaded.predict(files, postprocess=False)
    np.testing.assert_allclose(result["scores"].numpy(), expected, rtol=0, atol=1e-6)
    labels = [label.decode() for label in result["labels"].numpy()]
    assert labels == list(loaded.decode(expected))
    info = json.loads((out / "assets.extra" / "keras_bundle.json").read_text())
    assert info["inputs"][0]["dtype"] == "string"
    assert info["inputs"][0]["image"]["crop_to_aspect_ratio"] is (resize == "crop")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        function(input=tf.constant([b"not an image"]))


def test_image_bundles_the_graph_cannot_replay_are_refused(image_parts, tmp_path):
    from bundle import ImageInput, UnsupportedFormatError

    pil = Bundle(image_parts, image=ImageInput(size=(8, 8), decoder="pil", color_mode="grayscale"))
    with pytest.raises(UnsupportedFormatError, match=r"reads images with PIL"):
        pil.export(tmp_path / "pil")
    padded = ImageInput(size=(8, 8), color_mode="grayscale", pad_to_aspect_ratio=True)
    with pytest.raises(UnsupportedFormatError, match="pad_to_aspect_ratio: TensorFlow's graph"):
        Bundle(image_parts, image=padded).export(tmp_path / "pad")
    assert not (tmp_path / "pil").exists() and not (tmp_path / "pad").exists()
