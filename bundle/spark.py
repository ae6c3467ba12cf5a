"""Score Spark DataFrames with a bundle: a pandas UDF, or a whole-table `score`; and `drift`,
the drift report of a DataFrame against the bundle's training profile, from Spark aggregations.

A thin edge over ``Bundle.load`` + ``Bundle.predict``: Spark hands each Python worker Arrow
batches of rows, and each batch goes through ``Bundle.predict`` (the input contract, the
preprocessing, the compiled model), one model call per batch. Nothing here reimplements the
predict path: `score` asks for the scores and turns them into labels with ``Bundle.decode``,
so the model runs once for both.

Where the bundle comes from (`path_or_url`):

- a local ``.tar.gz``/``.zip`` release archive: shipped to every executor by
  ``SparkContext.addFile`` and resolved there with ``SparkFiles.get``;
- an fsspec URL (``s3://bucket/releases/churn-1.0.0.tar.gz``, ``s3://bucket/models/churn``,
  ``...@production``): each executor downloads it into its local cache
  (``$KERAS_BUNDLE_CACHE``); `storage_options` travel with the task, so prefer credentials
  the executors already have (instance roles, environment variables);
- an OCI artifact (``oci://host/repo:tag``): the driver pins the tag to the artifact's
  digest, and each executor pulls that digest into its local cache (credentials as for
  ``Bundle.load``: the Docker config or environment variables the executors have);
- a local version directory or root: read where it is, so every executor must see the
  same path (local mode, a shared filesystem). Otherwise archive it first with
  ``bundle.archive``.

The driver loads the bundle once to check it and to build the output types (the classes of
its label encoder name the score columns), and pins the version it found: executors load
that exact version even if a newer one, or a moved alias, appears during the job.

Each Python worker process loads a bundle once, then keeps it in a module-level cache keyed
by (location, version, trusted) for every later batch, task and job. `load_counter` makes
an accumulator that shows it: ``{"<host>:<pid>": loads}``.

Threads: in a task, TensorFlow gets the task's cores (``spark.task.cpus``) for its thread
pools, through ``TF_NUM_INTRAOP_THREADS``/``TF_NUM_INTEROP_THREADS`` unless they are set
already (``spark.executorEnv.*``), as PySpark does for OpenMP: otherwise every concurrent
task's worker would run one thread per core of the machine.

Errors: a row the input contract refuses fails its task with a `SchemaError` whose message
starts ``Row <offset> of Spark partition <id>`` (the first refused row, counted from 0
within the partition) followed by the contract's own explanation. On the driver, Spark
raises ``pyspark.errors.PythonException`` (``py4j.protocol.Py4JJavaError`` from RDD
actions); its text holds the worker's traceback, which ends with::

    bundle.errors.SchemaError: Row 730 of Spark partition 1 does not match the input ...

Images: a bundle that records how training read image files scores a DataFrame of encoded
images, as ``spark.read.format("binaryFile")`` gives them (``path``, ``content``), or a
column of paths or URLs that the executors read. Each batch's images decode on the task's
cores while the model runs, exactly as in ``Bundle.predict``. An image that cannot be read
is recorded (``error`` column, null outputs), skipped, or fails the task naming its path,
as `on_error` says.

Example:
    >>> from pyspark.sql.functions import struct
    >>> from bundle.spark import predict_udf, score
    >>> churn = predict_udf(spark, "s3://bucket/releases/churn-1.0.0.tar.gz")
    >>> df.withColumn("churn", churn(struct(*features)))
    >>> score(df, "s3://bucket/releases/churn-1.0.0.tar.gz", id_cols=["customer_id"])
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundle import Bundle, BundleError, ImageError, SchemaError
from bundle.contract import concat_rows, slice_rows
from bundle.errors import StorageError, UsageError
from bundle.format import hash_file
from bundle.storage import is_archive_name, is_oci, is_url, oci, open_root, split_alias

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LABEL_COLUMN",
    "drift",
    "load_counter",
    "predict_udf",
    "score",
]

DEFAULT_BATCH_SIZE = 10_000  # rows per model call in `score` (Arrow's default batch too)
LABEL_COLUMN = "prediction"
RESULTS = ("labels", "scores")
ON_ERROR = ("raise", "skip", "record")
ERROR_COLUMN = "error"
IMAGE_COLUMNS = ("content", "path")  # binaryFile's columns, in order of preference

# One bundle per (location, version, trusted, archive sha256) per Python process: a Spark
# Python worker serves many tasks, and loading (TensorFlow, model build, trace) takes seconds.
_CACHE: dict[tuple[str, str | None, bool, str | None], Bundle] = {}
_CACHE_LOCK = threading.Lock()
_LOADS = 0  # bundles this process has loaded (not cache hits)
_SHIPPED: dict[tuple[str, str], tuple[str, str]] = {}  # (app, name) -> (path, sha256)


# --------------------------------------------------------------------------- public API


def predict_udf(
    spark: Any,
    path_or_url: str | Path,
    *,
    result: str = "labels",
    trusted: bool = False,
    version: str | None = None,
    loads: Any = None,
    on_error: str = "raise",
    **storage_options: Any,
) -> Callable[..., Any]:
    """A pandas UDF that scores rows with a bundle: ``udf(struct(*cols))`` or ``udf(*cols)``.

    For an image bundle, ``udf(col("content"))`` scores encoded images (a binary column)
    and ``udf(col("path"))`` images the executors read from paths or URLs; with
    ``on_error="record"`` an unreadable image gives null instead of failing the task.

    The UDF takes the bundle's input columns, by name, in any order; extra columns are
    ignored (with one `ExtraColumnsWarning` per worker). Rows are scored in Spark's Arrow
    batches (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows, 10,000 by default),
    one model call each.

    Args:
        spark: the active ``SparkSession``.
        path_or_url: a release archive, a version directory or root (``root@alias`` too),
            or an fsspec URL of any of these (see the module docstring for shipping).
        result: ``"labels"`` for the postprocessed prediction (a string, integer, boolean
            or double column, from the label encoder's classes), ``"scores"`` for the
            model's outputs as ``array<float>`` (in the classes' order).
        trusted: allow parts whose loading runs stored code (see ``Bundle.load``).
        version: the version (or alias) to use under a root.
        loads: an accumulator from `load_counter`, to count loads per worker process.
        **storage_options: fsspec options for a URL (sent to the executors).

    Returns:
        A Spark pandas UDF (iterator of Arrow batches). Called with several columns it
        packs them into ``struct(*cols)``, so Python receives them by name.

    Raises:
        ValueError: `result` is unknown, or ``"labels"`` for a bundle without postprocessing.
        BundleError: the bundle cannot be loaded on the driver, or is not tabular.

    Example:
        >>> churn = predict_udf(spark, "models/churn-1.0.0.tar.gz")
        >>> df.withColumn("churn", churn(struct(*features))).write.parquet("scored")
    """
    from pyspark.sql.functions import pandas_udf

    if result not in RESULTS:
        raise ValueError(f"result must be one of {', '.join(map(repr, RESULTS))}; got {result!r}.")
    if on_error not in ("raise", "record"):
        raise ValueError(
            f"on_error must be 'raise' or 'record' for a UDF (one result per row); got "
            f"{on_error!r}."
        )
    source, loaded = _prepare_source(spark, path_or_url, version, trusted, storage_options)
    outputs = _Outputs.of(loaded)
    if result == "labels" and outputs.label_kind is None:
        raise ValueError(
            f"{loaded.manifest.label.capitalize()} has no postprocess step, so its predictions "
            "are the model's scores: use predict_udf(..., result='scores')."
        )
    job = _UdfJob(
        source=source,
        columns=tuple(_input_columns(loaded)),
        result=result,
        outputs=outputs,
        loads=loads,
        image=_reads_images(loaded),
        on_error=on_error,
    )

    def predict(batches):  # pickled by value: it reaches the module cache through _run_udf
        return _run_udf(job, batches)

    import pandas as pd

    predict.__annotations__ = {"batches": Iterator[pd.DataFrame], "return": Iterator[pd.Series]}
    return_type = outputs.label_spark_type() if result == "labels" else outputs.scores_array()
    spark_udf = pandas_udf(predict, returnType=return_type)

    @functools.wraps(spark_udf)
    def call(*cols: Any) -> Any:
        if len(cols) == 1:
            return spark_udf(cols[0])
        from pyspark.sql.functions import struct

        return spark_udf(struct(*cols))

    return call


def score(
    df: Any,
    path_or_url: str | Path,
    *,
    id_cols: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    trusted: bool = False,
    version: str | None = None,
    loads: Any = None,
    image_column: str | None = None,
    on_error: str = "record",
    **storage_options: Any,
) -> Any:
    """Score a DataFrame: the `id_cols`, a ``prediction`` column and one ``score_<class>`` each.

    Runs through ``mapInPandas`` with an explicit output schema built from the bundle: the
    id columns keep their types, ``prediction`` has the label encoder's class type (absent
    for a bundle without postprocessing), and each ``score_<class>`` column is a float
    (float32 models) or double. Columns the bundle does not know are dropped before the
    rows leave the JVM.

    Args:
        df: the input ``pyspark.sql.DataFrame``; it must hold every input column.
        path_or_url: as for `predict_udf`.
        id_cols: columns copied to the output, e.g. ``["customer_id"]``.
        batch_size: rows per model call (Arrow batches are merged or split to it); for
            images, each Arrow batch is decoded and scored in model batches of about
            16 MiB of input instead.
        trusted, version, loads, storage_options: as for `predict_udf`.
        image_column: for an image bundle, the column of encoded images (binary) or of
            paths and URLs (string); default ``content``, else ``path`` (the columns of
            ``spark.read.format("binaryFile")``). `id_cols` defaults to ``["path"]`` then.
        on_error: for an image bundle, an image that cannot be read: ``"record"`` (default:
            null outputs and the reason in an ``error`` column), ``"skip"`` (no row), or
            ``"raise"`` (the task fails with an `ImageError` naming it).

    Returns:
        A DataFrame, one row per input row (lazy, like every transformation).

    Raises:
        SchemaError: the DataFrame lacks input or id columns (checked on the driver); rows
            the input contract refuses fail the job (see the module docstring).

    Example:
        >>> score(spark.read.parquet("s3://bucket/customers/"), "models/churn-1.0.0.tar.gz",
        ...       id_cols=["customer_id"]).write.parquet("s3://bucket/scores/")
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive number of rows; got {batch_size}.")
    if on_error not in ON_ERROR:
        raise ValueError(
            f"on_error must be one of {', '.join(map(repr, ON_ERROR))}; got {on_error!r}."
        )
    spark = df.sparkSession
    source, loaded = _prepare_source(spark, path_or_url, version, trusted, storage_options)
    outputs = _Outputs.of(loaded)
    ids = [id_cols] if isinstance(id_cols, str) else list(id_cols)
    image = _reads_images(loaded)
    if image:
        features = [_image_column(df.columns, image_column, loaded.manifest.label)]
        if not ids and "path" in df.columns:
            ids = ["path"]
    else:
        features = _input_columns(loaded)
    _check_columns(df.columns, features, ids, loaded.manifest.label)
    record = image and on_error == "record"
    taken = set(outputs.names()) | ({ERROR_COLUMN} if record else set())
    clashes = [column for column in ids if column in taken]
    if clashes:
        raise ValueError(
            f"The id column(s) {', '.join(map(repr, clashes))} clash with output columns of "
            f"the same name. Rename them before scoring, e.g. "
            f"df.withColumnRenamed({clashes[0]!r}, '{clashes[0]}_id')."
        )
    selected = list(dict.fromkeys([*ids, *features]))
    job = _ScoreJob(
        source=source,
        columns=tuple(features),
        ids=tuple(ids),
        batch_size=int(batch_size),
        outputs=outputs,
        loads=loads,
        image=image,
        on_error=on_error,
    )
    schema = _score_schema(df.select(*ids).schema if ids else None, outputs, record=record)
    return df.select(*selected).mapInPandas(functools.partial(_run_score, job), schema)


