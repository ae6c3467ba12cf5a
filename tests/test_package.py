"""The package's shape: its public surface, its error tree, and imports that flow downhill."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
from conftest import run_python

import bundle
from bundle import errors

PACKAGE = Path(bundle.__file__).resolve().parent

PUBLIC = [
    "FORMAT_VERSION",
    "BackendError",
    "Bundle",
    "BundleError",
    "BundleNotFoundError",
    "BundleWarning",
    "Check",
    "CompileStateSkippedWarning",
    "DigestMismatchError",
    "DriftReport",
    "DriftThresholds",
    "EnvironmentMismatchWarning",
    "ExportError",
    "ExtraColumnsWarning",
    "GcReport",
    "ImageError",
    "ImageInput",
    "InputSchema",
    "IntegrityError",
    "Leftover",
    "Manifest",
    "ManifestError",
    "MissingDependencyError",
    "ModelError",
    "Packed",
    "RegistryError",
    "SchemaError",
    "SignatureError",
    "StepError",
    "StorageError",
    "StorageWarning",
    "UnsafeArchiveError",
    "UnsafeLoadError",
    "UnsupportedFormatError",
    "UsageError",
    "VerifyReport",
    "VersionExistsError",
    "VersionInfo",
    "VersionMismatchWarning",
    "__version__",
    "archive",
    "gc",
    "list_versions",
    "pack",
    "pull",
    "push",
    "sign",
    "tag",
    "verify",
]

# A package (or top-level module) may import packages of its own rank or lower, never
# higher; every module inside a package has the package's rank. `__init__` (the public
# surface) sits above the core and below the edges, which may use it.
RANKS = {
    "errors": 0,
    "format": 1,  # the on-disk format: layout, manifest, hashes, trust, environment, golden
    "contract": 1,  # the input contract
    "fileio": 1,  # prediction files read and written in batches; image files decoded
    "steps": 2,  # scikit-learn steps: storage, replay, rules
    "model": 2,  # Keras: save/load, signature, custom objects, the compiled forward pass
    "storage": 2,  # where bundles live: roots, object storage, archives, locating
    "engine": 3,  # the predict path
    "drift": 3,  # drift statistics, reports and live windows against the stored profile
    "core": 4,  # `Bundle`
    "releases": 4,
    "packing": 4,  # `pack`: a bundle from the files a team already has
    # Edges, above the public surface (rank 5): each goes through the public API or the
    # named interface of a lower package.
    "export": 6,
    "serve": 6,
    "spark": 6,
    "cli": 6,
}
EXEMPT = {"__init__", "_version"}
PUBLIC_SURFACE_RANK = 5


# ---------------------------------------------------------------------------- public surface
def test_all_is_exactly_the_public_surface():
    assert sorted(bundle.__all__) == sorted(PUBLIC)
    assert len(set(bundle.__all__)) == len(bundle.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_exists(name):
    assert getattr(bundle, name) is not None


def test_star_import_gives_exactly_all():
    namespace: dict = {}
    exec("from bundle import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


def test_version_is_a_string_matching_the_distribution():
    import importlib.metadata

    assert isinstance(bundle.__version__, str)
    assert bundle.__version__ == importlib.metadata.version("keras-bundle")


def test_public_errors_are_the_ones_in_errors_module():
    for name in PUBLIC:
        value = getattr(bundle, name)
        if isinstance(value, type) and issubclass(value, (BaseException, Warning)):
            assert value is getattr(errors, name)


# ---------------------------------------------------------------------------- errors
# The whole tree, pinned: every class of errors.py and its direct bases.
ERROR_TREE = {
    "BundleError": (Exception,),
    "SchemaError": ("BundleError", ValueError),
    "ImageError": ("SchemaError",),
    "StepError": ("BundleError",),
    "ModelError": ("BundleError",),
    "BackendError": ("ModelError",),
    "IntegrityError": ("BundleError",),
    "DigestMismatchError": ("IntegrityError",),
    "ManifestError": ("BundleError",),
    "UnsafeLoadError": ("BundleError",),
    "UnsafeArchiveError": ("UnsafeLoadError",),
    "UnsupportedFormatError": ("BundleError",),
    "VersionExistsError": ("BundleError",),
    "BundleNotFoundError": ("BundleError", FileNotFoundError),
    "SignatureError": ("BundleError",),
    "StorageError": ("BundleError",),
    "RegistryError": ("StorageError",),
    "ExportError": ("BundleError",),
    "MissingDependencyError": ("BundleError", ImportError),
    "UsageError": ("BundleError", ValueError),
    "BundleWarning": (UserWarning,),
    "ExtraColumnsWarning": ("BundleWarning",),
    "EnvironmentMismatchWarning": ("BundleWarning",),
    "CompileStateSkippedWarning": ("BundleWarning",),
    "VersionMismatchWarning": ("BundleWarning",),
    "StorageWarning": ("BundleWarning",),
}


def test_error_tree_is_exactly_the_pinned_one():
    classes = {
        name: getattr(errors, name)
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
    }
    assert sorted(classes) == sorted(ERROR_TREE)
    for name, bases in ERROR_TREE.items():
        expected = tuple(getattr(errors, b) if isinstance(b, str) else b for b in bases)
        assert classes[name].__bases__ == expected, name


def test_error_tree_is_drawn_in_the_docstring():
    for name in ERROR_TREE:
        if name != "BundleError" and not name.endswith("Warning"):
            assert f"+- {name}" in errors.__doc__, name


def test_errors_are_not_warnings_and_warnings_are_not_errors():
    assert not issubclass(errors.BundleError, Warning)
    assert not issubclass(errors.BundleWarning, errors.BundleError)


def test_every_exception_in_errors_is_rooted_at_bundle_error_or_warning():
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, (errors.BundleError, errors.BundleWarning)), name


def test_error_data_is_keyword_only_and_kept_as_attributes():
    err = errors.IntegrityError("m", mismatched=["a"], missing=("b",), unexpected=["c"])
    assert (err.mismatched, err.missing, err.unexpected) == (["a"], ["b"], ["c"])
    assert str(err) == "m"
    with pytest.raises(TypeError):
        errors.IntegrityError("m", ["a"])  # type: ignore[misc]
    found = errors.BundleNotFoundError("m", location="/x", available=("1", "2"))
    assert (found.location, found.available) == ("/x", ["1", "2"])
    exists = errors.VersionExistsError("m", version="3", path="/r/3")
    assert (exists.version, exists.path) == ("3", "/r/3")
    unsupported = errors.UnsupportedFormatError("m", found=2, supported=1)
    assert (unsupported.found, unsupported.supported) == (2, 1)
    unsafe = errors.UnsafeLoadError("m", parts=[("f.pkl", "cloudpickle", ("a.b",))])
    assert unsafe.parts == [("f.pkl", "cloudpickle", ["a.b"])]
    pinned = errors.DigestMismatchError("m", expected="sha256:a", found="sha256:b")
    assert (pinned.expected, pinned.found) == ("sha256:a", "sha256:b")
    signed = errors.SignatureError("m", signature="d/model.sig", signer="key ab", files=("x",))
    assert (signed.signature, signed.signer, signed.files) == ("d/model.sig", "key ab", ["x"])
    registry = errors.RegistryError("m", registry="127.0.0.1:5000", status=401)
    assert (registry.registry, registry.status) == ("127.0.0.1:5000", 401)
    schema = errors.SchemaError("bad input")
    assert schema.problems == ["bad input"] and schema.column is None


def test_warnings_carry_their_fields():
    warning = errors.EnvironmentMismatchWarning(
        "m", package="numpy", saved="1.26.4", running="2.4.6"
    )
    assert (warning.package, warning.saved, warning.running) == ("numpy", "1.26.4", "2.4.6")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(warning, stacklevel=1)
    assert caught[0].category is errors.EnvironmentMismatchWarning
    assert caught[0].message.package == "numpy"
    extra = errors.ExtraColumnsWarning("m", extra=("x",))
    assert extra.extra == ["x"]


def test_bullet_list_caps_at_five():
    assert errors.bullet_list(["b", "a"]) == "- b\n- a"
    text = errors.bullet_list(str(i) for i in range(8))
    assert text.splitlines() == ["- 0", "- 1", "- 2", "- 3", "- 4", "... (3 more)"]


# ---------------------------------------------------------------------------- import ranks
def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def _rank_key(module: str) -> str:
    """``steps.native`` -> ``steps``; ``format.manifest`` -> ``format``; ``core`` -> ``core``."""
    return module.split(".")[0]


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, bundle submodule)`` for every import of ours in `source`, lazy ones too.

    `module` is the importing module's dotted name inside the package (``steps.native``).
    Absolute imports of ``bundle`` count as imports of the public surface (``__init__``).
    """
    package_parts = module.split(".")[:-1]  # steps.native and steps.__init__ -> steps
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "bundle" or alias.name.startswith("bundle."):
                    found.append((node.lineno, alias.name.partition(".")[2] or "__init__"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module == "bundle":
                    for alias in node.names:
                        target = alias.name if _rank_key(alias.name) in RANKS else "__init__"
                        found.append((node.lineno, target))
                elif node.module and node.module.startswith("bundle."):
                    found.append((node.lineno, node.module.partition(".")[2]))
                continue
            base = package_parts[: len(package_parts) - (node.level - 1)]
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module])))
            else:
                for alias in node.names:
                    found.append((node.lineno, ".".join([*base, alias.name])))
    return found


