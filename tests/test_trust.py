"""Safe-by-default loading: nothing stored in a bundle runs unless the caller trusts it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import install_distribution, rehash, run_python

from bundle import Bundle, UnsafeLoadError
from bundle.format.integrity import hash_file


def _rehash(version_dir, relative):
    """Update the manifest's record of one file, as an attacker with write access would."""
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][relative] = {
        "sha256": hash_file(version_dir / relative),
        "size": (version_dir / relative).stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest))
    return manifest


def test_native_bundle_loads_without_trusted(tabular_bundle, tabular_data):
    path, saved = tabular_bundle
    manifest = json.loads((path / "manifest.json").read_text())
    assert [s["serializer"] for s in manifest["preprocess"] + manifest["postprocess"]] == [
        "native",
        "native",
    ]
    assert not any(s["executes_code"] for s in manifest["preprocess"] + manifest["postprocess"])
    assert manifest["model"]["executes_code"] is False
    loaded = Bundle.load(path)  # no flag
    frame, _ = tabular_data
    np.testing.assert_allclose(
        loaded.predict(frame, postprocess=False), saved.predict(frame, postprocess=False), atol=1e-6
    )


def test_pickled_step_is_refused_and_listed(tmp_path):
    import keras
    from sklearn.preprocessing import FunctionTransformer

    X = np.random.default_rng(0).normal(size=(30, 3))
    step = FunctionTransformer(lambda x: x * 2).fit(X)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    path = Bundle(model, preprocess=step, input_example=X, name="lam").save(tmp_path / "r")
    with pytest.raises(UnsafeLoadError) as err:
        Bundle.load(path)
    message = str(err.value)
    assert "Refusing to load bundle 'lam' 1: 1 part(s) are pickles" in message
    assert "steps/000-pre-functiontransformer.pkl: a cloudpickle pickle of " in message
    assert "sklearn.preprocessing.FunctionTransformer" in message
    assert "Bundle.load(path, trusted=True)" in message
    assert err.value.parts[0][0] == "steps/000-pre-functiontransformer.pkl"
    assert err.value.parts[0][1] == "cloudpickle"
    assert Bundle.load(path, trusted=True).predict(X[:2]).shape == (2, 1)


def test_lambda_layer_needs_trusted(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 3)])
    path = Bundle(model, input_example=np.ones((2, 2), "float32")).save(tmp_path / "l")
    assert json.loads((path / "manifest.json").read_text())["model"]["executes_code"] is True
    with pytest.raises(
        UnsafeLoadError,
        match=r"- model\.keras: a Keras model with Lambda layer 'lambda' \(its function runs "
        r"with arguments taken from the file\)\n",
    ):
        Bundle.load(path)
    np.testing.assert_allclose(Bundle.load(path, trusted=True).predict([[1.0, 2.0]]), [[3.0, 6.0]])