def load_counter(spark: Any) -> Any:
    """An accumulator counting bundle loads per worker process: ``{"<host>:<pid>": n}``.

    Pass it as ``loads=`` to `predict_udf` or `score`; read ``.value`` on the driver after
    an action. A worker that already holds the bundle adds nothing, so after any number of
    jobs every process should show 1.
    """
    return spark.sparkContext.accumulator({}, _CountsParam())


# --------------------------------------------------------------------------- drift


def drift(
    df: Any,
    path_or_url: str | Path,
    *,
    thresholds: Any = None,
    outputs: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    trusted: bool = False,
    version: str | None = None,
    **storage_options: Any,
) -> Any:
    """The drift report of a Spark DataFrame against a bundle's training profile.

    The same report as ``Bundle.drift`` on the same rows, computed with Spark aggregations:
    each feature's values are mapped to the profile's buckets (``Bucketizer`` at the
    reference values, category keys against the training categories) and counted with one
    ``groupBy``; only the counts (a few thousand per feature) and the most frequent unseen
    values reach the driver, never the rows. With `outputs`, the model's outputs come from
    `score` on the executors and are counted the same way.

    Args:
        df: the ``pyspark.sql.DataFrame`` to compare; absent columns count as missing.
        path_or_url: as for `predict_udf`.
        thresholds: as for ``Bundle.drift``.
        outputs: also score the rows and compare the outputs' distributions.
        batch_size, trusted, version, storage_options: as for `score`.

    Returns:
        A ``bundle.drift.DriftReport``.

    Example:
        >>> report = drift(spark.read.parquet("s3://bucket/today/"), "models/churn.tar.gz")
        >>> report.has_drift, report.features[0].name
    """
    from bundle.drift import DriftAccumulator

    spark = df.sparkSession
    _source, loaded = _prepare_source(spark, path_or_url, version, trusted, storage_options)
    profile = loaded.profile
    if profile is None:
        from bundle.drift.report import no_profile_error

        raise no_profile_error(loaded.manifest.label)
    accumulator = DriftAccumulator(profile, outputs=outputs)
    accumulator.rows = _count_features(df, list(profile.inputs), accumulator)
    if outputs and profile.outputs:
        scored = score(
            df,
            path_or_url,
            batch_size=batch_size,
            trusted=trusted,
            version=version,
            **storage_options,
        )
        accumulator.output_rows = _count_features(scored, list(profile.outputs), accumulator)
    return accumulator.report(thresholds, label=loaded.manifest.label)


