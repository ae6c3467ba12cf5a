"""The registry's conformance test: every registered kind, every facet, on real data.

Each case fits a step on a data set scikit-learn ships (wine, diabetes, breast cancer; a
small text corpus written here), then checks what every kind promises:

- storage without pickle: every array in the ``.npz`` loads with ``allow_pickle=False``,
  none is an object array, and the rebuilt step transforms exactly as the original;
- replay parity: the NumPy replay equals ``transform`` (max abs difference 0.0);
- TensorFlow parity: the graph form equals ``transform`` within 1e-6;
- untrusted load: a bundle holding the step saves and loads without ``trusted=True`` and
  predicts what the model predicts on ``transform``'s output;
- every facet of every kind is there or its absence is explained, and the README's table
  of supported classes is exactly the registry's.

Adding a class: one entry in its family module, one case here.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.feature_extraction.text import (
    CountVectorizer,
    HashingVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.feature_selection import (
    GenericUnivariateSelect,
    SelectFdr,
    SelectFpr,
    SelectFromModel,
    SelectFwe,
    SelectKBest,
    SelectPercentile,
    VarianceThreshold,
    chi2,
    f_regression,
)
from sklearn.impute import IterativeImputer, KNNImputer, MissingIndicator, SimpleImputer
from sklearn.linear_model import (
    ARDRegression,
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
)
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import (
    Binarizer,
    FunctionTransformer,
    KBinsDiscretizer,
    LabelBinarizer,
    LabelEncoder,
    MaxAbsScaler,
    MinMaxScaler,
    MultiLabelBinarizer,
    Normalizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    SplineTransformer,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import LinearSVC

from bundle import Bundle
from bundle.steps.kinds import FACETS
from bundle.steps.native import PARAMS_KEY, native_imports, read_native, write_native
from bundle.steps.registry import (
    EXPORT_END,
    EXPORT_START,
    KINDS,
    KINDS_BY_NAME,
    TABLE_END,
    TABLE_START,
    exportable_table,
    supported_table,
)
from bundle.steps.replay import compile_replay

REPO = Path(__file__).resolve().parent.parent
RTOL = ATOL = 1e-6
RNG = np.random.default_rng(0)

# A small corpus: punctuation, digits, accents and other scripts, repeated words, stop words.
CORPUS = [
    "The cat sat on the mat, and the mat was warm.",
    "Dogs and cats are friends; the dog barks at the postman!",
    "A quick brown fox jumps over the lazy dog near the river bank.",
    "Café crème at l'École: très bon, merci beaucoup.",
    "Naïve résumé writers über-optimize every straße name.",
    "Numbers like 42, 3.14 and 2024 appear in reports.",
    "E-mail someone@example.com about the quarterly report.",
    "snake_case_names and CamelCaseNames are both identifiers",
    "Stock prices rose 5% while bond yields fell sharply.",
    "The river bank was flooded after the storm last night.",
    "Machine learning models need data, features and labels.",
    "Θερμοκρασία και υγρασία: ο καιρός σήμερα είναι καλός.",
    "Погода сегодня хорошая, и мы идём гулять в парк.",
    "the the the cat cat dog",
    "Multiple   spaces\tand\ttabs\nand new lines too",
    "Short.",
    "Rain, rain, go away; come again another day.",
    "Reports show the market and the river both rising.",
    "Friends share warm meals, stories and laughter at night.",
    "Quarterly numbers beat expectations by 7 percent.",
]
NEW_TEXT = [
    "the cat and the dog met at the river",
    "unseen zzz qqq words only",
    "Café straße résumé",
    "",
    "   ",
    "CAT cat Cat cAt",
    "Погода и καιρός, 42 percent",
]


def _columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame built column by column (as pandas builds most frames: Fortran-ordered)."""
    return pd.DataFrame({c: frame[c].to_numpy() for c in frame.columns})