class _Planted:
    """Unpickling this touches a file: the side effect the refusal must prevent."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_malicious_pickle_has_no_side_effect(tabular_bundle, bundle_copy, tmp_path):
    path, _ = tabular_bundle
    copy = bundle_copy(path)
    marker = tmp_path / "pwned"
    # Replace the native postprocess step with a pickle that creates `marker` when loaded,
    # and make the manifest agree with it (hash, serializer), so only the trust check stands.
    target = "steps/000-post-labelencoder.joblib"
    (copy / target).write_bytes(pickle.dumps(_Planted(str(marker))))
    manifest = _rehash(copy, target)
    record = manifest["postprocess"][0]
    old = record["file"]
    del manifest["files"][old]
    (copy / old).unlink()
    record.update(file=target, serializer="joblib", executes_code=True, imports=["builtins.open"])
    (copy / "manifest.json").write_text(json.dumps(manifest))

    result = run_python(
        f"""
        from bundle import Bundle, UnsafeLoadError
        try:
            Bundle.load({str(copy)!r})
        except UnsafeLoadError as exc:
            print("REFUSED", exc.parts)
        """
    )
    assert "REFUSED" in result.stdout and "000-post-labelencoder.joblib" in result.stdout
    assert "builtins.open" in result.stdout
    assert not marker.exists()


def test_manifest_lying_about_a_pickle_is_caught_by_the_native_reader(
    tabular_bundle, bundle_copy, tmp_path
):
    """A pickle relabelled as a native step is never unpickled: .npz is read without pickle."""
    path, _ = tabular_bundle
    copy = bundle_copy(path)
    marker = tmp_path / "pwned"
    target = "steps/000-post-labelencoder.npz"
    (copy / target).write_bytes(pickle.dumps(_Planted(str(marker))))
    _rehash(copy, target)
    result = run_python(
        f"""
        from bundle import Bundle, BundleError
        try:
            Bundle.load({str(copy)!r})
        except BundleError as exc:
            print("REFUSED", type(exc).__name__)
        """,
        check=False,
    )
    assert "REFUSED" in result.stdout, result.stderr[-2000:]
    assert not marker.exists()


# ---------------------------------------------------------------------------- the attacker
# Hostile bundles built from a real saved one: config.json inside model.keras and the
# manifest rewritten, every hash recomputed, so only the trust policy stands in the way.
# Each payload would create its own marker file; a fresh process (a server) loads them all.
HOSTILE_PACKAGE = {
    "kbevil/__init__.py": "",
    "kbevil/layers.py": '''
import os

import keras


@keras.saving.register_keras_serializable(package="kbevil")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="kbevil")
def halve(x):
    return x * 0.5


def touch(path):
    """A plain function, as every installed package has some: it writes a file."""
    open(path, "w").close()
    return path
''',
    "kbevil/__main__.py": 'import os\nopen(os.environ["KB_MAIN_MARKER"], "w").close()\n',
    "kbevil/exits.py": 'raise SystemExit("kbevil.exits ends the process on import")\n',
    "kbevil/interrupts.py": "raise KeyboardInterrupt\n",
}


def _function(name):
    return {
        "module": "builtins",
        "class_name": "function",
        "config": name,
        "registered_name": "function",
    }


def _called_on_a_constant(class_name, name, config, constant):
    """A layer of the functional config, not connected to the model's inputs: Keras builds
    it by calling it on `constant` (passed as the `inputs` keyword)."""
    return {
        "module": "keras.layers",
        "class_name": class_name,
        "registered_name": None,
        "name": name,
        "config": {"name": name, "trainable": True, "dtype": "float32", **config},
        "build_config": None,
        "inbound_nodes": [{"args": [], "kwargs": {"inputs": constant}}],
    }


def _reference(name, module, qualname, *, kind="function"):
    return {
        "name": name,
        "kind": kind,
        "storage": "reference",
        "module": module,
        "qualname": qualname,
        "file": None,
        "executes_code": False,  # the attacker claims it is safe
        "serializer": "reference",
        "imports": [],
        "needed_for": "predict",
    }


def _hostile(base, target, *, layers=(), custom_objects=(), files=None):
    """Copy `base` to `target`, add `layers` to its config.json, declare `custom_objects`,
    plant `files`, and recompute every hash."""
    import shutil
    import zipfile

    shutil.copytree(base, target)
    model = target / "model.keras"
    with zipfile.ZipFile(model) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"].extend(layers)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(model, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    for relative, text in (files or {}).items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_text(text)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["custom_objects"] = list(custom_objects)
    rehash(target, manifest)
    return target


@pytest.fixture(scope="module")
def functional_base(tmp_path_factory):
    """A saved functional bundle (Input -> Dense) to build hostile variants of."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    root = tmp_path_factory.mktemp("functional") / "root"
    return Bundle(model, input_example=np.ones((4, 3), "float32"), name="hostile").save(root)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, functional_base):
    """{attack: (version directory, marker its payload would create, cwd to load from)}."""
    work = tmp_path_factory.mktemp("hostile")
    site = install_distribution(work / "site", "kbevil", HOSTILE_PACKAGE)
    attacks = {}

    def add(name, **parts):
        marker = work / f"{name}.marker"
        parts = {key: value(marker) if callable(value) else value for key, value in parts.items()}
        cwd = parts.pop("cwd", work)
        target = parts.pop("target", work / name / "1")
        attacks[name] = (_hostile(functional_base, target, **parts), marker, cwd)

    # The route: a by-reference object naming os.system through a Keras module's
    # attribute, run by an unconnected Lambda called on a shell command.
    add(
        "lambda_os_system",
        layers=lambda m: [
            _called_on_a_constant(
                "Lambda", "pwn", {"function": _function("pwn"), "arguments": {}}, f"touch {m}"
            )
        ],
        custom_objects=[_reference("pwn", "keras.src.utils.file_utils", "os.system")],
    )
    # A function defined in its own installed module that exec()s its argument.
    add(
        "lambda_runstring",
        layers=lambda m: [
            _called_on_a_constant(
                "Lambda",
                "pwn",
                {"function": _function("run"), "arguments": {"dict": {}}},
                f"open({str(m)!r}, 'w').close()",
            )
        ],
        custom_objects=[_reference("run", "numpy.testing._private.utils", "runstring")],
    )
    # No Lambda at all: a built-in Activation layer calls a plain function of an installed
    # package on a constant.
    add(
        "activation_plain_function",
        layers=lambda m: [
            _called_on_a_constant("Activation", "act", {"activation": _function("touch")}, str(m))
        ],
        custom_objects=[_reference("touch", "kbevil.layers", "touch")],
    )
    add(
        "activation_through_module_attribute",
        layers=lambda m: [
            _called_on_a_constant(
                "Activation", "act", {"activation": _function("sh")}, f"touch {m}"
            )
        ],
        custom_objects=[_reference("sh", "kbevil.layers", "os.system")],
    )
    add("main_submodule", custom_objects=[_reference("m", "kbevil.__main__", "Anything")])
    add("jsonschema_main", custom_objects=[_reference("m", "jsonschema.__main__", "main")])
    add("import_time_exit", custom_objects=[_reference("e", "kbevil.exits", "Layer", kind="layer")])
    add(
        "import_time_interrupt",
        custom_objects=[_reference("i", "kbevil.interrupts", "Layer", kind="layer")],
    )
    # A .py file inside the bundle, listed with its hash, reached as a namespace package
    # through the working directory.
    helper = "import pathlib\npathlib.Path({marker!r}).touch()\nclass Helper:\n    pass\n"
    add(
        "bundle_file",
        target=work / "cwd" / "models" / "churn" / "v7",
        cwd=work / "cwd",
        files=lambda m: {"custom_objects/helpers.py": helper.format(marker=str(m))},
        custom_objects=[
            _reference("h", "models.churn.v7.custom_objects.helpers", "Helper", kind="layer")
        ],
    )
    # The same with __init__.py files planted in the store (outside the version) and in it.
    for folder in ("models", "models/churn"):
        (work / "cwd2" / folder).mkdir(parents=True)
        (work / "cwd2" / folder / "__init__.py").write_text("")
    add(
        "bundle_package",
        target=work / "cwd2" / "models" / "churn" / "v7",
        cwd=work / "cwd2",
        files=lambda m: {
            "__init__.py": "",
            "custom_objects/__init__.py": "",
            "custom_objects/helpers.py": helper.format(marker=str(m)),
        },
        custom_objects=[
            _reference("h", "models.churn.v7.custom_objects.helpers", "Helper", kind="layer")
        ],
    )
    (work / "cwd" / "evil.py").write_text(helper.format(marker=str(work / "cwd_module.marker")))
    add("cwd_module", cwd=work / "cwd", custom_objects=[_reference("h", "evil", "Helper")])
    return attacks, site


