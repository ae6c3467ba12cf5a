"""The image contract: how training turned an image file into a tensor, recorded to replay it.

`ImageInput` records the loader training used and its settings: the decoder (TensorFlow's
``tf.io.decode_image`` + ``tf.image.resize``, as ``keras.utils.image_dataset_from_directory``
reads files, or PIL, as ``keras.utils.load_img`` does), the target size, the interpolation,
antialiasing, crop or pad to the aspect ratio, the colour mode, the data format, the bit
depth of the training files and an optional rescaling. `ImageSchema` is the input contract
of an image model: an `ArraySchema` (decoded arrays are accepted exactly as before) that
also reads image sources (paths, URLs, encoded bytes, PIL images) through the recorded
loader. Decoding itself lives in ``bundle.fileio.images``, which registers one reader per
decoder in `IMAGE_READERS`; this module only describes and checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from ..errors import ImageError, UsageError
from .arrays import ArraySchema
from .base import SCHEMA_READERS, _Checked
from .columns import _ARRAY_FIELDS, _check_fields
from .messages import _Problem

DECODERS = ("tensorflow", "pil")
# What each loader accepts, as Keras documents it.
TF_INTERPOLATIONS = (
    "bilinear",
    "nearest",
    "bicubic",
    "area",
    "lanczos3",
    "lanczos5",
    "gaussian",
    "mitchellcubic",
)
# Keras' smart_resize (crop_to_aspect_ratio) on TensorFlow supports fewer.
_CROP_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5")
PIL_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")
COLOR_MODES = {"rgb": 3, "grayscale": 1, "rgba": 4}
DATA_FORMATS = ("channels_last", "channels_first")

IMAGE_READERS: dict[str, Callable[[Any, ImageInput], np.ndarray]] = {}
"""Decoder name -> reader of image sources into one batch array (raises `ImageError`).