def _split(frame: pd.DataFrame, y) -> tuple:
    return frame.iloc[::2].reset_index(drop=True), y[::2], frame.iloc[1::2].reset_index(drop=True)


def _wine():
    data = load_wine(as_frame=True)
    return _split(_columns(data.data), data.target.to_numpy())


def _wine_nan():
    fit, y, new = _wine()
    return fit.mask(RNG.random(fit.shape) < 0.12), y, new.mask(RNG.random(new.shape) < 0.12)


def _diabetes():
    data = load_diabetes(as_frame=True)
    return _split(_columns(data.data), data.target.to_numpy())


def _cancer():
    data = load_breast_cancer(as_frame=True)
    return _split(_columns(data.data.iloc[:, :12]), data.target.to_numpy())


def _categories():
    data = load_wine(as_frame=True)
    x = data.data
    frame = pd.DataFrame(
        {
            "alcohol": pd.cut(x["alcohol"], 5, labels=list("vwxyz")).astype(object),
            "hue": pd.cut(x["hue"], 4, labels=["low", "mid", "high", "top"]).astype(object),
            "magnesium": (x["magnesium"] // 10).astype(np.int64),
        }
    )
    frame.loc[::11, "alcohol"] = None
    fit, y, new = _split(frame, data.target.to_numpy())
    new.loc[::5, "hue"] = "unseen"
    return fit, y, new


def _text():
    n = len(CORPUS)
    fit = pd.DataFrame({"text": CORPUS, "length": np.arange(n, dtype=np.float64) * 1.5})
    new = pd.DataFrame({"text": NEW_TEXT, "length": np.linspace(0, 40, len(NEW_TEXT))})
    return fit, np.arange(n) % 2, new


DATA = {
    "wine": _wine,
    "wine-nan": _wine_nan,
    "diabetes": _diabetes,
    "cancer": _cancer,
    "categories": _categories,
    "text": _text,
}


@dataclass(frozen=True)
class Case:
    """One fitted step on one data set."""

    id: str
    make: Callable[[], object]
    data: str
    with_y: bool = False


def _text_ct(vectorizer, *, remainder="drop") -> ColumnTransformer:
    return ColumnTransformer([("text", vectorizer, "text")], remainder=remainder)


CASES = [
    Case("standard", StandardScaler, "wine"),
    Case("minmax-clip", lambda: MinMaxScaler((-1, 1), clip=True), "diabetes"),
    Case("maxabs", MaxAbsScaler, "diabetes"),
    Case("robust", RobustScaler, "wine-nan"),
    Case("normalizer-l2", Normalizer, "wine"),
    Case("normalizer-l1", lambda: Normalizer("l1"), "diabetes"),
    Case("normalizer-max", lambda: Normalizer("max"), "cancer"),
    Case("quantile-uniform", lambda: QuantileTransformer(n_quantiles=50), "wine-nan"),
    Case(
        "quantile-normal",
        lambda: QuantileTransformer(n_quantiles=30, output_distribution="normal"),
        "diabetes",
    ),
    Case("power-yeo-johnson", PowerTransformer, "diabetes"),
    Case("power-box-cox", lambda: PowerTransformer(method="box-cox"), "wine"),
    Case("function-log1p", lambda: FunctionTransformer(np.log1p, validate=True), "wine"),
    Case(
        "simple-imputer", lambda: SimpleImputer(strategy="median", add_indicator=True), "wine-nan"
    ),
    Case("missing-indicator", MissingIndicator, "wine-nan"),
    Case("knn-imputer", KNNImputer, "wine-nan"),
    Case(
        "knn-imputer-distance",
        lambda: KNNImputer(n_neighbors=3, weights="distance", add_indicator=True),
        "wine-nan",
    ),
    Case("iterative-imputer", lambda: IterativeImputer(random_state=0), "wine-nan"),
    Case(
        "iterative-imputer-ridge",
        lambda: IterativeImputer(estimator=Ridge(), max_iter=4, add_indicator=True),
        "wine-nan",
    ),
    Case(
        "iterative-imputer-linear",
        lambda: IterativeImputer(estimator=LinearRegression(), initial_strategy="median"),
        "wine-nan",
    ),
    Case(
        "iterative-imputer-ard",
        lambda: IterativeImputer(estimator=ARDRegression(), n_nearest_features=5, random_state=1),
        "wine-nan",
    ),
    Case(
        "iterative-imputer-lasso",
        lambda: IterativeImputer(estimator=Lasso(alpha=0.01), max_iter=3, min_value=0),
        "wine-nan",
    ),
    Case(
        "iterative-imputer-elasticnet",
        lambda: IterativeImputer(estimator=ElasticNet(alpha=0.01), max_iter=3),
        "wine-nan",
    ),
    Case("one-hot", lambda: OneHotEncoder(handle_unknown="ignore"), "categories"),
    Case(
        "ordinal",
        lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        "categories",
    ),
    Case("target-multiclass", TargetEncoder, "categories", with_y=True),
    Case("kbins", lambda: KBinsDiscretizer(n_bins=4, encode="ordinal"), "wine"),
    Case("polynomial", lambda: PolynomialFeatures(degree=2), "diabetes"),
    Case("binarizer", lambda: Binarizer(threshold=0.01), "diabetes"),
    Case("spline", SplineTransformer, "diabetes"),
    Case(
        "spline-linear-sparse",
        lambda: SplineTransformer(degree=2, extrapolation="linear", sparse_output=True),
        "wine",
    ),
    Case(
        "spline-periodic-zeros",
        lambda: SplineTransformer(extrapolation="periodic", handle_missing="zeros"),
        "wine-nan",
    ),
    Case("pca", lambda: PCA(5), "wine"),
    Case("pca-whiten", lambda: PCA(4, whiten=True), "cancer"),
    Case("truncated-svd", lambda: TruncatedSVD(3, random_state=0), "diabetes"),
    Case("variance-threshold", lambda: VarianceThreshold(0.5), "wine-nan"),
    Case("select-k-best", lambda: SelectKBest(k=5), "wine", with_y=True),
    Case("select-percentile", lambda: SelectPercentile(chi2, percentile=30), "wine", with_y=True),
    Case("select-fpr", lambda: SelectFpr(alpha=0.01), "wine", with_y=True),
    Case("select-fdr", lambda: SelectFdr(alpha=0.001), "wine", with_y=True),
    Case("select-fwe", lambda: SelectFwe(alpha=0.001), "wine", with_y=True),
    Case(
        "generic-univariate",
        lambda: GenericUnivariateSelect(f_regression, mode="k_best", param=4),
        "diabetes",
        with_y=True,
    ),
    Case(
        "select-from-logistic",
        lambda: SelectFromModel(LogisticRegression(max_iter=5000), max_features=6),
        "cancer",
        with_y=True,
    ),
    Case(
        "select-from-linear-svc",
        lambda: SelectFromModel(LinearSVC(C=0.01, max_iter=20000)),
        "cancer",
        with_y=True,
    ),
    Case("count-vectorizer", lambda: _text_ct(CountVectorizer()), "text"),
    Case(
        "count-vectorizer-options",
        lambda: _text_ct(
            CountVectorizer(ngram_range=(1, 2), stop_words="english", max_df=0.5, binary=True),
            remainder="passthrough",
        ),
        "text",
    ),
    Case(
        "count-vectorizer-char-wb",
        lambda: _text_ct(CountVectorizer(analyzer="char_wb", ngram_range=(2, 4))),
        "text",
    ),
    Case("tfidf-vectorizer", lambda: _text_ct(TfidfVectorizer()), "text"),
    Case(
        "tfidf-vectorizer-sublinear-l1-char",
        lambda: _text_ct(
            TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, norm="l1")
        ),
        "text",
    ),
    Case("hashing-vectorizer", lambda: _text_ct(HashingVectorizer(n_features=64)), "text"),
    Case(
        "hashing-vectorizer-options",
        lambda: _text_ct(
            HashingVectorizer(n_features=50, alternate_sign=False, norm=None, ngram_range=(1, 2))
        ),
        "text",
    ),
    Case(
        "tfidf-transformer-svd",
        lambda: _text_ct(
            make_pipeline(CountVectorizer(), TfidfTransformer(), TruncatedSVD(4, random_state=0))
        ),
        "text",
    ),
    Case(
        "pipeline-ct-union",
        lambda: ColumnTransformer(
            [
                (
                    "numbers",
                    make_pipeline(
                        IterativeImputer(max_iter=3),
                        FeatureUnion(
                            [
                                ("pca", PCA(3)),
                                ("spline", SplineTransformer(n_knots=3)),
                                ("quantiles", QuantileTransformer(n_quantiles=20)),
                            ]
                        ),
                    ),
                    ["alcohol", "malic_acid", "ash", "hue", "proline"],
                ),
                ("power", PowerTransformer(), ["magnesium", "color_intensity"]),
                ("rest", "passthrough", ["flavanoids"]),
            ]
        ),
        "wine-nan",
    ),
    Case(
        "feature-union-text",
        lambda: ColumnTransformer(
            [
                (
                    "text",
                    FeatureUnion(
                        [
                            ("tfidf", TfidfVectorizer()),
                            ("hashed", HashingVectorizer(n_features=16)),
                        ]
                    ),
                    "text",
                ),
                ("length", Pipeline([("scale", StandardScaler())]), ["length"]),
            ]
        ),
        "text",
    ),
]
DECODE_CASES = [
    ("label-encoder", LabelEncoder, np.array(["red", "white", "rose"])[RNG.integers(0, 3, 40)]),
    ("label-binarizer", LabelBinarizer, np.array([3, 5, 7])[RNG.integers(0, 3, 40)]),
    (
        "multilabel-binarizer",
        MultiLabelBinarizer,
        [("a", "b"), ("b",), ("c", "a"), ()] * 5,
    ),
]
IDS = [case.id for case in CASES]


