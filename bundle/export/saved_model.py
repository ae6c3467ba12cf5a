"""The whole pipeline as one TensorFlow graph: raw features in, labels out.

`export_saved_model` writes a TensorFlow SavedModel whose ``serving_default`` signature
replays a bundle's input checks, preprocess steps, model and postprocess steps, so that
TensorFlow Serving (or any process with TensorFlow and nothing else) predicts what
`Bundle.predict` predicts.

Signature
---------
Inputs, one tensor per column of the input contract (tabular bundles), shape ``[None]``:

============================  ========================================================
column kind (training dtype)  input tensor
============================  ========================================================
float (float64 / float32)     ``tf.float64`` / ``tf.float32``; NaN is a missing value
integer (any int width)       ``tf.int64``, range-checked against the training dtype
bool                          ``tf.bool``
string, categorical (text)    ``tf.string``; the missing-value token (default ``""``)
                              stands for a missing value (None/NaN in a DataFrame)
============================  ========================================================

An array bundle takes one tensor named ``input``, shape ``[None, *per-sample shape]``, in
the training dtype. An image bundle whose recorded decoder is TensorFlow's (as
``image_dataset_from_directory`` reads files) takes one ``tf.string`` tensor named ``input``,
shape ``[None]``: encoded images (JPEG, PNG, GIF, BMP), decoded and resized in the graph with
the training loader's operations. Its crop box is computed with integer division, which
equals Keras' float32 arithmetic while width x target height stays below 2**24 and which
TensorFlow's graph optimizer cannot rewrite (it turns a division by a constant into a
multiplication by the reciprocal, which can move the crop by a pixel); padding to the
aspect ratio, whose geometry the optimizer rewrites the same way, and PIL-decoded bundles
are refused. Signature input names are the column names made safe for TensorFlow
(`signature_name`: characters other than ``[A-Za-z0-9_]`` become ``_``, a name that does
not start with a letter gets ``arg_`` in front); two columns that collide (also ignoring
case) are refused.

Outputs: ``scores`` (the model's output) and, with a postprocess step, ``labels`` (class
decoders: LabelEncoder, LabelBinarizer; ``tf.string`` for string classes) or
``predictions`` (target scalers' ``inverse_transform``, in original units).

Semantics
---------
Every fitted step is replayed with scikit-learn's arithmetic, in scikit-learn's dtypes: each
step's kind (`bundle.steps`) holds its TensorFlow form next to its NumPy replay, the
reference (NaN handling, unknown and infrequent categories, ``drop``, bin edges, polynomial
column order, ...). Scores match ``Bundle.predict`` within float32 rounding; labels are
identical.

Inside a graph nothing can be "refused before TensorFlow sees the data", so the input
contract's checks and the steps' own refusals become ``Assert`` ops; a failed
check makes the call fail with ``tf.errors.InvalidArgumentError`` (HTTP 400 in TF Serving)
whose message names the column (quotes become backticks: TensorFlow escapes quotes), e.g.
``assertion failed: [Column `plan` has values training never saw; it accepts only its 3
known values:] [platinum]``.
Checked: row counts agree across columns; missing values only where training had them or
a step imputes them; integers within the training dtype; closed categories; infinity /
NaN where a step refuses them; unknown categories under ``handle_unknown='error'``.

Export refuses (`UnsupportedFormatError`, nothing written) a bundle with any step, option
or input that has no TensorFlow form; the message lists every such part by its path.

Example:
    >>> bundle = Bundle.load("models/churn")
    >>> export_saved_model(bundle, "serving/churn/1")
    PosixPath('serving/churn/1')
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.images import ImageInput
from ..contract.text import STRING
from ..errors import (
    BundleError,
    ExportError,
    MissingDependencyError,
    UnsupportedFormatError,
    bullet_list,
)
from ..steps.graph import (
    SAMPLE,
    TEXT,
    Context,
    GraphBuild,
    Lookup,
    NoForm,
    TensorFrame,
    Text,
    compile_graph,
    decode_graph,
    decodes_labels,
    graph_classes,
    postprocess_mode,
    score_shape,
    tf,
)

__all__ = [
    "DEFAULT_MISSING_TOKEN",
    "EXPORT_FORMAT",
    "INFO_FILE",
    "SIGNATURE_KEY",
    "export_saved_model",
    "require_tensorflow",
    "signature_name",
    "supported_classes",
]

SIGNATURE_KEY = "serving_default"
DEFAULT_MISSING_TOKEN = ""
ARRAY_INPUT = "input"
INFO_FILE = "assets.extra/keras_bundle.json"
EXPORT_FORMAT = "keras-bundle.saved_model"
EXPORT_FORMAT_VERSION = 1
"""Version of `INFO_FILE`'s layout; bump it when a reader of the previous one would misread."""