LOAD_ALL = """
    import json, os, sys
    sys.path.insert(0, {site!r})
    os.environ["KB_MAIN_MARKER"] = {main_marker!r}
    from bundle import Bundle, BundleError
    results = {{}}
    for name, (path, cwd) in {attacks!r}.items():
        os.chdir(cwd)
        try:
            Bundle.load(path, trusted={trusted!r})
            results[name] = ["loaded", ""]
        except BundleError as exc:
            results[name] = [type(exc).__name__, str(exc)]
        except Exception as exc:
            results[name] = ["raw " + type(exc).__name__, str(exc)]
    print(json.dumps(results))
"""


def _load_all(hostile, names, *, trusted):
    attacks, site = hostile
    chosen = {name: (str(attacks[name][0]), str(attacks[name][2])) for name in names}
    code = LOAD_ALL.format(
        site=str(site),
        main_marker=str(attacks["main_submodule"][1]),
        attacks=chosen,
        trusted=trusted,
    )
    result = run_python(code)
    return json.loads(result.stdout.strip().splitlines()[-1])


ATTACKS = [
    "lambda_os_system",
    "lambda_runstring",
    "activation_plain_function",
    "activation_through_module_attribute",
    "main_submodule",
    "jsonschema_main",
    "import_time_exit",
    "import_time_interrupt",
    "bundle_file",
    "bundle_package",
    "cwd_module",
]