def _quiet(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args)


def _dense(x) -> np.ndarray:
    x = x.toarray() if hasattr(x, "toarray") else x
    return np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x, dtype=np.float64)


_ARRAY_FITS: dict[str, object] = {}


def _fit_on_array(case_id: str):
    """The case's step fitted on arrays (no feature names), once."""
    if case_id not in _ARRAY_FITS:
        case = next(c for c in CASES if c.id == case_id)
        fit, y, _ = DATA[case.data]()
        step = case.make()
        args = (fit.to_numpy(), y) if case.with_y else (fit.to_numpy(),)
        _quiet(step.fit, *args)
        _ARRAY_FITS[case_id] = step
    return _ARRAY_FITS[case_id]


@pytest.fixture(scope="module")
def fitted():
    """Every case fitted once, with its data: {id: (step, fit, new)}."""
    out = {}
    for case in CASES:
        fit, y, new = DATA[case.data]()
        step = case.make()
        _quiet(step.fit, fit, y) if case.with_y else _quiet(step.fit, fit)
        out[case.id] = (step, fit, new)
    return out


# ---------------------------------------------------------------------------------------
# The registry itself
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=lambda kind: kind.cls.__name__)
def test_every_facet_is_there_or_explained(kind):
    for facet in FACETS:
        reason = kind.why_not(facet)
        if kind.has(facet):
            assert reason is None, f"{kind.cls.__name__} has {facet} and says why not"
        else:
            assert reason and len(reason) > 10, f"{kind.cls.__name__} lacks {facet} silently"
    assert set(kind.lacks) <= set(FACETS)
    assert KINDS_BY_NAME[kind.name] is kind


