"""The manifest: what manifest.json records, its JSON Schema, and what a reader refuses."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import bundle
from bundle import FORMAT_VERSION, Bundle, BundleError, Manifest, UnsupportedFormatError
from bundle.errors import ManifestError
from bundle.format.integrity import hash_file
from bundle.format.layout import MANIFEST_FILE
from bundle.format.manifest import FORMAT_NAME, parse_manifest, read_manifest, write_manifest

SCHEMA_PATH = Path(bundle.__file__).resolve().parent / "schemas" / "manifest.schema.json"
ENVIRONMENT_KEYS = {
    "python",
    "platform",
    "tensorflow",
    "keras",
    "scikit-learn",
    "numpy",
    "joblib",
    "cloudpickle",
}
DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "scikit-learn": ("scikit-learn",),
    "numpy": ("numpy",),
    "joblib": ("joblib",),
    "cloudpickle": ("cloudpickle",),
}


def doubled_mse(y_true, y_pred):
    import keras

    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1) * 2.0


def _installed_version(names: tuple[str, ...]) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise AssertionError(f"none of {names} is installed")


def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _manifest_json(path: Path) -> dict:
    return json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))


def _rewrite_manifest(path: Path, data: dict) -> None:
    (path / MANIFEST_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def custom_bundle(tmp_path_factory):
    """A small regression bundle with a by-value loss and a by-reference helper."""
    import keras
    from sklearn.metrics import mean_absolute_error

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", loss=doubled_mse)
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    root = tmp_path_factory.mktemp("manifest") / "reg"
    saved = Bundle(
        model,
        custom_objects={"mae_helper": mean_absolute_error},
        input_example=x,
        name="reg",
        metadata={"data": {"rows": 32, "tags": ["a", "b"]}, "note": None},
    ).save(root)
    return saved


# ---------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("fixture", ["tabular_bundle", "image_bundle", "custom_bundle"])
def test_saved_manifest_validates_against_the_json_schema(fixture, request):
    value = request.getfixturevalue(fixture)
    path = value[0] if isinstance(value, tuple) else value
    schema = _schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    assert validator_cls is jsonschema.Draft202012Validator
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = [error.message for error in validator.iter_errors(_manifest_json(path))]
    assert errors == []


def test_schema_is_packaged_with_the_module():
    from importlib import resources

    text = resources.files("bundle").joinpath("schemas/manifest.schema.json").read_text("utf-8")
    assert json.loads(text) == _schema()


def test_manifest_records_format_name_version_and_creation_time(tabular_bundle):
    path, saved = tabular_bundle
    data = _manifest_json(path)
    assert data["format"] == FORMAT_NAME == "keras-bundle"
    assert data["format_version"] == FORMAT_VERSION == 1
    assert (data["name"], data["version"]) == ("churn", "1.0.0")
    created = datetime.fromisoformat(data["created"])
    assert created.utcoffset() == timedelta(0), "created must be UTC"
    assert timedelta(0) <= datetime.now(timezone.utc) - created < timedelta(hours=6)
    assert saved.manifest.to_dict() == data


def test_manifest_records_the_environment(tabular_bundle):
    path, _ = tabular_bundle
    environment = _manifest_json(path)["environment"]
    assert set(environment) >= ENVIRONMENT_KEYS
    for key, names in DISTRIBUTIONS.items():
        assert environment[key] == _installed_version(names), key
    import platform

    assert environment["python"] == platform.python_version()
    assert environment["platform"].startswith(__import__("sys").platform)


def test_manifest_records_the_model_signature(tabular_bundle, tabular_parts):
    path, _ = tabular_bundle
    _, _, model = tabular_parts
    record = _manifest_json(path)["model"]
    assert record["file"] == "model.keras" and record["serializer"] == "keras"
    assert record["executes_code"] is False
    n_features = int(model.inputs[0].shape[-1])
    [inputs] = record["inputs"]
    [outputs] = record["outputs"]
    assert inputs["shape"] == [None, n_features] and inputs["dtype"] == "float32"
    assert outputs["shape"] == [None, 3] and outputs["dtype"] == "float32"
    assert inputs["name"] and outputs["name"]


def test_manifest_records_the_steps_in_replay_order(tabular_bundle):
    path, _ = tabular_bundle
    data = _manifest_json(path)
    [pre] = data["preprocess"]
    [post] = data["postprocess"]
    assert pre["name"] == "preprocess[0]"
    assert pre["class"] == "sklearn.compose.ColumnTransformer"
    assert pre["file"].startswith("steps/000-") and (path / pre["file"]).is_file()
    assert pre["serializer"] == "native" and pre["executes_code"] is False
    assert "sklearn.preprocessing.StandardScaler" in pre["imports"]
    assert post["name"] == "postprocess[0]"
    assert post["class"] == "sklearn.preprocessing.LabelEncoder"
    assert post["mode"] == "class_ids"
    assert (path / post["file"]).is_file()


def test_manifest_records_custom_objects(custom_bundle):
    records = {r["name"]: r for r in _manifest_json(custom_bundle)["custom_objects"]}
    assert set(records) == {"doubled_mse", "mae_helper"}
    loss = records["doubled_mse"]
    assert (loss["kind"], loss["storage"], loss["serializer"]) == ("loss", "value", "cloudpickle")
    assert loss["qualname"] == "doubled_mse" and loss["executes_code"] is True
    assert loss["file"] == "custom_objects/doubled_mse.pkl"
    assert (custom_bundle / loss["file"]).is_file()
    assert loss["needed_for"] == "compile"  # the model's config names it in compile_config only
    helper = records["mae_helper"]
    assert helper["storage"] == "reference" and helper["file"] is None
    # A plain function, no Keras object: Keras could call it with arguments from the file.
    assert helper["executes_code"] is True
    assert helper["module"].startswith("sklearn.metrics")
    assert helper["qualname"] == "mean_absolute_error"
    assert helper["needed_for"] == "compile"  # named nowhere in the architecture


def test_manifest_records_the_input_schema(tabular_bundle, image_bundle):
    path, saved = tabular_bundle
    schema = _manifest_json(path)["input_schema"]
    assert schema == saved.input_schema.to_dict()
    assert schema["kind"] == "tabular"
    assert [c["name"] for c in schema["columns"]] == [
        "age",
        "income",
        "score",
        "visits",
        "plan",
        "region",
    ]
    image_schema = _manifest_json(image_bundle[0])["input_schema"]
    assert image_schema["kind"] == "array"
    assert image_schema["shape"] == [8, 8, 1] and image_schema["dtype"] == "uint8"


def test_files_table_covers_every_file_but_the_manifest(tabular_bundle, custom_bundle):
    for path in (tabular_bundle[0], custom_bundle):
        files = _manifest_json(path)["files"]
        on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {
            MANIFEST_FILE
        }
        assert set(files) == on_disk
        assert MANIFEST_FILE not in files
        for name, entry in files.items():
            assert entry == {
                "sha256": hash_file(path / name),
                "size": (path / name).stat().st_size,
            }, name
    assert {"model.keras", "requirements.txt", "README.md"} <= set(
        _manifest_json(tabular_bundle[0])["files"]
    )


def test_manifest_records_metadata(tabular_bundle, custom_bundle):
    assert _manifest_json(tabular_bundle[0])["metadata"] == {"auc": 0.91}
    metadata = _manifest_json(custom_bundle)["metadata"]
    assert metadata == {"data": {"rows": 32, "tags": ["a", "b"]}, "note": None}
    assert dict(Bundle.load(custom_bundle, trusted=True).metadata) == metadata


def test_manifest_json_is_stable_sorted_and_ends_with_newline(tabular_bundle):
    path, _ = tabular_bundle
    text = (path / MANIFEST_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- round trips
def test_read_manifest_round_trips_the_dataclass(tabular_bundle, tmp_path):
    path, saved = tabular_bundle
    manifest = read_manifest(path)
    assert isinstance(manifest, Manifest)
    assert manifest == saved.manifest
    assert manifest.label == "bundle 'churn' 1.0.0"
    assert manifest.parts_executing_code == []
    written = write_manifest(manifest, tmp_path)
    assert written == tmp_path / MANIFEST_FILE
    assert read_manifest(tmp_path) == manifest
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.name = "other"  # type: ignore[misc]


def test_parts_executing_code_lists_pickled_custom_objects(custom_bundle):
    manifest = read_manifest(custom_bundle)
    assert [p["name"] for p in manifest.parts_executing_code] == ["doubled_mse", "mae_helper"]


def test_parts_executing_code_does_not_trust_the_flag(custom_bundle):
    data = _manifest_json(custom_bundle)
    for record in data["custom_objects"]:
        record["executes_code"] = False
    manifest = Manifest.from_dict(data)
    assert [p["name"] for p in manifest.parts_executing_code] == ["doubled_mse"]


def test_write_manifest_refuses_an_invalid_manifest(tabular_bundle, tmp_path):
    manifest = dataclasses.replace(read_manifest(tabular_bundle[0]), version="../escape")
    with pytest.raises(ManifestError, match=r"version: '\.\./escape' does not match"):
        write_manifest(manifest, tmp_path)
    assert not (tmp_path / MANIFEST_FILE).exists()


# ---------------------------------------------------------------------------- refusals
def test_unknown_top_level_key_is_refused_naming_it(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    data = _manifest_json(copy)
    data["signature_v2"] = {"inputs": []}
    _rewrite_manifest(copy, data)
    with pytest.raises(
        ManifestError, match=r"does not match the keras-bundle manifest schema"
    ) as e:
        Bundle.load(copy)
    message = str(e.value)
    assert "(top level): Additional properties are not allowed ('signature_v2' was unexpected)" in (
        message
    )
    assert "restore it from the release" in message
    assert isinstance(e.value, BundleError)


def test_unknown_key_in_a_step_record_is_refused(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    data = _manifest_json(copy)
    data["preprocess"][0]["checksum"] = "x"
    _rewrite_manifest(copy, data)
    with pytest.raises(ManifestError, match=r"- preprocess/0: .*'checksum' was unexpected"):
        Bundle.load(copy)


def test_missing_required_key_is_refused_naming_it(tabular_bundle):
    data = _manifest_json(tabular_bundle[0])
    del data["files"]
    with pytest.raises(ManifestError, match=r"'files' is a required property"):
        Manifest.from_dict(data)


def test_many_schema_violations_are_capped_at_five(tabular_bundle):
    data = _manifest_json(tabular_bundle[0])
    for key in ("name", "version", "created", "environment", "model", "files", "metadata"):
        data[key] = 12
    with pytest.raises(ManifestError) as e:
        Manifest.from_dict(data)
    lines = str(e.value).splitlines()
    assert sum(line.startswith("- ") for line in lines) == 5
    assert "... (2 more)" in lines


@pytest.mark.parametrize(
    "created", ["yesterday", "2026-01-01T00:00:00", "2026-02-30T00:00:00Z", "2026-01-01"]
)
def test_created_must_be_an_rfc3339_date_time_with_offset(tabular_bundle, created):
    data = _manifest_json(tabular_bundle[0])
    data["created"] = created
    with pytest.raises(ManifestError, match=rf"- created: '{created}' is not a 'date-time'"):
        Manifest.from_dict(data)


@pytest.mark.parametrize("created", ["2026-01-01T00:00:00Z", "2026-01-01T08:00:00.25+08:00"])
def test_created_accepts_rfc3339_date_times(tabular_bundle, created):
    data = _manifest_json(tabular_bundle[0])
    data["created"] = created
    assert Manifest.from_dict(data).created == created


def test_newer_format_version_is_refused_naming_both_versions(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    data = _manifest_json(copy)
    data["format_version"] = FORMAT_VERSION + 1
    data["a_field_from_the_future"] = True  # a newer format may add keys: still this error
    _rewrite_manifest(copy, data)
    expected = (
        rf"uses bundle format version {FORMAT_VERSION + 1}, but keras-bundle "
        rf"{re.escape(bundle.__version__)} reads format versions up to {FORMAT_VERSION}\.\n"
        r"Upgrade keras-bundle \(pip install -U keras-bundle\)"
    )
    with pytest.raises(UnsupportedFormatError, match=expected) as e:
        Bundle.load(copy)
    assert (e.value.found, e.value.supported) == (FORMAT_VERSION + 1, FORMAT_VERSION)
    assert str(copy / MANIFEST_FILE) in str(e.value)


def test_other_format_is_refused(tabular_bundle):
    data = _manifest_json(tabular_bundle[0])
    data["format"] = "mlflow-model"
    with pytest.raises(ManifestError, match=r"its 'format' is 'mlflow-model', expected 'keras-"):
        Manifest.from_dict(data)
    with pytest.raises(ManifestError, match=r"its 'format' is 'list', expected"):
        Manifest.from_dict([1, 2])  # type: ignore[arg-type]


def test_format_version_zero_is_refused(tabular_bundle):
    data = _manifest_json(tabular_bundle[0])
    data["format_version"] = 0
    with pytest.raises(ManifestError, match=r"- format_version: 0 is less than the minimum of 1"):
        Manifest.from_dict(data)


def test_non_json_manifest_is_refused(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    (copy / MANIFEST_FILE).write_text('{"format": "keras-bundle", ', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"manifest\.json is not valid JSON: .*line 1"):
        Bundle.load(copy)
    with pytest.raises(ManifestError, match=r"m\.json is not valid JSON"):
        parse_manifest(b"\xff\xfe not json", source="m.json")


def test_missing_manifest_in_a_version_directory(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest\.json does not exist: .* is not a bundle"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"auc": np.float32(0.5)}, "float32 is not JSON serializable"),
        ({"when": datetime(2024, 1, 1)}, "datetime is not JSON serializable"),
        ({"loss": float("nan")}, "Out of range float values are not JSON compliant"),
        ({"weights": np.zeros(3)}, "ndarray is not JSON serializable"),
    ],
)
def test_metadata_that_is_not_json_is_refused_at_construction(image_parts, metadata, problem):
    with pytest.raises(ValueError, match=r"metadata must be JSON-serializable") as e:
        Bundle(image_parts, metadata=metadata)
    assert problem in str(e.value)
    assert "Convert numpy scalars with float() / int()" in str(e.value)


# ---------------------------------------------------------------------------- backend
def test_manifest_records_the_keras_backend_and_its_version(tabular_bundle):
    manifest = read_manifest(tabular_bundle[0])
    version = _installed_version(DISTRIBUTIONS["tensorflow"])
    assert manifest.backend == {"name": "tensorflow", "version": version}
    assert manifest.model["backend"] == manifest.backend


def test_bundles_from_before_the_backend_record_still_read_as_unrecorded():
    (golden,) = sorted((Path(__file__).parent / "data" / "golden-v1").iterdir())
    manifest = read_manifest(golden)
    assert "backend" not in manifest.model
    assert manifest.backend is None


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        ({"name": "jax"}, "'version' is a required property"),
        ({"name": "", "version": None}, "should be non-empty"),
        ({"name": "jax", "version": "0.4", "device": "gpu"}, "'device' was unexpected"),
    ],
)
def test_a_malformed_backend_record_is_refused(tabular_bundle, backend, problem):
    data = read_manifest(tabular_bundle[0]).to_dict()
    data["model"]["backend"] = backend
    with pytest.raises(ManifestError, match=rf"- model/backend.*: .*{re.escape(problem)}"):
        Manifest.from_dict(data)