@pytest.fixture(scope="module")
def untrusted_results(hostile):
    """What one fresh serving process did with every hostile bundle, without trust."""
    return _load_all(hostile, ATTACKS, trusted=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attack", "error", "message"),
    [
        (
            "lambda_os_system",
            "UnsafeLoadError",
            r"- model\.keras: a Keras model with Lambda layer 'pwn'",
        ),
        (
            "lambda_runstring",
            "UnsafeLoadError",
            r"- model\.keras: a Keras model with Lambda layer 'pwn'",
        ),
        (
            "activation_plain_function",
            "UnsafeLoadError",
            r"kbevil\.layers\.touch is a plain function, not registered with Keras",
        ),
        (
            "activation_through_module_attribute",
            "UnsafeLoadError",
            r"os\.system goes through os, a module and not a class",
        ),
        ("main_submodule", "UnsafeLoadError", r"kbevil\.__main__ is a __main__ module"),
        ("jsonschema_main", "UnsafeLoadError", r"jsonschema\.__main__ is a __main__ module"),
        ("import_time_exit", "ModelError", r"Importing kbevil\.exits .* failed: SystemExit"),
        (
            "import_time_interrupt",
            "ModelError",
            r"Importing kbevil\.interrupts .* failed: Keyboard",
        ),
        (
            "bundle_file",
            "UnsafeLoadError",
            r"importing it is not allowed without trust: models is a namespace package",
        ),
        (
            "bundle_package",
            "UnsafeLoadError",
            r"models\.churn\.v7\.custom_objects\.helpers would be imported from the bundle itself",
        ),
        (
            "cwd_module",
            "UnsafeLoadError",
            r"evil would be imported from .*evil\.py, which no installed distribution lists",
        ),
    ],
)
def test_no_stored_or_chosen_code_runs_without_trust(
    hostile, untrusted_results, attack, error, message
):
    import re

    kind, text = untrusted_results[attack]
    assert kind == error, text
    assert re.search(message, text), text
    if error == "UnsafeLoadError":
        assert "Bundle.load(path, trusted=True)" in text
    assert not hostile[0][attack][1].exists(), f"{attack}: the payload ran"


@pytest.mark.slow
def test_the_payloads_are_real_with_trust(hostile):
    """Control: with trusted=True the same bundles do run their payloads (or get as far as
    importing them), so the refusals above are what stops them."""
    attacks, _ = hostile
    names = ["lambda_os_system", "activation_plain_function", "bundle_file", "main_submodule"]
    results = _load_all(hostile, [*names, "import_time_exit"], trusted=True)
    for name in names:
        assert attacks[name][1].exists(), (name, results[name])
    # Even trusted, a module's SystemExit never ends the loading process.
    assert results["import_time_exit"][0] == "ModelError"