def test_every_kind_is_exercised_by_a_case(fitted):
    used = {name for step, _, _ in fitted.values() for name in native_imports(step)}
    used |= {f"sklearn.preprocessing.{make().__class__.__name__}" for _, make, _ in DECODE_CASES}
    assert set(KINDS_BY_NAME) <= used, sorted(set(KINDS_BY_NAME) - used)


def test_readme_table_is_the_registry():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(TABLE_START) + len(TABLE_START) : text.index(TABLE_END)]
    assert section.strip() == supported_table(), "run `make readme-kinds`"
    for kind in KINDS.values():
        assert f"| `{kind.cls.__name__}` |" in section
    exportable = text[text.index(EXPORT_START) + len(EXPORT_START) : text.index(EXPORT_END)]
    assert exportable.strip() == exportable_table(), "run `make readme-kinds`"
    assert "| `TfidfVectorizer` | preprocess |" in exportable
    assert "| `LabelEncoder` | postprocess |" in exportable


def test_an_unknown_class_names_the_known_ones():
    from sklearn.kernel_approximation import RBFSampler

    from bundle.errors import UnsupportedFormatError
    from bundle.steps.registry import kind_of

    with pytest.raises(
        UnsupportedFormatError,
        match=r"sklearn\.kernel_approximation\.RBFSampler has no kind in keras-bundle: .*"
        r"Known classes: .*KNNImputer.*TfidfVectorizer",
    ):
        kind_of(RBFSampler())