_MISSING_BUCKET = -1
_OTHER, _UNSEEN = "\x00other", "\x00unseen"


def _count_features(df: Any, features: Sequence[Any], accumulator: Any) -> int:
    """Fill `accumulator`'s counts for `features` from `df` with Spark aggregations.

    Returns the number of rows counted.
    """
    from pyspark.sql import functions as F

    if not features:
        return int(df.count())
    numeric = [f for f in features if f.is_numeric]
    frame, bucket_columns = _bucketed(df, numeric, accumulator)
    entries = []
    for index, feature in enumerate(features):
        if feature.is_numeric:
            bucket = F.col(bucket_columns[feature.name]).cast("int")
            entries.append(
                F.struct(
                    F.lit(index).alias("f"),
                    bucket.alias("b"),
                    F.lit(None).cast("string").alias("k"),
                )
            )
        else:
            key = _category_key(frame, feature, accumulator.counts[feature.name])
            entries.append(
                F.struct(
                    F.lit(index).alias("f"), F.lit(None).cast("int").alias("b"), key.alias("k")
                )
            )
    long = frame.select(F.explode(F.array(*entries)).alias("e")).select("e.f", "e.b", "e.k")
    counted = long.groupBy("f", "b", "k").count().collect()
    rows_per_feature: dict[int, int] = {}
    for row in counted:
        feature = features[row["f"]]
        counts = accumulator.counts[feature.name]
        n = int(row["count"])
        rows_per_feature[row["f"]] = rows_per_feature.get(row["f"], 0) + n
        if feature.is_numeric:
            bucket = row["b"]
            missing = bucket is None or bucket == _MISSING_BUCKET or bucket >= len(counts.buckets)
            counts.add_counts(None if missing else int(bucket), n)
        elif row["k"] == _OTHER:
            counts.add_counts(_OTHER, n)
        else:
            counts.add_counts(row["k"], n, unseen=row["k"] == _UNSEEN)
    _count_unseen(frame, features, accumulator)
    return max(rows_per_feature.values(), default=0)


