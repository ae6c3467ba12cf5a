"""Streaming and batched prediction: same numbers however the rows arrive, bounded memory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular_frame, run_python

from bundle import SchemaError


@pytest.fixture(scope="module")
def rows():
    frame, _ = make_tabular_frame(2_500, seed=11)
    return frame.assign(customer_id=np.arange(len(frame)) + 1000)


def test_predict_batches_equals_one_pass(tabular_bundle, rows):
    _, saved = tabular_bundle
    features = rows.drop(columns="customer_id")
    one_pass = saved.predict(features, postprocess=False)
    chunks = [
        features.iloc[:700],
        features.iloc[700:701],
        features.iloc[701:701],
        features.iloc[701:].to_dict(orient="records"),
    ]
    streamed = list(saved.predict_batches(chunks, postprocess=False))
    assert [len(s) for s in streamed] == [700, 1, 0, len(features) - 701]
    np.testing.assert_array_equal(np.concatenate(streamed), one_pass)
    labels = list(saved.predict_batches([features.iloc[:10], features.iloc[10:20]]))
    assert list(np.concatenate(labels)) == list(saved.predict(features.iloc[:20]))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_predict_file_equals_predict_on_the_whole_file(tabular_bundle, rows, tmp_path, fmt):
    _, saved = tabular_bundle
    src = tmp_path / f"in.{fmt}"
    {
        "parquet": lambda: rows.to_parquet(src, index=False),
        "csv": lambda: rows.to_csv(src, index=False),
        "jsonl": lambda: rows.to_json(src, orient="records", lines=True),
    }[fmt]()
    dst = tmp_path / f"out.{fmt}"
    seen = []
    n = saved.predict_file(
        src, dst, id_column="customer_id", batch_size=300, scores=True, progress=seen.append
    )
    assert n == len(rows) and sum(seen) == len(rows) and max(seen) == 300
    out = {
        "parquet": pd.read_parquet,
        "csv": pd.read_csv,
        "jsonl": lambda p: pd.read_json(p, lines=True),
    }[fmt](dst)
    assert list(out.columns) == [
        "customer_id",
        "prediction",
        "score_churn",
        "score_stay",
        "score_upgrade",
    ]
    assert out["customer_id"].tolist() == rows["customer_id"].tolist()
    features = rows.drop(columns="customer_id")
    assert out["prediction"].tolist() == list(saved.predict(features))
    scores = out[["score_churn", "score_stay", "score_upgrade"]].to_numpy()
    np.testing.assert_allclose(scores, saved.predict(features, postprocess=False), atol=1e-6)


def test_predict_file_with_no_rows_writes_an_empty_file(tabular_bundle, rows, tmp_path):
    _, saved = tabular_bundle
    src = tmp_path / "empty.parquet"
    rows.iloc[:0].to_parquet(src, index=False)
    assert saved.predict_file(src, tmp_path / "out.parquet", id_column="customer_id") == 0
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) == 0 and list(out.columns) == ["customer_id", "prediction"]


def test_predict_file_refuses_bad_rows_and_leaves_no_partial_output(tabular_bundle, rows, tmp_path):
    _, saved = tabular_bundle
    bad = rows.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[bad.index[2_000], "age"] = "forty"
    dst = tmp_path / "out.parquet"
    bad.to_json(tmp_path / "bad.jsonl", orient="records", lines=True)
    with pytest.raises(SchemaError, match=r"(?s)Column 'age'.*'forty'"):
        saved.predict_file(tmp_path / "bad.jsonl", dst, id_column="customer_id", batch_size=500)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SchemaError, match=r"bad.csv has a value that does not fit .*'forty'"):
        saved.predict_file(tmp_path / "bad.csv", dst, id_column="customer_id", batch_size=500)
    assert not dst.exists()
    assert not list(tmp_path.glob(".out.parquet.partial-*"))
    with pytest.raises(SchemaError, match=r"id column\(s\) 'nope' are not in the input"):
        saved.predict_file(tmp_path / "bad.jsonl", dst, id_column="nope")


def test_compiled_path_equals_model_predict(tabular_bundle, tabular_parts, rows):
    _, saved = tabular_bundle
    preprocess, _, model = tabular_parts
    features = rows.drop(columns="customer_id")
    np.testing.assert_allclose(
        saved.predict(features, postprocess=False),
        model.predict(preprocess.transform(features), verbose=0),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize("batch_size", [1, 3, 257, 4096])
def test_image_predictions_identical_across_batch_sizes(image_bundle, image_data, batch_size):
    _, saved = image_bundle
    images, _ = image_data
    # oneDNN picks convolution algorithms by batch size: equal to float32 rounding, not bits.
    np.testing.assert_allclose(
        saved.predict(images, batch_size=batch_size),
        saved.predict(images, batch_size=64),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_reduced_precision_stays_close(tabular_bundle, rows, precision):
    _, saved = tabular_bundle
    features = rows.drop(columns="customer_id")
    full = saved.predict(features, postprocess=False)
    reduced = saved.predict(features, postprocess=False, precision=precision)
    assert reduced.dtype == np.float32
    assert np.abs(reduced - full).max() < 0.05
    assert (reduced.argmax(1) == full.argmax(1)).mean() > 0.97
    with pytest.raises(ValueError, match="precision must be one of float32, float16, bfloat16"):
        saved.predict(features, precision="int8")


@pytest.mark.slow
def test_scoring_a_file_larger_than_the_batch_budget_keeps_memory_flat(tabular_bundle, tmp_path):
    """Score 400k rows (over 400 MiB once decoded) in 4k-row batches; RSS stays flat."""
    path, _ = tabular_bundle
    src = tmp_path / "big.parquet"
    result = run_python(
        f"""
        import json, resource
        import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
        rng = np.random.default_rng(0)
        writer = None
        for part in range(8):
            n = 50_000
            frame = pd.DataFrame({{
                "age": rng.integers(18, 90, n).astype("float64"),
                "income": rng.lognormal(10, 1, n), "score": rng.normal(0, 1, n),
                "visits": rng.poisson(3, n).astype("int64"),
                "plan": rng.choice(["basic", "plus", "pro"], n),
                "region": rng.choice(["north", "south", "east", "west"], n),
                "note": ["x" * 1000] * n,  # bulk read and dropped, never all at once
            }})
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter({str(src)!r}, table.schema)
            writer.write_table(table)
        writer.close()
        import warnings; warnings.simplefilter("ignore")
        from bundle import Bundle
        b = Bundle.load({str(path)!r})
        b.predict(pq.ParquetFile({str(src)!r}).read_row_group(0).slice(0, 4096).to_pandas())
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        b.predict_file({str(src)!r}, {str(tmp_path / "out2.parquet")!r}, batch_size=4096)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({{"base": base, "peak": peak}}))
        """
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # Decoded whole, the text column alone is 400 MB; scoring may grow the peak by a
    # fraction of that, whatever the file size.
    assert figures["peak"] - figures["base"] < 150, figures
    out = pd.read_parquet(tmp_path / "out2.parquet")
    assert len(out) == 400_000