def rank_violations(source: str, module: str) -> list[str]:
    """Human-readable violations of the downhill rule in one module's source."""
    own_key = _rank_key(module)
    if module.split(".")[-1] in EXEMPT and "." not in module:
        return []
    own = RANKS[own_key]
    problems = []
    for line, target in imported_modules(source, module):
        key = _rank_key(target)
        if key == "__init__":
            rank = PUBLIC_SURFACE_RANK
        elif key in EXEMPT:
            continue
        elif key in RANKS:
            rank = RANKS[key]
        else:
            problems.append(f"{module}:{line} imports {target}, which has no rank in RANKS")
            continue
        if rank > own:
            problems.append(
                f"{module}:{line} (rank {own}) imports {target} (rank {rank}): imports must "
                "flow downhill"
            )
    return problems


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_rank():
    unranked = []
    for path in _package_modules():
        module = _module_name(path)
        if module in EXEMPT:
            continue
        if _rank_key(module) not in RANKS:
            unranked.append(module)
    assert not unranked, f"give these modules a rank in RANKS: {unranked}"


def test_imports_flow_downhill():
    problems = []
    for path in _package_modules():
        module = _module_name(path)
        if module in EXEMPT or _rank_key(module) not in RANKS:
            continue
        problems += rank_violations(path.read_text(encoding="utf-8"), module)
    assert not problems, "\n".join(problems)


