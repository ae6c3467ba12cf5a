"""Custom objects: found in the model, merged with the user's, stored by reference or by value."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_python

from bundle import Bundle, BundleError, CompileStateSkippedWarning, UnsafeLoadError
from bundle.format.pickling import is_installed_module
from bundle.model.custom_objects import (
    _importable,
    discover,
    load_custom_objects,
    save_custom_objects,
)

ATOL = 1e-6


# ---------------------------------------------------------------------------- custom objects
# Defined in this test module, which is no installed distribution: stored by value.
def my_loss(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1) * 3.0


def other_loss(y_true, y_pred):
    return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)


def my_metric(y_true, y_pred):
    return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)


def scaled_tanh(x):
    return keras.ops.tanh(x) * 1.5


class ScaledNormal(keras.initializers.Initializer):
    def __init__(self, scale=0.5):
        self.scale = scale

    def __call__(self, shape, dtype=None):
        return keras.random.normal(shape, dtype=dtype, seed=1) * self.scale

    def get_config(self):
        return {"scale": self.scale}


class HalfL1(keras.regularizers.Regularizer):
    def __init__(self, l1=0.01):
        self.l1 = l1

    def __call__(self, weights):
        return 0.5 * self.l1 * keras.ops.sum(keras.ops.abs(weights))

    def get_config(self):
        return {"l1": self.l1}


class Affine(keras.layers.Layer):
    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x):
        return x * self.scale + self.bias

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class TwoTower(keras.Model):
    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.head = keras.layers.Dense(1)

    def call(self, x):
        return self.head(self.hidden(x))

    def get_config(self):
        return {"units": self.units, "name": self.name}


class HalfEvery(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, rate=0.01, steps=100):
        self.rate, self.steps = rate, steps

    def __call__(self, step):
        return self.rate * keras.ops.power(0.5, keras.ops.cast(step, "float32") / self.steps)

    def get_config(self):
        return {"rate": self.rate, "steps": self.steps}


@keras.saving.register_keras_serializable(package="demo")
def registered_activation(x):
    return keras.ops.relu(x) * 0.5


def _layered_model(*, compile_it: bool = True) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            Affine(2.0),
            keras.layers.Dense(
                8,
                activation=scaled_tanh,
                kernel_initializer=ScaledNormal(0.5),
                kernel_regularizer=HalfL1(0.01),
            ),
            keras.layers.Dense(1),
        ]
    )
    if compile_it:
        model.compile("adam", loss=my_loss, metrics=[my_metric])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")


# ---------------------------------------------------------------------------- discovery
def test_discovers_every_kind_from_layers_and_compile_config():
    objects = {o.name: o for o in discover(_layered_model())}
    assert {name: o.kind for name, o in objects.items()} == {
        "Affine": "layer",
        "HalfL1": "regularizer",
        "ScaledNormal": "initializer",
        "my_loss": "loss",
        "my_metric": "metric",
        "scaled_tanh": "activation",
    }
    assert objects["Affine"].obj is Affine and objects["HalfL1"].obj is HalfL1
    assert objects["my_loss"].obj is my_loss and objects["scaled_tanh"].obj is scaled_tanh
    assert {o.storage for o in objects.values()} == {"value"}
    assert objects["my_loss"].module == __name__ and objects["Affine"].qualname == "Affine"


def test_a_layers_wrapped_build_method_is_not_a_custom_object():
    """Keras keeps a per-instance wrapper of `build`; it must not be pickled as an object."""
    model = keras.Sequential([keras.Input((4,)), Affine(1.0), Affine(3.0)])
    assert [(o.name, o.kind) for o in discover(model)] == [("Affine", "layer")]


def test_builtin_keras_objects_are_not_custom():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                2,
                activation="relu",
                kernel_initializer="he_normal",
                kernel_regularizer=keras.regularizers.L2(0.1),
            ),
            keras.layers.Dense(1, activation=keras.activations.sigmoid),
        ]
    )
    model.compile(keras.optimizers.Adam(), loss=keras.losses.BinaryCrossentropy(), metrics=["auc"])
    assert discover(model) == []


def test_discovers_a_subclassed_model():
    model = TwoTower(3)
    model(np.zeros((1, 4), "float32"))
    model.compile("adam", loss=other_loss)
    objects = {o.name: o.kind for o in discover(model)}
    assert objects == {"TwoTower": "model", "other_loss": "loss"}


def test_discovers_a_loss_instance_class_in_compile():
    class ScaledMSE(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", loss=ScaledMSE())
    [found] = discover(model)
    assert (found.name, found.kind, found.obj, found.storage) == (
        "ScaledMSE",
        "loss",
        ScaledMSE,
        "value",
    )


def test_discovers_a_learning_rate_schedule_inside_a_keras_optimizer():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(learning_rate=HalfEvery()), loss="mse")
    assert [(o.name, o.kind, o.obj) for o in discover(model)] == [
        ("HalfEvery", "schedule", HalfEvery)
    ]


def test_registered_objects_are_found_under_their_registered_name():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2, activation=registered_activation)]
    )
    [found] = discover(model)
    assert (found.name, found.kind) == ("demo>registered_activation", "activation")


def test_user_custom_objects_are_merged_and_user_names_win():
    from sklearn.metrics import mean_absolute_error

    model = _layered_model()
    user = {"my_loss": other_loss, "mae": mean_absolute_error, "Affine": Affine}
    objects = {o.name: o for o in discover(model, user)}
    assert objects["my_loss"].obj is other_loss  # the user's object under the model's name
    assert objects["my_loss"].kind == "loss"  # ... keeping the kind found in the model
    assert objects["mae"].kind == "function" and objects["mae"].storage == "reference"
    assert objects["Affine"].obj is Affine and objects["Affine"].kind == "layer"
    assert len(objects) == 7
    assert [o.name for o in discover(model, user)] == sorted(objects)


def test_user_objects_kinds_are_inferred():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    user = {"init": ScaledNormal, "reg": HalfL1(0.1), "thing": 3, "act": scaled_tanh}
    kinds = {o.name: o.kind for o in discover(model, user)}
    assert kinds == {
        "init": "initializer",
        "reg": "regularizer",
        "thing": "object",
        "act": "function",
    }


# ---------------------------------------------------------------------------- storage decisions
def test_function_from_an_installed_package_is_stored_by_reference():
    from scipy.special import logsumexp
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import StandardScaler

    for obj in (accuracy_score, logsumexp, StandardScaler, json.dumps):
        assert _importable(obj), obj


def test_main_function_is_stored_by_value():
    namespace = {"__name__": "__main__"}
    exec("def in_main(x):\n    return x\n", namespace)
    assert namespace["in_main"].__module__ == "__main__"
    assert not _importable(namespace["in_main"])


def test_local_module_function_is_stored_by_value(tmp_path, monkeypatch):
    (tmp_path / "training_utils.py").write_text("def helper(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import training_utils  # a utils.py next to a training script

    try:
        assert not is_installed_module("training_utils")
        assert not _importable(training_utils.helper)
        [record] = save_custom_objects(discover_user({"helper": training_utils.helper}), tmp_path)
        assert record["storage"] == "value" and record["executes_code"] is True
        assert record["module"] == "training_utils"
    finally:
        sys.modules.pop("training_utils", None)


def test_nested_function_is_stored_by_value():
    def inner(x):
        return x

    assert "<locals>" in inner.__qualname__
    assert not _importable(inner)
    assert not _importable(lambda x: x)


def test_shadowed_name_is_not_importable():
    """An object whose module attribute is another object is not found by reference."""
    from sklearn.metrics import accuracy_score

    def impostor():
        return None

    impostor.__module__ = accuracy_score.__module__
    impostor.__qualname__ = accuracy_score.__qualname__
    assert not _importable(impostor)


def test_test_module_objects_are_stored_by_value():
    assert not is_installed_module(__name__)
    assert is_installed_module("json") and is_installed_module("sklearn.metrics")
    assert not _importable(my_loss) and not _importable(Affine)


def discover_user(user: dict):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    return discover(model, user)


# ---------------------------------------------------------------------------- save / load
def test_save_and_load_by_reference_and_by_value(tmp_path):
    from sklearn.metrics import accuracy_score

    objects = discover_user({"acc": accuracy_score, "loss": my_loss})
    records = save_custom_objects(objects, tmp_path / "custom_objects")
    by_name = {r["name"]: r for r in records}
    assert by_name["acc"] == {
        "name": "acc",
        "kind": "function",
        "storage": "reference",
        "module": "sklearn.metrics._classification",
        "qualname": "accuracy_score",
        "file": None,
        # a plain function, no Keras object: Keras could call it with the file's arguments
        "executes_code": True,
        "serializer": "reference",
        "imports": ["sklearn.metrics._classification.accuracy_score"],
    }
    loss = by_name["loss"]
    assert loss["file"] == "custom_objects/loss.pkl" and loss["serializer"] == "cloudpickle"
    assert f"{__name__}.my_loss" in loss["imports"]
    assert sorted(p.name for p in (tmp_path / "custom_objects").iterdir()) == ["loss.pkl"]
    loaded = load_custom_objects(tmp_path, records, trusted=True)
    assert loaded["acc"] is accuracy_score
    assert loaded["loss"] is not my_loss  # rebuilt from its stored code
    y, p = np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")
    np.testing.assert_allclose(np.asarray(loaded["loss"](y, p)), [3.0, 3.0])


def test_file_names_are_sanitized_and_unique(tmp_path):
    objects = discover_user({"a/b": my_loss, "a_b": other_loss, "demo>Affine": Affine, "..": 1})
    records = save_custom_objects(objects, tmp_path / "custom_objects")
    files = {r["name"]: r["file"] for r in records}
    assert files["a/b"] == "custom_objects/a_b.pkl"
    assert files["a_b"] == "custom_objects/a_b_2.pkl"
    assert files["demo>Affine"] == "custom_objects/demo_Affine.pkl"
    assert files[".."] == "custom_objects/object.pkl"


def test_unused_plain_function_reference_is_skipped_without_trust(tmp_path, data):
    """A plain function is no Keras object: without trust it is not imported. Prediction
    does not need it (the architecture never names it), so the load skips it and warns."""
    from sklearn.metrics import mean_absolute_error

    x, _ = data
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    path = Bundle(model, custom_objects={"mae": mean_absolute_error}, name="ref").save(tmp_path)
    [record] = json.loads((path / "manifest.json").read_text())["custom_objects"]
    assert (record["storage"], record["file"], record["executes_code"]) == (
        "reference",
        None,
        True,
    )
    assert record["needed_for"] == "compile"
    assert not (path / "custom_objects").exists()
    with pytest.warns(CompileStateSkippedWarning, match=r"mae: custom object 'mae'") as caught:
        loaded = Bundle.load(path)
    assert [w.message.skipped for w in caught if w.category is CompileStateSkippedWarning] == [
        ["mae"]
    ]
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=ATOL)
    assert Bundle.load(path, trusted=True).model.compiled


def test_unimportable_reference_names_the_package_to_install(tmp_path, bundle_copy):
    from sklearn.metrics import mean_absolute_error

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    path = Bundle(model, custom_objects={"mae": mean_absolute_error}, name="ref").save(tmp_path)
    copy = bundle_copy(path)
    manifest = json.loads((copy / "manifest.json").read_text())
    # A record claiming what the policy would allow: prediction needs it, it runs no code.
    manifest["custom_objects"][0].update(
        module="not_installed_pkg.losses", needed_for="predict", executes_code=False
    )
    (copy / "manifest.json").write_text(json.dumps(manifest))
    expected = (
        r"Custom function 'mae' is stored by reference to "
        r"not_installed_pkg\.losses\.mean_absolute_error, which cannot be imported here: "
        r"No module named 'not_installed_pkg\.losses'\.\n"
        r"Install the package that provides 'not_installed_pkg\.losses' in this environment\."
    )
    with pytest.raises(BundleError, match=expected):
        Bundle.load(copy)


def test_by_value_objects_need_trust_and_round_trip(tmp_path, data):
    x, y = data
    keras.utils.set_random_seed(0)
    model = _layered_model()
    model.fit(x, y, epochs=1, verbose=0)
    path = Bundle(model, input_example=x, name="layered").save(tmp_path)
    with pytest.raises(UnsafeLoadError, match=r"4 part\(s\) are pickles") as e:
        Bundle.load(path)
    message = str(e.value)
    for name in ("Affine", "HalfL1", "ScaledNormal", "scaled_tanh"):
        qualified = f"{__name__}.{name}"
        assert f"- custom_objects/{name}.pkl: a cloudpickle pickle of {qualified}" in message
    # The loss and metric are compile-only: the refusal names what prediction needs only.
    assert "my_loss" not in message and "my_metric" not in message
    assert sorted(f for f, _, _ in e.value.parts) == sorted(
        f"custom_objects/{n}.pkl" for n in ("Affine", "HalfL1", "ScaledNormal", "scaled_tanh")
    )
    loaded = Bundle.load(path, trusted=True)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=ATOL)
    assert loaded.model.loss.__name__ == "my_loss"


# ---------------------------------------------------------------------------- end to end
TRAINING_SCRIPT = """
    import json, pathlib
    import numpy as np
    import keras
    from bundle import Bundle

    out = pathlib.Path({out!r})
    keras.utils.set_random_seed(0)

    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1) * 3.0

    def my_metric(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)

    def scaled_tanh(x):
        return keras.ops.tanh(x) * 1.5

    class ScaledNormal(keras.initializers.Initializer):
        def __init__(self, scale=0.5):
            self.scale = scale

        def __call__(self, shape, dtype=None):
            return keras.random.normal(shape, dtype=dtype, seed=1) * self.scale

        def get_config(self):
            return {{"scale": self.scale}}

    class HalfL1(keras.regularizers.Regularizer):
        def __init__(self, l1=0.01):
            self.l1 = l1

        def __call__(self, weights):
            return 0.5 * self.l1 * keras.ops.sum(keras.ops.abs(weights))

        def get_config(self):
            return {{"l1": self.l1}}

    class HalfEvery(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, rate=0.01, steps=100):
            self.rate, self.steps = rate, steps

        def __call__(self, step):
            return self.rate * keras.ops.power(0.5, keras.ops.cast(step, "float32") / self.steps)

        def get_config(self):
            return {{"rate": self.rate, "steps": self.steps}}

    class Affine(keras.layers.Layer):
        def __init__(self, scale=2.0, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def build(self, input_shape):
            self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="b")

        def call(self, x):
            return x * self.scale + self.bias

        def get_config(self):
            return {{**super().get_config(), "scale": self.scale}}

    @keras.saving.register_keras_serializable(package="demo")
    class TwoTower(keras.Model):
        def __init__(self, units=8, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.hidden = keras.layers.Dense(units, activation="relu")
            self.head = keras.layers.Dense(1)

        def call(self, x):
            return self.head(self.hidden(x))

        def get_config(self):
            return {{"units": self.units, "name": self.name}}

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype("float32")
    y = X @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")
    np.save(out / "X.npy", X)
    np.save(out / "y.npy", y)

    layered = keras.Sequential([
        keras.Input((4,)),
        Affine(2.0),
        keras.layers.Dense(8, activation=scaled_tanh, kernel_initializer=ScaledNormal(0.5),
                           kernel_regularizer=HalfL1(0.01)),
        keras.layers.Dense(1),
    ])
    optimizer = keras.optimizers.Adam(learning_rate=HalfEvery(0.01))
    layered.compile(optimizer, loss=my_loss, metrics=[my_metric])
    layered.fit(X, y, epochs=2, batch_size=16, verbose=0)
    layered_path = Bundle(layered, input_example=X[:16], name="layered").save(out / "layered")
    np.save(out / "layered_pred.npy", layered.predict(X, verbose=0))

    facts = {{
        "layered": str(layered_path),
        "layered_eval": layered.evaluate(X, y, return_dict=True, verbose=0),
        "layered_iterations": int(layered.optimizer.iterations),
    }}

    tower = TwoTower(8)
    tower.compile(keras.optimizers.Adam(0.01), loss="mse")
    tower.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.save(out / "tower_pred.npy", tower.predict(X, verbose=0))
    try:
        facts["tower"] = str(Bundle(tower, input_example=X[:16], name="tower").save(out / "tower"))
    except Exception as err:  # reported by the subclassed-model tests
        facts["tower_error"] = f"{{type(err).__name__}}: {{err}}"
    (out / "train.json").write_text(json.dumps(facts))
"""

SERVING_SCRIPT = """
    import json, pathlib
    import numpy as np
    import keras
    import __main__
    from bundle import Bundle

    out = pathlib.Path({out!r})
    facts = json.loads((out / "train.json").read_text())
    X, y = np.load(out / "X.npy"), np.load(out / "y.npy")
    assert not hasattr(__main__, "my_loss") and not hasattr(__main__, "Affine")
    result = {{}}

    layered = Bundle.load(facts["layered"], trusted=True)
    np.save(out / "layered_loaded.npy", layered.predict(X))
    model = layered.model
    result["loss_name"] = model.loss.__name__
    result["layer_classes"] = [type(layer).__name__ for layer in model.layers]
    result["eval"] = model.evaluate(X, y, return_dict=True, verbose=0)
    pred = model.predict(X, verbose=0)
    regularization = float(sum(np.asarray(loss) for loss in model.losses))
    result["formula_loss"] = float(np.mean(3.0 * np.mean((y - pred) ** 2, axis=-1)))
    result["regularization"] = regularization
    result["formula_metric"] = float(np.mean(np.abs(y - pred)))
    result["iterations_before"] = int(model.optimizer.iterations)
    result["schedule"] = model.optimizer.get_config()["learning_rate"]["class_name"]
    history = model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    result["history"] = {{k: [float(v) for v in values] for k, values in history.history.items()}}
    result["iterations_after"] = int(model.optimizer.iterations)

    if "tower" in facts:
        tower = Bundle.load(facts["tower"], trusted=True)
        np.save(out / "tower_loaded.npy", tower.predict(X))
        result["tower_class"] = type(tower.model).__name__
        tower_history = tower.model.fit(X, y, epochs=1, batch_size=16, verbose=0)
        result["tower_history"] = sorted(tower_history.history)
    (out / "serve.json").write_text(json.dumps(result))
"""


@pytest.fixture(scope="module")
def trained_in_a_script(tmp_path_factory):
    """Bundles saved by a training script whose custom objects live in its __main__."""
    out = tmp_path_factory.mktemp("script")
    run_python(textwrap.dedent(TRAINING_SCRIPT).format(out=str(out)))
    return out, json.loads((out / "train.json").read_text())


@pytest.fixture(scope="module")
def served(trained_in_a_script):
    """What a fresh process, with none of the training script's code, did with the bundles."""
    out, _ = trained_in_a_script
    run_python(textwrap.dedent(SERVING_SCRIPT).format(out=str(out)))
    return json.loads((out / "serve.json").read_text())


def _tower(facts: dict) -> str:
    """The subclassed-model bundle's path (the script records any error saving it)."""
    error = facts.get("tower_error", "")
    assert not error, error
    return facts["tower"]


@pytest.mark.slow
def test_script_objects_need_trusted_to_load(trained_in_a_script):
    _, facts = trained_in_a_script
    names = ["Affine", "HalfL1", "ScaledNormal", "scaled_tanh"]  # what prediction needs
    with pytest.raises(UnsafeLoadError, match=r"Refusing to load bundle 'layered' 1: 4 part") as e:
        Bundle.load(facts["layered"])
    for name in names:
        assert f"- custom_objects/{name}.pkl: a cloudpickle pickle of __main__.{name}" in str(
            e.value
        )
    for name in ("HalfEvery", "my_loss", "my_metric"):  # compile only: not named
        assert name not in str(e.value)
    assert sorted(f for f, _, _ in e.value.parts) == [f"custom_objects/{n}.pkl" for n in names]
    assert "Bundle.load(path, trusted=True)" in str(e.value)


@pytest.mark.slow
def test_script_custom_objects_are_recorded_by_value(trained_in_a_script):
    _, facts = trained_in_a_script
    manifest = json.loads((Path(facts["layered"]) / "manifest.json").read_text())
    records = {r["name"]: r for r in manifest["custom_objects"]}
    assert {name: r["kind"] for name, r in records.items()} == {
        "Affine": "layer",
        "HalfEvery": "schedule",
        "HalfL1": "regularizer",
        "ScaledNormal": "initializer",
        "my_loss": "loss",
        "my_metric": "metric",
        "scaled_tanh": "activation",
    }
    for name, record in records.items():
        assert (record["storage"], record["module"], record["qualname"]) == (
            "value",
            "__main__",
            name,
        )
        assert record["file"] == f"custom_objects/{name}.pkl"
    # Decided from the saved model's config: what the architecture names vs compile_config.
    assert {name: r["needed_for"] for name, r in records.items()} == {
        "Affine": "predict",
        "HalfEvery": "compile",
        "HalfL1": "predict",
        "ScaledNormal": "predict",
        "my_loss": "compile",
        "my_metric": "compile",
        "scaled_tanh": "predict",
    }


@pytest.mark.slow
def test_fresh_process_predicts_and_keeps_training(trained_in_a_script, served):
    out, facts = trained_in_a_script
    result = served

    # predictions: exactly what the training process computed
    np.testing.assert_allclose(
        np.load(out / "layered_loaded.npy"), np.load(out / "layered_pred.npy"), rtol=0, atol=ATOL
    )
    assert result["layer_classes"] == ["Affine", "Dense", "Dense"]

    # compiled as it was: the custom loss and metric, with the same values as in training
    assert result["loss_name"] == "my_loss"
    trained = facts["layered_eval"]
    assert set(result["eval"]) == set(trained) == {"loss", "my_metric"}
    np.testing.assert_allclose(result["eval"]["loss"], trained["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["eval"]["my_metric"], trained["my_metric"], rtol=1e-5)
    assert result["regularization"] > 0  # the custom regularizer is attached
    np.testing.assert_allclose(
        result["eval"]["loss"], result["formula_loss"] + result["regularization"], rtol=1e-4
    )
    np.testing.assert_allclose(result["eval"]["my_metric"], result["formula_metric"], rtol=1e-4)

    # and training continues where it stopped, optimizer state included
    assert set(result["history"]) == {"loss", "my_metric"}
    assert np.isfinite(result["history"]["loss"]).all()
    assert result["iterations_before"] == facts["layered_iterations"] == 8
    assert result["iterations_after"] == facts["layered_iterations"] + 4
    assert result["schedule"] == "HalfEvery"


@pytest.mark.slow
def test_subclassed_model_from_a_script(trained_in_a_script, served):
    out, facts = trained_in_a_script
    path = _tower(facts)
    [record] = json.loads((Path(path) / "manifest.json").read_text())["custom_objects"]
    assert (record["name"], record["kind"], record["storage"]) == (
        "demo>TwoTower",
        "model",
        "value",
    )
    assert record["file"] == "custom_objects/demo_TwoTower.pkl"
    with pytest.raises(
        UnsafeLoadError, match=r"- custom_objects/demo_TwoTower\.pkl: a cloudpickle"
    ):
        Bundle.load(path)
    np.testing.assert_allclose(
        np.load(out / "tower_loaded.npy"), np.load(out / "tower_pred.npy"), rtol=0, atol=ATOL
    )
    assert served["tower_class"] == "TwoTower"
    assert served["tower_history"] == ["loss"]