def _bucketed(df: Any, numeric: Sequence[Any], accumulator: Any) -> tuple[Any, dict[str, str]]:
    """`df` with one bucket column per numeric feature (NaN bucket for missing values)."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    frame = df
    names: dict[str, str] = {}
    inputs, outputs, splits = [], [], []
    for i, feature in enumerate(numeric):
        counts = accumulator.counts[feature.name]
        value = _numeric_value(df, feature)
        missing = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))
        value_column, bucket_column = f"__drift_value_{i}", f"__drift_bucket_{i}"
        frame = frame.withColumn(
            value_column, F.when(missing, F.lit(float("nan"))).otherwise(value)
        )
        names[feature.name] = bucket_column
        inner = [float(s) for s in counts.splits]
        if not inner:  # no training values: every present value is in the one bucket
            frame = frame.withColumn(
                bucket_column,
                F.when(F.isnan(F.col(value_column)), F.lit(_MISSING_BUCKET)).otherwise(F.lit(0)),
            )
            continue
        inputs.append(value_column)
        outputs.append(bucket_column)
        splits.append([-float("inf"), *inner, float("inf")])
    if inputs:
        bucketizer = Bucketizer(
            splitsArray=splits, inputCols=inputs, outputCols=outputs, handleInvalid="keep"
        )
        frame = bucketizer.transform(frame)
    return frame, names


def _numeric_value(df: Any, feature: Any) -> Any:
    """A feature's number: the column as double, a text's length, datetimes in seconds."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = feature.source.get("column")
    if column not in df.columns:
        return F.lit(None).cast("double")
    dtype = df.schema[column].dataType
    if feature.kind == "text":
        return F.length(F.col(column)).cast("double")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_micros(F.col(column).cast("timestamp")).cast("double") / 1e6
    if isinstance(dtype, T.StringType):
        # As Bundle.drift reads text: a number, else an ISO-8601 datetime in seconds (naive
        # ones in the session time zone), else missing. A plain cast fails the job under
        # ANSI mode (Spark 4's default) at the first value that is no number.
        quoted = "`" + column.replace("`", "``") + "`"
        number = F.expr(f"try_cast({quoted} AS double)")
        instant = F.expr(f"try_cast({quoted} AS timestamp)")
        return F.coalesce(number, F.unix_micros(instant).cast("double") / 1e6)
    return F.col(column).cast("double")


def _category_key(df: Any, feature: Any, counts: Any) -> Any:
    """A value's key mapped to itself (a top category), `_OTHER`, `_UNSEEN`, or null."""
    from pyspark.sql import functions as F

    key = _raw_key(df, feature)
    top = list(counts.profile.categories or ())
    mapped = F.when(key.isNull(), F.lit(None).cast("string"))
    if top:
        mapped = mapped.when(key.isin(top), key)
    seen = counts.profile.seen
    if seen is None:
        return mapped.otherwise(F.lit(_OTHER))
    return mapped.when(key.isin(seen.tolist()), F.lit(_OTHER)).otherwise(F.lit(_UNSEEN))


def _raw_key(df: Any, feature: Any) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = feature.source.get("column")
    if column not in df.columns:
        return F.lit(None).cast("string")
    col = F.col(column)
    dtype = df.schema[column].dataType
    if isinstance(dtype, T.BooleanType):
        return F.when(col.isNull(), F.lit(None)).when(col, F.lit("True")).otherwise(F.lit("False"))
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        whole = col == F.floor(col)
        return (
            F.when(F.isnan(col), F.lit(None))
            .when(whole, col.cast("long").cast("string"))
            .otherwise(col.cast("string"))
        )
    return col.cast("string")