Filled by ``bundle.fileio.images`` when it is imported (``import bundle`` does)."""

__all__ = [
    "COLOR_MODES",
    "DECODERS",
    "IMAGE_READERS",
    "PIL_INTERPOLATIONS",
    "TF_INTERPOLATIONS",
    "ImageInput",
    "ImageSchema",
    "is_image_source",
]


@dataclass(frozen=True)
class ImageInput:
    """How training read an image file into a tensor; replayed exactly at prediction time.

    Args:
        size: ``(height, width)`` the images are resized to (``image_size`` of
            ``image_dataset_from_directory``, ``target_size`` of ``load_img``). Required
            for the TensorFlow decoder; None keeps PIL's decoded size.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (3, 1 or 4 channels).
        interpolation: the resize method, by the loader's own name (TensorFlow: bilinear,
            nearest, bicubic, area, lanczos3, lanczos5, gaussian, mitchellcubic; PIL:
            nearest, bilinear, bicubic, hamming, box, lanczos).
        decoder: ``"tensorflow"`` (``tf.io.decode_image`` and ``tf.image.resize``, as
            ``image_dataset_from_directory`` reads files) or ``"pil"`` (as ``load_img``).
        antialias: ``tf.image.resize(..., antialias=True)`` (TensorFlow decoder only;
            ``image_dataset_from_directory`` does not antialias).
        crop_to_aspect_ratio: centre-crop to the target aspect ratio before resizing
            (``keep_aspect_ratio`` of ``load_img``).
        pad_to_aspect_ratio: pad with zeros to the target aspect ratio (TensorFlow only).
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        bit_depth: bits per sample of the training files: 8, or 16 for 16-bit grayscale
            files read by PIL (``load_img`` keeps their values up to 65535).
        scale: multiply the loaded pixels by this (``1/255`` for ``ds.map(lambda x, y:
            (x / 255, y))``), in float32 as ``keras.layers.Rescaling`` does; None: as loaded.
        offset: added after `scale`.
        class_names: the training dataset's ``class_names``, kept for reference.

    Example:
        >>> ImageInput(size=(224, 224), color_mode="rgb", interpolation="bilinear")
        >>> ImageInput.from_dataset(train_ds)   # made by image_dataset_from_directory
        >>> ImageInput.from_load_img_args(target_size=(64, 64), color_mode="grayscale")
    """

    size: tuple[int, int] | None = None
    color_mode: str = "rgb"
    interpolation: str = "bilinear"
    decoder: str = "tensorflow"
    antialias: bool = False
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    data_format: str = "channels_last"
    bit_depth: int = 8
    scale: float | None = None
    offset: float = 0.0
    class_names: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if size is not None:
            size = tuple(size)
            if len(size) != 2 or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in size
            ):
                raise UsageError(
                    f"size must be (height, width) in pixels, two positive integers; got "
                    f"{self.size!r}."
                )
            object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        _one_of("decoder", self.decoder, DECODERS)
        _one_of("color_mode", self.color_mode, tuple(COLOR_MODES))
        _one_of("data_format", self.data_format, DATA_FORMATS)
        tensorflow = self.decoder == "tensorflow"
        methods = TF_INTERPOLATIONS if tensorflow else PIL_INTERPOLATIONS
        _one_of(f"interpolation for decoder={self.decoder!r}", self.interpolation, methods)
        if tensorflow and self.size is None:
            raise UsageError(
                "The TensorFlow decoder needs size=(height, width): image_dataset_from_directory "
                "resizes every image to image_size."
            )
        if tensorflow and self.crop_to_aspect_ratio and self.interpolation not in _CROP_METHODS:
            raise UsageError(
                f"crop_to_aspect_ratio=True resizes with Keras' smart_resize, which supports "
                f"{', '.join(_CROP_METHODS)}, not {self.interpolation!r}."
            )
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            raise UsageError("Pass crop_to_aspect_ratio or pad_to_aspect_ratio, not both.")
        if not tensorflow and (self.pad_to_aspect_ratio or self.antialias):
            option = "pad_to_aspect_ratio" if self.pad_to_aspect_ratio else "antialias"
            raise UsageError(
                f"{option}=True is a TensorFlow resize option; load_img (decoder='pil') has no "
                "such setting. Use decoder='tensorflow', or drop it."
            )
        if self.antialias and self.crop_to_aspect_ratio:
            raise UsageError(
                "antialias=True cannot be combined with crop_to_aspect_ratio=True: Keras' "
                "smart_resize, which crops, does not antialias."
            )
        if self.bit_depth not in (8, 16):
            raise UsageError(f"bit_depth must be 8 or 16; got {self.bit_depth!r}.")
        if self.bit_depth == 16 and (tensorflow or self.color_mode != "grayscale"):
            raise UsageError(
                "bit_depth=16 exists only for decoder='pil' with color_mode='grayscale': "
                "load_img keeps 16-bit grayscale values, while TensorFlow's decode_image and "
                "PIL's RGB conversion read 8 bits per sample."
            )
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float, np.number))
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                raise UsageError(f"{name} must be a finite number; got {value!r}.")
        if self.scale is None and self.offset:
            raise UsageError("offset needs scale (use scale=1.0 for an offset alone).")

    # ------------------------------------------------------------------ derived facts
    @property
    def channels(self) -> int:
        """1, 3 or 4, from the colour mode."""
        return COLOR_MODES[self.color_mode]

    @property
    def shape(self) -> tuple[int | None, ...]:
        """The per-image shape the loader produces (None: the file's own size)."""
        height, width = self.size if self.size is not None else (None, None)
        if self.data_format == "channels_first":
            return (self.channels, height, width)
        return (height, width, self.channels)

    @property
    def dtype(self) -> str:
        """The dtype of the loaded images, as training's loader produced them."""
        if self.scale is not None:
            return "float32"
        if self.decoder == "tensorflow" and self.interpolation == "nearest":
            return "uint8"  # tf.image.resize keeps the dtype for nearest-neighbour only
        return "float32"

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest value a loaded image can hold."""
        top = float(2**self.bit_depth - 1)
        if self.scale is None:
            return (0.0, top)
        ends = (self.offset, top * float(self.scale) + self.offset)
        return (min(ends), max(ends))

    @property
    def loader(self) -> str:
        """The Keras loader these settings replay, for messages."""
        return "image_dataset_from_directory" if self.decoder == "tensorflow" else "load_img"

    # ------------------------------------------------------------------ recording
    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON (``input_schema["image"]`` in the manifest)."""
        data = asdict(self)
        data["size"] = list(self.size) if self.size is not None else None
        data["class_names"] = list(self.class_names) if self.class_names is not None else None
        data["dtype"] = self.dtype
        data["value_range"] = list(self.value_range)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageInput:
        """Read settings written by `to_dict`; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        derived = {"dtype", "value_range"}
        if not isinstance(data, Mapping):
            raise ValueError("An image input must be a JSON object.")
        unknown = sorted(set(data) - known - derived)
        if unknown:
            raise ValueError(f"Unknown keys in an image input: {', '.join(unknown)}.")
        values = {key: value for key, value in data.items() if key in known}
        if values.get("size") is not None:
            values["size"] = tuple(values["size"])
        image = cls(**values)
        if "dtype" in data and data["dtype"] != image.dtype:
            raise ValueError(
                f"The image input records dtype {data['dtype']!r}, but its settings give "
                f"{image.dtype!r}."
            )
        return image

    @classmethod
    def from_directory_args(
        cls,
        directory: Any = None,
        *,
        color_mode: str = "rgb",
        image_size: int | Sequence[int] = (256, 256),
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
        pad_to_aspect_ratio: bool = False,
        data_format: str | None = None,
        class_names: Sequence[str] | None = None,
        scale: float | None = None,
        offset: float = 0.0,
        **ignored: Any,
    ) -> ImageInput:
        """The settings of an ``image_dataset_from_directory(...)`` call, from its arguments.

        Pass the same keyword arguments as to ``keras.utils.image_dataset_from_directory``
        (with Keras' defaults); arguments that do not change pixels (labels, batch_size,
        shuffle, seed, validation_split, ...) are ignored. `scale`/`offset` record a
        rescaling your pipeline applied after loading.
        """
        if ignored.get("format", "tf") != "tf":
            raise UsageError(
                "image_dataset_from_directory(format='grain') reads files with PIL and Keras' "
                "ops.image.resize, which keras-bundle does not replay; use format='tf'."
            )
        return cls(
            size=_pair(image_size),
            color_mode=color_mode,
            interpolation=str(interpolation).lower(),
            decoder="tensorflow",
            crop_to_aspect_ratio=bool(crop_to_aspect_ratio),
            pad_to_aspect_ratio=bool(pad_to_aspect_ratio),
            data_format=data_format or "channels_last",
            scale=scale,
            offset=offset,
            class_names=tuple(class_names) if class_names is not None else None,
        )

    @classmethod
    def from_load_img_args(
        cls,
        *,
        color_mode: str = "rgb",
        target_size: Sequence[int] | None = None,
        interpolation: str = "nearest",
        keep_aspect_ratio: bool = False,
        data_format: str | None = None,
        bit_depth: int = 8,
        scale: float | None = None,
        offset: float = 0.0,
    ) -> ImageInput:
        """The settings of ``keras.utils.load_img(path, ...)`` + ``img_to_array``.

        Same keyword arguments and defaults as ``load_img`` (note: nearest-neighbour
        resizing); `data_format` is ``img_to_array``'s.
        """
        return cls(
            size=_pair(target_size) if target_size is not None else None,
            color_mode=color_mode,
            interpolation=interpolation,
            decoder="pil",
            crop_to_aspect_ratio=bool(keep_aspect_ratio),
            data_format=data_format or "channels_last",
            bit_depth=bit_depth,
            scale=scale,
            offset=offset,
        )

    @classmethod
    def from_dataset(cls, dataset: Any) -> ImageInput:
        """The settings of a ``tf.data.Dataset`` made by ``image_dataset_from_directory``.

        The image size and channels come from the dataset's ``element_spec``; the decoder,
        the interpolation and the crop or pad step from the operations in its graph, which
        must hold exactly one ``DecodeImage`` and one resize. Anything else (a ``.map``
        that rescales or augments, a dataset made another way) is refused: record it with
        `from_directory_args` instead, which is always exact.
        """
        return _from_dataset(cls, dataset)

    def __str__(self) -> str:
        size = "as decoded" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        extras = [
            name
            for name in ("antialias", "crop_to_aspect_ratio", "pad_to_aspect_ratio")
            if getattr(self, name)
        ]
        low, high = self.value_range
        text = (
            f"{self.decoder} decoder ({self.loader}), {size}, {self.color_mode}, "
            f"{self.interpolation}{''.join(', ' + e for e in extras)}, {self.data_format}, "
            f"{self.dtype} in [{low:g}, {high:g}]"
        )
        if self.class_names:
            text += f", {len(self.class_names)} classes"
        return text


@dataclass(frozen=True)
class ImageSchema(ArraySchema):
    """The contract of an image model: arrays as `ArraySchema`, or images read as in training.

    Attributes:
        image: how training read its image files (`ImageInput`).
    """

    image: ImageInput | None = None
    kind: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.image, ImageInput):
            raise ValueError("An image schema needs an ImageInput.")
        problem = shape_problem(self.image, self.shape)
        if problem:
            raise UsageError(problem)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kind": self.kind, "image": self.image.to_dict()}

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> ImageSchema:
        _check_fields(
            d, {**_ARRAY_FIELDS, "image": (dict,)}, {"kind", "shape", "image"}, "an image schema"
        )
        values = {key: value for key, value in d.items() if key not in ("kind", "image")}
        return cls(
            **{**values, "shape": tuple(d["shape"]), "image": ImageInput.from_dict(d["image"])}
        )

    @classmethod
    def wrap(cls, array: ArraySchema, image: ImageInput) -> ImageSchema:
        """`array`'s contract, reading image sources with `image`."""
        values = {f.name: getattr(array, f.name) for f in fields(ArraySchema)}
        return cls(**values, image=image)

    def read(self, raw: Any) -> np.ndarray:
        """Decode image sources into one batch, as training's loader would.

        Raises:
            ImageError: a file cannot be read, naming it.
        """
        reader = IMAGE_READERS.get(self.image.decoder)
        if reader is None:  # pragma: no cover - `import bundle` registers the readers
            raise UsageError("Image decoding needs bundle.fileio.images: import bundle first.")
        return reader(raw, self.image)

    def coerce(self, raw: Any, *, strict: bool = False) -> Any:
        if is_image_source(raw):
            raw = self.read(raw)
        return super().coerce(raw, strict=strict)

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        if is_image_source(raw):
            try:
                raw = self.read(raw)
            except ImageError as exc:
                return _Checked(None, [_Problem(str(exc))])
        return super()._check(raw, strict, subject)

    def __str__(self) -> str:
        return super().__str__().replace("Array input", "Image input", 1) + f"\n{self.image}"


def shape_problem(image: ImageInput, shape: Sequence[int | None]) -> str | None:
    """Why images read with `image` cannot be the model input of `shape`, or None."""
    produced = image.shape
    fits = len(produced) == len(shape) and all(
        p is None or s is None or p == s for p, s in zip(produced, shape, strict=True)
    )
    if fits:
        return None
    return (
        f"The image input reads images of shape {_shape_text(produced)} ({image.color_mode}, "
        f"size={image.size}, {image.data_format}), but the model takes {_shape_text(shape)} "
        "per sample.\nRecord the size and colour mode training used: for "
        "image_dataset_from_directory, its image_size and color_mode."
    )


def is_image_source(raw: Any) -> bool:
    """Whether `raw` is one image source (path, URL, bytes, PIL image) or a sequence of them."""
    if _is_single_source(raw):
        return True
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.size == 0:
            return False
        if raw.dtype.kind in "SU":
            return True
        return raw.dtype.kind == "O" and all(_is_single_source(item) for item in raw)
    if type(raw).__name__ == "Series" and hasattr(raw, "to_numpy"):
        return raw.dtype.kind in "OU" and is_image_source(raw.to_numpy(dtype=object))
    if isinstance(raw, (list, tuple)) and raw:
        return all(_is_single_source(item) for item in raw)
    return False


def _is_single_source(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)) or is_pil_image(item)


