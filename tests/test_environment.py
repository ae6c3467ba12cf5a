"""The training environment: recorded, pinned in requirements.txt, compared at load."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import sys
import warnings

import pytest

from bundle import Bundle, BundleWarning, EnvironmentMismatchWarning
from bundle.format.environment import capture_environment, requirements_text, warn_on_mismatch

PINNED = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel"),
    "keras": ("keras",),
    "scikit-learn": ("scikit-learn",),
    "numpy": ("numpy",),
    "joblib": ("joblib",),
    "cloudpickle": ("cloudpickle",),
}


def _installed(names: tuple[str, ...]) -> tuple[str, str]:
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise AssertionError(f"none of {names} is installed")


def _requirements(path) -> dict[str, str]:
    pins = {}
    for line in (path / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name] = version
    return pins


def _with_recorded_version(copy, package: str, version: str) -> None:
    """Edit a copy's manifest (not in the files table), keeping it schema-valid."""
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["environment"][package] = version
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _mismatch_warnings(caught) -> list[EnvironmentMismatchWarning]:
    return [w.message for w in caught if issubclass(w.category, EnvironmentMismatchWarning)]


@pytest.mark.parametrize("key", sorted(PINNED))
def test_requirements_pin_the_installed_versions(tabular_bundle, key):
    distribution, version = _installed(PINNED[key])
    assert _requirements(tabular_bundle[0])[distribution] == version


def test_requirements_name_the_installed_tensorflow_distribution(tabular_bundle):
    pins = _requirements(tabular_bundle[0])
    distribution, _ = _installed(PINNED["tensorflow"])
    tensorflows = [name for name in pins if name.startswith("tensorflow")]
    assert tensorflows == [distribution]


def test_requirements_are_pip_installable_syntax(tabular_bundle):
    lines = (tabular_bundle[0] / "requirements.txt").read_text().splitlines()
    assert lines[0] == f"# Training environment: Python {platform.python_version()}"
    for line in lines[1:]:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line), line


def test_requirements_skip_packages_that_are_not_installed():
    text = requirements_text({"python": "3.11.0", "keras": "3.1.0", "numpy": None})
    assert text == "# Training environment: Python 3.11.0\nkeras==3.1.0\n"


def test_capture_environment_records_python_platform_and_packages():
    environment = capture_environment()
    assert environment["python"] == platform.python_version()
    assert environment["platform"] == f"{sys.platform}-{platform.machine()}"
    for key, names in PINNED.items():
        assert environment[key] == _installed(names)[1]


def test_minor_version_difference_warns_with_fields(tabular_bundle, tabular_data, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    _with_recorded_version(copy, "scikit-learn", "0.24.2")
    running = importlib.metadata.version("scikit-learn")
    expected = (
        rf"^Bundle 'churn' 1\.0\.0 was saved with scikit-learn 0\.24\.2; running "
        rf"{re.escape(running)}\. Predictions may differ: its pickles are version-specific"
    )
    with pytest.warns(EnvironmentMismatchWarning, match=expected) as caught:
        loaded = Bundle.load(copy)
    [warning] = _mismatch_warnings(caught)
    assert (warning.package, warning.saved, warning.running) == ("scikit-learn", "0.24.2", running)
    assert isinstance(warning, BundleWarning)
    assert "requirements.txt pins the training versions" in str(warning)
    # stacklevel points at the caller of Bundle.load, not at the package
    [record] = [w for w in caught if issubclass(w.category, EnvironmentMismatchWarning)]
    assert record.filename == __file__
    assert loaded.predict(tabular_data[0].iloc[:5]).shape == (5,)


@pytest.mark.parametrize("patch", ["patch", "local"])
def test_patch_level_difference_does_not_warn(tabular_bundle, bundle_copy, patch):
    copy = bundle_copy(tabular_bundle[0])
    running = importlib.metadata.version("scikit-learn")
    major, minor, *_ = running.split(".")
    recorded = f"{major}.{minor}.999" if patch == "patch" else f"{major}.{minor}.0+custom"
    _with_recorded_version(copy, "scikit-learn", recorded)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Bundle.load(copy)
    assert _mismatch_warnings(caught) == []


def test_intact_bundle_loads_without_environment_warnings(tabular_bundle):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Bundle.load(tabular_bundle[0])
    assert _mismatch_warnings(caught) == []


def test_each_differing_package_warns_once():
    recorded = {**capture_environment(), "numpy": "1.21.0", "keras": "2.15.0", "joblib": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        differing = warn_on_mismatch(recorded, label="Bundle 'x' 1")
    assert sorted(differing) == ["keras", "numpy"]
    messages = _mismatch_warnings(caught)
    assert sorted(w.package for w in messages) == ["keras", "numpy"]
    keras_warning = next(w for w in messages if w.package == "keras")
    assert "layer implementations and the saving format can change" in str(keras_warning)
    numpy_warning = next(w for w in messages if w.package == "numpy")
    assert "behaviour may differ" in str(numpy_warning)


def test_unrecorded_packages_and_python_do_not_warn():
    recorded = {"python": "2.7.18", "platform": "win32-AMD64", "keras-bundle": "0.0.1"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_on_mismatch(recorded, label="Bundle 'x' 1") == []
    assert _mismatch_warnings(caught) == []


def test_one_policy_decides_for_load_verify_and_the_cli():
    """Load's warnings, verify's report and `bundle inspect`'s environment rows read the same
    comparison: major.minor of the packages a bundle runs on; python, platform, patch
    releases and missing packages are shown but do not count."""
    from bundle.cli.reading import _environment_rows
    from bundle.format.environment import compare_environment
    from bundle.format.verification import environment_check

    running = capture_environment()
    major, minor, *_ = running["numpy"].split(".")
    recorded = {
        **running,
        "python": "2.7.18",
        "platform": "win32-AMD64",
        "numpy": f"{major}.{minor}.999",  # a patch release: shown, not significant
        "scikit-learn": "0.24.2",  # significant
        "joblib": None,  # not recorded
    }
    differences = {d.package: d.significant for d in compare_environment(recorded)}
    assert differences["scikit-learn"] is True
    assert differences["numpy"] is differences["python"] is differences["platform"] is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_on_mismatch(recorded, label="Bundle 'x' 1") == ["scikit-learn"]
    assert [w.package for w in _mismatch_warnings(caught)] == ["scikit-learn"]
    detail = environment_check(recorded).detail
    assert f"scikit-learn 0.24.2 -> {running['scikit-learn']} !" in detail
    assert f"numpy {major}.{minor}.999 -> {running['numpy']}," in detail + ","
    rows = {row["package"]: row["differs"] for row in _environment_rows(recorded)}
    assert {key for key, differs in rows.items() if differs} == {"scikit-learn"}