def _count_unseen(frame: Any, features: Sequence[Any], accumulator: Any) -> None:
    """The most frequent unseen values per categorical feature (bounded, like the stream)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from bundle.drift.accumulator import MAX_TRACKED_UNSEEN

    watched = [
        (i, f)
        for i, f in enumerate(features)
        if not f.is_numeric and f.seen is not None and accumulator.counts[f.name].unseen
    ]
    if not watched:
        return
    entries = [
        F.struct(
            F.lit(i).alias("f"),
            _raw_key(frame, f).alias("k"),
            _category_key(frame, f, accumulator.counts[f.name]).alias("m"),
        )
        for i, f in watched
    ]
    long = frame.select(F.explode(F.array(*entries)).alias("e")).select("e.f", "e.k", "e.m")
    unseen = long.filter(F.col("m") == _UNSEEN).groupBy("f", "k").count()
    ranked = unseen.withColumn(
        "r", F.row_number().over(Window.partitionBy("f").orderBy(F.desc("count"), F.asc("k")))
    ).filter(F.col("r") <= MAX_TRACKED_UNSEEN)
    for row in ranked.collect():
        accumulator.counts[features[row["f"]].name].name_unseen(row["k"], int(row["count"]))


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class _Source:
    """Where executors find the bundle; small and picklable, shipped in every task."""

    location: str  # what the user passed
    version: str | None  # pinned on the driver for roots and aliases
    trusted: bool
    shipped: str | None = None  # the SparkFiles name of an archive added with addFile
    digest: str | None = None  # a local archive's sha256: a rewritten archive is reloaded
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str | None, bool, str | None]:
        return (self.location, self.version, self.trusted, self.digest)

    def load(self) -> Bundle:
        if self.shipped is not None:
            from pyspark import SparkFiles

            return Bundle.load(SparkFiles.get(self.shipped), trusted=self.trusted)
        location, _alias = split_alias(self.location)  # the alias was pinned to a version
        return Bundle.load(
            location, version=self.version, trusted=self.trusted, **self.storage_options
        )


def _prepare_source(
    spark: Any,
    path_or_url: str | Path,
    version: str | None,
    trusted: bool,
    storage_options: dict[str, Any],
) -> tuple[_Source, Bundle]:
    """Load the bundle on the driver, ship a local archive, pin the version executors use."""
    text = str(path_or_url)
    if is_oci(text):
        # Executors pull the artifact the tag names now, by its digest: a tag moved while a
        # job runs cannot hand two executors two different bundles.
        text, version = oci.pin(text, version, **storage_options), None
    root_text, alias = split_alias(text)
    shipped = digest = None
    if is_archive_name(root_text) and not is_url(root_text):
        local = Path(root_text[len("file://") :] if root_text.startswith("file://") else root_text)
        if local.is_file():  # else Bundle.load says what is missing
            shipped, digest = _ship(spark.sparkContext, local.resolve())
    options = dict(storage_options)
    loaded = _cached(_Source(text, version, trusted, digest=digest, storage_options=options))
    if is_archive_name(root_text) or is_oci(root_text):
        pinned = None
    elif version is not None or alias is not None:
        pinned = loaded.manifest.version
    else:
        is_version_dir = open_root(root_text, **storage_options).is_version()
        pinned = None if is_version_dir else loaded.manifest.version
    source = _Source(text, pinned, trusted, shipped, digest, options)
    with _CACHE_LOCK:  # the driver's copy serves the pinned key too
        _CACHE.setdefault(source.key, loaded)
    return source, loaded


def _ship(context: Any, archive: Path) -> tuple[str, str]:
    """Add a local archive to the Spark application's files: (SparkFiles name, sha256).

    Spark keeps one file per name, and executors fetch it again from this path when they
    start new tasks, so the archive must stay in place while jobs run.
    """
    key = (context.applicationId, archive.name)
    digest = hash_file(archive)
    with _CACHE_LOCK:
        earlier = _SHIPPED.get(key)
        if earlier is not None and earlier[1] != digest:
            raise StorageError(
                f"An archive named {archive.name!r} was already shipped to this Spark "
                f"application from {earlier[0]}, with other contents than {archive}.\n"
                "Spark keeps one file per name: give the archives different names "
                "(bundle.archive names them <name>-<version>)."
            )
        if earlier is None:
            context.addFile(str(archive))
            _SHIPPED[key] = (str(archive), digest)
    return archive.name, digest


def _cached(source: _Source, loads: Any = None) -> Bundle:
    """The bundle for `source`, loaded at most once per process."""
    global _LOADS
    with _CACHE_LOCK:
        loaded = _CACHE.get(source.key)
        if loaded is None:
            _size_threads_to_task()
            loaded = source.load()
            _CACHE[source.key] = loaded
            _LOADS += 1
            if loads is not None:
                loads.add({f"{socket.gethostname()}:{os.getpid()}": 1})
    return loaded


def _size_threads_to_task() -> None:
    """In a Spark task, give TensorFlow the task's cores (``spark.task.cpus``), not all.

    Each concurrent task has its own Python worker, and TensorFlow sizes its thread pools
    to every core of the machine in each of them: N workers x N threads on N cores. PySpark
    sizes OpenMP the same way (``OMP_NUM_THREADS``). Read when TensorFlow starts, so only
    before the first load in a process; variables already set (``spark.executorEnv.*``)
    win. Outside a task (the driver) nothing changes.
    """
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return
    cpus = str(max(1, int(context.cpus())))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", cpus)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", cpus)


class _CountsParam:
    """Accumulator param merging ``{worker: count}`` dicts (duck-typed AccumulatorParam)."""

    def zero(self, value: dict[str, int]) -> dict[str, int]:
        return {}

    def addInPlace(self, total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
        for key, count in more.items():
            total[key] = total.get(key, 0) + count
        return total


# --------------------------------------------------------------------------- output types


@dataclass(frozen=True)
class _Outputs:
    """What the bundle's predictions look like, from its manifest and label encoder."""

    label_kind: str | None  # numpy kind of the labels ("U", "i", "b", "f"), None: no labels
    label_width: int  # 1: a scalar per row; more: an array per row (multi-target regression)
    classes: tuple[Any, ...] | None  # the label encoder's classes, in score order
    score_names: tuple[str, ...]
    score_dtype: str  # "float32" or "float64"
    modes: tuple[str, ...]  # each postprocess step's mode ("class_ids" or as-is)

    @classmethod
    def of(cls, loaded: Bundle) -> _Outputs:
        manifest = loaded.manifest
        schema = loaded.input_schema
        if schema is None or ("columns" not in schema.to_dict() and schema.kind != "image"):
            raise UsageError(
                f"{manifest.label.capitalize()} takes array input, not named columns: Spark "
                "scores a tabular bundle (one saved with a DataFrame input_example) or an "
                "image bundle (one saved with image=...)."
            )
        outputs = manifest.model["outputs"]
        if len(outputs) != 1:
            names = ", ".join(str(spec["name"]) for spec in outputs)
            raise UsageError(
                f"{manifest.label.capitalize()} has {len(outputs)} model outputs ({names}); "
                "Spark scoring supports single-output models."
            )
        shape = outputs[0]["shape"]
        width = int(np.prod([d or 1 for d in shape[1:]])) if len(shape) > 1 else 1
        score_dtype = "float32" if np.dtype(outputs[0]["dtype"]) == np.float32 else "float64"
        modes = tuple(record.get("mode", "inverse_transform") for record in manifest.postprocess)
        steps = loaded.postprocess
        classes = None
        if steps and modes[-1] == "class_ids":
            classes = tuple(np.asarray(steps[-1].classes_).tolist())
        if not steps:
            label_kind, label_width = None, 1
        elif classes is not None:
            label_kind, label_width = _label_kind(np.asarray(steps[-1].classes_)), 1
        else:
            label_kind, label_width = "f", width
        if classes is not None and len(classes) == width:
            names = tuple(f"score_{c}" for c in classes)
        else:
            names = ("score",) if width == 1 else tuple(f"score_{i}" for i in range(width))
        return cls(label_kind, label_width, classes, names, score_dtype, modes)

    def names(self) -> list[str]:
        return ([LABEL_COLUMN] if self.label_kind else []) + list(self.score_names)

    def label_spark_type(self) -> Any:
        from pyspark.sql import types as T

        scalar = {"U": T.StringType(), "i": T.LongType(), "b": T.BooleanType()}.get(
            self.label_kind or "f", T.DoubleType()
        )
        return scalar if self.label_width == 1 else T.ArrayType(scalar)

    def score_spark_type(self) -> Any:
        from pyspark.sql import types as T

        return T.FloatType() if self.score_dtype == "float32" else T.DoubleType()

    def scores_array(self) -> Any:
        from pyspark.sql import types as T

        return T.ArrayType(self.score_spark_type(), containsNull=False)

    def label_values(self, labels: Any) -> Any:
        """Labels as a column pandas and Arrow agree on for the Spark type."""
        labels = np.asarray(labels)
        if self.label_width == 1:
            labels = labels.reshape(len(labels))
            if self.label_kind == "U" and labels.dtype.kind not in "OUS":
                labels = labels.astype(str)
            elif self.label_kind == "i":
                labels = labels.astype(np.int64)
            elif self.label_kind == "f":
                labels = labels.astype(np.float64)
            return labels
        return list(labels.reshape(len(labels), -1).astype(np.float64))


