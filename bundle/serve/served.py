"""The served bundle as the protocol sees it: input and output tensors, and a warm-up row.

Image bundles take encoded images (JPEG, PNG, ...) as a ``BYTES`` tensor: raw bytes in the
binary extension or gRPC, base64 text in JSON (``{"b64": "..."}`` objects too, on
``/predict``), decoded by the bundle exactly as training read its files. Decoded arrays
(``FP32``/``UINT8`` tensors with the batch axis) are accepted as before. A string is never
read as a path: a server does not open files for its clients.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bundle import SchemaError

from .protocol import datatype_of

SCORES_SUFFIX = "_scores"  # <output>_scores: the scores of an output decoded by its step
_KIND_DATATYPES = {"string": "BYTES", "categorical": "BYTES", "datetime": "BYTES", "any": "BYTES"}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Served:
    """A loaded bundle seen through the protocol: its tensors and how to read requests."""

    bundle: Any
    name: str
    version: str
    schema: Any
    schema_dict: dict[str, Any] | None
    inputs: list[Tensor]
    outputs: dict[str, Tensor] = field(default_factory=dict)
    default_outputs: list[str] = field(default_factory=list)
    has_postprocess: bool = False
    output_names: list[str] = field(default_factory=list)
    decoded_outputs: list[str] = field(default_factory=list)  # outputs with their own step

    @classmethod
    def of(cls, loaded: Any) -> Served:
        manifest = loaded.manifest
        schema = loaded.input_schema
        schema_dict = schema.to_dict() if schema is not None else manifest.input_schema
        served = cls(
            bundle=loaded,
            name=str(manifest.name),
            version=str(manifest.version),
            schema=schema,
            schema_dict=schema_dict,
            inputs=_input_tensors(schema_dict, manifest.model["inputs"]),
            has_postprocess=bool(manifest.postprocess),
            decoded_outputs=[str(r["output"]) for r in manifest.postprocess if r.get("output")],
        )
        served._outputs_from_manifest(manifest.model["outputs"])
        return served

    # ------------------------------------------------------------------ outputs
    def _outputs_from_manifest(self, specs: list[dict[str, Any]]) -> None:
        """Output tensors as far as the manifest tells (refined by `learn_outputs`).

        One model output: ``predictions`` (and ``scores`` with a postprocess step). Several:
        one tensor per model output, named after it, holding its prediction (postprocessed
        where it has a step), and ``<output>_scores`` for the scores of the decoded ones.
        """
        self.output_names = [str(spec["name"]) for spec in specs]
        if len(specs) > 1:
            decoded = set(self.decoded_outputs)
            for spec in specs:
                name, dims = str(spec["name"]), _dims(spec["shape"])
                datatype = "BYTES" if name in decoded else datatype_of(spec["dtype"])
                self.outputs[name] = Tensor(name, datatype, dims if name not in decoded else [-1])
            for spec in specs:
                if spec["name"] in decoded:
                    scores = f"{spec['name']}{SCORES_SUFFIX}"
                    self.outputs[scores] = Tensor(
                        scores, datatype_of(spec["dtype"]), _dims(spec["shape"])
                    )
            self.default_outputs = list(self.output_names)
            return
        raw = {
            spec["name"]: Tensor(spec["name"], datatype_of(spec["dtype"]), _dims(spec["shape"]))
            for spec in specs
        }
        if len(raw) == 1:
            only = next(iter(raw.values()))
            raw = {"scores": Tensor("scores", only.datatype, only.shape)}
        if self.has_postprocess:
            self.outputs = {"predictions": Tensor("predictions", "BYTES", [-1]), **raw}
            self.default_outputs = ["predictions"]
        else:
            if len(raw) == 1:
                raw = {"predictions": Tensor("predictions", *_pair(raw["scores"]))}
            self.outputs = raw
            self.default_outputs = list(raw)

    def produced(self, predictions: Any, scores: Any) -> dict[str, Any]:
        """The output tensors of one prediction, by name (scores: None when not computed)."""
        named = named_results(predictions, "predictions", self.output_names)
        if scores is not None and self.has_postprocess:
            if len(self.output_names) > 1:
                decoded = set(self.decoded_outputs)
                named.update(
                    (f"{name}{SCORES_SUFFIX}", value)
                    for name, value in named_results(scores, "scores", self.output_names).items()
                    if name in decoded
                )
            else:
                named.update(named_results(scores, "scores", self.output_names))
        return named

    def learn_outputs(self, predictions: Any, scores: Any) -> None:
        """Take output datatypes and shapes from a real prediction (the warm-up's)."""
        for name, array in self.produced(predictions, scores).items():
            array = np.asarray(array)
            self.outputs[name] = Tensor(name, datatype_of(array.dtype), [-1, *array.shape[1:]])
        if not self.has_postprocess:
            self.default_outputs = list(
                named_results(predictions, "predictions", self.output_names)
            )

    # ------------------------------------------------------------------ inputs
    def coerce(self, raw: Any, *, strict: bool) -> tuple[Any, int]:
        """The canonical input and its row count; raises SchemaError on bad input."""
        if self.schema is None:  # a bundle saved without an input contract
            canonical = np.asarray(raw)
            if canonical.ndim == 0:
                raise SchemaError("Input must have a batch axis: send a list of samples.")
            return canonical, int(canonical.shape[0])
        canonical = self.schema.coerce(raw, strict=strict)
        return canonical, int(self.schema.n_rows(canonical))

    def raw_from_tensors(self, tensors: dict[str, np.ndarray]) -> Any:
        """Protocol input tensors as the raw form the input contract reads."""
        kind = (self.schema_dict or {}).get("kind", "array")
        if kind == "tabular":
            return {name: _column(name, array) for name, array in tensors.items()}
        if kind == "multi":
            raw: dict[str, Any] = {}
            for name, sub in self.schema_dict["inputs"].items():
                if sub.get("kind") == "tabular":
                    prefix = f"{name}."
                    raw[name] = {
                        key[len(prefix) :]: _column(key, array)
                        for key, array in tensors.items()
                        if key.startswith(prefix)
                    }
                elif name in tensors:
                    array = tensors[name]
                    if sub.get("kind") == "image" and array.dtype == object:
                        array = encoded_images(array.reshape(-1), name)
                    raw[name] = array
            known = {t.name for t in self.inputs}
            extra = sorted(set(tensors) - known)
            if extra:
                raise SchemaError(
                    f"Unknown input tensor(s) {', '.join(map(repr, extra))}; this model takes "
                    f"{', '.join(sorted(known))}."
                )
            return raw
        if len(tensors) != 1:
            raise SchemaError(
                f"Model {self.name!r} takes one input tensor ({self.inputs[0].name!r}) with the "
                f"batch axis first; the request has {len(tensors)}: "
                f"{', '.join(map(repr, sorted(tensors)))}."
            )
        ((name, array),) = tensors.items()
        if self.takes_images and array.dtype == object:
            return encoded_images(array.reshape(-1) if array.ndim == 2 else array, name)
        if array.ndim == 0:
            raise SchemaError(
                f"Input {name!r} has shape [], but model {self.name!r} takes a batch of "
                f"samples: shape {self.inputs[0].shape} with the batch axis first."
            )
        return array

    @property
    def takes_images(self) -> bool:
        """Whether the bundle reads encoded images (its contract records an image loader)."""
        return (self.schema_dict or {}).get("kind") == "image"

    def raw_from_instances(self, instances: list[Any]) -> Any:
        """``/predict`` instances as raw input: base64 images (or ``{"b64": ...}``) as bytes."""
        if self.takes_images and instances and all(_is_encoded(item) for item in instances):
            return encoded_images(instances, "instances")
        return instances

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "keras-bundle",
            "inputs": [tensor.to_dict() for tensor in self.inputs],
            "outputs": [tensor.to_dict() for tensor in self.outputs.values()],
        }

    def warm_up_input(self) -> Any:
        """One valid raw row made from the input contract (None if it cannot be made)."""
        if self.schema_dict is None:
            return None
        return _example_of(self.schema_dict)


