"""Image sources and their decoding, exactly as training's loader read them.

Sources (`open_images`): a directory (walked in the order ``image_dataset_from_directory``
lists it: folders sorted by path, files sorted by name, its five suffixes), a local glob,
an fsspec URL of a file, folder or glob (``s3://bucket/scans/*.jpg``), one file, encoded
bytes, a PIL image, or a list of any of these. Directories are streamed folder by folder:
memory holds one folder's file names, never the whole listing's images.

Decoding (`decode`) replays the recorded loader with its own implementation:

- ``decoder="tensorflow"``: the operations of ``image_dataset_from_directory``'s map function
  (``tf.io.decode_image``, then ``tf.image.resize``, Keras' ``smart_resize`` for a crop or
  ``tf.image.resize_with_pad``), traced once as a graph function like ``tf.data`` traces it;
- ``decoder="pil"``: ``keras.utils.load_img``'s steps (``PIL.Image.open``, the same mode
  conversions and ``Image.resize``), then ``img_to_array``.

`iter_batches` decodes on every core (a thread pool: PIL and TensorFlow release the GIL while
they decode) with a bounded window of images in flight, so the next batch decodes while the
model runs on this one, in input order. A file that cannot be read is reported with its
reason instead of stopping the stream.
"""

from __future__ import annotations

import glob as globbing
import io
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..contract.images import IMAGE_READERS, ImageInput, is_pil_image
from ..errors import ImageError, MissingDependencyError, SchemaError, UsageError, bullet_list

# image_dataset_from_directory's allowlist (keras.src.utils.image_dataset_utils).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# PIL modes deeper than 8 bits per sample: load_img keeps them for grayscale, and clips
# them to 255 when it converts to RGB or RGBA.
_DEEP_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_GLOB_CHARS = re.compile(r"[*?\[]")
GENERATOR_CHUNK = 64  # images handed to tf.data per call into Python
# Up to this many images (a request, a short list), TensorFlow's decoder runs op by op on
# threads: starting a tf.data pipeline (tracing its map function) takes longer.
EAGER_MAX_IMAGES = 64

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageBatch",
    "ImageItem",
    "ImageSource",
    "decode",
    "default_workers",
    "iter_batches",
    "open_images",
    "read_images",
]


# ---------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class ImageItem:
    """One image to read: a path or URL, encoded bytes, or a PIL image.

    Attributes:
        position: its place in the input, from 0.
        path: a local path or fsspec URL, when it is read from a file.
        data: encoded bytes (PNG, JPEG, ...), when given in memory.
        image: a PIL image, when given one.
    """

    position: int
    path: str | None = None
    data: bytes | None = None
    image: Any = None

    @property
    def id(self) -> str | int:
        """The path, or the position for an in-memory image."""
        return self.path if self.path is not None else self.position

    @property
    def name(self) -> str:
        """How messages name it: its path, ``bytes[3]`` or ``image[3]``."""
        if self.path is not None:
            return self.path
        return f"{'bytes' if self.data is not None else 'image'}[{self.position}]"


@dataclass
class ImageSource:
    """An ordered stream of images, read lazily.

    Attributes:
        id_name: the output column that identifies each image: ``"path"`` or ``"index"``.
        description: what was given, for messages.
    """

    id_name: str
    description: str
    _items: Callable[[], Iterator[ImageItem]]
    _count: Callable[[], int]
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ImageItem]:
        return self._items()

    known_count: int | None = None  # the count, when known without walking anything

    def count(self) -> int:
        """How many images the source holds (a directory is walked once more to count)."""
        return self._count()


def is_local_glob(text: str) -> bool:
    return bool(_GLOB_CHARS.search(text)) and not os.path.exists(text)