def _label_kind(classes: np.ndarray) -> str:
    kind = classes.dtype.kind
    if kind in "iu":
        return "i"
    if kind in "bf":
        return kind
    return "U"  # strings, and objects shown as strings


def _score_schema(id_schema: Any, outputs: _Outputs, *, record: bool = False) -> Any:
    """The output columns; with `record`, outputs may be null and ``error`` says why."""
    from pyspark.sql import types as T

    fields = list(id_schema.fields) if id_schema is not None else []
    if outputs.label_kind:
        fields.append(T.StructField(LABEL_COLUMN, outputs.label_spark_type(), nullable=record))
    score_type = outputs.score_spark_type()
    fields += [T.StructField(name, score_type, nullable=record) for name in outputs.score_names]
    if record:
        fields.append(T.StructField(ERROR_COLUMN, T.StringType(), nullable=True))
    return T.StructType(fields)


def _reads_images(loaded: Bundle) -> bool:
    schema = loaded.input_schema
    return schema is not None and schema.kind == "image"


def _image_column(columns: Sequence[str], chosen: str | None, label: str) -> str:
    if chosen is not None:
        return chosen
    found = next((name for name in IMAGE_COLUMNS if name in columns), None)
    if found is None:
        raise SchemaError(
            f"{label.capitalize()} reads images, but the DataFrame has neither a 'content' "
            f"column (encoded images) nor a 'path' column; its columns are:\n"
            f"{_listed(list(columns))}\nRead the files with spark.read.format('binaryFile'), "
            "or pass image_column='<column of bytes or paths>'.",
            column="content",
        )
    return found


def _input_columns(loaded: Bundle) -> list[str]:
    schema = loaded.input_schema
    if schema is None or schema.kind != "tabular":
        return []  # an image bundle reads one column, chosen by the caller
    return [str(column["name"]) for column in schema.to_dict()["columns"]]


def _check_columns(
    available: Sequence[str], features: Sequence[str], ids: Sequence[str], label: str
) -> None:
    present = set(available)
    missing_ids = [c for c in ids if c not in present]
    missing = [c for c in features if c not in present]
    if not (missing or missing_ids):
        return
    lines = []
    if missing:
        lines.append(
            f"The DataFrame is missing {len(missing)} of the {len(features)} input columns "
            f"that {label} expects:\n{_listed(sorted(missing))}"
        )
    if missing_ids:
        lines.append(f"The id column(s) are not in the DataFrame:\n{_listed(missing_ids)}")
    lines.append(f"Its columns are:\n{_listed(list(available))}")
    lines.append("Rename or add these columns before scoring.")
    raise SchemaError(
        "\n".join(lines),
        problems=[f"missing column {c!r}" for c in [*missing, *missing_ids]],
        column=(missing or missing_ids)[0],
    )