def require_tensorflow() -> None:
    """Check that TensorFlow can be imported: exporting is the one thing that needs it.

    Raises:
        MissingDependencyError: TensorFlow is not installed.
    """
    from ..model.backend import is_installed

    if not is_installed("tensorflow"):
        raise MissingDependencyError(
            "Exporting a SavedModel needs TensorFlow, which is not installed here.\n"
            'Install it: pip install "keras-bundle[cpu]" (or tensorflow). Only export needs '
            "it: saving, loading, predicting and serving also run on JAX or PyTorch.",
            package="tensorflow-cpu",
            extra="cpu",
        )


def _require_tensorflow_backend() -> None:
    """Export traces the model into a TensorFlow graph: Keras must run on TensorFlow."""
    from ..model import backend_name, import_keras

    require_tensorflow()
    import_keras()
    backend = backend_name()
    if backend != "tensorflow":
        raise ExportError(
            "Exporting a SavedModel traces the model into a TensorFlow graph, which needs "
            f"Keras' TensorFlow backend; this process runs Keras on {backend!r}.\n"
            "Export in a process where Keras runs on TensorFlow (the bundle's model file is "
            "the same on every backend): `bundle export PATH OUT` does that by itself, or set "
            "KERAS_BACKEND=tensorflow before Keras is imported."
        )


# ---------------------------------------------------------------------------------------
# Signature inputs
# ---------------------------------------------------------------------------------------


