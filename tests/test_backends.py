"""Keras 3 backends: bundles saved and served under JAX and PyTorch as well as TensorFlow.

Keras picks its backend once, when first imported, so every backend runs in its own child
process: tests/backends/save_bundles.py trains and saves one bundle per model kind (dense
tabular with scikit-learn steps, conv net on uint8 images, LSTM, multi-input, two outputs
as a dict with a label encoder on one, a custom layer from ``__main__``, and a layer
calling its backend's library directly), and tests/backends/load_bundles.py loads them in
a fresh process and predicts. Children on JAX and PyTorch run with TensorFlow hidden
(tests/backends/hide/sitecustomize.py: not importable, not in ``importlib.metadata``), as
on a machine with ``keras-bundle[jax]`` and no TensorFlow. PyTorch tests carry the
``torch`` marker: ``make test`` installs PyTorch's CPU build and runs them, elsewhere they
are skipped where torch is not installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parent / "backends"
HIDE = SCRIPTS / "hide"
KINDS = ("tabular", "conv", "lstm", "multi", "heads", "custom")
SAME_BACKEND_ATOL = 1e-6
CROSS_BACKEND_ATOL = 1e-5
VERSIONS = {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
HAS_TORCH = importlib.util.find_spec("torch") is not None
torch_only = [
    pytest.mark.torch,
    pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (make test installs it)"),
]
BACKENDS = ["tensorflow", "jax", pytest.param("torch", marks=torch_only)]
INSTALLED = ["tensorflow", "jax", *(["torch"] if HAS_TORCH else [])]


def child_env(backend: str | None, keras_home: Path, *, hide_tensorflow: bool) -> dict:
    """The environment of a child process: Keras' backend, and TensorFlow hidden or not."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    env.pop("KERAS_BACKEND", None)
    env.pop("PYTHONPATH", None)
    env.pop("KERAS_BUNDLE_HIDE", None)
    # A keras.json naming TensorFlow, as Keras writes on its first import on any machine.
    env["KERAS_HOME"] = str(keras_home)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    if hide_tensorflow:
        env["PYTHONPATH"] = str(HIDE)
        env["KERAS_BUNDLE_HIDE"] = "tensorflow"
    return env


def run(args: list[str], env: dict, *, check: bool = True, timeout: int = 600):
    result = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:2])} failed with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("keras-home")
    (home / "keras.json").write_text(json.dumps({"backend": "tensorflow", "floatx": "float32"}))
    return home


@pytest.fixture(scope="module")
def saved(tmp_path_factory, keras_home):
    """backend -> the root its bundles were saved under (each saved once, on first use)."""
    roots: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in roots:
            root = tmp_path_factory.mktemp("saved") / backend
            env = child_env(backend, keras_home, hide_tensorflow=backend != "tensorflow")
            run([str(SCRIPTS / "save_bundles.py"), str(root)], env)
            roots[backend] = root
        return roots[backend]

    return get


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, keras_home, saved):
    """backend -> (predictions, info) of a fresh process on it that loaded every saved root."""
    results: dict[str, tuple] = {}

    def get(backend: str) -> tuple[dict, dict]:
        if backend not in results:
            out = tmp_path_factory.mktemp("loaded") / backend
            roots = [str(saved(name)) for name in INSTALLED]
            env = child_env(backend, keras_home, hide_tensorflow=backend != "tensorflow")
            run([str(SCRIPTS / "load_bundles.py"), str(out), *roots], env)
            with np.load(out.with_suffix(".npz")) as arrays:
                predictions = {name: arrays[name] for name in arrays.files}
            results[backend] = predictions, json.loads(out.with_suffix(".json").read_text())
        return results[backend]

    return get