def _listed(items: Sequence[Any], limit: int = 5) -> str:
    lines = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"... ({len(items) - limit} more)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- executors


@dataclass(frozen=True)
class _UdfJob:
    source: _Source
    columns: tuple[str, ...]
    result: str
    outputs: _Outputs
    loads: Any = None
    image: bool = False
    on_error: str = "raise"


@dataclass(frozen=True)
class _ScoreJob:
    source: _Source
    columns: tuple[str, ...]
    ids: tuple[str, ...]
    batch_size: int
    outputs: _Outputs
    loads: Any = None
    image: bool = False
    on_error: str = "raise"


def _run_udf(job: _UdfJob, batches: Iterable[Any]) -> Iterator[Any]:
    """The UDF body on an executor: Arrow batches in, one Series of results per batch out.

    One model call per batch, inline: every core already runs a task of its own, so a
    prepare-ahead thread (as in ``predict_batches``) would only compete with them.
    """
    import pandas as pd

    loaded = _cached(job.source, job.loads)
    if job.image:
        yield from _run_image_udf(job, loaded, batches)
        return
    where = _Partition(loaded)
    labels = job.result == "labels"
    for batch in batches:
        frame = _as_frame(batch, job.columns)
        with where.batch(frame):
            out = loaded.predict(frame, batch_size=max(len(frame), 1), postprocess=labels)
        if labels:
            yield pd.Series(job.outputs.label_values(out))
        else:
            scores = np.asarray(out, dtype=job.outputs.score_dtype)
            yield pd.Series(list(scores.reshape(len(scores), -1)))


def _run_score(job: _ScoreJob, frames: Iterable[Any]) -> Iterator[Any]:
    """The ``mapInPandas`` body on an executor: ids, prediction, score columns per batch."""
    import pandas as pd

    loaded = _cached(job.source, job.loads)
    if job.image:
        yield from _run_image_score(job, loaded, frames)
        return
    where = _Partition(loaded)
    features = list(job.columns)
    for frame in _rebatch(frames, job.batch_size):
        with where.batch(frame[features]):
            scores = loaded.predict(frame[features], batch_size=job.batch_size, postprocess=False)
            scores = np.asarray(scores)
            predictions = loaded.decode(scores) if job.outputs.label_kind else None
        out = pd.DataFrame(
            {c: frame[c].to_numpy() for c in job.ids}, index=pd.RangeIndex(len(frame))
        )
        if predictions is not None:
            out[LABEL_COLUMN] = job.outputs.label_values(predictions)
        flat = scores.reshape(len(scores), -1).astype(job.outputs.score_dtype, copy=False)
        for i, name in enumerate(job.outputs.score_names):
            out[name] = flat[:, i]
        yield out


# --------------------------------------------------------------------------- images


@dataclass
class _ImageScores:
    """One batch of images scored: scores of every row (NaN where unreadable), which were
    read, and why the others were not."""

    scores: np.ndarray
    ok: np.ndarray
    errors: np.ndarray


def _score_images(loaded: Bundle, values: Any, outputs: _Outputs) -> _ImageScores:
    """Decode and score a column of encoded images or paths, on the task's cores."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable images are reported per row instead
        table = loaded.predict(
            values.reset_index(drop=True),
            on_error="record",
            postprocess=False,
            workers=_task_cores(),
        )
    errors = table[ERROR_COLUMN].to_numpy(dtype=object)
    ok = np.array([error is None or error != error for error in errors], dtype=bool)
    columns = [name for name in table.columns if name not in ("index", "path", ERROR_COLUMN)]
    scores = table[columns].to_numpy(dtype=outputs.score_dtype)
    return _ImageScores(scores, ok, np.where(ok, None, errors))


def _task_cores() -> int | None:
    """Decoding threads in a Spark task: its cores (set by `_size_threads_to_task`)."""
    cores = os.environ.get("TF_NUM_INTRAOP_THREADS")
    return int(cores) if cores and cores.isdigit() else None


def _refuse_unreadable(scored: _ImageScores, frame: Any, column: str, seen: int) -> None:
    """With ``on_error="raise"``: an `ImageError` naming the first unreadable image's path."""
    if scored.ok.all():
        return
    from pyspark import TaskContext

    index = int(np.flatnonzero(~scored.ok)[0])
    reason = str(scored.errors[index])
    context = TaskContext.get()
    where = f"row {seen + index} of Spark partition {context.partitionId() if context else 0}"
    name_column = "path" if "path" in frame.columns else column
    value = frame[name_column].iloc[index]
    source = value if isinstance(value, str) else where
    raise ImageError(
        f"Cannot read image {source} ({where}): {reason}.\n"
        "Fix or remove the file; to score the others, pass on_error='record' or 'skip'.",
        source=source,
        reason=reason,
    )


def _labels_of(loaded: Bundle, scored: _ImageScores, outputs: _Outputs, rows: Any) -> Any:
    """The labels of the rows selected by `rows`, null where the image was not read."""
    import pandas as pd

    labels = np.full(len(scored.ok), None, dtype=object)
    if scored.ok.any():
        decoded = outputs.label_values(loaded.decode(scored.scores[scored.ok]))
        labels[np.flatnonzero(scored.ok)] = list(decoded)
    return pd.Series(labels[rows], dtype=object)