def signature_name(column: Any) -> str:
    """The signature input name of a column: TensorFlow keeps only ``[A-Za-z0-9_]``.

    >>> signature_name("monthly spend"), signature_name("2nd"), signature_name("age")
    ('monthly_spend', 'arg_2nd', 'age')
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(column))
    return name if re.match(r"[A-Za-z]", name) else f"arg_{name}"


@dataclass(frozen=True)
class _Input:
    """One signature input: what the client sends and what the steps see."""

    column: Any  # the contract's column name (ARRAY_INPUT for an array bundle)
    key: str  # signature input name
    wire: Any  # dtype of the signature tensor (numpy dtype; object = tf.string)
    dtype: np.dtype  # dtype the steps see: the training dtype (object for text)
    shape: tuple[int | None, ...] = ()  # per-sample shape
    allows_missing: bool = True
    sentinel: str = "nan"  # text: what a missing value was at training ("nan" or "none")
    known: tuple[Any, ...] | None = None  # the only values accepted (closed categories)
    seen: tuple[Any, ...] = ()  # text values seen in training (for the token check)
    image: ImageInput | None = None  # encoded images in, decoded as training read them

    @property
    def is_text(self) -> bool:
        return self.dtype == TEXT


def _numpy_dtype(text: str | None) -> np.dtype | None:
    try:
        return np.dtype(text) if text else None
    except TypeError:
        return None


def _column_input(column: dict[str, Any], problems: list[str]) -> _Input | None:
    name, kind = column["name"], column["kind"]
    allows = column.get("has_missing") is not False or bool(column.get("missing_handled"))
    known = column.get("closed_categories")
    common = {
        "column": name,
        "key": signature_name(name),
        "allows_missing": allows,
        "known": tuple(known) if known is not None else None,
    }
    dtype = _numpy_dtype(column.get("dtype"))
    if kind == "float" and dtype is not None and dtype.kind == "f":
        return _Input(wire=dtype, dtype=dtype, **common)
    if kind == "integer" and dtype is not None and dtype.kind in "iu":
        return _Input(wire=np.dtype(np.int64), dtype=dtype, **common)
    if kind == "bool":
        return _Input(wire=np.dtype(bool), dtype=np.dtype(bool), **common)
    if kind in ("string", "categorical"):
        values = column.get("dtype_categories") if kind == "categorical" else None
        if values is not None and not all(isinstance(v, str) for v in values):
            problems.append(
                f"input column {name!r}: a categorical dtype with non-text categories has "
                "no TensorFlow input form (cast the column to str or a number)"
            )
            return None
        if values is not None and known is None:
            common["known"] = tuple(values)
        sentinel = column.get("missing_value") or "nan"
        seen = tuple(v for v in column.get("categories") or () if isinstance(v, str))
        return _Input(wire=TEXT, dtype=TEXT, sentinel=sentinel, seen=seen, **common)
    problems.append(
        f"input column {name!r}: kind {kind!r} (dtype {column.get('dtype')}) has no "
        "TensorFlow input form; export supports float, integer, bool, string and "
        "categorical columns"
    )
    return None


def _inputs(schema: Any, problems: list[str]) -> list[_Input]:
    if schema is None:
        problems.append(
            "the bundle has no input contract, so the signature's inputs are unknown "
            "(save it with input_example=)"
        )
        return []
    data = schema.to_dict()
    if data["kind"] == "tabular":
        inputs = [_column_input(column, problems) for column in data["columns"]]
        inputs = [spec for spec in inputs if spec is not None]
        _check_keys(inputs, problems)
        return inputs
    if data["kind"] == "array":
        dtype = _numpy_dtype(data.get("dtype"))
        if dtype is None or dtype.kind not in "biuf":
            problems.append(
                f"array input of dtype {data.get('dtype')}: only numeric and bool arrays "
                "have a TensorFlow input form"
            )
            return []
        allows = data.get("has_missing") is not False or bool(data.get("missing_handled"))
        shape = tuple(data["shape"])
        return [_Input(ARRAY_INPUT, ARRAY_INPUT, dtype, dtype, shape, allows_missing=allows)]
    if data["kind"] == "image":
        image = ImageInput.from_dict(data["image"])
        if image.decoder != "tensorflow":
            problems.append(
                "the bundle reads images with PIL (keras.utils.load_img), which a TensorFlow "
                "graph cannot run; serve it with `bundle serve`, or export arrays it decoded"
            )
            return []
        if image.pad_to_aspect_ratio:
            problems.append(
                "pad_to_aspect_ratio: TensorFlow's graph optimizer rewrites the float "
                "arithmetic of tf.image.resize_with_pad, so the graph could pad a pixel off "
                "from training; serve the bundle with `bundle serve` instead"
            )
            return []
        dtype = np.dtype(image.dtype)
        return [_Input(ARRAY_INPUT, ARRAY_INPUT, TEXT, dtype, (), image=image)]
    problems.append(
        f"the input contract is of kind {data['kind']!r}; export supports tabular and "
        "single-array bundles (multi-input models are not supported yet)"
    )
    return []


def _check_keys(inputs: Sequence[_Input], problems: list[str]) -> None:
    """TensorFlow op names are unique ignoring case: two columns may not share a key."""
    by_key: dict[str, list[Any]] = {}
    for spec in inputs:
        by_key.setdefault(spec.key.lower(), []).append(spec.column)
    for columns in by_key.values():
        if len(columns) > 1:
            shown = ", ".join(repr(c) for c in columns)
            problems.append(
                f"input columns {shown} would share the signature input name "
                f"{signature_name(columns[0])!r} (TensorFlow keeps [A-Za-z0-9_] and ignores "
                "case); rename one of them before training"
            )


def _dense(value: Any, who: str) -> Any:
    """A step's output as the float64 matrix the next step (or the model) reads."""
    try:
        return value.to(np.float64)
    except NoForm as exc:
        raise NoForm(f"{who}: {exc}") from exc


def _token_label(token: str) -> str:
    return "the empty string" if token == "" else f"the token {token!r}"


def supported_classes() -> dict[str, list[str]]:
    """The scikit-learn classes with a TensorFlow form, by stage."""
    return graph_classes()


# ---------------------------------------------------------------------------------------
# The exported graph
# ---------------------------------------------------------------------------------------