def _pair(tensor: Tensor) -> tuple[str, list[int]]:
    return tensor.datatype, tensor.shape


def _dims(shape: list[int | None]) -> list[int]:
    return [-1 if dim is None else int(dim) for dim in shape]


def named_results(result: Any, default: str, names: list[str] | None = None) -> dict[str, Any]:
    """Outputs by name: a dict's keys, a list's output `names`, or `default` for one."""
    if isinstance(result, Mapping):
        return {str(key): value for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        if names is not None and len(names) == len(result):
            return dict(zip(names, result, strict=True))
        return {f"{default}_{i}": value for i, value in enumerate(result)}
    return {default: result}


def _column_datatype(column: Mapping[str, Any]) -> str:
    kind = column.get("kind", "any")
    if kind in _KIND_DATATYPES or not column.get("dtype"):
        return _KIND_DATATYPES.get(kind, "BYTES")
    try:
        return datatype_of(np.dtype(column["dtype"]))
    except TypeError:  # a pandas extension dtype: nullable ints and floats, booleans
        return {"integer": "INT64", "float": "FP64", "bool": "BOOL"}.get(kind, "BYTES")


def _input_tensors(schema: Mapping[str, Any] | None, model_inputs: list[dict]) -> list[Tensor]:
    if schema is None:
        spec = model_inputs[0]
        return [Tensor("input", datatype_of(spec["dtype"]), _dims(spec["shape"]))]
    kind = schema.get("kind")
    if kind == "tabular":
        return [Tensor(str(c["name"]), _column_datatype(c), [-1]) for c in schema["columns"]]
    if kind == "multi":
        tensors: list[Tensor] = []
        for name, sub in schema["inputs"].items():
            for tensor in _input_tensors(sub, model_inputs):
                tensor_name = name if sub.get("kind") != "tabular" else f"{name}.{tensor.name}"
                tensors.append(Tensor(tensor_name, tensor.datatype, tensor.shape))
        return tensors
    if kind == "image":  # encoded images, one per element (decoded arrays pass too)
        return [Tensor("input", "BYTES", [-1])]
    dtype = schema.get("dtype")
    datatype = datatype_of(np.dtype(dtype)) if dtype else "BYTES"
    return [Tensor("input", datatype, [-1, *_dims(list(schema.get("shape", [])))])]


def _is_encoded(item: Any) -> bool:
    return isinstance(item, (str, bytes)) or (
        isinstance(item, Mapping) and set(item) == {"b64"} and isinstance(item["b64"], str)
    )


def encoded_images(values: Any, name: str) -> list[bytes]:
    """Encoded images from a BYTES tensor or JSON: raw bytes as they are, text as base64.

    The binary extension and gRPC carry raw bytes; the protocol layer hands over those that
    happen to be valid UTF-8 as text, which is restored when it is not base64.
    """
    images = []
    for position, value in enumerate(values):
        if isinstance(value, Mapping):
            value = value.get("b64")
        if isinstance(value, bytes):
            images.append(value)
            continue
        if not isinstance(value, str):
            raise SchemaError(
                f"Input {name!r}, element {position}: an encoded image is bytes or base64 "
                f"text, not {type(value).__name__}.",
                column=name,
            )
        try:
            images.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            images.append(value.encode("utf-8", "surrogateescape"))
    return images


def _column(name: str, array: np.ndarray) -> np.ndarray:
    """One tabular column from a tensor of shape [n] or [n, 1]."""
    if array.ndim == 1:
        return array
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    raise SchemaError(
        f"Input tensor {name!r} has shape {list(array.shape)}, but a tabular bundle takes one "
        "tensor per column with shape [n] or [n, 1] (n rows).",
        column=name,
    )


def _example_value(column: Mapping[str, Any]) -> Any:
    for key in ("closed_categories", "dtype_categories", "categories"):
        if column.get(key):
            return column[key][0]
    kind = column.get("kind")
    if kind in ("float", "integer"):
        value = column.get("minimum")
        return 0 if value is None else value
    if kind == "bool":
        return False
    if kind == "string":
        return "a"
    if kind == "datetime":
        tz = "[" in str(column.get("dtype")) and "," in str(column.get("dtype"))
        return "2000-01-01T00:00:00+00:00" if tz else "2000-01-01T00:00:00"
    return None


def _example_of(schema: Mapping[str, Any]) -> Any:
    kind = schema.get("kind")
    if kind == "tabular":
        return [{column["name"]: _example_value(column) for column in schema["columns"]}]
    if kind == "multi":
        return {name: _example_of(sub) for name, sub in schema["inputs"].items()}
    shape = [1, *(dim or 1 for dim in schema.get("shape", []))]
    dtype = schema.get("dtype") or "float32"
    return np.zeros(shape, dtype=dtype)