# ---------------------------------------------------------------------------------------
# Every case: storage, replay, graph
# ---------------------------------------------------------------------------------------


def _graph_frame(x):
    """The TensorFlow frame of a DataFrame or array, as the exported signature builds it."""
    import tensorflow as tf

    from bundle.steps.graph import TensorFrame, Text

    if not isinstance(x, pd.DataFrame):
        return TensorFrame.of(tf.constant(np.asarray(x)))
    columns = []
    for name in x.columns:
        values = x[name]
        if not pd.api.types.is_numeric_dtype(values):
            missing = values.isna().to_numpy()
            text = np.where(missing, "", values.astype(str)).astype(object)
            sentinel = "none" if any(v is None for v in values[missing]) else "nan"
            columns.append(Text(tf.constant(text, tf.string), tf.constant(missing), sentinel))
        else:
            columns.append(tf.constant(values.to_numpy()))
    first = columns[0].values if isinstance(columns[0], Text) else columns[0]
    return TensorFrame(tf.shape(first)[0], columns=columns)


def _graph_transform(step, x) -> np.ndarray:
    from bundle.steps.graph import Context, GraphBuild, compile_graph

    build = GraphBuild(missing_token="")
    names = getattr(step, "feature_names_in_", None)
    context = Context(
        int(step.n_features_in_),
        tuple(str(n) for n in names) if names is not None else None,
        type(step).__name__,
        build=build,
    )
    node = compile_graph(step, context)
    assert not build.problems, build.problems
    return node.run(_graph_frame(x)).to(np.float64).numpy()


@pytest.mark.parametrize("case_id", IDS)
def test_stored_without_pickle_replayed_and_exported(case_id, fitted, tmp_path):
    step, _, new = fitted[case_id]
    path = tmp_path / "step.npz"
    write_native(step, path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    assert all(array.dtype.kind != "O" for array in arrays.values())
    assert json.loads(str(arrays[PARAMS_KEY][()]))["root"]["class"] in KINDS_BY_NAME
    rebuilt = read_native(path)
    expected = _dense(_quiet(step.transform, new))
    np.testing.assert_array_equal(_dense(_quiet(rebuilt.transform, new)), expected)

    replay = compile_replay(rebuilt)
    assert replay is not None, f"{case_id}: no replay"
    for rows in (new, new.iloc[:1]):
        want = _dense(_quiet(step.transform, rows))
        got = _quiet(replay, rows)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"{case_id}: replay")

    numeric = all(pd.api.types.is_numeric_dtype(t) for t in new.dtypes)
    if numeric and not isinstance(step, ColumnTransformer):  # a CT selects columns by name
        array = new.to_numpy()  # an array in, as scikit-learn gets it; not modified in place
        kept = array.copy()
        np.testing.assert_array_equal(
            _quiet(compile_replay(_fit_on_array(case_id)), array),
            _dense(_quiet(_fit_on_array(case_id).transform, array)),
            err_msg=f"{case_id}: replay of an array",
        )
        np.testing.assert_array_equal(array, kept)

    got = _graph_transform(rebuilt, new)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=f"{case_id}: graph")


