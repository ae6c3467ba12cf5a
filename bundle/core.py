"""`Bundle`: a Keras model with its preprocessing, postprocessing and input contract.

This module orchestrates; each step of the work lives in its own module (see DESIGN.md).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .contract import (
    ArraySchema,
    ImageInput,
    ImageSchema,
    InputSchema,
    MultiInputSchema,
    concat_rows,
    infer_schema,
    is_image_source,
    n_rows,
    schema_from_hints,
)
from .contract.text import STRING, as_text_table, text_column, text_schema
from .engine import Engine
from .errors import (
    BundleError,
    BundleWarning,
    CompileStateSkippedWarning,
    ExtraColumnsWarning,
    IntegrityError,
    ManifestError,
    ModelError,
    SchemaError,
    UnsafeLoadError,
    UnsupportedFormatError,
    UsageError,
    VersionMismatchWarning,
    bullet_list,
)
from .fileio import arrays as array_io
from .fileio import images as image_io  # also registers the contract's image readers
from .format import golden
from .format.digest import check_digest, digest_of, manifest_digest, require_digest
from .format.environment import capture_environment, requirements_text, warn_on_mismatch
from .format.integrity import file_table, hash_file
from .format.keras_config import ModelConfig, read_model_config
from .format.layout import (
    CUSTOM_OBJECTS_DIR,
    EXAMPLE_DIR,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    REQUIREMENTS_FILE,
)
from .format.manifest import Manifest, write_manifest
from .format.profile import Profile, read_profile, write_profile
from .format.signing import verify_directory
from .format.snapshot import open_snapshot
from .format.trust import PREDICT, TrustDecision, UnsafePart, decide, needed_for
from .format.verification import (
    Check,
    VerifyReport,
    compare_outputs,
    environment_check,
    files_check,
)
from .model.custom_objects import (
    discover,
    load_custom_object,
    load_custom_objects,
    save_custom_objects,
)
from .model.legacy import check_bundlable
from .model.signature import dtype_name_or_none
from .steps import load_step, postprocess_mode, save_step
from .steps.rules import input_rules
from .storage import Located, locate, open_root
from .storage import local as store

if TYPE_CHECKING:
    from .drift import DriftReport, SlidingWindow

_EMPTY = object()
# Outputs wider than this (a 1000-class softmax) are profiled by their top score only.
MAX_PROFILED_SCORES = 20
DRIFT_BATCH_ROWS = 65_536
ON_ERROR = ("raise", "skip", "record")
TABLE_BATCH_ROWS = 16_384  # predict_file's default batch for tabular files
ERROR_COLUMN = "error"
# Decoded training images kept as the input example when it comes from a dataset.
DATASET_EXAMPLE_ROWS = 32

EXPORTERS: dict[str, Callable[..., Path]] = {}
"""Export format -> exporter. The export edge registers itself (`register_exporter`), so the
orchestrator never imports it."""

__all__ = ["EXPORTERS", "Bundle", "register_exporter"]


def register_exporter(format: str, exporter: Callable[..., Path]) -> None:
    """Make ``Bundle.export(out, format=format, ...)`` call ``exporter(bundle, out, ...)``."""
    EXPORTERS[format] = exporter


class Bundle:
    """A Keras model packaged with everything it needs to predict as it did in training.

    Args:
        model: a ``keras.Model`` (Sequential, functional or subclassed).
        preprocess: a fitted scikit-learn transformer, or a list of them applied in order.
        postprocess: a fitted object whose ``inverse_transform`` maps model outputs to user
            values: a ``LabelEncoder`` (softmax -> argmax, sigmoid -> 0.5 threshold), a target
            scaler, a ``LabelBinarizer``. For a model with several outputs, a dict keyed by
            output name, each value one step or a list of them: ``{"species": le,
            "weight": y_scaler}``; outputs without a step are returned as the model gives
            them.
        custom_objects: ``{name: object}`` merged with the custom objects found in the model.
        input_example: raw training input (DataFrame, ndarray or dict of them). Its schema
            becomes the input contract; its first 1000 rows and their outputs are stored.
        image: how training read image files: a `bundle.ImageInput`, or the
            ``tf.data.Dataset`` made by ``keras.utils.image_dataset_from_directory``
            (read with ``ImageInput.from_dataset``; its first batch becomes the input
            example unless one is given), or ``{model input name: either}`` for a
            multi-input model. `predict` then also reads image files, URLs, bytes and PIL
            images exactly as training's loader did.
        name: the bundle's name (default: the model's name).
        version: the version to save as (default: the next integer under the root).
        metadata: JSON-serializable facts to keep with the model (metrics, data version, ...).

    Example:
        >>> Bundle(model, preprocess=ct, postprocess=le, input_example=X[:100],
        ...        name="churn", version="1.0.0").save("models/churn")
        >>> Bundle.load("models/churn").predict(X_new)
    """

    def __init__(
        self,
        model: Any,
        *,
        preprocess: Any = None,
        postprocess: Any = None,
        custom_objects: Mapping[str, Any] | None = None,
        input_example: Any = None,
        name: str | None = None,
        version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        image: Any = None,
    ):
        if not (hasattr(model, "save") and callable(model)):
            raise TypeError(f"model must be a keras.Model; got {type(model).__name__}.")
        self._model = model
        self._preprocess = _as_steps(preprocess, "preprocess", "transform")
        self._postprocess, self._post_outputs = _postprocess_steps(postprocess, model)
        self._modes = [postprocess_mode(step) for step in self._postprocess]
        self._user_custom_objects = dict(custom_objects or {})
        if input_example is None and image is not None:
            input_example = _dataset_example(image)
        check_bundlable(model)
        text_input = _text_input(model)
        if text_input is not None:  # texts: a table of one text column, named after the input
            input_example = _or(as_text_table(input_example, text_input), input_example)
        self._example = input_example
        self.name = name or str(getattr(model, "name", None) or "model")
        self.version = store.check_version_name(str(version)) if version is not None else None
        self._metadata = _json_checked(dict(metadata or {}))
        self._schema = _infer_input_schema(input_example, self._preprocess, model, text_input)
        if image is not None:
            self._schema = _with_image(self._schema, image)
        self._manifest: Manifest | None = None
        self._path: Path | None = None
        self._engine: Engine | None = None
        self._profile: Profile | None = None
        self._digest: str | None = None

    # ------------------------------------------------------------------ read-only views
    @property
    def model(self) -> Any:
        """The Keras model."""
        return self._model

    @property
    def preprocess(self) -> tuple[Any, ...]:
        """The fitted preprocess steps, in replay order."""
        return tuple(self._preprocess)

    @property
    def postprocess(self) -> tuple[Any, ...]:
        """The fitted postprocess steps, in replay order."""
        return tuple(self._postprocess)

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in order: what names a list or dict of outputs."""
        return self._get_engine().output_names

    @property
    def input_schema(self) -> InputSchema | None:
        """The input contract; ``print()`` it for a table."""
        return self._schema

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The user's metadata (read-only)."""
        return MappingProxyType(self._metadata)

    @property
    def manifest(self) -> Manifest:
        """The manifest written by `save` or read by `load`."""
        if self._manifest is None:
            raise UsageError(
                f"Bundle {self.name!r} has not been saved yet: its manifest is written by "
                "save(root) and read by Bundle.load(path)."
            )
        return self._manifest

    @property
    def path(self) -> Path | None:
        """The version directory this bundle was saved to or loaded from."""
        return self._path

    @property
    def digest(self) -> str:
        """The bundle digest, ``sha256:<hex>``: one hash of this version's content.

        It is the sha256 of the manifest's canonical JSON, and the manifest pins every
        file's sha256, so it names these exact bytes wherever a copy is kept (directory,
        archive, object storage, OCI registry). Pin it with
        ``Bundle.load(location, digest=...)``.
        """
        if self._digest is None:
            raise UsageError(
                f"Bundle {self.name!r} has not been saved yet: its digest is computed by "
                "save(root) and by Bundle.load(path)."
            )
        return self._digest

    @property
    def profile(self) -> Profile | None:
        """The training profile (per-feature statistics for drift), None if it has none.

        Written by `save` from the input example or ``profile_data``; ``print()`` it for a
        table. Bundles saved before profiles existed have none, and load as before.
        """
        record = self._manifest.profile if self._manifest is not None else None
        if self._profile is None and self._path is not None and record is not None:
            # Read lazily, yet only as loaded: its files must still match the manifest.
            with open_snapshot(
                self._path, manifest=self._manifest, only=[record["file"], record["arrays"]]
            ) as snapshot:
                self._profile = read_profile(snapshot.path, record)
        return self._profile

    def __repr__(self) -> str:
        version = self._manifest.version if self._manifest else self.version
        return (
            f"<Bundle {self.name!r} {version or '(unsaved)'}: "
            f"{len(self._preprocess)} preprocess step(s), {type(self._model).__name__}, "
            f"{len(self._postprocess)} postprocess step(s)>"
        )

    # ------------------------------------------------------------------ save
    def save(
        self,
        root: str | Path,
        *,
        overwrite: bool = False,
        profile_data: Any = None,
        include_optimizer: bool = True,
        verify: bool = True,
        **storage_options: Any,
    ) -> Path | str:
        """Write this bundle as a new version under `root` and return where it went.

        `root` is a local directory or an fsspec URL (``s3://bucket/models/churn``). Locally,
        the version is written into a hidden staging directory, flushed to disk and renamed
        into place; on object storage, the version name is claimed atomically, every file is
        uploaded, and the manifest last. Either way no partial version is ever visible.

        The bundle also stores a training profile for drift reports (`drift`), computed
        from `profile_data` when given, else from the whole input example: a DataFrame,
        array or dict of them, or a Parquet/CSV/JSON Lines file, streamed and sampled to
        at most 100,000 rows. The sample is run through the model once to profile the
        outputs too. Columns the bundle does not know (a target) are ignored.

        Before publishing, the bundle proves it loads (`verify`): the model is rebuilt from
        the file just written with the stored custom objects only, as a fresh process would
        rebuild it (a Lambda layer gets none of the training script's globals), the stored
        steps are read back, and the stored example is replayed through them and compared
        with the stored outputs. A bundle that fails or differs is not published.

        Args:
            root: a local directory or an fsspec URL of the bundle's versions.
            overwrite: replace the version if it exists.
            profile_data: the data to profile for drift (default: the input example).
            include_optimizer: store the optimizer's state (default), so training can go
                on after load as if uninterrupted. False writes an inference-only bundle:
                the model's weights and compile config without the optimizer's state (for
                Adam, twice the weights), and a loaded model resumes with a fresh optimizer.
            verify: replay the stored bundle before publishing it (default). False skips
                that check and its cost (about the cost of one load).
            **storage_options: fsspec options for a URL root.

        Returns:
            The version directory (a Path), or its URL for object storage.

        Raises:
            VersionExistsError: the version exists under `root` and `overwrite` is False.
            ModelError: the stored bundle does not load or replay as the model in memory
                predicts (a Lambda layer reading a global name, a custom object missing);
                nothing was published.
        """
        target = open_root(root, **storage_options)
        try:
            with target.staging() as staging:
                draft = self._write_parts(
                    staging, profile_data, include_optimizer=include_optimizer
                )
                if verify:
                    self._prove_loads(staging, draft)
                base_files = file_table(staging)

                def finalize(directory: Path, version: str) -> None:
                    card = _model_card(replace(draft, version=version), self._schema)
                    (directory / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
                    files = {
                        **base_files,
                        MODEL_CARD_FILE: {
                            "sha256": hash_file(directory / MODEL_CARD_FILE),
                            "size": (directory / MODEL_CARD_FILE).stat().st_size,
                        },
                    }
                    self._manifest = replace(
                        draft, version=version, files=dict(sorted(files.items()))
                    )
                    write_manifest(self._manifest, directory)
                    self._digest = digest_of(directory)

                location = target.publish(
                    staging, self.version, finalize=finalize, overwrite=overwrite
                )
        except BaseException:
            self._manifest = self._digest = None
            raise
        self._path = None if target.is_remote else Path(location)
        return location if target.is_remote else Path(location)

    def _write_parts(
        self, directory: Path, profile_data: Any = None, *, include_optimizer: bool = True
    ) -> Manifest:
        """Write every part but the model card and the manifest; return the draft manifest."""
        from .model import backend_record, save_model

        sizes = save_model(self._model, directory / MODEL_FILE, include_optimizer=include_optimizer)
        # What the file asks Keras to build decides the trust flags, as it will at load.
        model_config = read_model_config(directory / MODEL_FILE)
        objects = discover(self._model, self._user_custom_objects)
        custom_records = save_custom_objects(
            objects, directory / CUSTOM_OBJECTS_DIR, model_config=model_config
        )
        pre = [
            save_step(step, directory, stage="preprocess", index=i)
            for i, step in enumerate(self._preprocess)
        ]
        post = [
            save_step(step, directory, stage="postprocess", index=i)
            for i, step in enumerate(self._postprocess)
        ]
        for record, output in zip(post, self._post_outputs, strict=True):
            if output is not None:
                record["output"] = output
        example_record = self._write_example(directory)  # first: it may build the signature
        profile_record = self._write_profile(directory, profile_data)
        inputs, outputs = self._get_engine().signature
        environment = capture_environment()
        (directory / REQUIREMENTS_FILE).write_text(requirements_text(environment))
        return Manifest(
            name=self.name,
            version=self.version or "0",
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            environment=environment,
            model={
                "file": MODEL_FILE,
                "serializer": "keras",
                "executes_code": bool(model_config.code),
                "inputs": inputs,
                "outputs": outputs,
                **sizes,
                "backend": backend_record(),
            },
            preprocess=pre,
            postprocess=post,
            custom_objects=custom_records,
            input_schema=self._schema.to_dict() if self._schema is not None else None,
            example=example_record,
            metadata=self._metadata,
            profile=profile_record,
        )

    def _prove_loads(self, directory: Path, draft: Manifest) -> None:
        """Replay the written bundle as a fresh process would; refuse it if that fails.

        The model is rebuilt from its file with the stored custom objects only (trusted:
        they are the caller's own), the steps are read back, and the stored example is
        replayed and compared with the stored outputs. Keras rebuilds a Lambda's function
        without the training script's globals, so a Lambda reading ``keras`` fails here as
        it would in every serving process.
        """
        from .model import missing_globals, unresolved_globals_error

        version = f" {self.version}" if self.version else ""
        label = f"Refusing to publish bundle {self.name!r}{version}"
        try:
            replayed = type(self)._construct(
                directory, draft, trusted=True, compile=False, replay_example=False
            )
        except BundleError as exc:
            raise _refusal(f"{label}: loading it back from its files failed", exc) from exc
        unresolved = missing_globals(replayed.model)
        if unresolved:
            raise unresolved_globals_error(unresolved, label)
        try:
            checks = replayed._replay_checks(raise_failure=True)
        except BundleError as exc:
            raise _refusal(f"{label}: replaying its stored example failed", exc) from exc
        for check in checks:
            if not check.passed:
                raise ModelError(
                    f"{label}: replaying its stored example through the stored model does "
                    f"not give the outputs the model in memory gave: {check.name}: "
                    f"{check.detail}\nThe model file does not rebuild the same model: a "
                    "custom layer's get_config() or build() may leave out state. Nothing "
                    "was published; save(..., verify=False) publishes it anyway."
                )

    def _write_example(self, directory: Path) -> dict[str, Any] | None:
        if self._example is None:
            return None
        example = golden.head(self._example)
        relative_input = golden.write_example(example, directory)
        engine = self._get_engine()
        scores = self.predict(example, postprocess=False)
        folder = directory / EXAMPLE_DIR
        scores_file = golden.write_outputs(engine.named(scores), folder / "scores.npy")
        predictions_file = None
        if self._postprocess:
            predictions = engine.named(engine.postprocess(scores))
            predictions_file = golden.write_outputs(predictions, folder / "predictions.npy")
        if scores_file is None:
            raise ModelError(
                f"The model's outputs on the input example cannot be stored without pickle "
                f"({_describe_outputs(scores)}): a bundle stores numbers, booleans and text."
            )
        return {
            "input": relative_input,
            "scores": f"{EXAMPLE_DIR}/{scores_file}",
            "predictions": f"{EXAMPLE_DIR}/{predictions_file}" if predictions_file else None,
            "rows": n_rows(example),
            "rtol": golden.DEFAULT_RTOL,
            "atol": golden.DEFAULT_ATOL,
        }

    def _write_profile(self, directory: Path, profile_data: Any) -> dict[str, Any] | None:
        """Profile `profile_data` (or the example), sampled, with the model's outputs."""
        source = profile_data if profile_data is not None else self._example
        if source is None:
            return None
        from .drift import RowSampler, build_profile

        chunks = self._data_chunks(source, DRIFT_BATCH_ROWS, None, lenient=False)
        sampler = RowSampler().extend(chunks)
        if sampler.sample is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtraColumnsWarning)
            try:
                canonical = self._coerce(sampler.sample, strict=False)
            except SchemaError as exc:
                raise SchemaError(
                    f"The profile data does not match the input contract of bundle "
                    f"{self.name!r}:\n{exc}",
                    problems=exc.problems,
                    column=exc.column,
                ) from exc
        import pandas as pd

        outputs = pd.DataFrame(self._outputs_frame(self.predict(canonical, postprocess=False)))
        schema = self._schema.to_dict() if self._schema is not None else None
        profile = build_profile(schema, canonical, outputs, source_rows=sampler.rows_seen)
        self._profile = profile
        return write_profile(profile, directory)

    def _data_chunks(
        self, data: Any, batch_size: int, input_format: str | None, *, lenient: bool = True
    ) -> Iterator[Any]:
        """`data` in chunks of at most `batch_size` rows: files are streamed, never read whole.

        `lenient` reads a CSV file's numeric columns as text, so that drift counts a value
        that is no number as missing instead of refusing the whole file.
        """
        from .drift.profiling import chunks_of

        if isinstance(data, (str, os.PathLike)):
            from .fileio import tabular as tabular_io

            path = Path(data)
            if not path.is_file():
                raise UsageError(f"No data file at {path}: pass a Parquet, CSV or JSON Lines file.")
            fmt = tabular_io.file_format(path, input_format)
            yield from tabular_io.iter_batches(
                path,
                batch_size=batch_size,
                fmt=fmt,
                column_types=self._csv_types([], numbers_as_text=lenient),
            )
        else:
            yield from chunks_of(self._drift_form(data), batch_size)

    def _drift_form(self, data: Any) -> Any:
        """In-memory data in the form drift reads: a DataFrame with column names for tabular
        bundles, arrays otherwise. Values are not checked here: drift counts what the
        contract would refuse (unseen categories, missing values) instead of failing."""
        import pandas as pd

        kind = self._schema.kind if self._schema is not None else None
        if kind == "tabular":
            if hasattr(data, "iloc") and hasattr(data, "columns"):
                return data
            if isinstance(data, Mapping) and _is_columnar(data):
                return pd.DataFrame(dict(data))
            if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
                return pd.DataFrame.from_records(data)
        else:
            arrays = isinstance(data, np.ndarray) or hasattr(data, "iloc")
            columnar = isinstance(data, Mapping) and _is_columnar(data)
            if (kind == "multi" and columnar and _batched(data, self._schema)) or (
                kind in ("array", "image", None) and arrays and _batched(data, self._schema)
            ):
                return data
        return self._coerce(data, strict=False)

    def _outputs_frame(self, scores: Any, predictions: Any = None) -> dict[str, np.ndarray]:
        """The model's outputs as the columns drift follows: ``prediction``, ``score_*``.

        `predictions` are the decoded `scores` when the caller has them already. Columns
        are plain arrays: a server builds this for every batch.
        """
        columns: dict[str, Any] = {}
        scores = self._get_engine().named(scores)
        if isinstance(scores, Mapping):
            for name, value in scores.items():
                flat = _per_row(value)
                width = flat.shape[1]
                names = (
                    [f"{name}/score"] if width == 1 else [f"{name}/score_{i}" for i in range(width)]
                )
                columns.update(_score_columns(flat, names))
            return columns
        flat = _per_row(scores)
        if self._postprocess:
            if predictions is None:
                predictions = self._get_engine().postprocess(scores)
            predictions = np.asarray(predictions)
            if predictions.ndim == 1 or (predictions.ndim == 2 and predictions.shape[1] == 1):
                columns["prediction"] = predictions.reshape(-1)
        columns.update(_score_columns(flat, self._score_names(flat.shape[1])))
        return columns

    # ------------------------------------------------------------------ drift
    def drift(
        self,
        data: Any,
        *,
        thresholds: Any = None,
        outputs: bool = True,
        batch_size: int = DRIFT_BATCH_ROWS,
        input_format: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> DriftReport:
        """Compare `data` with the training profile: per-feature drift and a verdict.

        Args:
            data: a DataFrame, an array, a dict of them, JSON records, any input `predict`
                accepts, or a Parquet/CSV/JSON Lines file path (streamed in batches).
            thresholds: a `DriftThresholds`, or a dict overriding some of its
                defaults (``{"psi": 0.1, "unseen": None}``; None switches a check off).
            outputs: also run the model and compare its outputs (predicted classes,
                scores) with training's; False reads the data only.
            batch_size: rows read and scored at a time: bounds the memory used.
            input_format: "parquet", "csv" or "jsonl" when a file's suffix does not tell.
            progress: called with the rows of each batch done.

        Returns:
            A `DriftReport`: falsy when something drifted; ``print()`` it for
            a table, ``.to_json()``, ``.to_html()`` for a self-contained page.

        Raises:
            BundleError: the bundle has no training profile.

        Example:
            >>> report = Bundle.load("models/churn").drift("today.parquet")
            >>> if not report:
            ...     print(report.drifted[0].name, report.drifted[0].reasons)
        """
        from .drift import DriftAccumulator
        from .drift.report import no_profile_error

        label = self._manifest.label if self._manifest is not None else f"bundle {self.name!r}"
        profile = self.profile
        if profile is None:
            raise no_profile_error(label)
        accumulator = DriftAccumulator(profile, outputs=outputs)
        chunks = self._data_chunks(data, batch_size, input_format)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtraColumnsWarning)  # ids, targets: not features
            if accumulator.follows_outputs:
                scored = self._scored_chunks(chunks)
            else:
                scored = ((chunk, None, None) for chunk in chunks)
            for chunk, scores, refusal in scored:
                if refusal is not None:
                    accumulator.refuse(n_rows(chunk), refusal)
                produced = None if scores is None else self._outputs_frame(scores)
                accumulator.update(chunk, produced)
                if progress is not None:
                    progress(n_rows(chunk))
        return accumulator.report(thresholds, label=label)

    def _scored_chunks(self, chunks: Iterable[Any]) -> Iterator[tuple[Any, Any, str | None]]:
        """``(chunk, scores or None, refusal or None)``; chunk k+1 is prepared in a thread
        while chunk k is inferred and counted. A chunk the contract refuses is not scored."""
        engine = self._get_engine()

        def prepare(chunk: Any) -> tuple[Any, Any, str | None]:
            try:
                canonical = self._coerce(chunk, strict=False)
            except SchemaError as exc:
                return chunk, None, str(exc)
            if n_rows(canonical) == 0:
                return chunk, None, None
            return chunk, engine.prepare(canonical), None

        def infer(prepared: tuple[Any, Any, str | None]) -> tuple[Any, Any, str | None]:
            chunk, model_input, refusal = prepared
            return chunk, None if model_input is None else engine.infer(model_input), refusal

        # Counting a chunk takes about as long as preparing one: always overlap them.
        yield from engine.pipelined(chunks, prepare, infer=infer, overlap=True)

    def drift_window(self, *, seconds: float = 600.0, slots: int = 10) -> SlidingWindow:
        """A live drift window for a server: counts of what it scores over the last `seconds`.

        Feed it with ``window.observe(canonical_inputs, scores, predictions)`` after each
        model call; ``window.report()`` is the `DriftReport` of the window. Memory is bounded
        by `slots` sets of counters, whatever the traffic.

        Raises:
            UsageError: the bundle has no training profile.
        """
        from .drift import SlidingWindow
        from .drift.report import no_profile_error

        profile = self.profile
        if profile is None:
            label = self._manifest.label if self._manifest is not None else f"bundle {self.name!r}"
            raise no_profile_error(label)
        return SlidingWindow(profile, seconds=seconds, slots=slots, outputs=self._outputs_frame)

    # ------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        location: str | Path,
        *,
        version: str | None = None,
        trusted: bool = False,
        precision: str = "float32",
        digest: str | None = None,
        public_key: str | Path | None = None,
        certificate_chain: Sequence[str | Path] | None = None,
        signature: str | Path | None = None,
        **storage_options: Any,
    ) -> Bundle:
        """Load a bundle from a version directory, a root, an archive, a URL or a registry.

        `location` is a version directory, a root of versions (the highest is taken, or
        `version`, which may also be an alias), ``root@alias``, a ``.tar.gz``/``.zip``
        archive, any of these as an fsspec URL (``s3://...``; `storage_options` go to
        fsspec), or an OCI artifact (``oci://host/repo:tag`` or ``oci://host/repo@sha256:...``;
        `storage_options` are ``username``, ``password``, ``plain_http``). Remote bundles and
        archives are cached locally (``$KERAS_BUNDLE_CACHE``).

        Before any part is read, in this order: every file must match the manifest's sha256
        and size, the bundle digest must be `digest` when given, the signature must verify
        with `public_key` (or chain up to `certificate_chain`) when given, and parts whose
        loading executes code (pickles, Lambda layers) are refused unless `trusted` is True.
        With a digest, ``trusted=True`` trusts exactly that content. `precision`
        ("float16", "bfloat16") makes reduced-precision inference the default for `predict`.

        Args:
            digest: the bundle digest to insist on, ``sha256:<hex>`` (`Bundle.digest`,
                `bundle inspect`).
            public_key: a PEM public key the bundle's signature must verify with.
            certificate_chain: PEM root (and intermediate) certificates a certificate
                signature must chain up to.
            signature: the signature file, when not the bundle's own ``model.sig``.

        Raises:
            BundleNotFoundError: nothing published at `location`, or no such version.
            DigestMismatchError: the bundle is not the one `digest` names.
            IntegrityError: a file is missing, unlisted or differs from the manifest.
            SignatureError: no signature, or one that does not verify or signs other files.
            UnsafeLoadError: a part needs ``trusted=True``.
            UnsupportedFormatError: the bundle's format is newer than this package.
        """
        if digest is not None:
            check_digest(digest)
        located = locate(location, version, digest=digest, **storage_options)
        path = located.path
        # One snapshot from the manifest to the last part read: the files hashed are the
        # files used, even if a save with overwrite=True replaces the version meanwhile.
        with open_snapshot(path) as snapshot:
            manifest = snapshot.manifest
            _check_version_name(located, manifest)
            # The digest and the signature are checked against the snapshot's own manifest
            # bytes, which pin the files the snapshot verified: what is loaded is what the
            # pin or the signer named.
            found_digest = manifest_digest(snapshot.manifest_bytes)
            if digest is not None:
                require_digest(digest, found_digest, label=manifest.label, where=str(location))
            if public_key is not None or certificate_chain is not None:
                verify_directory(
                    path,
                    files=manifest.files,
                    label=manifest.label,
                    manifest_bytes=snapshot.manifest_bytes,
                    public_key=public_key,
                    certificate_chain=certificate_chain,
                    signature=signature,
                )
            model_config = read_model_config(snapshot.path / manifest.model["file"])
            decision = decide(manifest, model_config=model_config, inside=path)
            decision.check(trusted=trusted, label=manifest.label)
            warn_on_mismatch(manifest.environment, label=manifest.label.capitalize())
            try:
                bundle = cls._construct(
                    snapshot.path,
                    manifest,
                    trusted=trusted,
                    precision=precision,
                    model_config=model_config,
                    decision=decision,
                )
            except BundleError:
                raise
            except Exception as exc:  # a verified file that does not hold what it claims
                raise ManifestError(
                    f"{manifest.label} could not be built from its verified files: "
                    f"{type(exc).__name__}: {exc}\nIts manifest describes parts its files do "
                    "not hold: it was written by a broken tool or edited. Restore it from the "
                    "release."
                ) from exc
        bundle._path = path
        bundle._digest = found_digest
        return bundle

    @classmethod
    def _construct(
        cls,
        path: Path,
        manifest: Manifest,
        *,
        trusted: bool,
        precision: str = "float32",
        model_config: ModelConfig | None = None,
        decision: TrustDecision | None = None,
        compile: bool = True,
        replay_example: bool = True,
    ) -> Bundle:
        """Build the bundle from verified files: the first code that may import or unpickle.

        `compile` False rebuilds the model without its compile state (save's own replay);
        `replay_example` False reads the stored example without running it (the caller
        replays it whole).
        """
        from .model import load_model

        saved = (manifest.backend or {}).get("name")
        running = _import_keras_for(saved)
        custom, skipped = _custom_objects(path, manifest, model_config, decision, trusted=trusted)
        # Code that ran when the bundle was saved runs on the same backend: check the others.
        check = running != saved
        if check:
            _check_portable(manifest, running, custom_objects=custom)
        model = load_model(
            path / manifest.model["file"],
            custom,
            safe_mode=not trusted,
            compile=compile and not skipped,
            # Saved without optimizer state (left out, or never trained): Keras' warning
            # that it found none to restore says nothing the manifest does not.
            optimizer_state=bool(
                manifest.model.get("includes_optimizer", True)
                and manifest.model.get("optimizer_bytes", 1)
            ),
        )
        if check:
            _check_portable(manifest, running, model=model)
        if skipped:
            warnings.warn(_compile_skipped_warning(manifest.label, skipped), stacklevel=3)
        bundle = cls.__new__(cls)
        bundle._model = model
        bundle._preprocess = [load_step(path, record) for record in manifest.preprocess]
        bundle._postprocess = [load_step(path, record) for record in manifest.postprocess]
        bundle._modes = [record.get("mode", "inverse_transform") for record in manifest.postprocess]
        bundle._post_outputs = [record.get("output") for record in manifest.postprocess]
        bundle._user_custom_objects = custom
        bundle._example = None
        bundle.name = manifest.name
        bundle.version = manifest.version
        bundle._metadata = dict(manifest.metadata)
        schema = manifest.input_schema
        bundle._schema = InputSchema.from_dict(schema) if schema is not None else None
        bundle._manifest = manifest
        bundle._path = path
        bundle._profile = None
        bundle._digest = None  # set by load, from the manifest bytes it verified
        bundle._engine = Engine(
            model,
            bundle._preprocess,
            bundle._postprocess,
            bundle._modes,
            manifest.model,
            custom_objects=custom,
            postprocess_outputs=bundle._post_outputs,
        )
        bundle._engine.precision = precision
        bundle._warm_up(run=replay_example)
        return bundle

    def _warm_up(self, *, run: bool = True) -> None:
        """Trace the inference function now, so the first request is not the slow one."""
        if self._manifest is None or self._manifest.example is None or self._path is None:
            return
        example = golden.read_example(self._path, self._manifest.example["input"])
        self._example = example
        if not run:
            return
        try:
            self.predict(golden.head(example, 1), postprocess=False)
        except SchemaError as exc:
            raise ManifestError(
                f"The stored input example of {self._manifest.label} does not pass its own "
                f"input contract:\n{exc}\nThe manifest's input_schema or the example was "
                "edited; restore the bundle from the release."
            ) from exc

    # ------------------------------------------------------------------ verify
    def verify(self) -> VerifyReport:
        """Re-check every hash, and replay the stored example against its golden outputs.

        Returns a report of what matched and what drifted (for instance after a TensorFlow
        upgrade); it is truthy when every check passed. Environment differences are listed
        but do not fail the report; output drift beyond the manifest's tolerance does.
        """
        manifest = self.manifest
        checks = [files_check(self._path, manifest)] if self._path is not None else []
        checks.append(
            Check(
                "load",
                True,
                f"model ({_backends_line(manifest)}), {len(self._preprocess)} preprocess and "
                f"{len(self._postprocess)} postprocess step(s), "
                f"{len(manifest.custom_objects)} custom object(s)",
            )
        )
        checks.append(environment_check(manifest.environment))
        checks.extend(self._replay_checks())
        return VerifyReport(manifest.label, checks)

    def _replay_checks(self, *, raise_failure: bool = False) -> list[Check]:
        """Replay the stored example; `raise_failure` raises a failed replay's error."""
        manifest, path = self.manifest, self._path
        example = manifest.example
        if example is None or path is None:
            return [Check("example", True, "no input example stored: nothing to replay")]
        rows = golden.read_example(path, example["input"])
        try:
            scores = self.predict(rows, postprocess=False)
        except BundleError as exc:
            if raise_failure:
                raise
            return [Check("example scores", False, f"replay failed: {exc}")]
        tolerance = {"rtol": example["rtol"], "atol": example["atol"]}
        engine = self._get_engine()
        expected = golden.read_outputs(path / example["scores"])
        checks = [compare_outputs("example scores", expected, engine.named(scores), **tolerance)]
        if example.get("predictions"):
            labels = engine.named(engine.postprocess(scores))
            stored = golden.read_outputs(path / example["predictions"])
            checks.append(compare_outputs("example predictions", stored, labels, **tolerance))
        return checks

    # ------------------------------------------------------------------ predict
    def predict(
        self,
        raw: Any,
        *,
        batch_size: int | None = None,
        postprocess: bool = True,
        strict: bool = False,
        precision: str | None = None,
        on_error: str = "raise",
        workers: int | None = None,
    ) -> Any:
        """Replay the training-time pipeline on raw input and return predictions.

        Args:
            raw: a DataFrame, ndarray, list of lists, one row (dict of scalars, Series),
                JSON records (list of dicts), or a dict of arrays for multi-input models; a
                ``.npy`` file (memory-mapped, read batch by batch). For an image bundle
                also: a path, a folder, a glob, an fsspec URL, encoded bytes, a PIL image,
                or a list of these, read exactly as training's loader read its files.
            batch_size: rows per chunk through preprocessing and the model (default: sized
                to about 16 MiB of model input). Results do not depend on it.
            postprocess: False returns the model's raw outputs (scores).
            strict: refuse columns the bundle does not know instead of ignoring them.
            precision: ``"float16"`` or ``"bfloat16"`` runs the model in reduced precision
                (a converted copy, built on first use); default: the load-time precision.
            on_error: for image sources, what an unreadable image does: ``"raise"`` an
                `ImageError` naming it (default); ``"skip"`` it, or ``"record"`` it. With
                "skip" or "record" the result is a DataFrame: a ``path`` (or ``index``)
                column, then ``prediction`` or ``score_*`` columns, and with "record" an
                ``error`` column holding each unreadable image's reason.
            workers: threads decoding images (default: one per core).

        Raises:
            SchemaError: the input does not match the input contract (before any step ran).
            ImageError: an image cannot be read as training read its images (the file is
                named), with ``on_error="raise"``.
            StepError: a step failed on input that passed the checks.
        """
        _check_on_error(on_error)
        stream = self._stream(raw)
        if stream is not None:
            return self._predict_stream(
                stream,
                batch_size=batch_size,
                postprocess=postprocess,
                strict=strict,
                precision=precision,
                on_error=on_error,
                workers=workers,
            )
        canonical = self._coerce(raw, strict=strict)
        engine = self._get_engine()
        scores = engine.run(canonical, batch_size=batch_size, precision=precision)
        if postprocess and self._postprocess:
            return engine.postprocess(scores)
        return scores

    def decode(self, scores: Any) -> Any:
        """Apply the postprocess steps to model outputs from ``predict(..., postprocess=False)``.

        ``decode(predict(x, postprocess=False))`` equals ``predict(x)``, so a caller that
        needs both scores and labels runs the model once.
        """
        if not self._postprocess:
            return scores
        return self._get_engine().postprocess(scores)

    def export(
        self,
        out: str | Path,
        *,
        format: str = "saved_model",
        missing_token: str = "",
        overwrite: bool = False,
    ) -> Path:
        """Export the whole pipeline as one TensorFlow SavedModel for TF Serving.

        The ``serving_default`` signature takes the raw named features (one tensor per
        column; one tensor for array bundles) and returns the decoded labels and the scores,
        with the preprocessing as TensorFlow ops in front of the model: no Python at serving
        time. Every step must have a TensorFlow form (all native codecs do); otherwise
        nothing is written and the error names the step.

        Args:
            out: the SavedModel directory to write.
            format: only ``"saved_model"``.
            missing_token: the string that stands for a missing value in text columns.
            overwrite: replace an existing `out`.
        """
        exporter = EXPORTERS.get(format)
        if exporter is None:
            known = sorted(EXPORTERS)
            raise UnsupportedFormatError(
                f"Unknown export format {format!r}; supported: "
                f"{', '.join(map(repr, known)) or 'none (import bundle.export)'}.",
                found=format,
                supported=known,
            )
        return exporter(self, out, missing_token=missing_token, overwrite=overwrite)

    def predict_batches(
        self,
        chunks: Iterable[Any] | str | os.PathLike[str],
        *,
        postprocess: bool = True,
        strict: bool = False,
        batch_size: int | None = None,
        scores: bool = False,
        on_error: str = "record",
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[Any]:
        """Predict chunk by chunk: an iterable of chunks, or a folder, file list or ``.npy``.

        For an iterable of chunks (DataFrames, arrays, record lists), one result per chunk:
        chunk k+1 is validated and preprocessed in a background thread while the model
        runs on chunk k; each chunk goes through the model whole, so size chunks to memory.

        For a source (a ``.npy`` file, memory-mapped; for an image bundle a folder, glob,
        fsspec URL, or list of image paths, bytes or PIL images), one DataFrame per batch of
        `batch_size` rows, in input order: the ``path`` (or ``index``) of each row, then
        ``prediction`` and/or ``score_*`` as `predict_file` writes them, and with
        ``on_error="record"`` (the default) an ``error`` column. Images decode on `workers`
        threads while the model runs; memory holds about two batches, whatever the count.
        """
        _check_on_error(on_error)
        stream = self._stream(chunks)
        if stream is not None:
            for frame, _ in self._stream_frames(
                stream,
                batch_size=batch_size,
                postprocess=postprocess,
                scores=scores,
                strict=strict,
                on_error=on_error,
                workers=workers,
                progress=progress,
            ):
                yield frame
            return
        engine = self._get_engine()

        def prepare(chunk: Any) -> Any:
            canonical = self._coerce(chunk, strict=strict)
            if n_rows(canonical) == 0:
                return _EMPTY
            return engine.prepare(canonical)

        def infer(prepared: Any) -> Any:
            return engine._empty_scores() if prepared is _EMPTY else engine.infer(prepared)

        for scores in engine.pipelined(chunks, prepare, infer=infer):
            yield engine.postprocess(scores) if postprocess and self._postprocess else scores

    def predict_file(
        self,
        src: str | Path,
        dst: str | Path,
        *,
        id_column: str | Sequence[str] | None = None,
        batch_size: int | None = None,
        scores: bool = False,
        input_format: str | None = None,
        output_format: str | None = None,
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
        on_error: str = "record",
        workers: int | None = None,
        on_unreadable: Callable[[str, str], None] | None = None,
    ) -> int:
        """Score a file, folder or list of images into a Parquet, CSV or JSON Lines file.

        A Parquet, CSV or JSON Lines input is read in record batches of `batch_size` rows
        (default 16,384; never whole); the output holds the `id_column` (s) copied from the
        input, a ``prediction`` column (when the bundle has a postprocess step) and, with
        `scores=True` or without postprocessing, one ``score_<class>`` column per model
        output. Peak memory depends on `batch_size`, not on the file size. The output
        appears only once complete.

        A ``.npy`` file (memory-mapped) or, for an image bundle, a folder, glob, fsspec URL
        or list of images is scored the same way, in input order, with a ``path`` (or
        ``index``) column as the id; images decode on `workers` threads (default: one per
        core) while the model runs, and `batch_size` defaults to about 16 MiB of model
        input. An image that cannot be read is handled by `on_error`: ``"record"``
        (default: its row holds the reason in an ``error`` column, and no prediction),
        ``"skip"`` (left out) or ``"raise"`` (`ImageError`, nothing written). Each one is
        passed to `on_unreadable` as ``(path, reason)``; without it, one `BundleWarning`
        gives the count at the end.

        Returns:
            The number of rows written.
        """
        from .fileio import tabular as tabular_io

        _check_on_error(on_error)
        out_fmt = tabular_io.file_format(dst, output_format)
        stream = None if input_format is not None else self._stream(src, tabular_ok=True)
        if stream is not None:
            return self._stream_to_file(
                stream,
                dst,
                fmt=out_fmt,
                batch_size=batch_size,
                scores=scores,
                strict=strict,
                progress=progress,
                on_error=on_error,
                workers=workers,
                on_unreadable=on_unreadable,
            )
        in_fmt = tabular_io.file_format(src, input_format)
        ids = [id_column] if isinstance(id_column, str) else list(id_column or [])
        frames = tabular_io.iter_batches(
            src,
            batch_size=batch_size or TABLE_BATCH_ROWS,
            fmt=in_fmt,
            column_types=self._csv_types(ids),
        )
        rows = 0
        with tabular_io.BatchWriter(dst, fmt=out_fmt) as writer:
            for id_frame, result in self._score_frames(frames, ids, strict=strict):
                writer.write(self._output_frame(id_frame, ids, result, scores=scores))
                rows += len(id_frame)
                if progress is not None:
                    progress(len(id_frame))
            if rows == 0:
                writer.write(self._output_frame(None, ids, None, scores=scores))
        return rows

    def _score_frames(
        self, frames: Iterable[Any], ids: Sequence[str], *, strict: bool
    ) -> Iterator[tuple[Any, Any]]:
        """``(input frame, scores)`` per batch, preparing batch k+1 while k is inferred."""
        engine = self._get_engine()

        def prepare(frame: Any) -> Any:
            missing = [c for c in ids if c not in frame.columns]
            if missing:
                raise SchemaError(
                    f"The id column(s) {', '.join(map(repr, missing))} are not in the input; "
                    f"its columns are: {', '.join(map(str, frame.columns[:12]))}.",
                    column=missing[0],
                )
            features = frame.drop(columns=[c for c in ids if c not in self._known_columns()])
            canonical = self._coerce(features, strict=strict)
            return frame[ids] if ids else frame.iloc[:, :0], engine.prepare(canonical)

        def infer(prepared: Any) -> Any:
            id_frame, model_input = prepared
            return id_frame, engine.infer(model_input)

        yield from engine.pipelined(frames, prepare, infer=infer)

    # ------------------------------------------------------------------ streams
    def _stream(self, raw: Any, *, tabular_ok: bool = False) -> _Stream | None:
        """`raw` as a stream of batches when it is a ``.npy`` file or image sources."""
        if array_io.is_npy(raw) and "://" not in os.fspath(raw):
            return _npy_stream(array_io.open_npy(raw))
        schema = self._schema
        if not isinstance(schema, ImageSchema) or not is_image_source(raw):
            return None
        if tabular_ok and isinstance(raw, (str, os.PathLike)):
            from .fileio.tabular import FORMATS

            if Path(raw).suffix.lower() in FORMATS:
                return None
        source = image_io.open_images(raw)
        image = schema.image
        tensors = image.decoder == "tensorflow" and self._get_engine().takes_tensors

        def batches(size: int, on_error: str, workers: int | None) -> Iterator[Any]:
            return image_io.iter_batches(
                source, image, batch_size=size, on_error=on_error, workers=workers, tensors=tensors
            )

        return _Stream(source.id_name, source.count, batches, overlap=False)

    def _scored_batches(
        self,
        stream: _Stream,
        *,
        batch_size: int | None,
        strict: bool,
        precision: str | None,
        on_error: str,
        workers: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(batch, scores of its readable rows or None)``, the next batch read meanwhile."""
        engine = self._get_engine()
        size = batch_size or engine._default_batch_size()

        def prepare(batch: Any) -> Any:
            inputs, batch.images = batch.images, None  # a batch's pixels are freed once scored
            if inputs is None or len(inputs) == 0:
                return batch, None
            if not isinstance(inputs, np.ndarray):  # a tensor from the recorded TF decoder
                if engine.fits_model(inputs):
                    return batch, inputs  # canonical by construction: straight to the model
                inputs = inputs.numpy()
            return batch, engine.prepare(self._coerce(inputs, strict=strict))

        def infer(prepared: Any) -> Any:
            batch, model_input = prepared
            return batch, None if model_input is None else engine.infer(model_input, precision)

        batches = stream.batches(size, on_error, workers)
        for batch, scores in engine.pipelined(
            batches, prepare, infer=infer, overlap=stream.overlap
        ):
            if progress is not None:
                progress(len(batch))
            yield batch, scores

    def _predict_stream(
        self,
        stream: _Stream,
        *,
        batch_size: int | None,
        postprocess: bool,
        strict: bool,
        precision: str | None,
        on_error: str,
        workers: int | None,
    ) -> Any:
        scored = self._scored_batches(
            stream,
            batch_size=batch_size,
            strict=strict,
            precision=precision,
            on_error=on_error,
            workers=workers,
        )
        engine = self._get_engine()
        if on_error == "raise":
            parts = [scores for _, scores in scored if scores is not None]
            scores = concat_rows(parts) if parts else engine._empty_scores()
            return engine.postprocess(scores) if postprocess and self._postprocess else scores
        import pandas as pd

        record = on_error == "record" and stream.unreadable
        frames, failures = [], []
        for batch, scores in scored:
            failures += [(name, reason) for _, name, reason in batch.failures]
            frames.append(
                self._stream_frame(batch, scores, stream.id_name, record, postprocess, False)
            )
        _warn_unreadable(failures, "are in the 'error' column" if record else "were skipped")
        if not frames:
            return self._stream_frame(_no_rows(), None, stream.id_name, record, postprocess, False)
        return pd.concat(frames, ignore_index=True)

    def _stream_frames(
        self,
        stream: _Stream,
        *,
        batch_size: int | None,
        postprocess: bool,
        scores: bool,
        strict: bool,
        on_error: str,
        workers: int | None,
        progress: Callable[[int], None] | None,
    ) -> Iterator[tuple[Any, Any]]:
        """``(output frame, batch)`` for each batch of the stream."""
        record = on_error == "record" and stream.unreadable
        for batch, result in self._scored_batches(
            stream,
            batch_size=batch_size,
            strict=strict,
            precision=None,
            on_error=on_error,
            workers=workers,
            progress=progress,
        ):
            frame = self._stream_frame(batch, result, stream.id_name, record, postprocess, scores)
            yield frame, batch

    def _stream_to_file(
        self,
        stream: _Stream,
        dst: str | Path,
        *,
        fmt: str,
        batch_size: int | None,
        scores: bool,
        strict: bool,
        progress: Callable[[int], None] | None,
        on_error: str,
        workers: int | None,
        on_unreadable: Callable[[str, str], None] | None,
    ) -> int:
        from .fileio import tabular as tabular_io

        record = on_error == "record" and stream.unreadable
        empty = self._stream_frame(_no_rows(), None, stream.id_name, record, True, scores)
        schema = _arrow_schema(empty) if fmt == "parquet" else None
        rows, failures = 0, []
        with tabular_io.BatchWriter(dst, fmt=fmt, schema=schema) as writer:
            for frame, batch in self._stream_frames(
                stream,
                batch_size=batch_size,
                postprocess=True,
                scores=scores,
                strict=strict,
                on_error=on_error,
                workers=workers,
                progress=progress,
            ):
                writer.write(frame)
                rows += len(frame)
                for _, name, reason in batch.failures:
                    failures.append((name, reason))
                    if on_unreadable is not None:
                        on_unreadable(name, reason)
            if rows == 0:
                writer.write(empty)
        if on_unreadable is None:
            where = f"are in the 'error' column of {dst}" if record else "were skipped"
            _warn_unreadable(failures, where)
        return rows

    def _stream_frame(
        self,
        batch: Any,
        result: Any,
        id_name: str,
        record: bool,
        postprocess: bool,
        scores: bool,
    ) -> Any:
        """One batch's output rows: the id, the outputs, and with `record` the ``error``."""
        import pandas as pd

        id_dtype = object if id_name == "path" else "int64"
        ok_ids = [item for item, good in zip(batch.ids, batch.ok, strict=True) if good]
        outputs = self._output_frame(
            pd.DataFrame({id_name: pd.Series(ok_ids, dtype=id_dtype)}),
            [id_name],
            result if result is not None else self._get_engine()._empty_scores(),
            scores=scores,
            postprocess=postprocess,
        )
        if not record:
            return outputs
        n = len(batch.ids)
        positions = np.flatnonzero(batch.ok)
        frame = pd.DataFrame({id_name: pd.Series(batch.ids, dtype=id_dtype)})
        for column in outputs.columns[1:]:
            frame[column] = _fill_rows(outputs[column], positions, n)
        errors = np.full(n, None, dtype=object)
        for index, _, reason in batch.failures:
            errors[index] = reason
        frame[ERROR_COLUMN] = errors
        return frame

    def _known_columns(self) -> set[str]:
        schema = self._schema.to_dict() if self._schema is not None else {}
        return {str(column.get("name")) for column in schema.get("columns", [])}

    def _csv_types(self, ids: Sequence[str], *, numbers_as_text: bool = False) -> dict[str, Any]:
        """pyarrow types for CSV columns, from the input schema, so blocks agree."""
        from .fileio.tabular import csv_column_types

        schema = self._schema.to_dict() if self._schema is not None else None
        return csv_column_types(schema, ids, numbers_as_text=numbers_as_text)

    def _output_frame(
        self,
        id_frame: Any,
        ids: Sequence[str],
        result: Any,
        *,
        scores: bool,
        postprocess: bool = True,
    ) -> Any:
        """The output rows for one batch: ids, ``prediction``, ``score_*`` columns."""
        import pandas as pd

        engine = self._get_engine()
        if result is None:  # no input rows: an empty file with the right columns
            id_frame = pd.DataFrame({column: pd.Series([], dtype="object") for column in ids})
            result = engine._empty_scores()
        out = id_frame.reset_index(drop=True).copy()
        for column, values in self._output_columns(
            result, scores=scores, postprocess=postprocess
        ).items():
            out[column] = values
        return out

    def _output_columns(
        self, result: Any, *, scores: bool, postprocess: bool = True
    ) -> dict[str, np.ndarray]:
        """Prediction and score columns of model outputs, for files and tables.

        One output: ``prediction`` (with a postprocess step) and ``score_<class>``. Several:
        columns named after each output, ``<output>`` for its prediction (postprocessed, or
        the model's values when it has no step) and ``<output>_score_<class>`` for the
        scores of a postprocessed one (with `scores`). Arrays wider than one value per row
        get ``_<i>`` suffixes. Without `postprocess`, the model's values only.
        """
        engine = self._get_engine()
        postprocess = postprocess and bool(self._postprocess)
        named = engine.named(result)
        if not isinstance(named, Mapping):
            columns: dict[str, np.ndarray] = {}
            result = np.asarray(result)
            if postprocess:
                columns.update(_spread("prediction", engine.postprocess(result)))
            if scores or not postprocess:
                flat = _per_row(result)
                for i, name in enumerate(self._score_names(flat.shape[1])):
                    columns[name] = flat[:, i]
            return columns
        predictions = engine.named(engine.postprocess(result)) if postprocess else {}
        columns = {}
        for output, values in named.items():
            decoded = postprocess and output in self._post_outputs
            if decoded:
                columns.update(_spread(output, predictions[output]))
            if scores or not decoded:
                flat = _per_row(values)
                names = (
                    self._score_names(flat.shape[1], output, prefix=f"{output}_")
                    if decoded
                    else _spread_names(output, flat.shape[1])
                )
                for i, name in enumerate(names):
                    columns[name] = flat[:, i]
        return columns

    def _score_names(self, width: int, output: str | None = None, prefix: str = "") -> list[str]:
        for step, mode, target in zip(
            self._postprocess, self._modes, self._post_outputs, strict=True
        ):
            if target == output:
                classes = list(getattr(step, "classes_", [])) if mode == "class_ids" else []
                if len(classes) == width:
                    return [f"{prefix}score_{c}" for c in classes]
                break
        return [f"{prefix}score"] if width == 1 else [f"{prefix}score_{i}" for i in range(width)]

    def validate(self, raw: Any, *, strict: bool = False) -> list[str]:
        """Every problem the input contract finds in `raw`, without predicting ([] if none)."""
        if self._schema is None:
            return []
        return self._schema.problems(raw, strict=strict)

    def _coerce(self, raw: Any, *, strict: bool) -> Any:
        if self._schema is not None:
            return self._schema.coerce(raw, strict=strict)
        if isinstance(raw, Mapping) or hasattr(raw, "iloc"):
            return raw
        return np.asarray(raw)

    def _get_engine(self) -> Engine:
        if self._engine is None:
            custom = {o.name: o.obj for o in discover(self._model, self._user_custom_objects)}
            self._engine = Engine(
                self._model,
                self._preprocess,
                self._postprocess,
                self._modes,
                custom_objects=custom,
                postprocess_outputs=self._post_outputs,
            )
        return self._engine


def _spread(name: str, values: Any) -> dict[str, np.ndarray]:
    """One column `name` for one value per row, else ``name_<i>`` per value."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 1:
        return {name: values}
    flat = _per_row(values)
    return dict(zip(_spread_names(name, flat.shape[1]), flat.T, strict=True))


def _per_row(values: Any) -> np.ndarray:
    """`values` as one flat row per sample (also with no rows, where -1 is undefined)."""
    values = np.asarray(values)
    return values.reshape(len(values), math.prod(values.shape[1:]))


def _spread_names(name: str, width: int) -> list[str]:
    return [name] if width == 1 else [f"{name}_{i}" for i in range(width)]


@dataclass
class _Stream:
    """Batches read from a file, folder or list: ``batches(size, on_error, workers)``."""

    id_name: str  # "path" or "index"
    count: Callable[[], int]
    batches: Callable[[int, str, int | None], Iterator[Any]]
    overlap: bool  # prepare batch k+1 in a thread while k runs (not for images: decoded already)
    unreadable: bool = True  # whether an item can fail to be read (an image; not an array row)


def _npy_stream(npy: array_io.NpyFile) -> _Stream:
    def batches(size: int, on_error: str, workers: int | None) -> Iterator[Any]:
        for start, rows in array_io.iter_npy_batches(npy, size):
            ids = list(range(start, start + len(rows)))
            yield image_io.ImageBatch(ids, rows, np.ones(len(rows), dtype=bool), [])

    return _Stream("index", lambda: len(npy), batches, overlap=True, unreadable=False)


def _no_rows() -> Any:
    return image_io.ImageBatch([], None, np.zeros(0, dtype=bool), [])


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise UsageError(
            f"on_error must be one of {', '.join(map(repr, ON_ERROR))}; got {on_error!r}."
        )


def _warn_unreadable(failures: Sequence[tuple[str, str]], where: str) -> None:
    if not failures:
        return
    shown = [f"{name}: {reason}" for name, reason in failures]
    warnings.warn(
        BundleWarning(
            f"{len(failures):,} image(s) could not be read; their reasons {where}:\n"
            + bullet_list(shown)
        ),
        stacklevel=3,
    )


def _fill_rows(values: Any, positions: np.ndarray, n: int) -> Any:
    """A column of `n` rows holding `values` at `positions`, missing elsewhere.

    Integer and boolean columns become pandas' nullable types in every batch, so a file
    written batch by batch keeps one type per column whether or not a batch had failures.
    """
    import pandas as pd

    kind = values.dtype.kind
    if kind == "f":
        out = np.full(n, np.nan, dtype=values.dtype)
    elif kind in "iub":
        out = pd.array([pd.NA] * n, dtype="boolean" if kind == "b" else "Int64")
    else:
        out = np.full(n, None, dtype=object)
    out[positions] = values.to_numpy()
    return out


def _arrow_schema(frame: Any) -> Any:
    """The Parquet column types of an output frame; columns of unknown type (no row) as text."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    )


def _score_columns(flat: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Score columns by name; only the top score when there are too many to follow."""
    if flat.shape[1] > MAX_PROFILED_SCORES:
        return {"score_max": flat.max(axis=1)}
    return {name: flat[:, i] for i, name in enumerate(names)}


def _batched(data: Any, schema: InputSchema | None) -> bool:
    """True when every array of `data` has the batch axis of its input's schema, so drift can
    read it as it is: one sample without it, or a flattened image, goes through the contract
    (a batch of one, or its refusal), never read as rows of another shape."""
    shape = getattr(schema, "shape", None)
    if shape is not None:
        return np.ndim(data) == len(shape) + 1
    inputs = getattr(schema, "inputs", None)
    if isinstance(data, Mapping) and inputs is not None:
        return all(_batched(data[name], inputs.get(name)) for name in data)
    return True


def _is_columnar(data: Mapping[str, Any]) -> bool:
    """A dict of equally long arrays or frames (columns, or a multi-input batch)."""
    values = list(data.values())
    return bool(values) and all(hasattr(v, "__len__") and not isinstance(v, str) for v in values)


def _as_steps(value: Any, argument: str, method: str) -> list[Any]:
    steps = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
    for index, step in enumerate(steps):
        if not hasattr(step, method):
            raise TypeError(
                f"{argument}[{index}] must be a fitted object with a {method}() method; "
                f"got {type(step).__name__}."
            )
        _check_fitted(step, f"{argument}[{index}]")
    return steps


def _postprocess_steps(value: Any, model: Any) -> tuple[list[Any], list[str | None]]:
    """The postprocess steps in replay order, and the model output each one is for.

    A dict keys the steps by output name (a model with several outputs); anything else is
    for the model's only output, and refused for a model with several.
    """
    names = _model_output_names(model)
    if isinstance(value, Mapping):
        unknown = [key for key in value if names is not None and str(key) not in names]
        if unknown:
            raise UsageError(
                f"postprocess names {len(unknown)} output(s) the model does not have: "
                f"{', '.join(map(repr, unknown))}. Its outputs: "
                f"{', '.join(map(repr, names or []))}. Key postprocess by output name."
            )
        steps: list[Any] = []
        outputs: list[str | None] = []
        for key, steps_of_output in value.items():
            found = _as_steps(steps_of_output, f"postprocess[{key!r}]", "inverse_transform")
            steps += found
            outputs += [str(key)] * len(found)
        return steps, outputs
    steps = _as_steps(value, "postprocess", "inverse_transform")
    if steps and names is not None and len(names) > 1:
        raise UsageError(
            f"The model has {len(names)} outputs ({', '.join(map(repr, names))}), so postprocess "
            "must say which output each step is for: a dict keyed by output name, e.g. "
            f"postprocess={{{names[0]!r}: label_encoder}}. Outputs without a step are returned "
            "as the model gives them."
        )
    return steps, [None] * len(steps)


def _model_output_names(model: Any) -> list[str] | None:
    """The names of a built model's outputs; None when unknown before its first call."""
    from .model import model_signature

    try:
        return [str(spec["name"]) for spec in model_signature(model)[1]]
    except BundleError:
        return None


def _describe_outputs(result: Any) -> str:
    if isinstance(result, Mapping):
        return ", ".join(f"{k}: {np.asarray(v).dtype}" for k, v in result.items())
    if isinstance(result, (list, tuple)):
        return ", ".join(str(np.asarray(v).dtype) for v in result)
    return f"dtype {np.asarray(result).dtype}"


def _check_fitted(step: Any, where: str) -> None:
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # not a scikit-learn object then; nothing to check
        return
    if not hasattr(step, "fit"):
        return
    try:
        check_is_fitted(step)
    except NotFittedError as exc:
        raise ValueError(
            f"{where} ({type(step).__name__}) is not fitted: a bundle stores fitted "
            "preprocessing. Call fit() on your training data before building the Bundle."
        ) from exc
    except TypeError:  # not an estimator check_is_fitted understands
        return


def _json_checked(metadata: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"metadata must be JSON-serializable (str, numbers, lists, dicts): {exc}. "
            "Convert numpy scalars with float() / int()."
        ) from exc
    return metadata


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _text_input(model: Any) -> str | None:
    """The column name of a model whose only input is a string tensor, else None."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        return None
    if len(inputs) != 1 or dtype_name_or_none(inputs[0].dtype) != STRING:
        return None
    return text_column(getattr(inputs[0], "name", None))


def _infer_input_schema(
    example: Any, preprocess: Sequence[Any], model: Any, text_input: str | None = None
) -> InputSchema | None:
    if example is None and not preprocess and text_input is not None:
        return text_schema(text_input)
    rules = input_rules(preprocess)
    n_features = rules.n_features
    missing = sorted(rules.missing_handled)
    infinity = sorted(rules.infinity_refused)
    if example is None or not hasattr(example, "columns"):
        columns = rules.feature_names or [str(i) for i in range(n_features or 0)]
        if columns and set(columns) <= rules.missing_handled:
            missing.append("*")
        if columns and set(columns) <= rules.infinity_refused:
            infinity.append("*")  # array input: only when every column refuses infinity
    if example is not None:
        return infer_schema(
            example,
            missing_handled=missing,
            closed_categories=rules.closed_categories or None,
            infinity_refused=infinity,
            input_names=_model_input_names(model),
        )
    return schema_from_hints(
        feature_names=rules.feature_names,
        n_features=n_features,
        categories=rules.categories or None,
        model_inputs=None if preprocess else _model_inputs(model),
        missing_handled=missing,
        closed_categories=rules.closed_categories or None,
        infinity_refused=infinity,
    )


def _image_input(value: Any) -> ImageInput:
    if isinstance(value, ImageInput):
        return value
    if hasattr(value, "element_spec"):
        return ImageInput.from_dataset(value)
    raise TypeError(
        f"image must be a bundle.ImageInput or the tf.data.Dataset image_dataset_from_directory "
        f"made; got {type(value).__name__}."
    )


def _with_image(schema: InputSchema | None, image: Any) -> InputSchema:
    """`schema` reading image sources as `image` records (per input name for a dict)."""
    if isinstance(image, Mapping):
        if not isinstance(schema, MultiInputSchema):
            raise UsageError(
                "image= is a dict of model input names, but the model has one input: pass "
                "the ImageInput (or dataset) itself."
            )
        unknown = sorted(set(image) - set(schema.inputs))
        if unknown:
            raise UsageError(
                f"image= names {', '.join(map(repr, unknown))}, which the model does not have; "
                f"its inputs: {', '.join(map(repr, schema.inputs))}."
            )
        inputs = dict(schema.inputs)
        for name, value in image.items():
            inputs[name] = _image_schema_of(inputs[name], _image_input(value), f"Input {name!r}")
        return MultiInputSchema(inputs)
    if isinstance(schema, MultiInputSchema):
        raise UsageError(
            f"The model has {len(schema.inputs)} inputs ({', '.join(schema.inputs)}): pass "
            "image={input name: ImageInput} for the image input(s)."
        )
    return _image_schema_of(schema, _image_input(image), "The model input")


def _image_schema_of(schema: InputSchema | None, image: ImageInput, subject: str) -> ImageSchema:
    if schema is None:
        schema = ArraySchema(shape=image.shape, dtype=image.dtype, value_kind="float")
    if not isinstance(schema, ArraySchema):
        raise UsageError(
            f"{subject} is tabular (named columns); image= describes an array input that "
            "images are decoded into."
        )
    return ImageSchema.wrap(schema, image)


def _dataset_example(image: Any) -> np.ndarray | None:
    """The first decoded training images of a dataset, as the input example (else None)."""
    if not hasattr(image, "element_spec") or not hasattr(image, "take"):
        return None
    element = next(iter(image.take(1)), None)
    if element is None:
        return None
    images = np.asarray(element[0] if isinstance(element, tuple) else element)
    if images.ndim == 3:  # an unbatched dataset: one image
        images = images[np.newaxis]
    return images[:DATASET_EXAMPLE_ROWS]


def _model_input_names(model: Any) -> list[str] | None:
    try:
        return [str(t.name) for t in model.inputs]
    except (AttributeError, ValueError):
        return None


def _model_inputs(model: Any) -> dict[str, tuple[tuple, str]] | None:
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        return None
    return {str(t.name): (tuple(t.shape[1:]), dtype_name_or_none(t.dtype)) for t in inputs} or None


def _check_version_name(located: Located, manifest: Manifest) -> None:
    """A version directory holds the manifest of the version it is named after.

    Resolved through a root (the highest version, a version or an alias), the directory's
    name is the version the root publishes: another manifest there means it was copied or
    renamed by hand, or replaced, and loading it would serve another model than the one
    asked for, so it is refused. A directory passed directly may be a renamed copy: it
    loads, with a warning naming both versions.
    """
    name = located.path.name
    # An overwrite in progress (or killed) keeps the version in `.replaced-<id>-<version>`.
    name = store.replaced_version(name) or name
    # `bundle archive` names its folder <name>-<version>: an extracted release is in place.
    if located.via == "archive" or name in (
        manifest.version,
        f"{manifest.name}-{manifest.version}",
    ):
        return
    if located.via == "root":
        raise IntegrityError(
            f"{located.path} is published as version {name!r}, but its manifest is that of "
            f"{manifest.label}: the directory was copied or renamed by hand, or its manifest "
            f"replaced.\nRestore version {name!r} from its release; to load this directory "
            f"anyway, pass it directly: Bundle.load({str(located.path)!r}).",
            mismatched=[MANIFEST_FILE],
        )
    warnings.warn(
        VersionMismatchWarning(
            f"Loading {located.path}: its manifest is that of {manifest.label}, not of "
            f"version {name!r} (the directory was renamed or copied). The bundle loads as "
            f"version {manifest.version!r}.",
            directory=str(located.path),
            version=manifest.version,
        ),
        stacklevel=3,
    )


def _custom_objects(
    path: Path,
    manifest: Manifest,
    model_config: ModelConfig | None,
    decision: TrustDecision | None,
    *,
    trusted: bool,
) -> tuple[dict[str, Any], list[UnsafePart]]:
    """The custom objects to give Keras, and the compile-only parts skipped without trust.

    With trust, every object is loaded, as saved. Without it, the objects prediction needs
    are loaded (the policy allowed them); the compile-only ones too, unless one of them is
    unsafe or cannot be resolved: then none of them is imported or unpickled and the
    model is rebuilt without its compile state.
    """
    records = manifest.custom_objects
    if trusted:
        return load_custom_objects(path, records, trusted=True), []
    skipped = list(decision.skipped) if decision is not None else []
    predict = [r for r in records if needed_for(r, model_config) == PREDICT]
    compile_only = [r for r in records if needed_for(r, model_config) != PREDICT]
    custom = load_custom_objects(path, predict, trusted=False)
    if skipped:
        return custom, skipped
    compiled: dict[str, Any] = {}
    for record in compile_only:
        try:
            compiled[record["name"]] = load_custom_object(path, record, trusted=False)
        except (UnsafeLoadError, ModelError) as exc:
            reason = str(exc).split("\n")[0]
            skipped.append(UnsafePart(record, reason, needed_for(record, model_config)))
    if skipped:
        return custom, skipped
    return {**custom, **compiled}, []


def _compile_skipped_warning(label: str, skipped: Sequence[UnsafePart]) -> Warning:
    names = [part.name for part in skipped]
    return CompileStateSkippedWarning(
        f"Loaded {label} without its compile state: {len(skipped)} part(s) are needed only to "
        "compile (loss, metrics, optimizer), and loading them would run code the bundle "
        "stores or chooses:\n"
        + bullet_list([f"{part.name}: {part.describe()}" for part in skipped], limit=10)
        + "\nPrediction does not use them: predict, serve, Spark and export work as saved. "
        "To restore the compile state (to evaluate or continue training): "
        "Bundle.load(path, trusted=True).",
        skipped=names,
    )


def _refusal(head: str, exc: BundleError) -> BundleError:
    """`exc` as the reason a save refuses to publish: its kind and data kept."""
    message = f"{head}:\n{exc}\nNothing was published."
    if isinstance(exc, SchemaError):
        return SchemaError(message, problems=exc.problems, column=exc.column)
    return ModelError(
        message,
        layer=getattr(exc, "layer", None),
        missing_global=getattr(exc, "missing_global", None),
    )


def _import_keras_for(saved_backend: str | None) -> str:
    """Import Keras (on the bundle's backend if Keras has no installed one configured)."""
    from .model import backend_name, import_keras

    import_keras(prefer=saved_backend)
    return backend_name()


def _backends_line(manifest: Manifest) -> str:
    """``saved on JAX 0.10.2, running on TensorFlow 2.21.0`` (or one of them when equal)."""
    from .model.backend import backend_name, backend_version, label

    running = backend_name()
    now = f"{label(running)} {backend_version(running) or ''}".strip()
    saved = manifest.backend
    if saved is None:
        return f"running on {now}; backend not recorded at save"
    then = f"{label(saved['name'])} {saved.get('version') or ''}".strip()
    return f"on {now}" if then == now else f"saved on {then}, running on {now}"


def _check_portable(manifest: Manifest, running: str, **parts: Any) -> None:
    """Refuse a model whose code calls another backend's library (`BackendError`)."""
    from .model import check_portable

    kinds = {record["name"]: record["kind"] for record in manifest.custom_objects}
    check_portable(backend=running, label_=manifest.label.capitalize(), kinds=kinds, **parts)


def _model_card(manifest: Manifest, schema: InputSchema | None) -> str:
    from .format.card import render_model_card

    return render_model_card(manifest, schema)