def open_images(raw: Any, **storage_options: Any) -> ImageSource:
    """The images in `raw`: a path, URL, glob, directory, bytes, PIL image, or a list of them.

    Raises:
        UsageError: nothing exists at a path, or a glob or directory holds no image.
    """
    if isinstance(raw, (str, os.PathLike)):
        return _path_source(os.fspath(raw), storage_options)
    if isinstance(raw, (bytes, bytearray, memoryview)) or is_pil_image(raw):
        raw = [raw]
    if hasattr(raw, "to_numpy") and not isinstance(raw, np.ndarray):
        raw = raw.to_numpy(dtype=object)
    items = [_item(i, value) for i, value in enumerate(raw)]
    id_name = "path" if items and all(item.path is not None for item in items) else "index"
    return ImageSource(
        id_name,
        f"{len(items):,} image(s)",
        lambda: iter(items),
        lambda: len(items),
        dict(storage_options),
        known_count=len(items),
    )


def _item(position: int, value: Any) -> ImageItem:
    if isinstance(value, (str, os.PathLike)):
        return ImageItem(position, path=os.fspath(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageItem(position, data=bytes(value))
    if is_pil_image(value):
        return ImageItem(position, image=value)
    raise UsageError(
        f"Image {position} is a {type(value).__name__}; an image is a path or URL, encoded "
        "bytes (PNG, JPEG, ...) or a PIL image."
    )


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file:")


def _local(path: str) -> str:
    """A local path from a ``file:`` URI (Spark writes ``file:/data/a%20b.jpg``)."""
    if not path.startswith("file:"):
        return path
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(path).path)


def _path_source(text: str, storage_options: dict[str, Any]) -> ImageSource:
    text = _local(text)
    if _is_url(text):
        return _url_source(text, storage_options)
    if os.path.isdir(text):
        return ImageSource(
            "path",
            f"directory {text}",
            lambda: (ImageItem(i, path=p) for i, p in enumerate(_walk(text))),
            lambda: sum(1 for _ in _walk(text)),
        )
    if os.path.exists(text):
        item = ImageItem(0, path=text)
        return ImageSource("path", text, lambda: iter([item]), lambda: 1, known_count=1)
    if is_local_glob(text):
        paths = sorted(p for p in globbing.glob(text, recursive=True) if os.path.isfile(p))
        if not paths:
            raise UsageError(f"No file matches {text}.")
        return _listed_source(paths, f"glob {text}", storage_options)
    raise UsageError(f"No file or directory at {text}.")


def _listed_source(paths: list[str], description: str, options: dict[str, Any]) -> ImageSource:
    return ImageSource(
        "path",
        description,
        lambda: (ImageItem(i, path=p) for i, p in enumerate(paths)),
        lambda: len(paths),
        dict(options),
        known_count=len(paths),
    )


def _url_source(url: str, storage_options: dict[str, Any]) -> ImageSource:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if _GLOB_CHARS.search(path):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
        what = f"glob {url}"
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(IMAGE_SUFFIXES)]
        what = f"folder {url}"
    elif fs.exists(path):
        found = [path]
        what = url
    else:
        raise UsageError(f"No file or folder at {url}.")
    if not found:
        raise UsageError(f"No image file in {what} (image suffixes: {', '.join(IMAGE_SUFFIXES)}).")
    return _listed_source([fs.unstrip_protocol(p) for p in sorted(found)], what, storage_options)


def _walk(root: str) -> Iterator[str]:
    """Image files under `root` in ``image_dataset_from_directory``'s order, one folder at a time.

    Keras sorts ``os.walk`` by folder path, then each folder's files by name, and keeps the
    allowlisted suffixes (case-insensitive); symbolic links to folders are not followed.
    """
    folders = sorted(dirpath for dirpath, _, _ in os.walk(root))
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                names = sorted(
                    entry.name
                    for entry in entries
                    if entry.name.lower().endswith(IMAGE_SUFFIXES)
                    and not entry.is_dir(follow_symlinks=False)
                )
        except OSError:  # removed while walking: nothing left to read there
            continue
        for name in names:
            yield os.path.join(folder, name)


# ---------------------------------------------------------------------------- decoding
class _Unreadable(Exception):
    """An image that cannot be read; its message is the reason, in a few words."""


