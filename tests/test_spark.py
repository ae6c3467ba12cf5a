"""bundle.spark on a real local Spark session: the UDF and `score` agree with Bundle.predict.

One `local[2]` session serves the module (Arrow on, no UI, 1 GiB driver). The data is a
Parquet file of 200,000 rows of the reference tabular workload (benchmarks/workloads.py),
scored by a small model trained on 2,000 rows for one epoch. Every Spark job here reuses
the session's Python workers, so each worker process loads each bundle location once, and
the `load_counter` accumulator shared by the jobs proves it.

The tests skip only when no Java runtime is found (`make java` installs one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bundle import Bundle, BundleError, SchemaError

REPO = Path(__file__).resolve().parent.parent
N_ROWS = 200_000
FEATURES_SEED = 7

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning",
    "ignore::DeprecationWarning:pyspark.*",
)


def _java_available() -> bool:
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(candidate) if candidate.exists() else None
    if java is None:
        return False
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def spark():
    if not _java_available():
        pytest.skip("no Java runtime (`java -version` fails): run `make java` to install one")
    from pyspark.sql import SparkSession

    saved = {key: os.environ.get(key) for key in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    # The workers must run this interpreter (the venv with keras-bundle), not `python3`.
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("keras-bundle-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "3")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference workload, trained small, saved as a bundle: (version dir, Bundle)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from workloads import reference_tabular
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    workload = reference_tabular(n=2000, epochs=1)
    path = workload.save_bundle(tmp_path_factory.mktemp("spark") / "reference", version="1.0.0")
    return path, Bundle.load(path)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """200,000 fresh rows with a ``row_id``, as a Parquet file: (path, frame)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from workloads import reference_frame
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    frame = reference_frame(N_ROWS, seed=FEATURES_SEED)[0]
    frame.insert(0, "row_id", np.arange(N_ROWS, dtype=np.int64))
    path = tmp_path_factory.mktemp("spark-data") / "rows.parquet"
    frame.to_parquet(path, row_group_size=50_000)
    return path, frame


@pytest.fixture(scope="module")
def features(rows):
    return [column for column in rows[1].columns if column != "row_id"]


@pytest.fixture(scope="module")
def expected(reference, rows, features):
    """What Bundle.predict says for every row: (labels, scores)."""
    _, loaded = reference
    frame = rows[1][features]
    scores = loaded.predict(frame, postprocess=False)
    return loaded.predict(frame), scores


@pytest.fixture(scope="module")
def loads(spark):
    """One accumulator for every job of this module that loads the reference bundle."""
    from bundle.spark import load_counter

    return load_counter(spark)


@pytest.fixture(scope="module")
def dataset(spark, rows):
    return spark.read.parquet(str(rows[0]))


# --------------------------------------------------------------------------- scoring


@pytest.mark.slow
def test_predict_udf_labels_equal_bundle_predict(
    spark, reference, dataset, features, expected, loads
):
    from pyspark.sql.functions import struct

    from bundle.spark import predict_udf

    udf = predict_udf(spark, reference[0], loads=loads)
    got = (
        dataset.withColumn("pred", udf(struct(*features)))
        .select("row_id", "pred")
        .toPandas()
        .sort_values("row_id")
    )
    assert len(got) == N_ROWS
    np.testing.assert_array_equal(got["pred"].to_numpy(dtype=object), expected[0].astype(object))


