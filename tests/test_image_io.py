"""bundle/fileio/images.py: image sources, and decoding bit-identical to Keras' own loaders."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from bundle import ImageError, ImageInput, UsageError
from bundle.fileio import images as image_io

TF_SIZE = (24, 32)  # every test file has another aspect ratio: crop and pad both act


def _decode(path: Path, image: ImageInput) -> np.ndarray:
    return image_io.decode(image_io.ImageItem(0, path=str(path)), image)


def _folder_for(image_kinds: dict[str, Path], tmp_path: Path, color_mode: str) -> Path:
    """The test files image_dataset_from_directory reads in `color_mode` (TensorFlow's
    decoder cannot give BMP or GIF one channel, nor JPEG or GIF four)."""
    unreadable = {
        "rgb": (),
        "grayscale": ("bmp", "gif"),
        "rgba": ("jpeg", "gray_jpeg", "gif"),
    }[color_mode]
    folder = tmp_path / color_mode
    folder.mkdir()
    for kind, path in image_kinds.items():
        if kind not in unreadable:
            shutil.copy(path, folder / path.name)
    return folder


# ---------------------------------------------------------------------------- TensorFlow
@pytest.mark.slow
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale", "rgba"])
def test_tensorflow_decoder_is_bit_identical_to_image_dataset_from_directory(
    image_kinds, tmp_path, color_mode
):
    import keras

    folder = _folder_for(image_kinds, tmp_path, color_mode)
    compared = 0
    for interpolation in ("bilinear", "nearest", "bicubic", "area", "lanczos3", "mitchellcubic"):
        for resize in ("plain", "crop", "pad"):
            if (resize, interpolation) in (("crop", "mitchellcubic"), ("pad", "area")):
                continue  # Keras itself refuses these
            options = {
                "color_mode": color_mode,
                "image_size": TF_SIZE,
                "interpolation": interpolation,
                "crop_to_aspect_ratio": resize == "crop",
                "pad_to_aspect_ratio": resize == "pad",
            }
            dataset = keras.utils.image_dataset_from_directory(
                folder, labels=None, shuffle=False, batch_size=None, verbose=False, **options
            )
            image = ImageInput.from_directory_args(**options)
            for path, expected in zip(dataset.file_paths, dataset, strict=True):
                got = _decode(Path(path), image)
                assert got.dtype == expected.dtype, (path, options)
                np.testing.assert_array_equal(got, expected.numpy(), err_msg=f"{path} {options}")
                compared += 1
    assert compared >= 15 * 7  # every file kind of this colour mode, every setting


@pytest.mark.parametrize("resize", ["plain", "crop", "pad"])
def test_streamed_folders_decode_as_image_dataset_from_directory(image_kinds, tmp_path, resize):
    """The streaming path (a tf.data map of the same operations) gives the same pixels."""
    import keras

    folder = _folder_for(image_kinds, tmp_path, "rgb")
    options = {
        "image_size": TF_SIZE,
        "interpolation": "bicubic",
        "crop_to_aspect_ratio": resize == "crop",
        "pad_to_aspect_ratio": resize == "pad",
    }
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, shuffle=False, batch_size=None, verbose=False, **options
    )
    image = ImageInput.from_directory_args(**options)
    batches = list(image_io.iter_batches(image_io.open_images(folder), image, batch_size=4))
    assert [i for batch in batches for i in batch.ids] == dataset.file_paths
    streamed = np.concatenate([batch.images for batch in batches])
    np.testing.assert_array_equal(streamed, np.stack([x.numpy() for x in dataset]))


def test_tensorflow_decoder_reads_channels_first_as_keras_does(image_kinds, tmp_path):
    import keras

    folder = _folder_for(image_kinds, tmp_path, "rgb")
    for resize in ("plain", "crop", "pad"):
        options = {
            "image_size": TF_SIZE,
            "data_format": "channels_first",
            "crop_to_aspect_ratio": resize == "crop",
            "pad_to_aspect_ratio": resize == "pad",
        }
        dataset = keras.utils.image_dataset_from_directory(
            folder, labels=None, shuffle=False, batch_size=None, verbose=False, **options
        )
        image = ImageInput.from_directory_args(**options)
        assert image.shape == (3, *TF_SIZE)
        for path, expected in zip(dataset.file_paths, dataset, strict=True):
            np.testing.assert_array_equal(_decode(Path(path), image), expected.numpy())


def test_tensorflow_decoder_reads_16_bit_png_as_training_did(image_kinds):
    """decode_image keeps a 16-bit PNG's range (it takes the high byte): it is replayed."""
    import tensorflow as tf

    image = ImageInput(size=(29, 41))
    got = _decode(image_kinds["png16"], image)
    deep = tf.io.decode_png(image_kinds["png16"].read_bytes(), dtype=tf.uint16).numpy()
    np.testing.assert_array_equal(got, (deep >> 8).astype(np.float32))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": None}, "The TensorFlow decoder needs size"),
        ({"interpolation": "lanczos"}, "interpolation for decoder='tensorflow' must be one of"),
        ({"color_mode": "bgr"}, "color_mode must be one of 'rgb', 'grayscale', 'rgba'"),
        ({"crop_to_aspect_ratio": True, "pad_to_aspect_ratio": True}, "not both"),
        ({"crop_to_aspect_ratio": True, "interpolation": "gaussian"}, "smart_resize"),
        ({"antialias": True, "crop_to_aspect_ratio": True}, "does not antialias"),
        ({"bit_depth": 16}, "bit_depth=16 exists only for decoder='pil'"),
        ({"size": (0, 4)}, r"size must be \(height, width\)"),
        ({"offset": 1.0}, "offset needs scale"),
        ({"decoder": "pil", "pad_to_aspect_ratio": True}, "pad_to_aspect_ratio=True is a "),
    ],
)
def test_image_input_refuses_settings_no_loader_has(options, message):
    with pytest.raises(UsageError, match=message):
        ImageInput(**{"size": (8, 8), **options})


