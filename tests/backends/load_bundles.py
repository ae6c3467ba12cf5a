"""Load bundles saved under any backend and predict, in a fresh process.

Usage: python load_bundles.py OUT ROOT [ROOT ...]. Nothing of the training scripts is
imported here: each bundle comes back from its files alone. Writes OUT.npz with the scores
and labels of every kind under every ROOT (keyed ``<saved backend>/<kind>/...``) and
OUT.json with what happened: the backend Keras picked, the inference function's class,
refusals (their type and message), float16 predictions against float32, whether
TensorFlow was imported, and on JAX the compilations made by batches of varying sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from models import KINDS, flat, labels_of, test_inputs

from bundle import Bundle, BundleError


def predict_all(root: Path, results: dict, info: dict) -> None:
    saved = json.loads((root / "saved.json").read_text())["backend"]
    for kind in (*KINDS, "native"):
        key = f"{saved}/{kind}"
        try:
            bundle = Bundle.load(root / kind, trusted=True)
        except BundleError as exc:
            info["refused"][key] = {"type": type(exc).__name__, "message": str(exc)}
            continue
        test = test_inputs(kind)
        scores = flat(bundle.predict(test, postprocess=False))
        labels = labels_of(bundle, test, scores)
        results[f"{key}/scores"] = scores
        results[f"{key}/labels"] = np.asarray(labels).astype(str)
        info["functions"][key] = type(bundle._get_engine().function()).__name__
        info["manifest_backend"][key] = bundle.manifest.backend
        info["verify"][key] = bundle.verify().ok
        if kind in ("conv", "heads"):  # a float16 copy of the model, on this backend too
            half = bundle.predict(test, postprocess=False, precision="float16")
            flat_half = flat(half)
            info["float16"][key] = {
                "dtype": str(flat_half.dtype),
                "max_abs": float(np.abs(flat_half - scores).max()),
                "function": type(bundle._get_engine().function("float16")).__name__,
            }


def buckets(root: Path, info: dict) -> None:
    """Batches of varying sizes through the JAX function: compilations and exactness."""
    bundle = Bundle.load(root / "conv")
    function = bundle._get_engine().function()
    images = np.random.default_rng(3).integers(0, 256, (2 * function.max_rows + 5, 8, 8, 3))
    images = images.astype(np.uint8)
    sizes = [1, 3, 4, 5, 17, len(images)]
    worst = 0.0
    for size in sizes:
        batch = images[:size]
        expected = bundle.model.predict(batch.astype("float32"), verbose=0, batch_size=256)
        worst = max(worst, float(np.abs(function(batch) - expected).max()))
    function(images[:2].astype("float32"))  # the model's own dtype: its own compilations
    info["jax"] = {
        "max_rows": function.max_rows,
        "sizes": sizes,
        "compiled": [[list(dtypes), rows] for dtypes, rows in function.compiled],
        "max_abs_vs_keras": worst,
    }


def main() -> None:
    out = Path(sys.argv[1])
    results: dict[str, np.ndarray] = {}
    info: dict = {
        "refused": {},
        "functions": {},
        "manifest_backend": {},
        "verify": {},
        "float16": {},
    }
    for root in map(Path, sys.argv[2:]):
        predict_all(root, results, info)
    import keras  # imported by Bundle.load, on the backend it chose

    info["backend"] = keras.backend.backend()
    if info["backend"] == "jax":
        own = next(Path(r) for r in sys.argv[2:] if "jax" in Path(r).name)
        buckets(own, info)
    info["tensorflow_imported"] = "tensorflow" in sys.modules
    np.savez(out.with_suffix(".npz"), **results)
    out.with_suffix(".json").write_text(json.dumps(info, default=str))


if __name__ == "__main__":
    main()