def is_pil_image(item: Any) -> bool:
    """A PIL image, told apart without importing PIL."""
    return type(item).__module__.startswith("PIL.") and hasattr(item, "getbands")


def _one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size)
    return tuple(size)  # type: ignore[return-value]  # checked by ImageInput


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


# ---------------------------------------------------------------------------- from a dataset
# Resize operations in the graph of a map function -> the interpolation Keras passed.
_RESIZE_OPS = {
    "ResizeBilinear": "bilinear",
    "ResizeNearestNeighbor": "nearest",
    "ResizeBicubic": "bicubic",
    "ResizeArea": "area",
}
# ScaleAndTranslate (tf.image.resize's generic kernel) by kernel_type.
_KERNELS = {
    "lanczos3": "lanczos3",
    "lanczos5": "lanczos5",
    "gaussian": "gaussian",
    "mitchellcubic": "mitchellcubic",
    "triangle": "bilinear",
    "keyscubic": "bicubic",
}
_CHANNELS = {1: "grayscale", 3: "rgb", 4: "rgba"}


def _from_dataset(cls: type[ImageInput], dataset: Any) -> ImageInput:
    spec = getattr(dataset, "element_spec", None)
    if spec is None or not hasattr(dataset, "_as_serialized_graph"):
        raise UsageError(
            f"Expected a tf.data.Dataset made by image_dataset_from_directory; got "
            f"{type(dataset).__name__}. Pass ImageInput.from_directory_args(...) with the "
            "arguments of your call instead."
        )
    images = spec[0] if isinstance(spec, tuple) else spec
    shape = list(images.shape)
    if len(shape) == 3:  # batch_size=None: single images
        shape = [None, *shape]
    if len(shape) != 4:
        raise _unreadable_dataset(f"its images have shape {list(images.shape)}, not 4-D")
    functions = _mapped_functions(dataset)
    image_functions = [ops for ops in functions.values() if "DecodeImage" in _op_names(ops)]
    if len(image_functions) != 1:
        raise _unreadable_dataset(f"it decodes images in {len(image_functions)} map functions")
    ops = image_functions[0]
    names = _op_names(ops)
    resizes = [node for node in ops if node.op in _RESIZE_OPS or node.op == "ScaleAndTranslate"]
    if len(resizes) != 1 or "ReadFile" not in names:
        raise _unreadable_dataset(
            f"its image map function reads {'a file' if 'ReadFile' in names else 'no file'} "
            f"and resizes {len(resizes)} times, not once"
        )
    extra = names - _KNOWN_OPS
    if extra:
        raise _unreadable_dataset(
            "its image map function does more than image_dataset_from_directory's "
            f"(operations {', '.join(sorted(extra))})"
        )
    resize = resizes[0]
    if resize.op == "ScaleAndTranslate":
        kernel = resize.attr["kernel_type"].s.decode()
        interpolation = _KERNELS.get(kernel)
        if interpolation is None or bool(resize.attr["antialias"].b):
            raise _unreadable_dataset(f"its resize kernel {kernel!r} is not one Keras passes")
    else:
        interpolation = _RESIZE_OPS[resize.op]
    channels_first = "Transpose" in names
    height, width, channels = (shape[2], shape[3], shape[1]) if channels_first else shape[1:]
    declared = next(int(node.attr["channels"].i) for node in ops if node.op == "DecodeImage")
    if channels not in _CHANNELS or declared != channels or height is None or width is None:
        raise _unreadable_dataset(f"its images have shape {list(images.shape)}")
    return cls(
        size=(int(height), int(width)),
        color_mode=_CHANNELS[int(channels)],
        interpolation=interpolation,
        decoder="tensorflow",
        crop_to_aspect_ratio="StridedSlice" in names and "Pad" not in names,
        pad_to_aspect_ratio="Pad" in names,
        data_format="channels_first" if channels_first else "channels_last",
        class_names=tuple(getattr(dataset, "class_names", None) or ()) or None,
    )