# ---------------------------------------------------------------------------- PIL
@pytest.mark.slow
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale", "rgba"])
def test_pil_decoder_is_bit_identical_to_load_img(image_kinds, color_mode):
    import keras
    from PIL import Image

    compared = 0
    for interpolation in ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos"):
        for keep in (False, True):
            for size in ((24, 32), None):
                options = {
                    "color_mode": color_mode,
                    "target_size": size,
                    "interpolation": interpolation,
                    "keep_aspect_ratio": keep,
                }
                image = ImageInput.from_load_img_args(**options)
                for kind, path in image_kinds.items():
                    if kind == "gray16":
                        continue  # refused: see below
                    expected = keras.utils.img_to_array(keras.utils.load_img(path, **options))
                    got = _decode(path, image)
                    assert got.dtype == expected.dtype == np.float32
                    np.testing.assert_array_equal(got, expected, err_msg=f"{kind} {options}")
                    # A PIL image the caller opened goes through the same steps.
                    opened = image_io.ImageItem(0, image=Image.open(path))
                    np.testing.assert_array_equal(image_io.decode(opened, image), expected)
                    compared += 1
    assert compared == 6 * 2 * 2 * 9


@pytest.mark.parametrize("color_mode", ["rgb", "rgba", "grayscale"])
def test_pil_decoder_refuses_16_bit_grayscale_for_an_8_bit_model(image_kinds, color_mode):
    """load_img clips a 16-bit grayscale PNG to 255 in RGB(A), and keeps values up to 65535
    in grayscale: either way not what an 8-bit model saw. The file is named."""
    image = ImageInput.from_load_img_args(color_mode=color_mode, target_size=(8, 8))
    path = image_kinds["gray16"]
    with pytest.raises(ImageError, match=f"Cannot read image {path}: it has") as caught:
        _decode(path, image)
    assert caught.value.source == str(path)
    expected = "clips its values at 255" if color_mode != "grayscale" else "training read 8-bit"
    assert expected in caught.value.reason
    assert "bit_depth=16" in str(caught.value) or "8-bit" in str(caught.value)


def test_pil_decoder_reads_16_bit_grayscale_when_training_did(image_kinds):
    import keras

    image = ImageInput.from_load_img_args(color_mode="grayscale", bit_depth=16)
    path = image_kinds["gray16"]
    got = _decode(path, image)
    expected = keras.utils.img_to_array(keras.utils.load_img(path, color_mode="grayscale"))
    np.testing.assert_array_equal(got, expected)
    assert got.max() > 255  # the 16-bit values, as load_img gave them to training


