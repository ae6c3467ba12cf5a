"""Where a by-reference object's module would come from, decided without importing it."""

from __future__ import annotations

import sys

import pytest

from bundle.format.references import locate_module, reference_problem


def test_an_installed_distributions_module_is_allowed_and_located_without_import():
    sys.modules.pop("sklearn.metrics._regression", None)
    origin = locate_module("sklearn.metrics._regression")
    assert origin is not None and origin.file.endswith("sklearn/metrics/_regression.py")
    assert origin.distributions[-1] == "scikit-learn"
    assert origin.files[0].endswith("sklearn/__init__.py")  # parents' __init__ run first
    assert reference_problem("sklearn.metrics._regression", "mean_absolute_error") is None


@pytest.mark.parametrize(
    ("module", "qualname", "problem"),
    [
        ("json", "dumps", r"json is in the standard library"),
        ("os", "system", r"os is in the standard library"),
        ("__main__", "loss", r"__main__ is a __main__ module"),
        ("jsonschema.__main__", "main", r"jsonschema\.__main__ is a __main__ module"),
        ("pkg.losses", "f.<locals>.g", r"is not the qualified name of a class or function"),
        ("models.churn.7.helpers", "H", r"is not a module name"),
        ("", "x", r"'' is not a module name"),
    ],
)
def test_names_that_never_resolve_without_trust(module, qualname, problem):
    import re

    found = reference_problem(module, qualname)
    assert found is not None and re.search(problem, found), found


def test_working_directory_code_is_refused_without_being_imported(tmp_path, monkeypatch):
    (tmp_path / "local_helpers.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "space" / "inner").mkdir(parents=True)
    (tmp_path / "space" / "inner" / "mod.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    problem = reference_problem("local_helpers", "Helper")
    assert problem is not None and "which no installed distribution lists" in problem
    assert "local_helpers.py" in problem
    problem = reference_problem("space.inner.mod", "Helper")
    assert problem is not None and problem.startswith("space is a namespace package")
    assert "local_helpers" not in sys.modules and "space" not in sys.modules


def test_nothing_inside_the_bundle_is_ever_importable(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    problem = reference_problem("pkg.helpers", "H", inside=tmp_path)
    assert (
        problem == f"pkg.helpers would be imported from the bundle itself ({package}/__init__.py)"
    )


def test_a_module_that_is_not_there_is_no_trust_problem():
    """Nothing can run from it: loading reports the package to install instead."""
    assert locate_module("not_installed_pkg.losses") is None
    assert reference_problem("not_installed_pkg.losses", "Focal") is None
    assert locate_module("json.dumps.x") is None  # json.dumps is no package