def _run_image_score(job: _ScoreJob, loaded: Bundle, frames: Iterable[Any]) -> Iterator[Any]:
    """``mapInPandas`` for images: each Arrow batch decoded and scored as it comes."""
    import pandas as pd

    column = job.columns[0]
    seen = 0
    for frame in frames:
        if len(frame) == 0:
            continue
        frame = frame.reset_index(drop=True)
        scored = _score_images(loaded, frame[column], job.outputs)
        if job.on_error == "raise":
            _refuse_unreadable(scored, frame, column, seen)
        rows = scored.ok if job.on_error == "skip" else np.ones(len(frame), dtype=bool)
        out = pd.DataFrame({c: frame[c].to_numpy()[rows] for c in job.ids})
        if job.outputs.label_kind:
            out[LABEL_COLUMN] = _labels_of(loaded, scored, job.outputs, rows).to_numpy()
        for i, name in enumerate(job.outputs.score_names):
            out[name] = scored.scores[rows, i]
        if job.on_error == "record":
            out[ERROR_COLUMN] = scored.errors
        seen += len(frame)
        yield out


def _run_image_udf(job: _UdfJob, loaded: Bundle, batches: Iterable[Any]) -> Iterator[Any]:
    import pandas as pd

    seen = 0
    for batch in batches:
        values = batch if isinstance(batch, pd.Series) else batch.iloc[:, 0]
        scored = _score_images(loaded, values, job.outputs)
        if job.on_error == "raise":
            _refuse_unreadable(scored, values.to_frame("value"), "value", seen)
        seen += len(values)
        if job.result == "labels":
            yield _labels_of(loaded, scored, job.outputs, slice(None))
        else:
            yield pd.Series(
                [row if good else None for row, good in zip(scored.scores, scored.ok, strict=True)]
            )


def _as_frame(batch: Any, columns: Sequence[str]) -> Any:
    """A UDF argument as a DataFrame with the bundle's column names."""
    import pandas as pd

    if isinstance(batch, pd.DataFrame):
        return batch
    series = list(batch) if isinstance(batch, tuple) else [batch]
    if len(series) != len(columns):
        raise SchemaError(
            f"The UDF received {len(series)} unnamed column(s), but the bundle expects "
            f"{len(columns)} named columns ({', '.join(columns[:12])}). Pass them by name: "
            "udf(struct(*cols)) or udf(*cols).",
        )
    return pd.DataFrame(dict(zip(columns, series, strict=True)))


def _rebatch(frames: Iterable[Any], size: int) -> Iterator[Any]:
    """Re-cut a stream of DataFrames into frames of exactly `size` rows (the last: fewer)."""
    pending: list[Any] = []
    count = 0
    for frame in frames:
        start = 0
        while start < len(frame):
            part = slice_rows(frame, start, start + size - count)
            start += len(part)
            pending.append(part)
            count += len(part)
            if count == size:
                yield concat_rows(pending).reset_index(drop=True)
                pending, count = [], 0
    if pending:
        yield concat_rows(pending).reset_index(drop=True)


class _Partition:
    """Counts a task's rows as batches pass, so an error can name the row that caused it.

    Spark feeds a task the rows of one partition, in order; `batch` wraps the scoring of
    the next batch and turns its errors into ones that say where in the partition it failed.
    """

    def __init__(self, loaded: Bundle):
        from pyspark import TaskContext

        context = TaskContext.get()
        self.partition = context.partitionId() if context is not None else None
        self.bundle = loaded
        self.seen = 0

    def where(self) -> str:
        return f"Spark partition {self.partition}" if self.partition is not None else "the input"

    @contextlib.contextmanager
    def batch(self, frame: Any) -> Iterator[None]:
        start = self.seen
        self.seen += len(frame)
        try:
            yield
        except SchemaError as exc:
            raise self._located(exc, start, frame) from None
        except BundleError as exc:
            if hasattr(exc, "add_note"):  # Python 3.11+: shown in the worker's traceback
                exc.add_note(f"While scoring rows {start} to {self.seen - 1} of {self.where()}.")
            raise

    def _located(self, exc: SchemaError, start: int, frame: Any) -> SchemaError:
        label = self.bundle.manifest.label
        stop = start + len(frame) - 1
        bad = _first_bad_row(self.bundle, frame)
        if bad is None:  # refused after preprocessing: the batch, not one row, is at fault
            head = (
                f"Rows {start} to {stop} of {self.where()} (one batch) do not match what "
                f"{label} expects:"
            )
        else:
            head = (
                f"Row {start + bad} of {self.where()} is the first row there that {label} "
                "refuses (rows count from 0 within the partition).\n"
                f"It is in a batch of partition rows {start} to {stop}"
                + (f"; 'row N' below counts from row {start}" if start else "")
                + ":"
            )
        return SchemaError(f"{head}\n{exc}", problems=exc.problems, column=exc.column)


def _first_bad_row(loaded: Bundle, frame: Any) -> int | None:
    """The first row of `frame` whose prefix the input contract refuses, by bisection.

    Only on the error path: about log2(len(frame)) validations, each of a prefix.
    """
    if not loaded.validate(frame):
        return None
    good, bad = 0, len(frame)  # frame[:good] passes (empty does), frame[:bad] fails
    while bad - good > 1:
        middle = (good + bad) // 2
        if loaded.validate(frame.iloc[:middle]):
            bad = middle
        else:
            good = middle
    return bad - 1