def test_rescaling_is_float32_as_keras_rescaling(image_kinds):
    import keras

    image = ImageInput(size=(8, 8), scale=1 / 127.5, offset=-1.0)
    got = _decode(image_kinds["jpeg"], image)
    raw = _decode(image_kinds["jpeg"], ImageInput(size=(8, 8)))
    expected = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(raw).numpy()
    np.testing.assert_array_equal(got, expected)
    assert image.value_range == (-1.0, 1.0)


def test_batches_kept_as_tensors_hold_the_same_bits(image_kinds, tmp_path):
    """For a TensorFlow model a stream's batches stay tensors (no copy to NumPy and back):
    the rescaling there is the same two float32 operations, so the pixels are the same."""
    folder = _folder_for(image_kinds, tmp_path, "rgb")
    image = ImageInput(size=(11, 7), scale=1 / 127.5, offset=-1.0, interpolation="bicubic")
    arrays, tensors = (
        list(image_io.iter_batches(image_io.open_images(folder), image, batch_size=3, tensors=t))
        for t in (False, True)
    )
    assert [b.ids for b in arrays] == [b.ids for b in tensors]
    assert all(isinstance(b.images, np.ndarray) for b in arrays)
    assert not any(isinstance(b.images, np.ndarray) for b in tensors)
    for array_batch, tensor_batch in zip(arrays, tensors, strict=True):
        np.testing.assert_array_equal(tensor_batch.images.numpy(), array_batch.images)


