"""Inference-only bundles: ``save(..., include_optimizer=False)`` leaves the optimizer state out.

The default keeps it, so a trusted load can go on training where it stopped; `inspect`
reports the weights and the optimizer state either way. Shown on MobileNetV3Small
(``weights=None``: nothing is downloaded) at its smallest input size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_python

from bundle import Bundle

BUNDLE = shutil.which("bundle", path=os.path.dirname(sys.executable))
ATOL = 1e-6


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV3Small trained one step with Adam, saved with and without its state."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10, include_preprocessing=True
    )
    model.compile("adam", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.fit(images, np.arange(4), epochs=1, batch_size=4, verbose=0)
    root = tmp_path_factory.mktemp("mobilenet")
    full = Bundle(model, input_example=images, name="mnv3", version="1").save(
        root / "full",
        verify=False,  # proven by the light one: the same model
    )
    light = Bundle(model, input_example=images, name="mnv3", version="1").save(
        root / "light", include_optimizer=False
    )
    return model, images, full, light


@pytest.mark.slow
def test_inference_only_bundle_is_smaller_predicts_the_same_and_trains_on(mobilenet, tmp_path):
    """By default the optimizer comes back with its state (one step taken); an
    inference-only bundle comes back compiled with a fresh optimizer, and trains on."""
    model, images, full, light = mobilenet
    full_size = (full / "model.keras").stat().st_size
    light_size = (light / "model.keras").stat().st_size
    manifest = json.loads((light / "manifest.json").read_text())["model"]
    weights, state = manifest["weights_bytes"], manifest["optimizer_bytes"]
    assert manifest["includes_optimizer"] is False
    assert json.loads((full / "manifest.json").read_text())["model"]["includes_optimizer"]
    # Adam keeps two moments per trainable weight: the state is about twice the weights.
    assert 1.5 * weights < state < 2.5 * weights
    assert light_size < 0.45 * full_size
    assert light_size < weights * 1.2 and full_size > (weights + state) * 0.9
    np.save(tmp_path / "images.npy", images)
    result = run_python(
        f"""
        import numpy as np, warnings
        from bundle import Bundle
        images = np.load({str(tmp_path / "images.npy")!r})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no optimizer warning when the state was left out
            light = Bundle.load({str(light)!r}, trusted=True)
        full = Bundle.load({str(full)!r}, trusted=True)
        np.save({str(tmp_path / "light.npy")!r}, light.predict(images))
        np.save({str(tmp_path / "full.npy")!r}, full.predict(images))
        print(int(full.model.optimizer.iterations), int(light.model.optimizer.iterations))
        light.model.fit(images, np.arange(4), epochs=1, batch_size=4, verbose=0)
        print(int(light.model.optimizer.iterations))
        """
    )
    assert result.stdout.split() == ["1", "0", "1"]
    expected = model.predict(images, verbose=0)
    for name in ("light", "full"):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), expected, rtol=0, atol=ATOL)


@pytest.mark.skipif(BUNDLE is None, reason="the `bundle` script is not installed")
def test_inspect_reports_weights_and_optimizer_state(mobilenet):
    _, _, full, light = mobilenet

    def inspect(path, *flags):
        env = {**os.environ}
        env.pop("PYTHONPATH", None)
        return subprocess.run(
            [BUNDLE, "inspect", str(path), *flags],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        ).stdout

    text_full, text_light = inspect(full), inspect(light)
    assert "on disk: weights" in text_full and "+ optimizer state" in text_full
    assert "include_optimizer=False) leaves it out" in text_full
    assert "left out: inference-only" in text_light
    facts = json.loads(inspect(light, "--json"))["model"]
    assert facts["includes_optimizer"] is False
    assert facts["size"] == (light / "model.keras").stat().st_size
    assert facts["optimizer_bytes"] > facts["weights_bytes"]