@pytest.mark.slow
def test_registered_objects_of_an_installed_package_load_without_trust(hostile, tmp_path):
    """The legitimate use: a Keras layer and a registered activation from an installed
    distribution are stored by reference and load without trust, predicting exactly."""
    _, site = hostile
    run_python(
        f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        import keras, numpy as np
        from kbevil.layers import Scale, halve
        from bundle import Bundle
        keras.utils.set_random_seed(0)
        layers = [keras.Input((3,)), Scale(3.0), keras.layers.Dense(2, activation=halve)]
        model = keras.Sequential(layers)
        x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        np.save({str(tmp_path / "x.npy")!r}, x)
        np.save({str(tmp_path / "y.npy")!r}, model.predict(x, verbose=0))
        Bundle(model, input_example=x, name="installed").save({str(tmp_path / "root")!r})
        """
    )
    manifest = json.loads((tmp_path / "root" / "1" / "manifest.json").read_text())
    records = {r["name"]: r for r in manifest["custom_objects"]}
    assert {n: (r["storage"], r["executes_code"], r["needed_for"]) for n, r in records.items()} == {
        "kbevil>Scale": ("reference", False, "predict"),
        "kbevil>halve": ("reference", False, "predict"),
    }
    result = run_python(
        f"""
        import sys, warnings
        sys.path.insert(0, {str(site)!r})
        import numpy as np
        from bundle import Bundle
        warnings.simplefilter("error")
        loaded = Bundle.load({str(tmp_path / "root")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        difference = np.abs(loaded.predict(x) - np.load({str(tmp_path / "y.npy")!r})).max()
        print("DIFF", difference, type(loaded.model.layers[0]).__module__)
        """
    )
    _, difference, module = result.stdout.split()[-3:]
    assert float(difference) <= 1e-6 and module == "kbevil.layers"


def _keras_api_function(module, name):
    return {"module": module, "class_name": "function", "config": name, "registered_name": None}


@pytest.mark.parametrize(
    ("module", "name", "argument"),
    [
        ("keras.config", "set_floatx", "float16"),  # every later model in the process
        ("keras", "config.set_image_data_format", "channels_first"),
        ("keras.datasets.mnist", "load_data", "mnist.npz"),  # a download from the network
    ],
)
def test_public_keras_functions_outside_modeling_are_not_called_from_the_file(
    functional_base, tmp_path, module, name, argument
):
    """Keras resolves a function node to any public Keras function outside its short deny
    list: a built-in Activation layer called on a constant called keras.config.set_floatx
    under trusted=False and changed the process's float type for every later model."""
    import keras

    target = _hostile(
        functional_base,
        tmp_path / "root" / "1",
        layers=[
            _called_on_a_constant(
                "Activation", "act", {"activation": _keras_api_function(module, name)}, argument
            )
        ],
    )
    before = (keras.config.floatx(), keras.config.image_data_format())
    try:
        with pytest.raises(UnsafeLoadError) as caught:
            Bundle.load(target)
        after = (keras.config.floatx(), keras.config.image_data_format())
    finally:
        keras.config.set_floatx(before[0])
        keras.config.set_image_data_format(before[1])
    assert after == before
    message = str(caught.value)
    assert f"Keras function '{module}.{name}' (not a modeling function" in message
    assert "Bundle.load(path, trusted=True)" in message


def test_the_keras_function_payload_is_real_with_trust(functional_base, tmp_path):
    """Control: with trust, Keras does call keras.config.set_floatx from the file."""
    import keras

    target = _hostile(
        functional_base,
        tmp_path / "root" / "1",
        layers=[
            _called_on_a_constant(
                "Activation",
                "act",
                {"activation": _keras_api_function("keras.config", "set_floatx")},
                "float16",
            )
        ],
    )
    try:
        Bundle.load(target, trusted=True)
        changed = keras.config.floatx()
    finally:
        keras.config.set_floatx("float32")
    assert changed == "float16"


# ---------------------------------------------------------------------------- compile only
# Issue 21: a loss and a metric defined in a training script's __main__ are stored by value,
# yet prediction never uses them: the bundle loads without trust, without compile state.
COMPILE_ONLY_TRAINING = """
    import json, pathlib
    import numpy as np
    import keras
    from bundle import Bundle

    out = pathlib.Path({out!r})
    keras.utils.set_random_seed(0)

    def smoothed(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=0.1)

    def spread(y_true, y_pred):
        return keras.ops.max(y_pred, axis=-1) - keras.ops.min(y_pred, axis=-1)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 4)).astype("float32")
    Y = keras.utils.to_categorical((X[:, 0] > 0).astype(int) + (X[:, 1] > 1), 3)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", loss=smoothed, metrics=[spread])
    model.fit(X, Y, epochs=3, batch_size=16, verbose=0)
    np.save(out / "X.npy", X)
    np.save(out / "Y.npy", Y)
    np.save(out / "pred.npy", model.predict(X, verbose=0))
    path = Bundle(model, input_example=X[:16], name="smooth").save(out / "root")
    facts = {{
        "path": str(path),
        "eval": model.evaluate(X, Y, return_dict=True, verbose=0),
        "iterations": int(model.optimizer.iterations),
    }}
    (out / "train.json").write_text(json.dumps(facts))
"""

COMPILE_ONLY_SERVING = """
    import asyncio, json, pathlib, warnings
    import numpy as np
    import __main__
    from bundle import Bundle, BundleWarning, CompileStateSkippedWarning

    out = pathlib.Path({out!r})
    facts = json.loads((out / "train.json").read_text())
    X = np.load(out / "X.npy")
    assert not hasattr(__main__, "smoothed") and not hasattr(__main__, "spread")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = Bundle.load(facts["path"])
    ours = [w for w in caught if issubclass(w.category, BundleWarning)]
    result = {{
        "warnings": [[w.category.__name__, str(w.message), w.message.skipped] for w in ours],
        "compiled": bool(getattr(loaded.model, "compiled", False)),
        "optimizer": getattr(loaded.model, "optimizer", None) is not None,
    }}
    np.save(out / "untrusted_pred.npy", loaded.predict(X))

    # predict_file, the SavedModel export and the server, on the untrusted load
    import pandas as pd
    pd.DataFrame(X).to_parquet(out / "X.parquet")
    result["file_rows"] = loaded.predict_file(out / "X.parquet", out / "scored.parquet")
    np.save(out / "file_pred.npy", pd.read_parquet(out / "scored.parquet").to_numpy())
    import tensorflow as tf
    exported = loaded.export(out / "saved_model")
    signature = tf.saved_model.load(str(exported)).signatures["serving_default"]
    np.save(out / "export_pred.npy", signature(tf.constant(X))["scores"].numpy())
    import httpx
    from bundle.serve import create_app

    app = create_app(loaded)

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            await app.state.bundle_server.start()
            body = {{"inputs": [{{"name": "input", "shape": list(X.shape), "datatype": "FP32",
                                 "data": X.ravel().tolist()}}]}}
            answer = await client.post("/v2/models/smooth/infer", json=body)
            await app.state.bundle_server.stop()
            return answer

    answer = asyncio.run(ask())
    result["serve_status"] = answer.status_code
    result["serve_body"] = answer.json()

    # trusted=True keeps today's behaviour: compiled as at training, training continues
    trusted = Bundle.load(facts["path"], trusted=True)
    Y = np.load(out / "Y.npy")
    result["trusted_eval"] = trusted.model.evaluate(X, Y, return_dict=True, verbose=0)
    result["trusted_loss"] = trusted.model.loss.__name__
    before = int(trusted.model.optimizer.iterations)
    trusted.model.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    result["iterations"] = [before, int(trusted.model.optimizer.iterations)]
    (out / "serve.json").write_text(json.dumps(result, default=str))
"""


@pytest.fixture(scope="module")
def compile_only(tmp_path_factory):
    """A bundle whose only stored code is a __main__ loss and metric, and what a fresh
    serving process did with it: (out directory, training facts, serving result)."""
    import textwrap

    out = tmp_path_factory.mktemp("compile-only")
    run_python(textwrap.dedent(COMPILE_ONLY_TRAINING).format(out=str(out)))
    run_python(textwrap.dedent(COMPILE_ONLY_SERVING).format(out=str(out)))
    facts = json.loads((out / "train.json").read_text())
    return out, facts, json.loads((out / "serve.json").read_text())


@pytest.mark.slow
def test_a_bundle_whose_only_code_is_its_loss_and_metric_predicts_without_trust(compile_only):
    out, facts, result = compile_only
    manifest = json.loads((Path(facts["path"]) / "manifest.json").read_text())
    records = {r["name"]: r for r in manifest["custom_objects"]}
    assert {n: (r["storage"], r["module"], r["needed_for"]) for n, r in records.items()} == {
        "smoothed": ("value", "__main__", "compile"),
        "spread": ("value", "__main__", "compile"),
    }
    expected = np.load(out / "pred.npy")
    np.testing.assert_allclose(np.load(out / "untrusted_pred.npy"), expected, rtol=0, atol=1e-6)
    # one warning of its own class, naming the skipped objects and the way back
    [[category, message, skipped]] = result["warnings"]
    assert category == "CompileStateSkippedWarning" and skipped == ["smoothed", "spread"]
    assert message.startswith("Loaded bundle 'smooth' 1 without its compile state: 2 part(s)")
    assert "- smoothed: custom_objects/smoothed.pkl: a cloudpickle pickle of __main__" in message
    assert "- spread: custom_objects/spread.pkl" in message
    assert message.endswith(
        "To restore the compile state (to evaluate or continue training): "
        "Bundle.load(path, trusted=True)."
    )
    assert result["compiled"] is False and result["optimizer"] is False


@pytest.mark.slow
def test_predict_file_export_and_serve_work_on_the_untrusted_load(compile_only):
    out, _, result = compile_only
    expected = np.load(out / "pred.npy")
    assert result["file_rows"] == len(expected)
    np.testing.assert_allclose(np.load(out / "file_pred.npy"), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "export_pred.npy"), expected, rtol=0, atol=1e-5)
    assert result["serve_status"] == 200, result["serve_body"]
    [output] = result["serve_body"]["outputs"]  # no postprocess: the model's scores
    np.testing.assert_allclose(
        np.asarray(output["data"]).reshape(expected.shape), expected, rtol=0, atol=1e-6
    )


@pytest.mark.slow
def test_trusted_load_still_restores_the_compile_state_and_trains_on(compile_only):
    _, facts, result = compile_only
    assert result["trusted_loss"] == "smoothed"
    for key in ("loss", "spread"):
        np.testing.assert_allclose(result["trusted_eval"][key], facts["eval"][key], rtol=1e-5)
    assert result["iterations"] == [facts["iterations"], facts["iterations"] + 6]


@pytest.mark.slow
def test_the_skipped_pickles_are_never_opened(compile_only, tmp_path):
    """A payload planted in the loss pickle, its hash recomputed: an untrusted load predicts
    and leaves no trace; a trusted one does run it (the control)."""
    import shutil

    _, facts, _ = compile_only
    version = tmp_path / "root" / "1"
    shutil.copytree(facts["path"], version)
    marker = tmp_path / "pwned"
    (version / "custom_objects" / "smoothed.pkl").write_bytes(pickle.dumps(_Planted(str(marker))))
    rehash(version)
    script = f"""
        import warnings
        warnings.simplefilter("ignore")
        from bundle import Bundle
        loaded = Bundle.load({str(version)!r}, trusted={{trusted}})
        print("PREDICTED", loaded.predict([[0.1, 0.2, 0.3, 0.4]]).shape)
    """
    result = run_python(script.format(trusted=False))
    assert "PREDICTED (1, 3)" in result.stdout
    assert not marker.exists(), "the loss pickle was opened without trust"
    run_python(script.format(trusted=True), check=False)
    assert marker.exists()


@pytest.mark.slow
def price(y_true, y_pred):
    """A loss named after the output it scores (defined here: stored by value)."""
    import keras

    return keras.ops.mean(keras.ops.abs(y_true - y_pred))


def test_a_loss_named_like_a_layer_is_still_compile_only(tmp_path):
    """Every string of the architecture counted as a name Keras may look up, layer names
    too: a loss `price` on an output layer named "price" was 'needed to predict', and the
    bundle was refused without trust although prediction never calls the loss."""
    import warnings

    import keras

    from bundle import CompileStateSkippedWarning

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1, name="price")(inputs))
    model.compile("adam", loss=price)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    path = Bundle(model, input_example=x, name="pricing").save(tmp_path / "root")
    manifest = json.loads((path / "manifest.json").read_text())
    [record] = manifest["custom_objects"]
    assert (record["name"], record["storage"], record["needed_for"]) == (
        "price",
        "value",
        "compile",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = Bundle.load(path)
    skipped = [w for w in caught if issubclass(w.category, CompileStateSkippedWarning)]
    assert len(skipped) == 1 and "- price: custom_objects/price.pkl" in str(skipped[0].message)
    assert np.abs(loaded.predict(x) - model.predict(x, verbose=0)).max() <= 1e-6


def test_inspect_shows_what_prediction_needs(compile_only):
    _, facts, _ = compile_only
    from click.testing import CliRunner

    from bundle.cli import cli

    text = CliRunner().invoke(cli, ["inspect", facts["path"]])
    assert text.exit_code == 0, text.output
    table = text.output.split("Custom objects\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0].split() == ["name", "kind", "stored", "object", "needed", "trust"]
    assert [line.split(maxsplit=5) for line in table[1:]] == [
        [
            "smoothed",
            "loss",
            "by",
            "value",
            "__main__.smoothed",
            "compile only  skipped without trusted=True",
        ],
        [
            "spread",
            "metric",
            "by",
            "value",
            "__main__.spread",
            "compile only  skipped without trusted=True",
        ],
    ]
    assert "not needed to predict (the compile state needs it)" in text.output
    assert "2 part(s) are needed only to compile" in text.output
    facts_json = json.loads(CliRunner().invoke(cli, ["inspect", facts["path"], "--json"]).output)
    assert facts_json["needs_trusted"] is False
    assert facts_json["skipped_without_trust"] == ["smoothed", "spread"]
    card = (Path(facts["path"]) / "README.md").read_text()
    assert 'Bundle.load("path/to/smooth/1")' in card  # no trusted=True in the snippet
    assert "- `smoothed`: loss, by value (`__main__.smoothed`), compile only" in card


# ---------------------------------------------------------------------------- the decision
def _manifest_with(custom_objects, *, executes_code=False):
    from types import SimpleNamespace

    model = {"file": "model.keras", "executes_code": executes_code, "inputs": [], "outputs": []}
    return SimpleNamespace(
        model=model, preprocess=[], postprocess=[], custom_objects=list(custom_objects)
    )


PICKLED = {
    "storage": "value",
    "serializer": "cloudpickle",
    "file": "custom_objects/x.pkl",
    "module": "__main__",
    "qualname": "x",
    "kind": "layer",
    "executes_code": True,
}


def test_a_part_labelled_compile_only_that_the_architecture_names_is_refused():
    """The label only ever decides what may be skipped; the model file's own config wins."""
    from bundle.format.keras_config import ModelConfig
    from bundle.format.trust import decide

    record = {**PICKLED, "name": "Affine", "needed_for": "compile"}
    config = ModelConfig((), (), frozenset({"Affine", "dense"}), frozenset())
    decision = decide(_manifest_with([record]), model_config=config)
    assert [p.name for p in decision.refused] == ["Affine"] and decision.skipped == []
    with pytest.raises(UnsafeLoadError, match=r"- custom_objects/x\.pkl: a cloudpickle pickle"):
        decision.check(trusted=False, label="b")
    # Unnamed by the architecture, the same record is skipped; labelled predict, refused.
    elsewhere = ModelConfig((), (), frozenset({"dense"}), frozenset({"Affine"}))
    assert [p.name for p in decide(_manifest_with([record]), model_config=elsewhere).skipped] == [
        "Affine"
    ]
    labelled = {**record, "needed_for": "predict"}
    assert decide(_manifest_with([labelled]), model_config=elsewhere).refused


def test_code_in_the_compile_config_is_skipped_not_refused():
    from bundle.format.keras_config import ModelConfig
    from bundle.format.trust import decide

    config = ModelConfig(
        (), ("a serialized lambda (its Python bytecode runs)",), frozenset(), frozenset()
    )
    decision = decide(_manifest_with([]), model_config=config)
    assert decision.refused == [] and [p.name for p in decision.skipped] == ["compile config"]
    architecture = ModelConfig(("Lambda layer 'l' (...)",), (), frozenset(), frozenset())
    [refused] = decide(_manifest_with([]), model_config=architecture).refused
    assert refused.describe() == "model.keras: a Keras model with Lambda layer 'l' (...)"