def read_bytes(item: ImageItem, storage_options: dict[str, Any] | None = None) -> bytes:
    """The encoded bytes of a file or URL item."""
    if item.data is not None:
        return item.data
    assert item.path is not None
    try:
        if _is_url(item.path):
            import fsspec

            with fsspec.open(item.path, "rb", **(storage_options or {})) as handle:
                return handle.read()
        with open(_local(item.path), "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise _Unreadable("no such file") from exc
    except IsADirectoryError as exc:
        raise _Unreadable("it is a directory") from exc
    except OSError as exc:
        raise _Unreadable(f"cannot read it ({exc.strerror or exc})") from exc


def decode(
    item: ImageItem, image: ImageInput, storage_options: dict[str, Any] | None = None
) -> np.ndarray:
    """One image as training's loader produced it (per-image array, channels as recorded).

    Raises:
        ImageError: it cannot be read, naming it.
    """
    try:
        return _decode(item, image, storage_options)
    except _Unreadable as exc:
        raise _image_error([(item.name, str(exc))], image) from None


def _decode(
    item: ImageItem, image: ImageInput, storage_options: dict[str, Any] | None
) -> np.ndarray:
    if item.image is not None:
        pixels = _pil_pipeline(item.image, image) if image.decoder == "pil" else None
        if pixels is None:
            pixels = _tf_decode(_png_of(item.image), image)
    else:
        data = read_bytes(item, storage_options)
        if not data:
            raise _Unreadable("empty file (0 bytes)")
        if image.decoder == "tensorflow":
            pixels = _tf_decode(data, image)
        else:
            pixels = _pil_decode(data, image)
    return _rescaled(pixels, image)


def _rescaled(pixels: np.ndarray, image: ImageInput) -> np.ndarray:
    """The recorded rescaling, in float32 as ``keras.layers.Rescaling`` computes it."""
    if image.scale is None:
        return pixels
    return pixels.astype(np.float32) * np.float32(image.scale) + np.float32(image.offset)


def _rescaled_tensor(tf: Any, pixels: Any, image: ImageInput) -> Any:
    """`_rescaled` on a tensor: the same two float32 operations, each rounded (eagerly, op by
    op, so no fused multiply-add), giving the same bits."""
    if image.scale is None:
        return pixels
    scaled = tf.multiply(tf.cast(pixels, tf.float32), tf.constant(image.scale, tf.float32))
    return tf.add(scaled, tf.constant(image.offset, tf.float32))


# ------------------------------------------------------------------ TensorFlow
def _tf_decode(data: bytes, image: ImageInput) -> np.ndarray:
    """``image_dataset_from_directory``'s map function on one image's bytes, eagerly.

    Op by op gives ``tf.data``'s results bit for bit: a ``tf.function`` does not, because
    Grappler rewrites the float32 arithmetic of ``resize_with_pad``.
    """
    import tensorflow as tf

    try:
        return _tf_pixels(tf, data, image).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        raise _Unreadable(f"TensorFlow cannot decode it: {_tf_reason(exc)}") from exc


def _tf_pixels(tf: Any, data: Any, image: ImageInput) -> Any:
    """The operations of Keras' ``_load_image_tf`` after ``read_file`` (eager or in tf.data)."""
    height, width = image.size  # type: ignore[misc]  # required for this decoder
    pixels = tf.io.decode_image(data, channels=image.channels, expand_animations=False)
    if image.crop_to_aspect_ratio:
        pixels = _centre_crop(tf, pixels, height, width)
        pixels = tf.image.resize(pixels, (height, width), method=image.interpolation)
    elif image.pad_to_aspect_ratio:
        pixels = tf.image.resize_with_pad(
            pixels, height, width, method=image.interpolation, antialias=image.antialias
        )
    else:
        pixels = tf.image.resize(
            pixels, (height, width), method=image.interpolation, antialias=image.antialias
        )
    if image.data_format == "channels_first":
        pixels = tf.transpose(pixels, (2, 0, 1))
    return pixels


def _centre_crop(tf: Any, pixels: Any, target_height: int, target_width: int) -> Any:
    """Keras' ``smart_resize`` crop, with its float32 arithmetic on TensorFlow tensors.

    As ``image_dataset_from_directory`` computes it inside ``tf.data``, where the image
    shape is a tensor (Keras' eager shortcut for known shapes divides in float64 instead).
    """
    shape = tf.shape(pixels)
    height, width = shape[0], shape[1]
    crop_height = tf.cast(tf.cast(width * target_height, "float32") / target_width, "int32")
    crop_height = tf.maximum(tf.minimum(height, crop_height), 1)
    crop_width = tf.cast(tf.cast(height * target_width, "float32") / target_height, "int32")
    crop_width = tf.maximum(tf.minimum(width, crop_width), 1)
    top = tf.cast(tf.cast(height - crop_height, "float32") / 2, "int32")
    left = tf.cast(tf.cast(width - crop_width, "float32") / 2, "int32")
    return pixels[top : top + crop_height, left : left + crop_width, :]


def _tf_reason(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\].*", "", text)
    return text.strip().splitlines()[0].strip().rstrip(".") if text.strip() else type(exc).__name__


def _png_of(picture: Any) -> bytes:
    """A PIL image as lossless PNG bytes, for TensorFlow's decoder to read as a file."""
    if picture.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        raise _Unreadable(
            f"a PIL image in mode {picture.mode} cannot go through TensorFlow's decoder "
            "losslessly; pass the file's path or bytes"
        )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------ PIL
def _pil() -> Any:
    try:
        import PIL.Image
    except ImportError as exc:
        raise MissingDependencyError(
            "This bundle reads images with PIL, as keras.utils.load_img did in training, and "
            "Pillow is not installed. Install it with: pip install 'keras-bundle[images]'",
            package="pillow",
            extra="images",
        ) from exc
    return PIL.Image


def _pil_decode(data: bytes, image: ImageInput) -> np.ndarray:
    Image = _pil()
    try:
        picture = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError as exc:
        raise _Unreadable("not an image PIL can identify") from exc
    return _pil_pipeline(picture, image)


def _pil_pipeline(picture: Any, image: ImageInput) -> np.ndarray:
    """``load_img``'s steps after opening, then ``img_to_array``."""
    from keras.utils import img_to_array

    mode = picture.mode
    if mode in _DEEP_MODES:
        if image.color_mode != "grayscale" or mode == "F":
            raise _Unreadable(
                f"it has more than 8 bits per sample (PIL mode {mode}), and load_img's "
                f"conversion to {image.color_mode.upper()} clips its values at 255"
            )
        if image.bit_depth == 8:
            raise _Unreadable(
                f"it has 16 bits per sample (PIL mode {mode}), but training read 8-bit "
                "images: load_img keeps values up to 65535 where the model saw at most 255"
            )
    try:
        if image.color_mode == "grayscale":
            if mode not in ("L", "I;16", "I"):
                picture = picture.convert("L")
        elif image.color_mode == "rgba":
            if mode != "RGBA":
                picture = picture.convert("RGBA")
        elif mode != "RGB":
            picture = picture.convert("RGB")
        if image.size is not None:
            picture = _pil_resize(picture, image)
        return img_to_array(picture, data_format=image.data_format, dtype="float32")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for corrupt data
        raise _Unreadable(
            f"PIL cannot decode it: {str(exc).strip() or type(exc).__name__}"
        ) from exc


def _pil_resize(picture: Any, image: ImageInput) -> Any:
    Image = _pil()
    height, width = image.size  # type: ignore[misc]
    if picture.size == (width, height):
        return picture
    # load_img's names for PIL's filters (keras.src.utils.image_utils).
    resample = getattr(Image.Resampling, image.interpolation.upper())
    if not image.crop_to_aspect_ratio:
        return picture.resize((width, height), resample)
    # load_img's keep_aspect_ratio: the largest centred crop of the target's aspect ratio.
    source_width, source_height = picture.size
    crop_height = min(source_height, (source_width * height) // width)
    crop_width = min(source_width, (source_height * width) // height)
    top = (source_height - crop_height) // 2
    left = (source_width - crop_width) // 2
    box = [left, top, left + crop_width, top + crop_height]
    return picture.resize((width, height), resample, box=box)


# ---------------------------------------------------------------------------- streaming
@dataclass
class ImageBatch:
    """One batch of a stream: every item's id, the images that were read, the failures.

    Attributes:
        ids: the id of each item of the batch (paths or positions), in input order.
        images: the decoded images of the items that were read, stacked, in order: an
            ndarray, or a ``tf.Tensor`` from ``iter_batches(..., tensors=True)``.
        ok: per item, whether it was read (``images`` holds ``ok.sum()`` images).
        failures: ``(index in the batch, name, reason)`` for each item that was not.
    """

    ids: list[Any]
    images: Any  # an ndarray (a tf.Tensor when asked for), None when no image was read
    ok: np.ndarray
    failures: list[tuple[int, str, str]]

    def __len__(self) -> int:
        return len(self.ids)


def default_workers() -> int:
    """Decoding threads: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def iter_batches(
    source: ImageSource,
    image: ImageInput,
    *,
    batch_size: int,
    on_error: str = "record",
    workers: int | None = None,
    tensors: bool = False,
) -> Iterator[ImageBatch]:
    """Decode `source` in batches of `batch_size` readable images, in order, on every core.

    A batch also lists the unreadable images among them (in `failures`), in their place.

    While the caller works on a batch, the next images decode in the background: TensorFlow's
    decoder runs in a ``tf.data`` parallel map (one batch prefetched), PIL's on `workers`
    threads with at most two batches in flight. Memory holds a bounded number of decoded
    images, whatever the source's size.

    Args:
        on_error: ``"raise"`` stops at the first image that cannot be read with an
            `ImageError` naming it; otherwise failures are reported in each batch.
        tensors: with TensorFlow's decoder and more than a few images, each batch's
            images stay a ``tf.Tensor`` (for a TensorFlow model: copying a batch to NumPy
            and back into a tensor took more time than the model).

    Raises:
        ImageError: with ``on_error="raise"``, for the first unreadable image.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be a positive number of images; got {batch_size}.")
    known = source.known_count
    if image.decoder == "tensorflow" and (known is None or known > EAGER_MAX_IMAGES):
        yield from _tf_batches(source, image, batch_size, on_error, workers, tensors)
    else:
        yield from _threaded_batches(source, image, batch_size, workers, on_error)


def _threaded_batches(
    source: ImageSource,
    image: ImageInput,
    batch_size: int,
    workers: int | None,
    on_error: str = "record",
) -> Iterator[ImageBatch]:
    """Decoding on a pool of Python threads (PIL releases the GIL while it decodes)."""
    options = source.storage_options

    def work(item: ImageItem) -> np.ndarray | str:
        try:
            return _decode(item, image, options)
        except _Unreadable as exc:
            return str(exc)

    results = _ordered_map(work, source, workers or default_workers(), window=2 * batch_size)
    pending: list[tuple[ImageItem, np.ndarray | str]] = []
    readable = 0
    try:
        for pair in results:
            item, outcome = pair
            if isinstance(outcome, str) and on_error == "raise":
                raise _image_error([(item.name, outcome)], image)
            pending.append(pair)
            readable += not isinstance(outcome, str)
            if readable == batch_size:
                yield _batch(pending, image)
                pending, readable = [], 0
        if pending:
            yield _batch(pending, image)
    finally:
        results.close()  # stop the decoding threads now, not whenever this is collected


def _tf_batches(
    source: ImageSource,
    image: ImageInput,
    batch_size: int,
    on_error: str,
    workers: int | None,
    tensors: bool = False,
) -> Iterator[ImageBatch]:
    """TensorFlow's decoding inside ``tf.data``, as ``image_dataset_from_directory`` runs it.

    A parallel map decodes on TensorFlow's threads (no Python, no GIL), in input order,
    reading local files with ``tf.io.read_file``; other images come in as bytes from a
    generator. An image that fails is dropped by ``ignore_errors`` and noticed as a gap in
    the sequence numbers; decoding it again eagerly gives the reason. At most
    ``workers`` images (default: one more than the cores) decode at once, and one batch
    waits ahead of the caller.
    """
    import tensorflow as tf

    options = source.storage_options
    sent: deque[ImageItem] = deque()  # handed to tf.data, not yet seen in a batch

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Chunks, unbatched inside tf.data: one call into Python per GENERATOR_CHUNK images,
        # not per image (each call holds the GIL the model's thread also wants).
        sequences, paths, datas = [], [], []
        for sequence, item in enumerate(source):
            sent.append(item)
            path, data = "", b""
            if item.path is not None and not _is_url(item.path):
                path = _local(item.path)
            else:
                try:
                    if item.data is not None:
                        data = item.data
                    elif item.image is not None:
                        data = _png_of(item.image)
                    else:
                        data = read_bytes(item, options)
                except _Unreadable:
                    pass  # fails in the map; decoding it again says why
            sequences.append(sequence)
            paths.append(path)
            datas.append(data)
            if len(sequences) == GENERATOR_CHUNK:
                yield _chunk(sequences, paths, datas)
                sequences, paths, datas = [], [], []
        if sequences:
            yield _chunk(sequences, paths, datas)

    def load(sequence: Any, path: Any, data: Any) -> tuple[Any, Any]:
        content = tf.cond(tf.strings.length(path) > 0, lambda: tf.io.read_file(path), lambda: data)
        return sequence, _tf_pixels(tf, content, image)

    signature = (
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([None], tf.string),
    )
    # One decode more than there are cores: a decode waiting on its file does not idle a core.
    parallel = workers or default_workers() + 1
    options = tf.data.Options()
    # tf.data's autotuning, with the model running beside the pipeline, at times fell into
    # decoding on one core for a whole run (half the images/s, measured in
    # benchmarks/images_bench.py); fixed parallelism and buffers never did.
    options.autotune.enabled = False
    dataset = (
        tf.data.Dataset.from_generator(generate, output_signature=signature)
        .unbatch()
        .map(load, num_parallel_calls=parallel, deterministic=True)
        .ignore_errors()
        .batch(batch_size)
        .prefetch(1)
        .with_options(options)
    )
    seen = 0  # sequence number of the next item to account for
    for sequences, pixels in dataset:
        got = sequences.numpy()
        decoded = (
            _rescaled_tensor(tf, pixels, image) if tensors else _rescaled(pixels.numpy(), image)
        )
        items = [sent.popleft() for _ in range(int(got[-1]) + 1 - seen)]
        ok = np.zeros(len(items), dtype=bool)
        ok[got - seen] = True
        seen = int(got[-1]) + 1
        yield _tf_batch(items, decoded, ok, image, options, on_error)
    rest = list(sent)
    if rest:
        yield _tf_batch(rest, None, np.zeros(len(rest), dtype=bool), image, options, on_error)


def _chunk(sequences: list[int], paths: list[str], datas: list[bytes]) -> tuple:
    return (
        np.asarray(sequences, dtype=np.int64),
        np.asarray(paths, dtype=object),
        np.asarray(datas, dtype=object),
    )


def _tf_batch(
    items: list[ImageItem],
    decoded: np.ndarray | None,
    ok: np.ndarray,
    image: ImageInput,
    options: dict[str, Any],
    on_error: str,
) -> ImageBatch:
    failures = []
    for index in np.flatnonzero(~ok):
        item = items[index]
        try:
            _decode(item, image, options)
            reason = "TensorFlow failed to decode it in tf.data"  # pragma: no cover
        except _Unreadable as exc:
            reason = str(exc)
        if on_error == "raise":
            raise _image_error([(item.name, reason)], image)
        failures.append((int(index), item.name, reason))
    return ImageBatch([item.id for item in items], decoded, ok, failures)


def _batch(pairs: list[tuple[ImageItem, np.ndarray | str]], image: ImageInput) -> ImageBatch:
    ids = [item.id for item, _ in pairs]
    ok = np.array([not isinstance(outcome, str) for _, outcome in pairs], dtype=bool)
    failures = [
        (i, item.name, outcome)
        for i, (item, outcome) in enumerate(pairs)
        if isinstance(outcome, str)
    ]
    arrays = [(item, outcome) for item, outcome in pairs if not isinstance(outcome, str)]
    return ImageBatch(ids, _stack(arrays, image) if arrays else None, ok, failures)


def _stack(pairs: Sequence[tuple[ImageItem, np.ndarray]], image: ImageInput) -> np.ndarray:
    shapes = {array.shape for _, array in pairs}
    if len(shapes) > 1:
        first, other = pairs[0], next(p for p in pairs if p[1].shape != pairs[0][1].shape)
        raise SchemaError(
            f"Images of different sizes cannot form one batch: {first[0].name} is "
            f"{first[1].shape} and {other[0].name} is {other[1].shape} after loading.\n"
            "Record the size training resized to (ImageInput(size=(height, width))), or pass "
            "images of one size."
        )
    return np.stack([array for _, array in pairs])


def _ordered_map(
    function: Callable[[ImageItem], Any], items: Iterable[ImageItem], workers: int, *, window: int
) -> Iterator[tuple[ImageItem, Any]]:
    """``(item, function(item))`` in input order, at most `window` items in flight."""
    pending: deque[tuple[ImageItem, Future[Any]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bundle-decode")
    try:
        for item in items:
            pending.append((item, pool.submit(function, item)))
            if len(pending) >= window:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
    finally:
        # A caller that stops early (an error, a closed generator) does not wait for the
        # images still queued: they are cancelled, and the running ones finish on their own.
        pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------- in memory
def read_images(raw: Any, image: ImageInput) -> np.ndarray:
    """All images of `raw` decoded into one batch (the contract's reader for `ImageSchema`).

    Raises:
        ImageError: listing every image that cannot be read.
    """
    source = open_images(raw)
    failures: list[tuple[str, str]] = []
    arrays: list[tuple[ImageItem, np.ndarray]] = []
    workers = default_workers()
    items = list(source)
    if len(items) == 1:  # one image (a request): no thread hand-off
        item = items[0]
        try:
            arrays.append((item, _decode(item, image, source.storage_options)))
        except _Unreadable as exc:
            failures.append((item.name, str(exc)))
    else:
        for batch in _threaded_batches(source, image, max(len(items), 1), workers):
            failures += [(name, reason) for _, name, reason in batch.failures]
            if batch.images is not None:
                kept = [item for item, good in zip(items, batch.ok, strict=True) if good]
                arrays += list(zip(kept, batch.images, strict=True))
    if failures:
        raise _image_error(failures, image)
    if not arrays:
        raise UsageError("No image to read.")
    return _stack(arrays, image)


def _image_error(failures: Sequence[tuple[str, str]], image: ImageInput) -> ImageError:
    source, reason = failures[0]
    if len(failures) == 1:
        head = f"Cannot read image {source}: {reason}."
    else:
        head = f"Cannot read {len(failures):,} images:\n" + bullet_list(
            f"{name}: {why}" for name, why in failures
        )
    remedy = _remedy(reason, image)
    return ImageError(
        f"{head}\n{remedy}",
        source=source,
        reason=reason,
        failures=list(failures),
        problems=[f"{name}: {why}" for name, why in failures],
    )


def _remedy(reason: str, image: ImageInput) -> str:
    if "bits per sample" in reason:
        return (
            f"The bundle replays {image.loader} as training ran it; convert such files to "
            "8-bit first, or record the depth training used (ImageInput(bit_depth=16))."
            if "16 bits" in reason
            else f"Convert such files to 8-bit {image.color_mode.upper()} first."
        )
    return (
        "Fix or remove the file; to score the others, pass on_error='skip' or 'record' "
        "(the default of predict_file and `bundle predict`)."
    )


IMAGE_READERS["tensorflow"] = read_images
IMAGE_READERS["pil"] = read_images