def _op_names(ops: Sequence[Any]) -> set[str]:
    return {node.op for node in ops}


def _mapped_functions(dataset: Any) -> dict[str, list[Any]]:
    """The map functions that can change pixels: ``{name: nodes}``.

    Every function a map node of the dataset's graph applies, except Keras' label maps
    (a cast or one-hot applied straight to the labels' ``TensorSliceDataset``). A map the
    user added (``ds.map(lambda x, y: (x / 255, y))``) is kept, and makes the caller refuse.
    """
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())
    library = {
        function.signature.name: list(function.node_def) for function in graph.library.function
    }
    ops_by_name = {node.name: node.op for node in graph.node}
    mapped: dict[str, list[Any]] = {}
    for node in graph.node:
        if "Map" not in node.op or "f" not in node.attr:
            continue
        name = node.attr["f"].func.name
        ops = library.get(name, [])
        source = ops_by_name.get(node.input[0].split(":")[0].lstrip("^")) if node.input else None
        if source == "TensorSliceDataset" and _op_names(ops) <= _LABEL_OPS:
            continue
        if "DecodeImage" not in _op_names(ops):
            raise _unreadable_dataset(
                "a map step after image_dataset_from_directory changes its elements "
                f"(operations {', '.join(sorted(_op_names(ops) - {'Const', 'Identity'}))})"
            )
        mapped[name] = ops
    return mapped


