"""The NumPy replay of each new kind against scikit-learn's own ``transform`` (issue 14).

For every class made pickle-free by issue 14, fitted on real data scikit-learn ships (wine,
diabetes, breast cancer; a text corpus written here), this measures in the same process and
in alternating rounds:

- one row: p50 of the compiled replay and of ``transform`` (a DataFrame row, as
  ``Bundle.predict`` hands it over);
- 100,000 rows (resampled from the data set with a little noise): the median of rounds;
- parity on 2,000 rows: max abs difference of the replay (0.0 = bit-identical) and of
  the TensorFlow form, against ``transform``.

Usage:
    python benchmarks/kinds_bench.py           # writes the "Kinds" section of RESULTS.md
    python benchmarks/kinds_bench.py --quick   # fewer calls and rounds (smoke run)
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section

ROWS = 100_000
PARITY_ROWS = 2_000
RNG = np.random.default_rng(0)
WORDS = [
    "the",
    "cat",
    "dog",
    "river",
    "bank",
    "market",
    "report",
    "quarterly",
    "numbers",
    "rose",
    "fell",
    "storm",
    "night",
    "warm",
    "friends",
    "meals",
    "stories",
    "laughter",
    "machine",
    "learning",
    "models",
    "data",
    "features",
    "labels",
    "café",
    "résumé",
    "straße",
    "prices",
    "bonds",
    "yields",
    "sharply",
    "quickly",
    "brown",
    "fox",
    "lazy",
    "jumps",
    "over",
    "under",
]


def _frame(data) -> pd.DataFrame:
    return pd.DataFrame({c: data[c].to_numpy() for c in data.columns})


def _resample(frame: pd.DataFrame, n: int, *, nan: float = 0.0) -> pd.DataFrame:
    """`n` rows drawn from `frame` with 1% Gaussian noise per column (and NaN at `nan`)."""
    rows = frame.iloc[RNG.integers(0, len(frame), n)].reset_index(drop=True)
    out = {}
    for name in rows.columns:
        values = rows[name].to_numpy(dtype=np.float64)
        values = values + RNG.normal(0, 0.01, n) * (np.nanstd(values) + 1e-12)
        if nan:
            values[RNG.random(n) < nan] = np.nan
        out[name] = values
    return pd.DataFrame(out)


def datasets() -> dict[str, tuple]:
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    wine, diabetes = load_wine(as_frame=True), load_diabetes(as_frame=True)
    cancer = load_breast_cancer(as_frame=True)
    w, d, c = _frame(wine.data), _frame(diabetes.data), _frame(cancer.data.iloc[:, :12])
    w_nan = w.mask(RNG.random(w.shape) < 0.12)
    categories = pd.DataFrame(
        {
            "alcohol": pd.cut(w["alcohol"], 5, labels=list("vwxyz")).astype(object),
            "hue": pd.cut(w["hue"], 4, labels=["low", "mid", "high", "top"]).astype(object),
        }
    )
    big_categories = categories.iloc[RNG.integers(0, len(w), ROWS)].reset_index(drop=True)
    documents = [" ".join(RNG.choice(WORDS, RNG.integers(3, 15))) for _ in range(400)]
    big_documents = [" ".join(RNG.choice(WORDS, RNG.integers(3, 15))) for _ in range(ROWS)]
    return {
        "wine": (w, wine.target.to_numpy(), _resample(w, ROWS)),
        "wine-nan": (w_nan, wine.target.to_numpy(), _resample(w, ROWS, nan=0.12)),
        "diabetes": (d, diabetes.target.to_numpy(), _resample(d, ROWS)),
        "cancer": (c, cancer.target.to_numpy(), _resample(c, ROWS)),
        "categories": (categories, wine.target.to_numpy(), big_categories),
        "text": (pd.Series(documents), None, pd.Series(big_documents)),
    }


def cases() -> list[tuple[str, Callable[[], object], str]]:
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.feature_extraction.text import (
        CountVectorizer,
        HashingVectorizer,
        TfidfVectorizer,
    )
    from sklearn.feature_selection import SelectFromModel, SelectKBest, VarianceThreshold
    from sklearn.impute import IterativeImputer, KNNImputer, MissingIndicator
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion
    from sklearn.preprocessing import (
        Binarizer,
        Normalizer,
        PowerTransformer,
        QuantileTransformer,
        SplineTransformer,
        TargetEncoder,
    )

    return [
        ("Normalizer", Normalizer, "wine"),
        ("QuantileTransformer", lambda: QuantileTransformer(n_quantiles=100), "wine"),
        ("PowerTransformer", PowerTransformer, "diabetes"),
        ("SplineTransformer", SplineTransformer, "diabetes"),
        ("Binarizer", lambda: Binarizer(threshold=0.01), "diabetes"),
        ("TargetEncoder", TargetEncoder, "categories"),
        ("KNNImputer", KNNImputer, "wine-nan"),
        ("IterativeImputer", lambda: IterativeImputer(random_state=0), "wine-nan"),
        ("MissingIndicator", MissingIndicator, "wine-nan"),
        ("PCA", lambda: PCA(5), "wine"),
        ("TruncatedSVD", lambda: TruncatedSVD(3, random_state=0), "diabetes"),
        ("VarianceThreshold", lambda: VarianceThreshold(0.5), "wine"),
        ("SelectKBest", lambda: SelectKBest(k=5), "wine"),
        (
            "SelectFromModel",
            lambda: SelectFromModel(LogisticRegression(max_iter=5000), max_features=6),
            "cancer",
        ),
        # A model reads a few hundred features, not a vocabulary: text goes through a
        # projection (the vectorizer's sparse output stays sparse into it).
        ("CountVectorizer + TruncatedSVD(20)", lambda: _svd(CountVectorizer()), "text"),
        (
            "TfidfVectorizer(1-2 grams) + TruncatedSVD(20)",
            lambda: _svd(TfidfVectorizer(ngram_range=(1, 2))),
            "text",
        ),
        (
            "HashingVectorizer + TruncatedSVD(20)",
            lambda: _svd(HashingVectorizer(n_features=1024)),
            "text",
        ),
        (
            "FeatureUnion (PCA + splines + quantiles)",
            lambda: FeatureUnion(
                [
                    ("pca", PCA(3)),
                    ("spline", SplineTransformer(n_knots=4)),
                    ("quantile", QuantileTransformer(n_quantiles=50)),
                ]
            ),
            "wine",
        ),
    ]


def _svd(vectorizer):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.pipeline import make_pipeline

    return make_pipeline(vectorizer, TruncatedSVD(20, random_state=0))


def _dense(x) -> np.ndarray:
    x = x.toarray() if hasattr(x, "toarray") else x
    return np.asarray(x, dtype=np.float64)


def _graph(step, rows) -> np.ndarray:
    import tensorflow as tf

    from bundle.steps.graph import Context, GraphBuild, TensorFrame, Text, compile_graph

    build = GraphBuild(missing_token="")
    if isinstance(rows, pd.Series):
        n_in, names = 1, None
        columns = [Text(tf.constant(rows.to_numpy(object)), tf.zeros(len(rows), tf.bool))]
    else:
        names = getattr(step, "feature_names_in_", None)
        n_in, names = rows.shape[1], tuple(names) if names is not None else None
        columns = []
        for name in rows.columns:
            values = rows[name]
            if pd.api.types.is_numeric_dtype(values):
                columns.append(tf.constant(values.to_numpy()))
            else:
                missing = values.isna().to_numpy()
                text = np.where(missing, "", values.astype(str)).astype(object)
                columns.append(Text(tf.constant(text), tf.constant(missing), "none"))
    node = compile_graph(step, Context(n_in, names, type(step).__name__, build=build))
    assert not build.problems, build.problems
    first = columns[0].values if isinstance(columns[0], Text) else columns[0]
    return node.run(TensorFrame(tf.shape(first)[0], columns=columns)).to(np.float64).numpy()


def _timed(function: Callable, argument) -> float:
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


def measure(quick: bool) -> list[dict]:
    from bundle.steps.replay import compile_replay

    calls, rounds = (40, 3) if quick else (300, 7)
    data, results = datasets(), []
    for name, make, key in cases():
        fit, y, big = data[key]
        step = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step.fit(fit, y)
        replay = compile_replay(step)
        transform = step.transform
        one = big.iloc[:1]
        one_times: dict[str, list[float]] = {"replay": [], "transform": []}
        big_times: dict[str, list[float]] = {"replay": [], "transform": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            replay(one), transform(one)  # warm up
            for _ in range(rounds):
                for path, function in (("replay", replay), ("transform", transform)):
                    one_times[path] += [_timed(function, one) for _ in range(calls // rounds)]
                for path, function in (("replay", replay), ("transform", transform)):
                    big_times[path].append(_timed(function, big))
            sample = big.iloc[:PARITY_ROWS]
            expected = _dense(transform(sample))
            numpy_diff = float(np.nanmax(np.abs(replay(sample) - expected), initial=0.0))
            graph_diff = float(np.nanmax(np.abs(_graph(step, sample) - expected), initial=0.0))
        results.append(
            {
                "name": name,
                "data": key,
                "one_replay": float(np.median(one_times["replay"])),
                "one_transform": float(np.median(one_times["transform"])),
                # The best round: on a shared machine (CPU quotas stall a process for tens of
                # milliseconds) the fastest round is the one closest to the work itself.
                "big_replay": float(np.min(big_times["replay"])),
                "big_transform": float(np.min(big_times["transform"])),
                "numpy_diff": numpy_diff,
                "graph_diff": graph_diff,
            }
        )
        print(f"{name}: {results[-1]}", flush=True)
    return results


def render(results: list[dict], quick: bool) -> str:
    date = datetime.date.today().isoformat()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = machine_line(["tensorflow-cpu", "tensorflow", "scikit-learn", "numpy", "pandas"])
    lines = [
        "## Kinds",
        "",
        f"Measured {date} on {where} by `python benchmarks/kinds_bench.py"
        f"{' --quick' if quick else ''}`. Each class made pickle-free by issue 14, fitted on "
        "wine, diabetes, breast cancer or a text corpus; the compiled NumPy replay against "
        "the step's own `transform`, in the same process, in alternating rounds (one row: "
        f"p50; {ROWS:,} rows resampled from the data set with 1% noise: best of rounds). "
        f"Parity on {PARITY_ROWS:,} of those rows: max abs difference against `transform` "
        "(0 = bit-identical) of the replay and of the TensorFlow form. "
        f"Load average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs"
        + (" (the machine was shared: compare rows of one run only)." if load > 1.5 else "."),
        "",
        "| class | data | 1 row: replay | `transform` | ratio | 100,000 rows: replay | "
        "`transform` | ratio | NumPy diff | TF diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['data']} | {r['one_replay'] * 1e3:.3f} ms | "
            f"{r['one_transform'] * 1e3:.3f} ms | {r['one_transform'] / r['one_replay']:.1f}x | "
            f"{r['big_replay']:.3f} s | {r['big_transform']:.3f} s | "
            f"{r['big_transform'] / r['big_replay']:.1f}x | {r['numpy_diff']:.1e} | "
            f"{r['graph_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    args = parser.parse_args(argv)
    results = measure(args.quick)
    write_section("Kinds", render(results, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