def private_imports(source: str, module: str) -> list[str]:
    """Underscore names one package imports from another package's modules."""
    found = []
    own_key = _rank_key(module)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        targets = imported_modules(ast.unparse(node), module)
        if not targets:
            continue
        target = targets[0][1]
        if _rank_key(target) == own_key:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{module}:{node.lineno} imports {target}.{alias.name}")
    return found


def test_no_package_imports_another_packages_private_names():
    problems = []
    for path in _package_modules():
        module = _module_name(path)
        if _rank_key(module) in RANKS:
            problems += private_imports(path.read_text(encoding="utf-8"), module)
    assert not problems, "\n".join(problems)


def test_private_import_checker_catches_a_private_helper():
    source = "def f():\n    from ..steps.replay import _helper\n"
    assert private_imports(source, "export.saved_model") == [
        "export.saved_model:2 imports steps.replay._helper"
    ]
    assert private_imports("from .frames import _Frame\n", "export.saved_model") == []


def test_core_does_not_import_the_export_edge():
    source = (PACKAGE / "core.py").read_text(encoding="utf-8")
    assert not [t for _, t in imported_modules(source, "core") if _rank_key(t) == "export"]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("errors", "from .storage import fetch\n", "errors:1 (rank 0) imports storage (rank 2)"),
        (
            "format.manifest",
            "def f():\n    from .. import core\n",
            "format.manifest:2 (rank 1) imports core",
        ),
        ("steps.native", "from ..engine import x\n", "steps.native:1 (rank 2) imports engine"),
        ("storage.local", "import bundle.core\n", "storage.local:1 (rank 2) imports core (rank 4)"),
        ("core", "from bundle import Bundle\n", "core:1 (rank 4) imports __init__ (rank 5)"),
        ("core", "from .export import x\n", "core:1 (rank 4) imports export (rank 6)"),
        (
            "format.integrity",
            "from ..nowhere import x\n",
            "format.integrity:1 imports nowhere, which has no",
        ),
    ],
)
def test_rank_checker_catches_uphill_imports(module, source, expected):
    problems = rank_violations(source, module)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("storage.local", "from ..format.layout import X\nfrom ..errors import BundleError\n"),
        ("steps.__init__", "from . import native\nfrom .replay import compile_replay\n"),
        ("steps.native", "from ..errors import bullet_list\n"),
        ("core", "from .format import golden\nfrom .steps.rules import input_rules\n"),
        ("format.manifest", "def f():\n    from .._version import __version__\n"),
        ("cli.app", "from bundle import Bundle\nfrom ..storage import fetch\n"),
    ],
)
def test_rank_checker_allows_downhill_and_level_imports(module, source):
    assert rank_violations(source, module) == []


def test_light_modules_import_without_keras_or_tensorflow():
    result = run_python(
        """
        import sys
        sys.modules["keras"] = None
        sys.modules["tensorflow"] = None
        import bundle.format, bundle.storage, bundle.contract, bundle.cli
        from bundle.format import read_manifest, verify_files
        from bundle.storage import fetch
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow")
                           and sys.modules[m] is not None))
        """
    )
    assert result.stdout.strip() == "ok []"