@pytest.mark.slow
def test_predict_udf_scores_from_columns_in_any_order(
    spark, reference, dataset, features, expected, loads
):
    from bundle.spark import predict_udf

    udf = predict_udf(spark, reference[0], result="scores", loads=loads)
    reordered = list(reversed(features))  # by name, not by position
    got = dataset.select("row_id", udf(*reordered).alias("s")).toPandas().sort_values("row_id")
    scores = np.stack(got["s"].to_numpy())
    assert scores.dtype == np.float32 and scores.shape == (N_ROWS, 3)
    np.testing.assert_allclose(scores, expected[1], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_score_returns_ids_label_and_class_scores(spark, reference, dataset, expected, loads):
    from bundle.spark import score

    scored = score(dataset, reference[0], id_cols=["row_id"], batch_size=4096, loads=loads)
    assert scored.schema.simpleString() == (
        "struct<row_id:bigint,prediction:string,"
        "score_bronze:float,score_gold:float,score_silver:float>"
    )
    got = scored.toPandas().sort_values("row_id")
    np.testing.assert_array_equal(got["row_id"].to_numpy(), np.arange(N_ROWS))
    np.testing.assert_array_equal(got["prediction"].to_numpy(dtype=object), expected[0])
    scores = got[["score_bronze", "score_gold", "score_silver"]].to_numpy()
    np.testing.assert_allclose(scores, expected[1], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_each_worker_process_loaded_the_bundle_once(loads):
    """After three jobs (labels, scores, score) over 200k rows: one load per worker PID."""
    counts = loads.value
    assert counts, "no worker reported a load"
    assert all(count == 1 for count in counts.values()), counts
    assert all(key.rsplit(":", 1)[1].isdigit() for key in counts)


@pytest.mark.slow
def test_archive_is_shipped_with_addfile(spark, reference, dataset, expected, tmp_path):
    """A local release archive reaches executors through addFile and SparkFiles."""
    import bundle
    from bundle.spark import load_counter, score

    archive = bundle.archive(reference[0], tmp_path / "reference-1.0.0.tar.gz")
    shipped_loads = load_counter(spark)
    scored = score(dataset.limit(20_000), archive, id_cols=["row_id"], loads=shipped_loads)
    assert any(uri.endswith("/reference-1.0.0.tar.gz") for uri in spark.sparkContext.listFiles)
    got = scored.toPandas().sort_values("row_id")
    ids = got["row_id"].to_numpy()
    np.testing.assert_array_equal(got["prediction"].to_numpy(dtype=object), expected[0][ids])
    assert set(shipped_loads.value.values()) == {1}

    def where(frames):  # what an executor sees under the shipped name
        from pyspark import SparkFiles

        for _ in frames:
            pass
        path = Path(SparkFiles.get("reference-1.0.0.tar.gz"))
        yield pd.DataFrame({"dir": [str(path.parent)], "size": [path.stat().st_size]})

    seen = spark.range(2).mapInPandas(where, "dir string, size long").toPandas()
    assert (seen["size"] == archive.stat().st_size).all()
    assert str(tmp_path) not in set(seen["dir"])  # a copy in SparkFiles' root, not the original

    other = tmp_path / "other"
    other.mkdir()
    (other / archive.name).write_bytes(b"not the same archive")
    with pytest.raises(BundleError, match="was already shipped to this Spark application"):
        score(dataset, other / archive.name)


@pytest.mark.slow
def test_fsspec_url_is_loaded_by_each_executor(
    spark, reference, dataset, features, expected, tmp_path
):
    import bundle
    from bundle.spark import predict_udf

    archive = bundle.archive(reference[0], tmp_path / "reference-1.0.0.zip")
    udf = predict_udf(spark, f"local://{archive}")  # fsspec's local filesystem, as a URL
    got = dataset.limit(5_000).select("row_id", udf(*features).alias("p")).toPandas()
    ids = got["row_id"].to_numpy()
    np.testing.assert_array_equal(got["p"].to_numpy(dtype=object), expected[0][ids])


# --------------------------------------------------------------------------- errors


def _bad_rows_frame(rows, features, n: int = 3000) -> pd.DataFrame:
    frame = rows[1].iloc[:n].copy()
    frame["num_0"] = frame["num_0"].map(repr)  # numeric text is accepted and parsed
    return frame


@pytest.mark.slow
def test_bad_row_error_names_partition_and_row_offset(spark, reference, rows, features):
    from pyspark.sql.functions import spark_partition_id, struct

    from bundle.spark import predict_udf

    frame = _bad_rows_frame(rows, features)
    half = len(frame) // 2

    def frame_df(data):  # two inputs unioned: their partitions keep their rows in order
        return spark.createDataFrame(data.iloc[:half]).union(
            spark.createDataFrame(data.iloc[half:])
        )

    layout = frame_df(frame).select("row_id", spark_partition_id().alias("part")).toPandas()
    last = int(layout["part"].max())
    assert last >= 1
    in_last = layout[layout["part"] == last]["row_id"].to_numpy()
    offset = 1234 % len(in_last)
    frame.loc[frame["row_id"] == in_last[offset], "num_0"] = "twelve"
    if offset + 100 < len(in_last):
        frame.loc[frame["row_id"] == in_last[offset + 100], "num_0"] = "thirteen"
    df = frame_df(frame)
    udf = predict_udf(spark, reference[0])
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "256")
    try:
        with pytest.raises(Exception) as caught:
            df.select(udf(struct(*features))).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PythonException

    assert isinstance(caught.value, (PythonException, Py4JJavaError))
    text = str(caught.value)
    assert (
        f"bundle.errors.SchemaError: Row {offset} of Spark partition {last} is the first row "
        "there that bundle 'reference' 1.0.0 refuses (rows count from 0 within the partition)"
    ) in text
    start = offset // 256 * 256
    stop = min(start + 256, len(in_last)) - 1
    assert f"It is in a batch of partition rows {start} to {stop}" in text
    assert f"- row {offset - start}: 'twelve'" in text
    assert "Column 'num_0' expects numbers" in text


@pytest.mark.slow
def test_score_checks_columns_on_the_driver(spark, reference, dataset):
    from bundle.spark import score

    with pytest.raises(SchemaError, match=r"(?s)missing 1 of the 12 input columns.*- cat_b"):
        score(dataset.drop("cat_b"), reference[0], id_cols=["row_id"])
    with pytest.raises(SchemaError, match=r"(?s)id column\(s\) are not in the DataFrame.*- key"):
        score(dataset, reference[0], id_cols=["key"])


@pytest.mark.slow
def test_array_bundles_are_refused_on_the_driver(spark, image_bundle):
    from bundle.spark import predict_udf

    with pytest.raises(BundleError, match="takes array input, not named columns"):
        predict_udf(spark, image_bundle[0])


@pytest.mark.slow
def test_unknown_result_is_refused(spark, reference):
    from bundle.spark import predict_udf

    with pytest.raises(ValueError, match="result must be one of 'labels', 'scores'; got 'probs'"):
        predict_udf(spark, reference[0], result="probs")


# --------------------------------------------------------------------------- no Spark job


def test_rebatch_cuts_frames_to_exact_sizes():
    from bundle.spark import _rebatch

    frames = [pd.DataFrame({"x": np.arange(a, b)}) for a, b in [(0, 3), (3, 10), (10, 11)]]
    out = list(_rebatch(iter(frames), 4))
    assert [len(f) for f in out] == [4, 4, 3]
    assert np.concatenate([f["x"].to_numpy() for f in out]).tolist() == list(range(11))
    assert all(f.index.equals(pd.RangeIndex(len(f))) for f in out)


def test_first_bad_row_bisects_to_the_first_refused_row(tabular_bundle):
    from bundle.spark import _first_bad_row

    _, saved = tabular_bundle
    frame = pd.DataFrame(
        {
            "age": np.full(100, 40.0),
            "income": 1000.0,
            "score": 0.5,
            "visits": 2,
            "plan": "basic",
            "region": "north",
        }
    )
    assert _first_bad_row(saved, frame) is None
    frame["age"] = frame["age"].astype(object)
    frame.loc[[37, 80], "age"] = "old"
    assert _first_bad_row(saved, frame) == 37


# --------------------------------------------------------------------------- drift


@pytest.mark.slow
def test_drift_with_spark_aggregations_matches_bundle_drift(spark, reference, rows, tmp_path):
    from bundle.spark import drift

    path, loaded = reference
    frame = rows[1].iloc[:30_000].drop(columns="row_id").reset_index(drop=True)
    frame["num_2"] = frame["num_2"] * 1.5 + 1  # a planted shift
    frame.loc[frame.index[:1_200], "cat_b"] = "cat_b_new"  # a new category, 4%
    frame.loc[frame.index[:600], "num_5"] = np.nan  # missing values training never had
    frame.to_parquet(tmp_path / "current.parquet", row_group_size=7_000)
    df = spark.read.parquet(str(tmp_path / "current.parquet"))

    report = drift(df, str(path)).to_dict()
    expected = loaded.drift(frame).to_dict()

    assert report["rows"] == expected["rows"] == 30_000
    assert report["drifted_features"][0] == expected["drifted_features"][0] == "num_2"
    got = {f["name"]: f for f in report["features"]}
    for want in expected["features"]:
        if want["role"] == "input":  # the same counts: the same numbers
            assert got[want["name"]] == want, want["name"]
        else:  # scores computed in other batches may differ in the last float32 bit
            for key in ("psi", "ks", "js"):
                if want[key] is not None:
                    assert got[want["name"]][key] == pytest.approx(want[key], abs=1e-3)
    assert got["cat_b"]["unseen_values"] == [{"value": "cat_b_new", "share": 0.04}]
    assert got["num_5"]["missing_current"] == pytest.approx(0.02)


@pytest.mark.slow
def test_drift_of_text_columns_counts_values_that_are_no_numbers_as_missing(
    spark, reference, rows, tmp_path
):
    """A CSV read without a schema holds text: the numeric cast failed the whole job under
    ANSI mode (Spark 4's default) at the first value that was no number, where Bundle.drift
    counts it as missing."""
    from bundle.spark import drift

    path, loaded = reference
    frame = rows[1].iloc[:3_000].drop(columns="row_id").reset_index(drop=True)
    frame["num_2"] = frame["num_2"].astype(object)
    frame.loc[frame.index[:300], "num_2"] = "ERR"
    frame.to_csv(tmp_path / "current.csv", index=False)
    df = spark.read.csv(str(tmp_path / "current.csv"), header=True)  # every column text

    report = drift(df, str(path), outputs=False).to_dict()
    text = pd.read_csv(tmp_path / "current.csv", dtype=str, keep_default_na=False, na_values=[""])
    expected = loaded.drift(text, outputs=False).to_dict()
    assert report["features"] == expected["features"]
    got = {f["name"]: f for f in report["features"]}
    assert got["num_2"]["missing_current"] == pytest.approx(0.1) and got["num_2"]["drifted"]


def _halved_crossentropy(y_true, y_pred):
    """A loss of this test module (no installed package): the bundle stores it by value."""
    import keras

    return 0.5 * keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


@pytest.mark.slow
def test_a_bundle_with_a_pickled_loss_scores_on_spark_without_trust(spark, tmp_path):
    """Issue 21: the loss is compile only, so executors load the bundle untrusted (no
    pickle opened, no compile state) and score exactly as a trusted load predicts."""
    import warnings

    import keras
    from pyspark.sql.functions import struct

    from bundle import CompileStateSkippedWarning
    from bundle.spark import predict_udf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 3)).astype("float32"), columns=["a", "b", "c"])
    labels = (frame["a"] > 0).astype("int64").to_numpy()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", loss=_halved_crossentropy)
    model.fit(frame.to_numpy(), labels, epochs=2, verbose=0)
    path = Bundle(model, input_example=frame.iloc[:20], name="halved").save(tmp_path / "root")
    with pytest.warns(CompileStateSkippedWarning, match=r"_halved_crossentropy"):
        untrusted = Bundle.load(path)
    expected = Bundle.load(path, trusted=True).predict(frame)
    np.testing.assert_array_equal(untrusted.predict(frame), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileStateSkippedWarning)
        udf = predict_udf(spark, path, result="scores")
        got = spark.createDataFrame(frame).select(udf(struct("a", "b", "c")).alias("s")).toPandas()
    np.testing.assert_allclose(np.stack(got["s"].to_numpy()), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def scans(pets_folder, tmp_path_factory):
    """The pets training folder plus a truncated JPEG and a text file named .png."""
    folder = tmp_path_factory.mktemp("scans") / "scans"
    shutil.copytree(pets_folder, folder)
    good = (folder / "cat" / "01.jpg").read_bytes()
    (folder / "cat" / "05b.jpg").write_bytes(good[: len(good) // 3])
    (folder / "dog" / "03b.png").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def pets_expected(pets_bundle, pets_folder):
    """{path: (label, scores)} from Bundle.predict in this process."""
    loaded = Bundle.load(pets_bundle[0])
    frame = loaded.predict(pets_folder, on_error="record", postprocess=False)
    labels = loaded.decode(frame[["score_cat", "score_dog"]].to_numpy())
    return {
        Path(path).relative_to(pets_folder).as_posix(): (label, scores)
        for path, label, scores in zip(
            frame["path"], labels, frame[["score_cat", "score_dog"]].to_numpy(), strict=True
        )
    }


def _relative(path: str, folder: Path) -> str:
    return Path(path.removeprefix("file:")).relative_to(folder).as_posix()


@pytest.mark.slow
@pytest.mark.parametrize("column", ["content", "path"])
def test_score_reads_a_binary_file_dataframe(spark, pets_bundle, scans, pets_expected, column):
    from bundle.spark import score

    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(scans))
    if column == "path":  # the executors read the files themselves
        files = files.select("path")
    scored = score(files, pets_bundle[0]).toPandas()
    assert list(scored.columns) == ["path", "prediction", "score_cat", "score_dog", "error"]
    assert len(scored) == 26
    bad = scored[scored["error"].notna()]
    assert sorted(_relative(p, scans) for p in bad["path"]) == ["cat/05b.jpg", "dog/03b.png"]
    assert bad["prediction"].isna().all() and bad["score_cat"].isna().all()
    good = scored[scored["error"].isna()]
    for path, label, cat, dog in good[["path", "prediction", "score_cat", "score_dog"]].itertuples(
        index=False
    ):
        expected_label, expected_scores = pets_expected[_relative(path, scans)]
        assert label == expected_label
        np.testing.assert_allclose([cat, dog], expected_scores, atol=1e-6)
    skipped = score(files, pets_bundle[0], on_error="skip").toPandas()
    assert len(skipped) == 24 and "error" not in skipped.columns


@pytest.mark.slow
def test_an_unreadable_image_fails_the_task_naming_it(spark, pets_bundle, scans):
    from bundle.spark import score

    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(scans))
    with pytest.raises(Exception, match=r"Cannot read image .*05b\.jpg \(row \d+ of Spark"):
        score(files, pets_bundle[0], on_error="raise").collect()
    with pytest.raises(SchemaError, match="neither a 'content' column"):
        score(files.select("length"), pets_bundle[0])


@pytest.mark.slow
def test_predict_udf_scores_an_image_column(spark, pets_bundle, scans, pets_expected):
    from pyspark.sql.functions import col

    from bundle.spark import predict_udf

    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(scans))
    labels = predict_udf(spark, pets_bundle[0], on_error="record")
    scores = predict_udf(spark, pets_bundle[0], result="scores", on_error="record")
    rows = files.select(
        "path", labels(col("content")).alias("label"), scores(col("path")).alias("scores")
    ).toPandas()
    for path, label, values in rows.itertuples(index=False):
        relative = _relative(path, scans)
        if relative in ("cat/05b.jpg", "dog/03b.png"):
            assert pd.isna(label) and values is None
            continue
        assert label == pets_expected[relative][0]
        np.testing.assert_allclose(values, pets_expected[relative][1], atol=1e-6)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'record' for a UDF"):
        predict_udf(spark, pets_bundle[0], on_error="skip")