def expected_of(saved, backend: str) -> dict[str, np.ndarray]:
    with np.load(saved(backend) / "expected.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# --------------------------------------------------------------------------- saving
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_manifest_records_the_backend_and_its_version(saved, backend):
    root = saved(backend)
    for kind in KINDS:
        manifest = json.loads((root / kind / "1" / "manifest.json").read_text())
        assert manifest["model"]["backend"] == {
            "name": backend,
            "version": importlib.metadata.version(VERSIONS[backend]),
        }
    info = json.loads((root / "saved.json").read_text())
    assert info == {"backend": backend, "tensorflow_imported": backend == "tensorflow"}
    card = (root / "tabular" / "1" / "README.md").read_text()
    assert f"saved on Keras' `{backend}` backend" in card


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_compiled_path_equals_keras_predict_on_every_kind(saved, backend):
    expected = expected_of(saved, backend)
    for kind in (*KINDS, "native"):
        difference = max_difference(expected[f"{kind}/scores"], expected[f"{kind}/keras"])
        assert difference <= SAME_BACKEND_ATOL, (kind, difference)


# --------------------------------------------------------------------------- same backend
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fresh_process_on_the_same_backend_predicts_within_1e_6(saved, loaded, backend):
    predictions, info = loaded(backend)
    expected = expected_of(saved, backend)
    for kind in (*KINDS, "native"):
        key = f"{backend}/{kind}"
        assert max_difference(predictions[f"{key}/scores"], expected[f"{kind}/scores"]) <= (
            SAME_BACKEND_ATOL
        ), kind
        np.testing.assert_array_equal(predictions[f"{key}/labels"], expected[f"{kind}/labels"])
        assert info["verify"][key] is True
    assert info["backend"] == backend
    names = {"tensorflow": "TensorFlowInference", "jax": "JaxInference", "torch": "TorchInference"}
    assert set(info["functions"].values()) == {names[backend]}
    for kind in ("conv", "heads"):  # reduced precision runs on every backend, float32 out
        half = info["float16"][f"{backend}/{kind}"]
        assert half["dtype"] == "float32" and half["function"] == names[backend], half
        assert 0 < half["max_abs"] <= 1e-2, (kind, half)
    assert info["tensorflow_imported"] is (backend == "tensorflow")


# --------------------------------------------------------------------------- across backends
CROSS = [
    ("tensorflow", "jax"),
    ("jax", "tensorflow"),
    pytest.param("tensorflow", "torch", marks=torch_only),
    pytest.param("torch", "tensorflow", marks=torch_only),
    pytest.param("jax", "torch", marks=torch_only),
    pytest.param("torch", "jax", marks=torch_only),
]


@pytest.mark.parametrize(("saved_on", "loaded_on"), CROSS)
def test_across_backends_labels_are_identical_and_scores_within_1e_5(
    saved, loaded, saved_on, loaded_on
):
    predictions, info = loaded(loaded_on)
    expected = expected_of(saved, saved_on)
    differences = {}
    for kind in KINDS:
        key = f"{saved_on}/{kind}"
        differences[kind] = max_difference(predictions[f"{key}/scores"], expected[f"{kind}/scores"])
        np.testing.assert_array_equal(predictions[f"{key}/labels"], expected[f"{kind}/labels"])
        assert info["manifest_backend"][key]["name"] == saved_on
        # The stored example replays within the manifest's tolerance on the other backend.
        assert info["verify"][key] is True
    print(f"max |score difference| saved on {saved_on}, loaded on {loaded_on}: {differences}")
    assert max(differences.values()) <= CROSS_BACKEND_ATOL, differences


# --------------------------------------------------------------------------- refusals
def test_a_layer_calling_tensorflow_is_refused_on_jax_without_tensorflow(loaded):
    _, info = loaded("jax")
    refusal = info["refused"]["tensorflow/native"]
    assert refusal["type"] == "BackendError"
    assert refusal["message"].startswith(
        "Custom layer 'Native' (__main__.Native) imports tensorflow, which is not installed "
        "here: its code needs TensorFlow.\n"
    )
    assert 'pip install "keras-bundle[cpu]"' in refusal["message"]
    assert "KERAS_BACKEND=tensorflow" in refusal["message"]
    assert {key for key in info["refused"] if key.startswith("tensorflow/")} == {
        "tensorflow/native"
    }


def test_a_layer_calling_jax_numpy_is_refused_on_tensorflow(loaded):
    _, info = loaded("tensorflow")
    refusal = info["refused"]["jax/native"]
    assert refusal == {
        "type": "BackendError",
        "message": (
            "Bundle 'native' 1 cannot run on TensorFlow, the backend Keras runs on here: 1 "
            "part(s) of the model call another backend's library directly:\n"
            "- custom layer 'Native' (__main__.Native) calls jnp.tanh in Native.call: it "
            "needs JAX\n"
            "Load it in a process where Keras runs on JAX (KERAS_BACKEND=jax), or rewrite "
            "these parts with keras.ops, which run on every backend."
        ),
    }


def test_a_layer_calling_tensorflow_is_refused_on_jax_with_tensorflow_installed(saved, keras_home):
    root = saved("tensorflow")
    code = f"""
        import sys
        import numpy as np
        from bundle import Bundle, BackendError
        # Keras' cloning imports TensorFlow where installed: its banner stays off stderr.
        Bundle.load({str(root / "custom")!r}, trusted=True).predict(
            np.zeros((2, 6), "float32"), precision="float16"
        )
        print("TensorFlow imported:", "tensorflow" in sys.modules, file=sys.stderr, flush=True)
        try:
            Bundle.load({str(root / "native")!r}, trusted=True)
        except BackendError as exc:
            print(exc.needs, exc.running, exc.parts)
            print(exc)
        """
    env = child_env("jax", keras_home, hide_tensorflow=False)
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    result = run(["-c", textwrap.dedent(code)], env)
    assert result.stderr.startswith("TensorFlow imported: True\n"), result.stderr[:2000]
    out = result.stdout
    assert "['tensorflow'] jax [\"custom layer 'Native' (__main__.Native)\"]" in out
    assert (
        "Bundle 'native' 1 cannot run on JAX, the backend Keras runs on here: 1 part(s) of the "
        "model call another backend's library directly:\n"
        "- custom layer 'Native' (__main__.Native) calls tf.math.tanh in Native.call: it needs "
        "TensorFlow\n"
        "Load it in a process where Keras runs on TensorFlow (KERAS_BACKEND=tensorflow)"
    ) in out


# --------------------------------------------------------------------------- JAX buckets
def test_jax_compiles_once_per_dtype_and_batch_bucket(loaded):
    _, info = loaded("jax")
    jax_info = info["jax"]
    # 8x8x3 float32 images: 768 bytes a row, 4 MiB -> 5461 rows -> 4096 (a power of two).
    assert jax_info["max_rows"] == 4096
    assert jax_info["sizes"] == [1, 3, 4, 5, 17, 2 * 4096 + 5]
    assert jax_info["compiled"] == [
        [["uint8"], 1],  # the warm-up at load
        [["uint8"], 4],  # 3 rows; 4 rows reuse it
        [["uint8"], 8],  # 5 rows
        [["uint8"], 32],  # 17 rows
        [["uint8"], 4096],  # 8197 rows: two slices of 4096, then 5 rows (bucket 8, reused)
        [["float32"], 2],  # another input dtype: its own compilations
    ]
    assert jax_info["max_abs_vs_keras"] <= SAME_BACKEND_ATOL


# --------------------------------------------------------------------------- no TensorFlow
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("backend", "running"), [(None, "JAX"), pytest.param("torch", "PyTorch", marks=torch_only)]
)
def test_cli_and_server_without_tensorflow_pick_an_installed_backend(
    saved, keras_home, tmp_path, backend, running
):
    """TensorFlow not installed: KERAS_BACKEND's backend, else (keras.json says tensorflow) JAX."""
    import httpx
    import pandas as pd

    sys.path.insert(0, str(SCRIPTS))
    try:
        from models import test_inputs
    finally:
        sys.path.remove(str(SCRIPTS))
    bundle_dir = saved("tensorflow") / "tabular" / "1"
    expected = expected_of(saved, "tensorflow")["tabular/labels"]
    env = child_env(backend, keras_home, hide_tensorflow=True)
    frame = test_inputs("tabular")
    frame.to_csv(tmp_path / "rows.csv", index=False)

    cli = ["-m", "bundle.cli"]
    out = tmp_path / "out.csv"
    run([*cli, "predict", str(bundle_dir), str(tmp_path / "rows.csv"), "-o", str(out)], env)
    np.testing.assert_array_equal(pd.read_csv(out)["prediction"].to_numpy().astype(str), expected)

    verified = run([*cli, "verify", str(bundle_dir)], env).stdout
    assert "model (saved on TensorFlow 2" in verified
    assert f", running on {running} " in verified
    assert verified.rstrip().endswith("bundle 'tabular' 1: verified")

    refused = run([*cli, "export", str(bundle_dir), str(tmp_path / "sm")], env, check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "Error: Exporting a SavedModel needs TensorFlow, which is not installed here.\n"
        'Install it: pip install "keras-bundle[cpu]"'
    )
    assert not (tmp_path / "sm").exists()

    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 -- the server owns it
    server = subprocess.Popen(
        [sys.executable, *cli, "serve", str(bundle_dir), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        records = json.loads(frame.to_json(orient="records"))
        answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": list(expected)}
        one = httpx.post(f"{url}/predict", json={"records": records[:1]}, timeout=30)
        assert one.json() == {"predictions": list(expected[:1])}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_keras_set_to_a_missing_backend_names_the_extra_to_install(saved, keras_home):
    code = f"""
        from bundle import Bundle, MissingDependencyError
        try:
            Bundle.load({str(saved("jax") / "tabular")!r})
        except MissingDependencyError as exc:
            print(exc.package, exc.extra)
            print(exc)
        """
    env = child_env("tensorflow", keras_home, hide_tensorflow=True)
    out = run(["-c", textwrap.dedent(code)], env).stdout
    assert out.startswith(
        "tensorflow-cpu cpu\n"
        "Keras is set to run on TensorFlow (KERAS_BACKEND=tensorflow), but tensorflow cannot "
        "be imported (ModuleNotFoundError: "
    )
    assert 'Install it (pip install "keras-bundle[cpu]"), or set KERAS_BACKEND to an ' in out
    assert "installed backend (jax" in out


def test_export_needs_the_tensorflow_backend_and_the_cli_switches_to_it(
    saved, keras_home, tmp_path
):
    bundle_dir = saved("jax") / "tabular" / "1"
    code = f"""
        from bundle import Bundle, ExportError
        bundle = Bundle.load({str(bundle_dir)!r})
        try:
            bundle.export({str(tmp_path / "api")!r})
        except ExportError as exc:
            print(exc)
        """
    env = child_env("jax", keras_home, hide_tensorflow=False)
    out = run(["-c", textwrap.dedent(code)], env).stdout
    assert out.startswith(
        "Exporting a SavedModel traces the model into a TensorFlow graph, which needs Keras' "
        "TensorFlow backend; this process runs Keras on 'jax'.\n"
    )
    assert not (tmp_path / "api").exists()
    # The command runs Keras on TensorFlow itself, whatever KERAS_BACKEND says.
    result = run(["-m", "bundle.cli", "export", str(bundle_dir), str(tmp_path / "sm")], env)
    assert "exported bundle 'tabular' 1" in result.stdout
    assert (tmp_path / "sm" / "saved_model.pb").is_file()


def test_spark_scores_on_jax_without_tensorflow_in_driver_and_workers(saved, keras_home):
    """bundle.spark.score of a TensorFlow-saved bundle where TensorFlow is not installed."""
    if shutil.which("java") is None:
        pytest.skip("no Java runtime: run `make java` to install one")
    bundle_dir = saved("tensorflow") / "tabular" / "1"
    code = f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(SCRIPTS)!r})
        from models import test_inputs
        from pyspark.sql import SparkSession
        from bundle.spark import score

        spark = (
            SparkSession.builder.master("local[1]")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )
        frame = test_inputs("tabular").reset_index(names="row_id")
        scored = score(spark.createDataFrame(frame), {str(bundle_dir)!r}, id_cols=["row_id"])
        labels = scored.toPandas().sort_values("row_id")["prediction"].tolist()

        def worker(_):  # a worker as score's: loads the bundle, predicts
            from bundle import Bundle

            Bundle.load({str(bundle_dir)!r}).predict(frame.drop(columns="row_id")[:2])
            return (
                importlib.util.find_spec("tensorflow") is None,
                sys.modules["keras"].backend.backend(),
            )

        workers = spark.sparkContext.parallelize([0], 1).map(worker).collect()
        spark.stop()
        print(json.dumps({{"labels": labels, "workers": workers,
                          "driver_tensorflow": "tensorflow" in sys.modules}}))
        """
    env = child_env(None, keras_home, hide_tensorflow=True)
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    out = json.loads(run(["-c", textwrap.dedent(code)], env).stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(out["labels"], expected_of(saved, "tensorflow")["tabular/labels"])
    assert out["workers"] == [[True, "jax"]]
    assert out["driver_tensorflow"] is False
