"""Shared fixtures: small real datasets, real trained Keras models, real saved bundles.

Everything expensive is session-scoped: a model is trained once and its bundle saved once,
then every test reads it. Tests that change a bundle copy it first (`bundle_copy`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import pyarrow.parquet  # noqa: F401  (before TensorFlow: see bundle.model.import_keras)
import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# In CI, property tests draw the same examples every run: a failure there is reproducible,
# never a coin toss. Locally they explore new examples each time.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
SEED = 0


def run_python(code: str, *, cwd: Path | None = None, check: bool = True, timeout: int = 300):
    """Run `code` in a fresh Python process (none of the test's imports) and return it.

    The child sees only what an installed keras-bundle user sees: tests/ is not importable.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"child process failed with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def model_signing(*args: object) -> subprocess.CompletedProcess:
    """Run the OpenSSF ``model_signing`` command (the real package) with `args`."""
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


class _Planted:
    """Unpickling this creates a file: the side effect a refusal must prevent."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(version_dir, marker):
    """Swap the postprocess step of a copy of `tabular_bundle` for a pickle that touches
    `marker`, recomputing the manifest's hashes as an attacker with write access would:
    integrity still passes. Returns the planted file's name."""
    from bundle.format.integrity import hash_file

    target = "steps/000-post-labelencoder.joblib"
    (version_dir / target).write_bytes(pickle.dumps(_Planted(str(marker))))
    manifest = json.loads((version_dir / "manifest.json").read_text())
    record = manifest["postprocess"][0]
    del manifest["files"][record["file"]]
    (version_dir / record["file"]).unlink()
    record.update(file=target, serializer="joblib", executes_code=True, imports=["builtins.open"])
    manifest["files"][target] = {
        "sha256": hash_file(version_dir / target),
        "size": (version_dir / target).stat().st_size,
    }
    (version_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def model_signing_key(verb: str, directory: Path, key: Path, *extra: object, signature=None):
    """``model_signing sign|verify key DIRECTORY --signature DIRECTORY/model.sig`` with the
    private key (sign) or the public key (verify)."""
    flag = "--private_key" if verb == "sign" else "--public_key"
    signature = signature if signature is not None else Path(directory) / "model.sig"
    return model_signing(verb, "key", directory, "--signature", signature, flag, key, *extra)


def ec_key_pair(folder: Path, name: str):
    """A new EC P-256 key, written as ``<name>.pem`` (PKCS8) and ``<name>.pub``:
    (key, private path, public path)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, private, public


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_tabular_frame(n: int, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """Four numeric columns (one with NaN), two string columns, a 3-class string target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype("float64"),
            "income": rng.lognormal(10, 1, n),
            "score": rng.normal(0, 1, n),
            "visits": rng.poisson(3, n).astype("int64"),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    logits = frame["score"].to_numpy() + (frame["plan"] == "pro").to_numpy() * 1.5
    target = np.where(logits > 1, "churn", np.where(logits > -0.5, "stay", "upgrade"))
    return frame, target


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained Dense(1) over 2 inputs: for tests of storage, not of predictions."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    return model


@pytest.fixture(scope="session")
def tabular_data():
    return make_tabular_frame(400)


@pytest.fixture(scope="session")
def tabular_parts(tabular_data):
    """A fitted ColumnTransformer, LabelEncoder, and a trained softmax model."""
    import keras
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

    frame, target = tabular_data
    keras.utils.set_random_seed(SEED)
    preprocess = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                ["age", "income", "score", "visits"],
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["plan", "region"],
            ),
        ]
    )
    features = preprocess.fit_transform(frame)
    labels = LabelEncoder().fit(target)
    model = keras.Sequential(
        [
            keras.Input((features.shape[1],)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", loss="categorical_crossentropy")
    model.fit(features, keras.utils.to_categorical(labels.transform(target)), epochs=3, verbose=0)
    return preprocess, labels, model


@pytest.fixture(scope="session")
def tabular_bundle(tmp_path_factory, tabular_data, tabular_parts):
    """A saved tabular bundle: (version directory, Bundle that saved it)."""
    from bundle import Bundle

    frame, _ = tabular_data
    preprocess, labels, model = tabular_parts
    root = tmp_path_factory.mktemp("tabular") / "churn"
    bundle = Bundle(
        model,
        preprocess=preprocess,
        postprocess=labels,
        input_example=frame.iloc[:100],
        name="churn",
        version="1.0.0",
        metadata={"auc": 0.91},
    )
    return bundle.save(root), bundle


@pytest.fixture(scope="session")
def image_data():
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    labels = (images.reshape(64, -1).mean(axis=1) > 127).astype("int64")
    return images, labels


@pytest.fixture(scope="session")
def image_parts(image_data):
    """A small conv net trained on 8x8 grayscale uint8 images (no preprocessing step)."""
    import keras

    images, labels = image_data
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", loss="sparse_categorical_crossentropy")
    model.fit(images.astype("float32"), labels, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory, image_data, image_parts):
    from bundle import Bundle

    images, _ = image_data
    root = tmp_path_factory.mktemp("image") / "digits"
    bundle = Bundle(image_parts, input_example=images[:16], name="digits", version="3")
    return bundle.save(root), bundle


@pytest.fixture
def bundle_copy(tmp_path):
    """Copy a saved version directory into this test's tmp dir, to modify it freely."""

    def copy(version_dir: Path) -> Path:
        target = tmp_path / "copy" / version_dir.name
        shutil.copytree(version_dir, target)
        return target

    return copy


def rehash(version_dir: Path, manifest: dict | None = None) -> dict:
    """Rewrite a version's manifest with every file's hash and size recomputed, as an
    attacker with write access to the store would after planting something."""
    version_dir = Path(version_dir)
    path = version_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if manifest is None else manifest
    files = {}
    for file in sorted(version_dir.rglob("*")):
        relative = file.relative_to(version_dir).as_posix()
        if file.is_file() and not file.is_symlink() and relative != "manifest.json":
            data = file.read_bytes()
            files[relative] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest["files"] = files
    path.write_text(json.dumps(manifest))
    return manifest


def install_distribution(target: Path, name: str, files: dict[str, str]) -> Path:
    """pip-install a wheel holding `files` ({"pkg/mod.py": source}) into `target`.

    A real installed distribution (dist-info with a RECORD written by pip), for tests of
    what by-reference objects may import. Returns `target`, to put on sys.path.
    """
    wheel = target.parent / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, text in contents.items():
            data = text.encode()
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{member},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return target


# ---------------------------------------------------------------------------- image files
def _gradient(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """A smooth image with noise: resizing it exercises interpolation, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 255 // width + c * 60 + (y * 3) % 50) % 256 for c in range(channels)]
    noisy = np.stack(planes, -1) + rng.integers(0, 30, (height, width, channels))
    return noisy.clip(0, 255).astype(np.uint8)


def write_image_kinds(folder: Path, seed: int = SEED) -> dict[str, Path]:
    """One file of each kind training folders hold: JPEG, PNG (8 and 16 bit), grayscale,
    RGBA, palette, BMP and GIF, each of another size and aspect ratio."""
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "jpeg": folder / "a_rgb.jpg",
        "png": folder / "b_rgb.png",
        "gray_png": folder / "c_gray.png",
        "gray_jpeg": folder / "d_gray.jpg",
        "rgba": folder / "e_rgba.png",
        "palette": folder / "f_palette.png",
        "png16": folder / "g_rgb16.png",
        "gray16": folder / "h_gray16.png",
        "bmp": folder / "i_rgb.bmp",
        "gif": folder / "j_rgb.gif",
    }
    Image.fromarray(_gradient(rng, 50, 70, 3)).save(files["jpeg"], quality=85)
    Image.fromarray(_gradient(rng, 61, 43, 3)).save(files["png"])
    Image.fromarray(_gradient(rng, 40, 40, 1)[..., 0]).save(files["gray_png"])
    Image.fromarray(_gradient(rng, 33, 57, 1)[..., 0]).save(files["gray_jpeg"], quality=90)
    Image.fromarray(_gradient(rng, 45, 30, 4)).save(files["rgba"])
    palette = Image.fromarray(_gradient(rng, 37, 52, 3)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    palette.save(files["palette"])
    deep = _gradient(rng, 29, 41, 3).astype(np.uint16) * 257 + rng.integers(0, 200, (29, 41, 3))
    files["png16"].write_bytes(tf.io.encode_png(tf.constant(deep.astype(np.uint16))).numpy())
    gray = _gradient(rng, 29, 41, 1).astype(np.uint16) * 257
    files["gray16"].write_bytes(tf.io.encode_png(tf.constant(gray)).numpy())
    Image.fromarray(_gradient(rng, 30, 20, 3)).save(files["bmp"])
    Image.fromarray(_gradient(rng, 30, 20, 3)).save(files["gif"])
    return files


@pytest.fixture(scope="session")
def image_kinds(tmp_path_factory) -> dict[str, Path]:
    """{kind: path} of one image file of each kind (see `write_image_kinds`)."""
    return write_image_kinds(tmp_path_factory.mktemp("kinds"))


@pytest.fixture(scope="session")
def pets_folder(tmp_path_factory) -> Path:
    """A training folder of two classes, 12 JPEG and PNG files of assorted sizes each."""
    from PIL import Image

    rng = np.random.default_rng(SEED)
    root = tmp_path_factory.mktemp("pets") / "train"
    for label, shift in (("cat", 0), ("dog", 90)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            pixels = (_gradient(rng, 30 + i, 40 - i, 3).astype(int) + shift) % 256
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(pixels.astype(np.uint8)).save(root / label / f"{i:02d}.{suffix}")
    return root


@pytest.fixture(scope="session")
def pets_bundle(tmp_path_factory, pets_folder):
    """A conv net trained on `pets_folder` read by image_dataset_from_directory, saved with
    image=<that dataset> and a LabelEncoder of its class names: (version dir, model)."""
    import keras
    from sklearn.preprocessing import LabelEncoder

    from bundle import Bundle

    keras.utils.set_random_seed(SEED)
    dataset = keras.utils.image_dataset_from_directory(
        pets_folder, image_size=(16, 16), batch_size=8, seed=SEED, verbose=False
    )
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", loss="sparse_categorical_crossentropy")
    model.fit(dataset, epochs=2, verbose=0, shuffle=False)  # the dataset shuffles itself
    labels = LabelEncoder().fit(dataset.class_names)
    root = tmp_path_factory.mktemp("pets-models") / "pets"
    saved = Bundle(model, image=dataset, postprocess=labels, name="pets", version="1").save(root)
    return saved, model