def _postprocess_modes(bundle: Any) -> list[str]:
    try:
        return [record.get("mode", "inverse_transform") for record in bundle.manifest.postprocess]
    except BundleError:  # not saved yet: the modes Bundle itself would record
        return [postprocess_mode(step) for step in bundle.postprocess]


def _model_specs(bundle: Any) -> tuple[list[dict], list[dict]]:
    from ..model import model_signature

    try:
        return model_signature(bundle.model)
    except BundleError:
        manifest = bundle.manifest
        return list(manifest.model["inputs"]), list(manifest.model["outputs"])


class _Plan:
    """The validated pieces of the graph, built before tracing (tables included)."""

    def __init__(self, bundle: Any, missing_token: str):
        self.tf = tf()
        self.build = build = GraphBuild(missing_token)
        problems = build.problems
        self.inputs = _inputs(bundle.input_schema, problems)
        self.known = {
            spec.key: Lookup(
                [v for v in spec.known if v is not None or spec.is_text],
                Context(1, None, f"input column {spec.column!r}", build=build),
                "known values",
            )
            for spec in self.inputs
            if spec.known is not None
        }
        self.model = bundle.model
        self.model_inputs, self.model_outputs = _model_specs(bundle)
        model_outputs = self.model_outputs
        for what, specs in (("inputs", self.model_inputs), ("outputs", model_outputs)):
            if len(specs) != 1:
                problems.append(
                    f"the model has {len(specs)} {what}; export supports single-input, "
                    "single-output models"
                )
        self.names = None
        # A text model with no preprocess step: its one text column feeds its string input
        # as it comes. An empty string is a text there, not a missing value.
        self.direct_text = (
            not bundle.preprocess
            and len(self.model_inputs) == 1
            and self.model_inputs[0]["dtype"] == STRING
            and len(self.inputs) == 1
            and self.inputs[0].is_text
        )
        if self.direct_text:
            self.inputs = [replace(self.inputs[0], seen=(), allows_missing=True)]
        self.bundle_steps = list(bundle.preprocess)
        self.steps = [self._step(step, i) for i, step in enumerate(bundle.preprocess)]
        self.post = self._postprocess(bundle, model_outputs[0]["shape"] if model_outputs else [])
        last = bundle.postprocess[-1] if bundle.postprocess else None
        self.output = None if last is None else "labels" if decodes_labels(last) else "predictions"

    def _step(self, step: Any, index: int) -> Any:
        path = f"preprocess[{index}] {type(step).__name__}"
        n_in = getattr(step, "n_features_in_", None)
        if n_in is None:
            self.build.problem(path, "the step does not record n_features_in_ (is it fitted?)")
            return None
        names = getattr(step, "feature_names_in_", None) if index == 0 else None
        if names is not None:
            self.names = tuple(str(n) for n in names)
        context = Context(int(n_in), self.names if index == 0 else None, path, build=self.build)
        return compile_graph(step, context)

    def _postprocess(self, bundle: Any, shape: Sequence[int | None]) -> list[Callable]:
        runs = []
        modes = _postprocess_modes(bundle)
        for index, (step, mode) in enumerate(zip(bundle.postprocess, modes, strict=True)):
            where = f"postprocess[{index}] {type(step).__name__}"
            if index > 0:
                self.build.problem(where, "a second postprocess step (export supports one)")
                continue
            run = decode_graph(step, mode, shape, where, self.build)
            if run is not None:
                runs.append(run)
        return runs

    def signature(self) -> dict[str, Any]:
        tf = self.tf
        return {
            spec.key: tf.TensorSpec(
                [None, *spec.shape], tf.string if spec.wire == TEXT else spec.wire, name=spec.key
            )
            for spec in self.inputs
        }

    # -- the traced body -----------------------------------------------------------------

    def serve(self, features: dict[str, Any]) -> dict[str, Any]:
        """Signature tensors -> ``{"scores", "labels" | "predictions"}``."""
        tf = self.tf
        self.build.checks = []
        scores = self._model(self._preprocess(self._read(features)))
        outputs = {"scores": scores}
        if self.output:
            result = scores
            for run in self.post:
                result = run(result)
            outputs[self.output] = result
        with tf.control_dependencies(self.build.checks):  # every check runs before we answer
            return {key: tf.identity(value) for key, value in outputs.items()}

    def _read(self, features: dict[str, Any]) -> list[Any]:
        """The columns the steps see, in contract order, after the contract's checks."""
        tf = self.tf
        tensors = [features[spec.key] for spec in self.inputs]
        if len(tensors) > 1:
            rows = tf.stack([tf.shape(t)[0] for t in tensors])
            self.build.check(
                tf.reduce_all(tf.equal(rows, rows[0])),
                "All input columns must have the same number of rows; got (in signature order):",
                rows,
            )
            with tf.control_dependencies(self.build.checks[-1:]):  # before anything stacks
                tensors = [tf.identity(t) for t in tensors]
        return [self._column(spec, t) for spec, t in zip(self.inputs, tensors, strict=True)]

    def _column(self, spec: _Input, tensor: Any) -> Any:
        tf = self.tf
        build = self.build
        label = "The input" if spec.column == ARRAY_INPUT else f"Column {spec.column!r}"
        if spec.image is not None:
            return self._decode_images(spec.image, tensor)
        if self.direct_text:
            return tensor
        if spec.is_text:
            missing = tf.equal(tensor, build.missing_token)
            column = Text(tensor, missing, spec.sentinel)
            if not spec.allows_missing:
                build.check(
                    tf.logical_not(tf.reduce_any(missing)),
                    f"{label} has missing values ({_token_label(build.missing_token)}), but "
                    "training had none and no preprocessing step imputes them.",
                )
        else:
            column = tensor
            if spec.dtype.kind == "f" and not spec.allows_missing:
                build.check(
                    tf.logical_not(tf.reduce_any(tf.math.is_nan(tensor))),
                    f"{label} has missing values (NaN), but training had none and no "
                    "preprocessing step imputes them.",
                )
            if spec.dtype.kind in "iu" and spec.wire != spec.dtype:
                info, wide = np.iinfo(spec.dtype), np.iinfo(np.int64)
                low, high = max(int(info.min), wide.min), min(int(info.max), wide.max)
                inside = tf.logical_and(tensor >= low, tensor <= high)
                build.check(
                    tf.reduce_all(inside),
                    f"{label} has values outside the range of its training dtype "
                    f"{spec.dtype} [{low}, {high}]:",
                    tf.boolean_mask(tensor, ~inside)[:SAMPLE],
                )
                column = tf.cast(tensor, spec.dtype)
        lookup = self.known.get(spec.key)
        if lookup is not None:
            bad = lookup(column) < 0
            if spec.is_text:
                bad = tf.logical_and(bad, ~column.missing)
            elif spec.dtype.kind == "f":
                bad = tf.logical_and(bad, ~tf.math.is_nan(tensor))
            build.check(
                tf.logical_not(tf.reduce_any(bad)),
                f"{label} has values training never saw; it accepts only its "
                f"{len(spec.known)} known values:",
                tf.boolean_mask(tensor, bad)[:SAMPLE],
            )
        return column

    def _decode_images(self, image: ImageInput, encoded: Any) -> Any:
        """Encoded images -> a batch, with image_dataset_from_directory's operations."""
        tf = self.tf
        height, width = image.size  # type: ignore[misc]  # required for this decoder
        dtype = tf.as_dtype(image.dtype if image.scale is None else "float32")

        def load(data: Any) -> Any:
            pixels = tf.io.decode_image(data, channels=image.channels, expand_animations=False)
            if image.crop_to_aspect_ratio:
                pixels = _integer_crop(tf, pixels, height, width)
                pixels = tf.image.resize(pixels, (height, width), method=image.interpolation)
            else:
                pixels = tf.image.resize(
                    pixels, (height, width), method=image.interpolation, antialias=image.antialias
                )
            if image.data_format == "channels_first":
                pixels = tf.transpose(pixels, (2, 0, 1))
            if image.scale is not None:  # in float32, as keras.layers.Rescaling
                pixels = tf.cast(pixels, tf.float32) * np.float32(image.scale)
                pixels = pixels + np.float32(image.offset)
            return tf.ensure_shape(tf.cast(pixels, dtype), image.shape)

        spec = tf.TensorSpec(image.shape, dtype)
        return tf.map_fn(load, encoded, fn_output_signature=spec)

    def _first_frame(self, columns: list[Any]) -> TensorFrame:
        """The first step's input: the contract's columns, by its feature names if any."""
        tf = self.tf
        if len(self.inputs) == 1 and self.inputs[0].column == ARRAY_INPUT:
            (array,) = columns
            if array.shape.rank != 2:
                raise NoForm(
                    "preprocess steps need 2-D input; the array input has shape "
                    f"{tuple(array.shape.as_list())}"
                )
            return TensorFrame.of(array)
        if self.names is not None:
            by_name = {str(spec.column): c for spec, c in zip(self.inputs, columns, strict=True)}
            absent = [name for name in self.names if name not in by_name]
            if absent:
                raise NoForm(f"preprocess[0] reads columns the input contract lacks: {absent}")
            columns = [by_name[name] for name in self.names]
        first = columns[0].values if isinstance(columns[0], Text) else columns[0]
        return TensorFrame(tf.shape(first)[0], columns=columns)

    def _preprocess(self, columns: list[Any]) -> Any:
        if self.direct_text:
            return columns[0]
        if not self.steps:
            if len(self.inputs) == 1 and self.inputs[0].column == ARRAY_INPUT:
                return columns[0]
            return _dense(self._first_frame(columns), "the model")
        frame = self._first_frame(columns)
        x: Any = None
        for index, node in enumerate(self.steps):
            if index > 0:
                frame = TensorFrame.of(x)
            expected = self._n_in(index)
            if frame.width != expected:
                raise NoForm(
                    f"preprocess[{index}] was fitted on {expected} columns; it would receive "
                    f"{frame.width}"
                )
            x = _dense(node.run(frame), f"the output of preprocess[{index}]")
            if int(x.shape[1]) != node.n_out:
                raise NoForm(
                    f"preprocess[{index}] produced {int(x.shape[1])} columns in the graph; "
                    f"scikit-learn produces {node.n_out}"
                )
        return x

    def _n_in(self, index: int) -> int:
        return int(self.bundle_steps[index].n_features_in_)

    def _model(self, x: Any) -> Any:
        tf = self.tf
        spec = self.model_inputs[0]
        expected, got = list(spec["shape"]), x.shape.as_list()
        if spec["dtype"] == STRING and len(got) == 1 and expected[1:] in ([], [1]):
            got = [got[0], *expected[1:]]
        if len(got) != len(expected) or any(
            e is not None and g is not None and e != g
            for e, g in zip(expected[1:], got[1:], strict=True)
        ):
            raise NoForm(
                f"the preprocessed input has shape {tuple(got)}, but the model expects "
                f"{tuple(expected)}"
            )
        if spec["dtype"] == STRING:  # texts: a column feeds an input of shape (None, 1)
            x = tf.reshape(x, [-1, *[int(d) for d in expected[1:]]])
        else:
            x = tf.cast(x, spec["dtype"])
        output = self.model_outputs[0]
        dims = score_shape(output["shape"])
        if dims is None:
            return self._call_model(x)
        # Like Bundle.predict, 0 rows never reach the model (some kernels, e.g. oneDNN
        # convolutions, fail on an empty batch).
        empty = tf.zeros([0, *dims], dtype=np.dtype(output["dtype"]))
        if empty.dtype in (tf.float16, tf.bfloat16):
            empty = tf.cast(empty, tf.float32)
        return tf.cond(tf.shape(x)[0] > 0, lambda: self._call_model(x), lambda: empty)

    def _call_model(self, x: Any) -> Any:
        tf = self.tf
        result = self.model(x, training=False)
        if isinstance(result, dict):
            (result,) = result.values()
        elif isinstance(result, (list, tuple)):
            (result,) = result
        if result.dtype in (tf.float16, tf.bfloat16):  # as the inference function does
            result = tf.cast(result, tf.float32)
        return result


