"""Image bundles end to end: the recorded contract, predict on image sources, streaming
folders and .npy files with bad files in each on_error mode, the command, a fresh process."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SEED, run_python

from bundle import (
    Bundle,
    BundleWarning,
    ImageError,
    ImageInput,
    InputSchema,
    SchemaError,
    UsageError,
)
from bundle.cli import main


def _training_pixels(folder: Path, **options) -> tuple[list[str], np.ndarray]:
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, shuffle=False, image_size=(16, 16), verbose=False, **options
    )
    return dataset.file_paths, np.concatenate([batch.numpy() for batch in dataset])


@pytest.fixture(scope="session")
def pets(pets_bundle, pets_folder):
    """The loaded pets bundle, the training files in order, and the model's scores on them."""
    path, model = pets_bundle
    files, pixels = _training_pixels(pets_folder)
    return Bundle.load(path), files, model.predict(pixels, verbose=0)


@pytest.fixture
def damaged_folder(tmp_path, pets_folder):
    """The pets folder plus a truncated JPEG, a text file named .png and an empty file."""
    folder = tmp_path / "scans"
    shutil.copytree(pets_folder, folder)
    good = (folder / "cat" / "01.jpg").read_bytes()
    (folder / "cat" / "05b.jpg").write_bytes(good[: len(good) // 3])
    (folder / "dog" / "03b.png").write_text("not an image at all")
    (folder / "dog" / "07b.jpg").write_bytes(b"")
    return folder


BAD = {"05b.jpg": "cannot decode it", "03b.png": "cannot decode it", "07b.jpg": "empty file"}


# ---------------------------------------------------------------------------- the contract
def test_the_dataset_settings_are_recorded_in_the_manifest(pets_bundle):
    path, _ = pets_bundle
    record = json.loads((path / "manifest.json").read_text())["input_schema"]
    assert record["kind"] == "image"
    assert record["shape"] == [16, 16, 3]
    assert record["image"] == {
        "size": [16, 16],
        "color_mode": "rgb",
        "interpolation": "bilinear",
        "decoder": "tensorflow",
        "antialias": False,
        "crop_to_aspect_ratio": False,
        "pad_to_aspect_ratio": False,
        "data_format": "channels_last",
        "bit_depth": 8,
        "scale": None,
        "offset": 0.0,
        "class_names": ["cat", "dog"],
        "dtype": "float32",
        "value_range": [0.0, 255.0],
    }
    schema = InputSchema.from_dict(record)
    assert schema.image == ImageInput.from_directory_args(image_size=(16, 16))
    assert "tensorflow decoder (image_dataset_from_directory), 16x16, rgb" in str(schema)
    assert json.loads((path / "manifest.json").read_text())["example"]["rows"] == 8


def test_from_dataset_reads_every_setting_and_refuses_what_it_cannot(pets_folder):
    import keras

    for options in (
        {"interpolation": "nearest", "crop_to_aspect_ratio": True},
        {"interpolation": "lanczos5", "pad_to_aspect_ratio": True, "color_mode": "rgba"},
        {"interpolation": "area", "color_mode": "grayscale", "data_format": "channels_first"},
        {"interpolation": "bicubic", "label_mode": "categorical", "batch_size": None},
    ):
        dataset = keras.utils.image_dataset_from_directory(
            pets_folder, image_size=(20, 12), verbose=False, **options
        )
        expected = ImageInput.from_directory_args(image_size=(20, 12), **options)
        assert ImageInput.from_dataset(dataset) == expected, options
    rescaled = dataset.map(lambda x, y: (x / 255, y))
    with pytest.raises(UsageError, match=r"changes its elements \(operations RealDiv\)"):
        ImageInput.from_dataset(rescaled)
    with pytest.raises(UsageError, match="from_directory_args"):
        Bundle(keras.Sequential([keras.Input((20, 12, 3)), keras.layers.Flatten()]), image=rescaled)


def test_an_image_input_that_does_not_fit_the_model_is_refused_at_save(image_parts):
    with pytest.raises(UsageError, match=r"reads images of shape \(8, 8, 3\) \(rgb.*\(8, 8, 1\)"):
        Bundle(image_parts, image=ImageInput(size=(8, 8)))
    bundle = Bundle(image_parts, image=ImageInput(size=(8, 8), color_mode="grayscale"))
    assert bundle.input_schema.image.channels == 1


def test_the_golden_v1_bundle_still_loads():
    loaded = Bundle.load(Path(__file__).parent / "data" / "golden-v1" / "1")
    assert loaded.input_schema.kind == "tabular"


# ---------------------------------------------------------------------------- predict
def test_predict_on_every_image_source_matches_training(pets):
    from PIL import Image

    loaded, files, expected = pets
    folder = str(Path(files[0]).parent.parent)
    np.testing.assert_allclose(loaded.predict(folder, postprocess=False), expected, atol=1e-6)
    np.testing.assert_allclose(loaded.predict(files, postprocess=False), expected, atol=1e-6)
    one = loaded.predict(files[3], postprocess=False)
    np.testing.assert_allclose(one, expected[3:4], atol=1e-6)
    encoded = [Path(f).read_bytes() for f in files[:4]]
    np.testing.assert_allclose(loaded.predict(encoded, postprocess=False), expected[:4], atol=1e-6)
    pictures = [Image.open(f) for f in files[4:6]]
    # A PIL image goes to TensorFlow's decoder as lossless PNG: exact for the PNG files.
    png = [i for i, f in enumerate(files) if f.endswith(".png")][:2]
    got = loaded.predict([Image.open(files[i]) for i in png], postprocess=False)
    np.testing.assert_allclose(got, expected[png], atol=1e-6)
    assert loaded.predict(pictures).shape == (2,)
    labels = loaded.predict(folder)
    assert labels.tolist() == np.array(["cat", "dog"])[expected.argmax(axis=1)].tolist()
    _, pixels = _training_pixels(Path(folder))
    np.testing.assert_allclose(loaded.predict(pixels, postprocess=False), expected, atol=1e-6)


def test_predict_raises_on_the_first_bad_file_naming_it(pets, damaged_folder):
    loaded, _, _ = pets
    with pytest.raises(ImageError, match=r"Cannot read image .*cat/05b.jpg: TensorFlow") as err:
        loaded.predict(damaged_folder)
    assert isinstance(err.value, SchemaError)
    assert err.value.source.endswith("05b.jpg")
    problems = loaded.validate([str(damaged_folder / "dog" / "07b.jpg")])
    assert len(problems) == 1 and "empty file (0 bytes)" in problems[0]


@pytest.mark.parametrize("on_error", ["skip", "record"])
def test_predict_skips_or_records_bad_files(pets, damaged_folder, on_error):
    loaded, files, expected = pets
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = loaded.predict(damaged_folder, on_error=on_error, postprocess=False)
    where = "are in the 'error' column" if on_error == "record" else "were skipped"
    assert [str(w.message).splitlines()[0] for w in caught if w.category is BundleWarning] == [
        f"3 image(s) could not be read; their reasons {where}:"
    ]
    good = frame[~frame["path"].map(lambda p: Path(p).name in BAD)]
    assert [Path(p).relative_to(damaged_folder) for p in good["path"]] == [
        Path(f).relative_to(Path(files[0]).parent.parent) for f in files
    ]
    np.testing.assert_allclose(good[["score_cat", "score_dog"]].to_numpy(), expected, atol=1e-6)
    if on_error == "skip":
        assert len(frame) == len(files) and "error" not in frame
        return
    assert len(frame) == len(files) + 3
    bad = frame[frame["path"].map(lambda p: Path(p).name in BAD)]
    for path, reason, score in zip(bad["path"], bad["error"], bad["score_cat"], strict=True):
        assert BAD[Path(path).name] in reason
        assert np.isnan(score)
    assert good["error"].isna().all()


# ---------------------------------------------------------------------------- files
@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_predict_file_scores_a_folder_with_bad_files(pets, damaged_folder, tmp_path, suffix):
    loaded, files, expected = pets
    out = tmp_path / f"scored.{suffix}"
    seen = []
    done = []
    rows = loaded.predict_file(
        damaged_folder,
        out,
        scores=True,
        batch_size=5,
        workers=2,
        on_unreadable=lambda name, reason: seen.append(name),
        progress=done.append,
    )
    assert rows == len(files) + 3 and sum(done) == rows
    assert sorted(Path(name).name for name in seen) == sorted(BAD)
    frame = pd.read_parquet(out) if suffix == "parquet" else pd.read_csv(out)
    assert list(frame.columns) == ["path", "prediction", "score_cat", "score_dog", "error"]
    good = frame[frame["error"].isna()]
    np.testing.assert_allclose(good[["score_cat", "score_dog"]], expected, atol=1e-6)
    assert good["prediction"].tolist() == np.array(["cat", "dog"])[expected.argmax(1)].tolist()
    assert frame["prediction"].isna().sum() == 3


def test_predict_file_of_only_bad_files_still_writes_typed_columns(pets, tmp_path, bad_file):
    loaded, _, _ = pets
    out = tmp_path / "none.parquet"
    with pytest.warns(BundleWarning, match="1 image"):
        assert loaded.predict_file([str(bad_file)], out) == 1
    import pyarrow.parquet as pq

    schema = pq.read_schema(out)
    assert {name: str(schema.field(name).type) for name in schema.names} == {
        "path": "string",
        "prediction": "string",
        "error": "string",
    }
    with pytest.raises(ImageError, match="empty file"):
        loaded.predict_file([str(bad_file)], tmp_path / "raise.parquet", on_error="raise")
    assert not (tmp_path / "raise.parquet").exists()


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "blank.png"
    path.write_bytes(b"")
    return path


def test_predict_batches_yields_frames_in_order(pets, damaged_folder):
    loaded, _, expected = pets
    frames = list(loaded.predict_batches(damaged_folder, batch_size=7, postprocess=False))
    assert [int(f["error"].isna().sum()) for f in frames] == [7, 7, 7, 3]
    frame = pd.concat(frames, ignore_index=True)
    assert len(frame) == 27 and frame["error"].notna().sum() == 3
    good = frame[frame["error"].isna()]
    np.testing.assert_allclose(good[["score_cat", "score_dog"]], expected, atol=1e-6)


def test_a_npy_file_is_memory_mapped_and_scored_in_batches(pets, tmp_path):
    loaded, files, expected = pets
    _, pixels = _training_pixels(Path(files[0]).parent.parent)
    np.save(tmp_path / "pixels.npy", pixels)
    scores = loaded.predict(tmp_path / "pixels.npy", postprocess=False, batch_size=5)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    frames = list(loaded.predict_batches(str(tmp_path / "pixels.npy"), batch_size=10))
    assert [f["index"].tolist() for f in frames] == [
        list(range(0, 10)),
        list(range(10, 20)),
        list(range(20, 24)),
    ]
    assert list(frames[0].columns) == ["index", "prediction"]
    out = tmp_path / "scored.jsonl"
    assert loaded.predict_file(tmp_path / "pixels.npy", out, scores=True) == 24
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[5]["index"] == 5
    assert rows[5]["score_cat"] == pytest.approx(float(expected[5, 0]), abs=1e-6)


def test_a_npy_file_scores_a_model_with_several_outputs(tmp_path):
    """Streams write one column per output, as predict_file does for tables."""
    import keras

    inputs = keras.Input((4,), name="x")
    model = keras.Model(
        inputs,
        {
            "low": keras.layers.Dense(2, name="low")(inputs),
            "high": keras.layers.Dense(1, name="high")(inputs),
        },
    )
    rows = np.random.default_rng(SEED).normal(size=(7, 4)).astype("float32")
    path = Bundle(model, input_example=rows, name="heads", version="1").save(tmp_path / "b")
    np.save(tmp_path / "rows.npy", rows)
    expected = model.predict(rows, verbose=0)
    loaded = Bundle.load(path)
    out = tmp_path / "scored.parquet"
    assert loaded.predict_file(tmp_path / "rows.npy", out, batch_size=3) == 7
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["index", "high", "low_0", "low_1"]  # Keras sorts dict outputs
    assert frame["index"].tolist() == list(range(7))
    np.testing.assert_allclose(frame[["low_0", "low_1"]], expected["low"], atol=1e-6)
    np.testing.assert_allclose(frame["high"], expected["high"][:, 0], atol=1e-6)


def test_on_error_must_be_known(pets):
    loaded, files, _ = pets
    with pytest.raises(UsageError, match="on_error must be one of 'raise', 'skip', 'record'"):
        loaded.predict(files, on_error="ignore")


@pytest.mark.slow
def test_a_large_npy_file_is_never_read_whole(tmp_path, image_bundle):
    """Peak memory does not grow with the file: scoring 160 MiB after 32 MiB adds far less
    than the difference (a file read whole, or its mapped pages kept, would add it)."""
    path, _ = image_bundle
    for name, mib in (("small", 32), ("big", 160)):
        rows = mib * 2**20 // 64
        array = np.lib.format.open_memmap(tmp_path / f"{name}.npy", "w+", np.uint8, (rows, 8, 8, 1))
        array[::1000] = 7
        array.flush()
        del array
    result = run_python(
        f"""
        import resource
        from bundle import Bundle
        loaded = Bundle.load({str(path)!r})
        for name in ("small", "big"):
            frames = loaded.predict_batches({str(tmp_path)!r} + f"/{{name}}.npy", batch_size=16384)
            rows = sum(len(frame) for frame in frames)
            print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    (small_rows, small_peak), (big_rows, big_peak) = (
        map(int, line.split()) for line in result.stdout.splitlines()
    )
    assert (small_rows, big_rows) == (32 * 2**14, 160 * 2**14)
    assert (big_peak - small_peak) * 1024 < 24 * 2**20, (small_peak, big_peak)


# ---------------------------------------------------------------------------- the command
def test_bundle_predict_scores_a_folder_and_counts_bad_files(
    pets_bundle, damaged_folder, tmp_path, capsys
):
    path, _ = pets_bundle
    out = tmp_path / "scored.parquet"
    code = main(["predict", str(path), str(damaged_folder), "-o", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"Wrote 27 prediction(s) of bundle 'pets' 1 to {out}" in captured.out
    assert "3 image(s) could not be read; their reasons are in the 'error' column:" in captured.err
    assert "05b.jpg: TensorFlow cannot decode it" in captured.err
    assert len(pd.read_parquet(out)) == 27
    code = main(
        [
            "predict",
            str(path),
            str(damaged_folder),
            "-o",
            str(tmp_path / "r.csv"),
            "--on-error",
            "raise",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "Error: Cannot read image " in captured.err and "05b.jpg" in captured.err
    assert not (tmp_path / "r.csv").exists()
    code = main(
        ["predict", str(path), str(tmp_path / "nowhere.png"), "-o", str(tmp_path / "n.csv")]
    )
    assert code == 1
    assert "No file or directory at" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fresh process
@pytest.mark.slow
def test_a_model_trained_from_a_folder_predicts_the_same_in_a_fresh_process(
    pets_bundle, pets_folder, tmp_path
):
    """The child has none of the training code: only the bundle and the folder."""
    path, model = pets_bundle
    files, pixels = _training_pixels(pets_folder)
    expected = model.predict(pixels, verbose=0)
    run_python(
        f"""
        import numpy as np
        from bundle import Bundle
        loaded = Bundle.load({str(path)!r})
        np.save({str(tmp_path / "scores.npy")!r}, loaded.predict({str(pets_folder)!r},
                postprocess=False))
        loaded.predict_file({str(pets_folder)!r}, {str(tmp_path / "out.parquet")!r})
        """
    )
    scores = np.load(tmp_path / "scores.npy")
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert frame["path"].tolist() == files
    assert frame["prediction"].tolist() == np.array(["cat", "dog"])[expected.argmax(1)].tolist()
    assert SEED == 0