_LABEL_OPS = {"Const", "Identity", "Cast", "ExpandDims", "OneHot"}


# Every operation image_dataset_from_directory's map function may hold (resize, crop, pad,
# transpose and their shape arithmetic). A rescale (Mul, RealDiv on the pixels) or an
# augmentation adds others and makes `from_dataset` refuse.
_KNOWN_OPS = {
    *_RESIZE_OPS,
    "ScaleAndTranslate",
    "DecodeImage",
    "ReadFile",
    "Const",
    "Identity",
    "ExpandDims",
    "Squeeze",
    "Shape",
    "StridedSlice",
    "Cast",
    "Maximum",
    "Minimum",
    "Pack",
    "Sub",
    "AddV2",
    "Mul",
    "RealDiv",
    "Floor",
    "Transpose",
    "Pad",
    "Reshape",
    "Unpack",
    "Range",
    "All",
    "Assert",
    "GreaterEqual",
    "Less",
    "NoOp",
}


def _unreadable_dataset(why: str) -> UsageError:
    return UsageError(
        f"Cannot read the image settings back from this dataset: {why}.\n"
        "Record them from the arguments of your image_dataset_from_directory call: "
        "image=bundle.ImageInput.from_directory_args(image_size=..., color_mode=..., "
        "interpolation=..., ...)."
    )


SCHEMA_READERS[ImageSchema.kind] = ImageSchema._read