def _integer_crop(tf: Any, pixels: Any, target_height: int, target_width: int) -> Any:
    """Keras' ``smart_resize`` centre crop, in integers.

    ``int(float32(width * target_height) / target_width)`` is ``floor`` of the exact
    quotient while the product stays below 2**24 (its float32 rounding cannot reach the
    next integer), and integer division survives the graph optimizer unchanged.
    """
    shape = tf.shape(pixels)
    height, width = shape[0], shape[1]
    crop_height = tf.maximum(tf.minimum(height, (width * target_height) // target_width), 1)
    crop_width = tf.maximum(tf.minimum(width, (height * target_width) // target_height), 1)
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return pixels[top : top + crop_height, left : left + crop_width, :]


def _trace(plan: _Plan, bundle: Any) -> tuple[Any, Any]:
    """The exported module and its concrete serving function (nothing written yet)."""
    tf = plan.tf

    class ExportedBundle(tf.Module):
        """A keras-bundle exported as one graph: the Keras model and the lookup tables."""

    module = ExportedBundle(name=re.sub(r"\W", "_", f"keras_bundle_{bundle.name}"))
    module.model = plan.model
    module.tables = list(plan.build.tables)
    module.serve = tf.function(plan.serve, input_signature=[plan.signature()], autograph=False)
    return module, module.serve.get_concrete_function()


def _refuse_failing_layer(bundle: Any, exc: Exception, what: str) -> None:
    """Refuse the export by the layer's name when a layer of the model is what failed.

    A failure while tracing names its layer from the stack. TensorFlow's refusal to save a
    resource created inside ``call()`` (a lookup table) names no layer: the layers that are
    not Keras' own are named as the ones that can do that.
    """
    from ..model import model_failure

    if "untracked" in str(exc):
        custom = [
            f"{layer.name!r} ({type(layer).__name__})"
            for layer in bundle.model._flatten_layers(include_self=False)
            if not type(layer).__module__.startswith("keras.")
        ]
        suspects = f": {', '.join(custom)}" if custom else ""
        raise ExportError(
            f"Cannot export bundle {bundle.name!r}: a layer creates a TensorFlow resource (a "
            "lookup table, a variable) inside call(), which a SavedModel cannot hold; the "
            f"layers that are not Keras' own{suspects}.\nCreate the resource in the layer's "
            "__init__() or build(), or serve this bundle with `bundle serve`. Nothing was "
            "written."
        ) from exc
    failure = model_failure(bundle.model, exc, "the export")
    if failure.layer is None:
        return
    layer = next(
        (x for x in bundle.model._flatten_layers(include_self=False) if x.name == failure.layer),
        None,
    )
    kind = type(layer).__name__ if layer is not None else "layer"
    raise ExportError(
        f"Cannot export bundle {bundle.name!r}: layer {failure.layer!r} ({kind}) cannot be "
        f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}\nNothing was "
        "written. Serve this bundle with `bundle serve` (it runs the model as Keras does), "
        "or rebuild the layer from TensorFlow ops."
    ) from exc


def _refuse(bundle: Any, problems: Sequence[str]) -> UnsupportedFormatError:
    label = f"bundle {bundle.name!r}"
    supported = supported_classes()
    return UnsupportedFormatError(
        f"Cannot export {label} as one TensorFlow graph: {len(problems)} part(s) have no "
        f"TensorFlow form:\n{bullet_list(problems)}\n"
        f"Preprocess steps with a TensorFlow form: {', '.join(supported['preprocess'])}; "
        f"postprocess: {', '.join(supported['postprocess'])}. Nothing was written. "
        "Replace these parts, or serve the bundle with `bundle serve` instead.",
        found=list(problems),
        supported=supported,
    )


def _info(bundle: Any, plan: _Plan, concrete: Any) -> dict[str, Any]:
    try:
        version = bundle.manifest.version
    except BundleError:
        version = bundle.version
    outputs = {
        key: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for key, spec in concrete.structured_outputs.items()
    }
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "bundle": {"name": bundle.name, "version": version},
        "signature": SIGNATURE_KEY,
        "missing_token": plan.build.missing_token,
        "inputs": [
            {
                "name": spec.key,
                "column": spec.column,
                "dtype": "string" if spec.wire == TEXT else spec.wire.name,
                "training_dtype": None if spec.is_text else spec.dtype.name,
                **({"image": spec.image.to_dict()} if spec.image is not None else {}),
                "shape": [None, *spec.shape],
            }
            for spec in plan.inputs
        ],
        "outputs": outputs,
    }


def export_saved_model(
    bundle: Any,
    out: str | os.PathLike[str],
    *,
    missing_token: str = DEFAULT_MISSING_TOKEN,
    overwrite: bool = False,
) -> Path:
    """Write `bundle` as one TensorFlow SavedModel: raw features in, labels and scores out.

    The graph replays the bundle's input checks, preprocess steps, model and postprocess
    steps (see the module docstring for the signature and its semantics). Everything is
    validated and traced before anything is written; the SavedModel is written into a
    temporary directory next to `out` and renamed into place, so `out` never holds a
    partial export. TF Serving expects ``<model_base_path>/<integer version>/``: pass
    e.g. ``serving/churn/1``.

    Args:
        bundle: a `Bundle` (loaded or just built).
        out: the SavedModel directory to create.
        missing_token: the string that stands for a missing value in text inputs (JSON has
            no missing string). Refused if it is also a category the bundle knows.
        overwrite: replace `out` if it exists.

    Returns:
        The SavedModel directory.

    Raises:
        UnsupportedFormatError: some step, option or input has no TensorFlow form (the
            message lists every such part); nothing is written.
        MissingDependencyError: TensorFlow is not installed.
        ExportError: `out` exists and `overwrite` is False, or Keras runs on another
            backend than TensorFlow in this process.

    Example:
        >>> export_saved_model(Bundle.load("models/churn"), "serving/churn/1")
        PosixPath('serving/churn/1')
    """
    out = Path(out)
    if not isinstance(missing_token, str):
        raise TypeError(f"missing_token must be a str; got {type(missing_token).__name__}.")
    _require_tensorflow_backend()
    if out.exists() and not overwrite:
        raise ExportError(
            f"{out} already exists. Choose a new directory (TF Serving loads "
            "<base>/<integer version>/), or pass overwrite=True."
        )
    plan = _Plan(bundle, missing_token)
    problems = plan.build.problems
    module = concrete = None
    if not problems:
        try:
            module, concrete = _trace(plan, bundle)
        except NoForm as exc:
            problems.append(str(exc))
        except Exception as exc:  # TensorFlow's errors are not for the caller to parse
            _refuse_failing_layer(bundle, exc, "traced into one TensorFlow graph")
            raise ExportError(
                f"Building the TensorFlow graph of bundle {bundle.name!r} failed: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}\nThis is a bug in "
                "keras-bundle's export (nothing was written); the original exception is "
                "chained below."
            ) from exc
    token = plan.build.missing_token
    clash = [
        f"{where}: the missing-value token {token!r} is also a known value"
        for value, where in plan.build.text_constants.items()
        if value == token
    ] + [
        f"input column {spec.column!r}: the missing-value token {token!r} is a value seen in "
        "training; pass another missing_token="
        for spec in plan.inputs
        if spec.is_text and token in spec.seen
    ]
    problems.extend(p for p in clash if p not in problems)
    if problems:
        raise _refuse(bundle, problems)
    info = _info(bundle, plan, concrete)
    return _write(module, concrete, info, out, overwrite=overwrite, bundle=bundle)


def _write(
    module: Any, concrete: Any, info: dict[str, Any], out: Path, *, overwrite: bool, bundle: Any
) -> Path:
    """Save into a staging directory next to `out`, then rename it into place."""
    tf_ = tf()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        target = staging / "saved_model"
        try:
            tf_.saved_model.save(module, str(target), signatures={SIGNATURE_KEY: concrete})
        except Exception as exc:
            _refuse_failing_layer(bundle, exc, "saved as a TensorFlow SavedModel")
            raise ExportError(
                f"TensorFlow could not save the exported graph: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]}\nNothing was written to {out}."
            ) from exc
        info_path = target / INFO_FILE
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        if not out.exists():
            os.replace(target, out)
        elif not overwrite:
            raise ExportError(f"{out} appeared while exporting; nothing was replaced.")
        else:
            previous = staging / "previous"
            os.replace(out, previous)
            try:
                os.replace(target, out)
            except OSError:
                os.replace(previous, out)  # put the previous export back
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