# ---------------------------------------------------------------------------- bad files
@pytest.fixture
def bad_files(tmp_path, image_kinds):
    good = image_kinds["jpeg"].read_bytes()
    files = {
        "truncated": tmp_path / "truncated.jpg",
        "text": tmp_path / "notes.png",
        "empty": tmp_path / "empty.jpg",
    }
    files["truncated"].write_bytes(good[: len(good) // 3])
    files["text"].write_text("this is not an image")
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize("decoder", ["tensorflow", "pil"])
def test_unreadable_files_are_named_with_their_reason(bad_files, decoder):
    image = ImageInput(size=(8, 8), decoder=decoder)
    reasons = {
        "truncated": "cannot decode it",
        "text": "TensorFlow cannot decode it" if decoder == "tensorflow" else "not an image PIL",
        "empty": "empty file (0 bytes)",
    }
    for kind, path in bad_files.items():
        with pytest.raises(ImageError, match=f"Cannot read image {path}: .*") as caught:
            _decode(path, image)
        assert reasons[kind] in caught.value.reason, (kind, caught.value.reason)
        assert "on_error='skip' or 'record'" in str(caught.value)
    with pytest.raises(ImageError, match="no such file"):
        _decode(bad_files["empty"].with_name("missing.png"), image)


def test_read_images_lists_every_unreadable_file(bad_files, image_kinds):
    sources = [str(image_kinds["jpeg"]), *map(str, bad_files.values())]
    with pytest.raises(ImageError, match=r"Cannot read 3 images:\n- .*truncated\.jpg") as caught:
        image_io.read_images(sources, ImageInput(size=(8, 8)))
    assert [source for source, _ in caught.value.failures] == sources[1:]


# ---------------------------------------------------------------------------- sources
def test_a_folder_is_listed_as_image_dataset_from_directory_lists_it(tmp_path, image_kinds):
    import keras

    for folder in ("b", "a", "a/x", "a-b"):
        (tmp_path / "root" / folder).mkdir(parents=True, exist_ok=True)
        for name in ("2.png", "10.PNG", "1.jpg", "skip.txt"):
            shutil.copy(image_kinds["png"], tmp_path / "root" / folder / name)
    dataset = keras.utils.image_dataset_from_directory(
        tmp_path / "root", labels=None, shuffle=False, image_size=(4, 4), verbose=False
    )
    source = image_io.open_images(tmp_path / "root")
    assert [item.path for item in source] == dataset.file_paths
    assert source.count() == 12 and source.id_name == "path"


def test_sources_of_every_kind(tmp_path, image_kinds):
    from PIL import Image

    data = image_kinds["png"].read_bytes()
    pictures = image_io.open_images([data, Image.open(image_kinds["png"])])
    assert pictures.id_name == "index"
    assert [item.name for item in pictures] == ["bytes[0]", "image[1]"]
    glob = image_io.open_images(str(image_kinds["png"].parent / "*_rgb.*"))
    assert [Path(item.path).name for item in glob] == [
        "a_rgb.jpg",
        "b_rgb.png",
        "i_rgb.bmp",
        "j_rgb.gif",
    ]
    with pytest.raises(UsageError, match="No file or directory at"):
        image_io.open_images(str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="Image 1 is a int"):
        image_io.open_images([data, 3])


def test_fsspec_urls_folders_and_globs_are_read():
    import fsspec

    fs = fsspec.filesystem("memory")
    rng = np.random.default_rng(0)
    from PIL import Image

    for name in ("a.png", "b.png", "c.txt"):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(buffer, "PNG")
        fs.pipe(f"/scans/{name}", buffer.getvalue())
    folder = image_io.open_images("memory://scans")
    assert [item.path for item in folder] == ["memory:///scans/a.png", "memory:///scans/b.png"]
    glob = image_io.open_images("memory://scans/*.png")
    image = ImageInput(size=(6, 6))
    local = image_io.read_images([fs.cat("/scans/a.png"), fs.cat("/scans/b.png")], image)
    np.testing.assert_array_equal(image_io.read_images("memory://scans/*.png", image), local)
    assert glob.count() == 2
    with pytest.raises(UsageError, match="No file or folder at memory://nowhere"):
        image_io.open_images("memory://nowhere")


# ---------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("decoder", ["tensorflow", "pil"])
def test_batches_keep_input_order_and_report_failures_in_place(bad_files, image_kinds, decoder):
    """A batch holds `batch_size` readable images, and the unreadable ones among them."""
    paths = [str(image_kinds["jpeg"]), str(bad_files["text"]), str(image_kinds["png"])] * 3
    source = image_io.open_images(paths)
    image = ImageInput(size=(8, 8), decoder=decoder)
    batches = list(image_io.iter_batches(source, image, batch_size=4, workers=3))
    assert [len(batch) for batch in batches] == [6, 3]
    assert [int(batch.ok.sum()) for batch in batches] == [4, 2]
    assert [item for batch in batches for item in batch.ids] == paths
    first = batches[0]
    assert first.ok.tolist() == [True, False, True, True, False, True]
    assert [index for index, _, _ in first.failures] == [1, 4]
    assert first.failures[0][1] == str(bad_files["text"])
    assert "cannot decode it" in first.failures[0][2] or "not an image" in first.failures[0][2]
    assert first.images.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(first.images[0], _decode(image_kinds["jpeg"], image))
    np.testing.assert_array_equal(first.images[1], _decode(image_kinds["png"], image))
    with pytest.raises(ImageError, match=r"notes\.png"):
        list(image_io.iter_batches(source, image, batch_size=4, on_error="raise"))


def test_memory_holds_a_bounded_window_of_images_whatever_the_count(image_kinds):
    """The decoder reads a bounded number of images ahead of what the caller has taken."""
    pulled = 0
    data = image_kinds["png"].read_bytes()

    def endless():
        nonlocal pulled
        for position in range(10**9):
            pulled += 1
            yield image_io.ImageItem(position, data=data)

    source = image_io.ImageSource("index", "endless", endless, lambda: 10**9)
    stream = image_io.iter_batches(source, ImageInput(size=(4, 4)), batch_size=16)
    ahead = []
    for taken, batch in enumerate(stream, 1):
        assert len(batch) == 16
        ahead.append(pulled - taken * 16)
        if taken == 40:
            break
    stream.close()
    # A generator chunk, tf.data's map buffer and one prefetched batch, never more:
    limit = image_io.GENERATOR_CHUNK + 3 * 16 + 2 * image_io.default_workers()
    assert max(ahead) <= limit, ahead
    assert max(ahead[20:]) <= max(ahead[:20]) + image_io.GENERATOR_CHUNK, ahead
