"""Safe-by-default loading: nothing stored in a bundle runs unless the caller trusts it."""

from __future__ import annotations

import json
import pickle

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