def test_knn_graph_takes_tied_donors_by_position(fitted):
    """Donors at exactly the same distance: scikit-learn takes whichever NumPy's
    argpartition (introselect, SIMD on some CPUs) leaves first; the graph takes the earliest
    training rows, like a stable sort. Where tied donors hold different values, the graph
    matches that rule (and the NumPy replay matches scikit-learn bit for bit)."""
    from sklearn.metrics.pairwise import nan_euclidean_distances

    fit, _, _ = _wine_nan()
    columns = ["alcohol", "malic_acid", "ash", "hue", "proline"]
    imputer = KNNImputer(n_neighbors=5).fit(fit[columns])
    rows = pd.DataFrame({c: fit[c].to_numpy() for c in columns}).iloc[:60]
    rows = rows.mask(np.arange(60)[:, None] % 3 == np.arange(5)[None, :] % 3)
    x = rows.to_numpy()
    distances = nan_euclidean_distances(x, imputer._fit_X)
    expected = x.copy()
    for i, j in zip(*np.nonzero(np.isnan(x)), strict=True):
        donors = np.flatnonzero(~imputer._mask_fit_X[:, j])
        d = distances[i, donors]
        if np.isnan(d).all():
            expected[i, j] = np.nanmean(imputer._fit_X[:, j])
            continue
        chosen = donors[np.argsort(np.where(np.isnan(d), np.inf, d), kind="stable")[:5]]
        weights = (~np.isnan(distances[i, chosen])).astype(float)
        expected[i, j] = np.sum(weights * imputer._fit_X[chosen, j]) / np.sum(weights)
    np.testing.assert_allclose(_graph_transform(imputer, rows), expected, rtol=RTOL, atol=ATOL)
    replay = compile_replay(imputer)
    np.testing.assert_array_equal(replay(rows), imputer.transform(rows))


@pytest.mark.parametrize(("case_id", "make", "y"), DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_decoders_are_stored_without_pickle_and_decode_alike(case_id, make, y, tmp_path):
    step = make().fit(y)
    path = tmp_path / "step.npz"
    write_native(step, path)
    rebuilt = read_native(path)
    encoded = step.transform(y)
    decoded = rebuilt.inverse_transform(encoded)
    expected = step.inverse_transform(encoded)
    assert [tuple(v) if isinstance(v, tuple) else v for v in decoded] == [
        tuple(v) if isinstance(v, tuple) else v for v in expected
    ]


# ---------------------------------------------------------------------------------------
# Every case inside a bundle: saved, loaded without trusted=True, predicting as trained
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case_id", IDS)
def test_bundle_loads_untrusted_and_predicts_as_trained(case_id, fitted, tmp_path):
    import keras

    step, fit, new = fitted[case_id]
    width = _dense(_quiet(step.transform, fit.iloc[:2])).shape[1]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(2)])
    bundle = Bundle(model, preprocess=step, input_example=fit, name=case_id.replace("-", "_"))
    loaded = Bundle.load(bundle.save(tmp_path / "root"))  # trusted=False
    assert all(r["serializer"] == "native" for r in loaded.manifest.preprocess)
    rows = new.fillna(0.0) if case_id == "binarizer" else new
    expected = model.predict(_dense(_quiet(step.transform, rows)).astype(np.float32), verbose=0)
    np.testing.assert_allclose(_quiet(loaded.predict, rows), expected, rtol=1e-6, atol=1e-6)
    assert loaded._get_engine().preprocess.is_fast  # the replay ran, not transform
