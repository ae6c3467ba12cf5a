"""Pickle-free storage of fitted scikit-learn transformers: JSON params plus NumPy arrays.

A fitted object is written as one ``.npz`` file. Its constructor parameters and fitted
attributes become a JSON tree, stored in the file as a 0-d unicode array under
`PARAMS_KEY`; every numeric or string array becomes its own entry, so the whole file loads
with ``np.load(path, allow_pickle=False)``.

Reading never unpickles and never imports a name found in the file: a class is looked up
in the registry of kinds (`bundle.steps.registry`), a fixed table keyed by class, and a
function (``FunctionTransformer.func``) is resolved only inside the modules of
`FUNCTION_MODULES`. Each kind lists the fitted attributes it may set; an attribute it does
not know is refused on both sides, so a rebuilt object never silently lacks state the
original had.

Example:
    >>> write_native(fitted_column_transformer, Path("steps/000-pre.npz"))
    >>> ct = read_native(Path("steps/000-pre.npz"))   # a real ColumnTransformer
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.base import BaseEstimator

from ..errors import UnsupportedFormatError, bullet_list
from .kinds import Kind
from .registry import KINDS, KINDS_BY_NAME, known_classes

__all__ = [
    "COMMON_STATE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FUNCTION_MODULES",
    "PARAMS_KEY",
    "native_imports",
    "read_native",
    "unsupported_parts",
    "write_native",
]

FORMAT_NAME = "keras-bundle.native"
FORMAT_VERSION = 1
"""Version of the JSON tree. Bump it when a reader of the previous version would misread a
new file (a new node type, a changed attribute meaning); keep reading every older version."""

PARAMS_KEY = "__params__"
TYPE_KEY = "__type__"

# Fitted attributes every kind may carry, besides its own `Kind.state`.
COMMON_STATE = ("n_features_in_", "feature_names_in_", "_sklearn_output_config")


def _state(kind: Kind) -> frozenset[str]:
    return frozenset(COMMON_STATE + kind.state)


def _params(kind: Kind, obj: Any) -> dict[str, Any]:
    params = obj.get_params(deep=False)
    return kind.params(obj, params) if kind.params else params


# ---------------------------------------------------------------------------------------
# Functions: resolved only inside these modules, never by importing a name from a file.
# ---------------------------------------------------------------------------------------


def _scipy_special() -> types.ModuleType:
    import scipy.special

    return scipy.special


def _feature_selection() -> types.ModuleType:
    import sklearn.feature_selection

    return sklearn.feature_selection


FUNCTION_MODULES: dict[str, Callable[[], types.ModuleType]] = {
    "numpy": lambda: np,
    "numpy.emath": lambda: np.emath,
    "numpy.fft": lambda: np.fft,
    "numpy.linalg": lambda: np.linalg,
    "scipy.special": _scipy_special,
    "sklearn.feature_selection": _feature_selection,
}
# Modules whose functions are allowed by name only (the univariate selectors' scores).
ONLY_NAMED = {
    "sklearn.feature_selection": frozenset(
        {"chi2", "f_classif", "f_oneway", "f_regression", "mutual_info_classif",
         "mutual_info_regression", "r_regression"}
    ),
}  # fmt: skip
ALLOWED_MODULES = ", ".join(
    f"{name} (its score functions)" if name in ONLY_NAMED else name for name in FUNCTION_MODULES
)
# Callables of the allowed modules that read or write files or change global state.
DENIED_FUNCTIONS = frozenset(
    {
        "DataSource", "fromfile", "fromregex", "frompyfunc", "genfromtxt", "get_include",
        "info", "load", "loadtxt", "lookfor", "memmap", "save", "savetxt", "savez",
        "savez_compressed", "set_printoptions", "setbufsize", "seterr", "seterrcall",
        "show_config", "show_runtime", "source", "test", "vectorize",
    }
)  # fmt: skip
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _allowed_callable(obj: Any) -> bool:
    return isinstance(obj, np.ufunc) or (
        callable(obj) and not isinstance(obj, (type, types.ModuleType))
    )


def _lookup_function(module_name: str, attr: str) -> Any:
    """The allowed callable `attr` of an allowed module, or None."""
    load = FUNCTION_MODULES.get(module_name)
    if load is None or not _IDENTIFIER.fullmatch(attr) or attr in DENIED_FUNCTIONS:
        return None
    if module_name in ONLY_NAMED and attr not in ONLY_NAMED[module_name]:
        return None
    found = getattr(load(), attr, None)
    return found if _allowed_callable(found) else None


def function_name(func: Any) -> str | None:
    """``module.name`` under which `func` resolves in `FUNCTION_MODULES`, or None."""
    attr = getattr(func, "__name__", None)
    if not isinstance(attr, str):
        return None
    for module_name in FUNCTION_MODULES:
        if _lookup_function(module_name, attr) is func:
            return f"{module_name}.{attr}"
    return None


def resolve_function(name: str) -> Any:
    """The callable stored as `name`, looked up only inside `FUNCTION_MODULES`.

    Raises:
        UnsupportedFormatError: the name is outside the allowed modules or not a function.
    """
    module_name, _, attr = str(name).rpartition(".")
    found = _lookup_function(module_name, attr)
    if found is None:
        raise UnsupportedFormatError(
            f"Refusing function {name!r}: a native step may only call NumPy ufuncs and "
            f"functions of {ALLOWED_MODULES}, because resolving any other name would import "
            "and run code chosen by the file. Nothing was imported. If you trust this "
            "bundle, re-save the step with a pickle-based serializer and load it with "
            "trusted=True.",
            found=name,
            supported=list(FUNCTION_MODULES),
        )
    return found


# ---------------------------------------------------------------------------------------
# Plain values: scalar types and dtypes allowed in files.
# ---------------------------------------------------------------------------------------

SCALAR_TYPES: dict[str, type] = {
    "bool": bool, "int": int, "float": float, "complex": complex, "str": str, "object": object,
    "bool_": np.bool_, "int8": np.int8, "int16": np.int16, "int32": np.int32,
    "int64": np.int64, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
    "uint64": np.uint64, "float16": np.float16, "float32": np.float32, "float64": np.float64,
    "longdouble": np.longdouble, "str_": np.str_, "object_": np.object_,
}  # fmt: skip
SCALAR_TYPE_NAMES = {cls: name for name, cls in SCALAR_TYPES.items()}
ARRAY_KINDS = "biufcUSMm"  # every kind np.save writes without pickling
SCALAR_KINDS = "biufU"
SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _special_float_name(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _checked_dtype(text: Any, kinds: str) -> np.dtype:
    dtype = np.dtype(str(text))
    if dtype.kind not in kinds or dtype.fields is not None:
        raise ValueError(f"dtype {text!r} is not allowed here")
    return dtype


# ---------------------------------------------------------------------------------------
# Writing: object -> JSON tree + arrays, collecting every unsupported part on the way.
# ---------------------------------------------------------------------------------------


def _join(path: tuple[str, ...]) -> str:
    return " > ".join(path)


def _describe(value: Any) -> str:
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, np.ufunc)):
        module = getattr(value, "__module__", None) or "?"
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", "?")
        return f"function {module}.{name}, not a function of {ALLOWED_MODULES}"
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


class _Writer:
    """Encodes one object tree; `problems` lists the parts that have no native form."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.problems: list[str] = []
        self.imports: set[str] = set()
        self._ids: dict[int, int] = {}

    def encode(self, value: Any, path: tuple[str, ...]) -> Any:
        handler = _EXACT_ENCODERS.get(type(value))
        if handler is None:
            handler = next(
                (encode for accepts, encode in _FALLBACK_ENCODERS if accepts(value)),
                _Writer.unsupported,
            )
        return handler(self, value, path)

    def unsupported(self, value: Any, path: tuple[str, ...]) -> None:
        where = _join(path) or type(value).__name__
        self.problem(f"{where} ({_describe(value)})")

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def root(self, obj: Any, name: str | None) -> Any:
        label = type(obj).__name__ + (f" {name!r}" if name else "")
        if type(obj) not in KINDS:
            self.unsupported(obj, (label,))
            return None
        return self.estimator(obj, (), label=label)

    # -- containers and scalars --------------------------------------------------------

    def plain(self, value: Any, path: tuple[str, ...]) -> Any:
        return value

    def float_(self, value: float, path: tuple[str, ...]) -> Any:
        if math.isfinite(value):
            return value
        return {TYPE_KEY: "float", "value": _special_float_name(value)}

    def list_(self, value: list[Any], path: tuple[str, ...]) -> list[Any]:
        return [
            self.encode(item, _item_path(path, index, item)) for index, item in enumerate(value)
        ]

    def tuple_(self, value: tuple[Any, ...], path: tuple[str, ...]) -> dict[str, Any]:
        named = len(value) > 1 and isinstance(value[0], str)
        items = [
            self.encode(item, path if named and index == 1 else _index_path(path, index))
            for index, item in enumerate(value)
        ]
        return {TYPE_KEY: "tuple", "items": items}

    def dict_(self, value: dict[Any, Any], path: tuple[str, ...]) -> Any:
        if all(isinstance(key, str) for key in value) and TYPE_KEY not in value:
            return {key: self.encode(item, _key_path(path, key)) for key, item in value.items()}
        items = [
            [self.encode(key, path), self.encode(item, _key_path(path, key))]
            for key, item in value.items()
        ]
        return {TYPE_KEY: "dict", "items": items}

    def slice_(self, value: slice, path: tuple[str, ...]) -> dict[str, Any]:
        parts = {"start": value.start, "stop": value.stop, "step": value.step}
        return {TYPE_KEY: "slice", **{key: self.encode(v, path) for key, v in parts.items()}}

    def scalar(self, value: np.generic, path: tuple[str, ...]) -> Any:
        if value.dtype.kind not in SCALAR_KINDS:
            return self.unsupported(value, path)
        return {
            TYPE_KEY: "scalar",
            "dtype": value.dtype.str,
            "value": self.encode(value.item(), path),
        }

    def scalar_type(self, value: type, path: tuple[str, ...]) -> Any:
        name = SCALAR_TYPE_NAMES.get(value)
        if name is None:
            return self.unsupported(value, path)
        return {TYPE_KEY: "scalar_type", "name": name}

    def dtype(self, value: np.dtype, path: tuple[str, ...]) -> Any:
        if value.kind not in ARRAY_KINDS + "O" or value.fields is not None:
            return self.unsupported(value, path)
        return {TYPE_KEY: "dtype", "str": value.str}

    def function(self, value: Any, path: tuple[str, ...]) -> Any:
        name = function_name(value)
        if name is None:
            return self.unsupported(value, path)
        self.imports.add(name)
        return {TYPE_KEY: "function", "name": name}

    # -- arrays ------------------------------------------------------------------------

    def ndarray(self, value: np.ndarray, path: tuple[str, ...]) -> Any:
        if value.dtype.kind == "O":
            return self.object_array(value, path)
        if value.dtype.kind not in ARRAY_KINDS or value.dtype.fields is not None:
            return self.unsupported(value, path)
        return self.store(_keep_orientation(value))

    def object_array(self, value: np.ndarray, path: tuple[str, ...]) -> Any:
        # Only exact, NUL-free str survives the trip through a fixed-width '<U' array.
        flat = value.ravel().tolist()
        if all(type(item) is str and not item.endswith("\x00") for item in flat):
            return self.store(value.astype(str), as_object=True)
        items = [self.encode(item, path) for item in flat]
        return {TYPE_KEY: "objarray", "shape": list(value.shape), "items": items}

    def store(self, array: np.ndarray, *, as_object: bool = False) -> dict[str, Any]:
        key = f"a{len(self.arrays)}"
        self.arrays[key] = array
        node = {TYPE_KEY: "ndarray", "key": key}
        return {**node, "object": True} if as_object else node

    def pandas_index(self, value: Any, path: tuple[str, ...]) -> Any:
        # Only seen in `_transformers_feature_names_out`, where an array of names is equivalent.
        return self.ndarray(np.asarray(value, dtype=object), path)

    # -- estimators --------------------------------------------------------------------

    def estimator(self, obj: Any, path: tuple[str, ...], *, label: str | None = None) -> Any:
        kind = KINDS.get(type(obj))
        if kind is None:
            return self.unsupported(obj, path)
        if id(obj) in self._ids:
            return {TYPE_KEY: "ref", "id": self._ids[id(obj)]}
        self._ids[id(obj)] = node_id = len(self._ids)
        self.imports.add(kind.name)
        here = (*path, label or type(obj).__name__)
        params = _params(kind, obj)
        state_names = [name for name in vars(obj) if name not in params]
        known = _state(kind)
        refused = kind.refuse(obj) if kind.refuse else None
        if refused:
            self.problem(f"{_join(here)} ({refused})")
        for name in state_names:
            if name not in known:
                self.problem(f"{_join((*here, name))} (attribute the native codec does not know)")
        return {
            TYPE_KEY: "estimator",
            "class": kind.name,
            "id": node_id,
            "params": {name: self.encode(value, (*here, name)) for name, value in params.items()},
            "state": {
                name: self.encode(
                    _encoded(kind, name, getattr(obj, name)),
                    (*here, FITTED_COPIES.get(name, name)),
                )
                for name in state_names
                if name in known
            },
        }


def _encoded(kind: Kind, name: str, value: Any) -> Any:
    codec = kind.values.get(name)
    return value if codec is None else codec.encode(value)


def _keep_orientation(array: np.ndarray) -> np.ndarray:
    """A column-major array (or a strided view of one, like a fitted ``components_``) as a
    Fortran-ordered copy, which ``np.save`` keeps: a BLAS product's summation order follows
    the operands' orientation, so the rebuilt step computes the very same bits."""
    if array.ndim >= 2 and not array.flags.c_contiguous and array.strides[0] < array.strides[-1]:
        return np.asfortranarray(array)
    return array


# Fitted copies of parameters, reported under the parameter's name so that an unsupported
# part is listed once, not once per copy.
FITTED_COPIES = {"transformers_": "transformers", "_remainder": "remainder"}


def _index_path(path: tuple[str, ...], index: int) -> tuple[str, ...]:
    return (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",)


def _key_path(path: tuple[str, ...], key: Any) -> tuple[str, ...]:
    return (*path[:-1], f"{path[-1]}[{key!r}]") if path else (f"[{key!r}]",)


def _item_path(path: tuple[str, ...], index: int, item: Any) -> tuple[str, ...]:
    if not (isinstance(item, tuple) and len(item) > 1 and isinstance(item[0], str)):
        return _index_path(path, index)
    if path and path[-1] == "transformers" and item[0] == "remainder":
        return (*path[:-1], "remainder")  # ColumnTransformer's fitted remainder
    return _key_path(path, item[0])


def _is_pandas_index(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.Index)


_EXACT_ENCODERS: dict[type, Callable[[_Writer, Any, tuple[str, ...]], Any]] = {
    type(None): _Writer.plain,
    bool: _Writer.plain,
    int: _Writer.plain,
    str: _Writer.plain,
    float: _Writer.float_,
    list: _Writer.list_,
    tuple: _Writer.tuple_,
    dict: _Writer.dict_,
    slice: _Writer.slice_,
    np.ndarray: _Writer.ndarray,
}
_FALLBACK_ENCODERS: list[tuple[Callable[[Any], bool], Callable[..., Any]]] = [
    (lambda v: isinstance(v, np.generic), _Writer.scalar),
    (lambda v: isinstance(v, np.dtype), _Writer.dtype),
    (lambda v: isinstance(v, type), _Writer.scalar_type),
    (lambda v: isinstance(v, BaseEstimator), _Writer.estimator),
    (_is_pandas_index, _Writer.pandas_index),
    (_allowed_callable, _Writer.function),
]

# ---------------------------------------------------------------------------------------
# Reading: JSON tree + arrays -> objects, through the fixed tables above only.
# ---------------------------------------------------------------------------------------


class _Reader:
    """Decodes one JSON tree, pulling arrays from the open npz file on demand."""

    def __init__(self, arrays: Any, path: Path) -> None:
        self.arrays = arrays
        self.path = path
        self.objects: dict[int, Any] = {}

    def decode(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.decode(item) for item in node]
        if not isinstance(node, dict):
            return node
        tag = node.get(TYPE_KEY)
        if tag is None:
            return {key: self.decode(value) for key, value in node.items()}
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise ValueError(f"unknown node type {tag!r}; known: {sorted(_DECODERS)}")
        return decoder(self, node)

    def float_(self, node: dict[str, Any]) -> float:
        return SPECIAL_FLOATS[node["value"]]

    def tuple_(self, node: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(self.decode(node["items"]))

    def dict_(self, node: dict[str, Any]) -> dict[Any, Any]:
        return {self.decode(key): self.decode(value) for key, value in node["items"]}

    def slice_(self, node: dict[str, Any]) -> slice:
        return slice(*(self.decode(node[key]) for key in ("start", "stop", "step")))

    def scalar(self, node: dict[str, Any]) -> np.generic:
        return _checked_dtype(node["dtype"], SCALAR_KINDS).type(self.decode(node["value"]))

    def scalar_type(self, node: dict[str, Any]) -> type:
        return SCALAR_TYPES[node["name"]]

    def dtype(self, node: dict[str, Any]) -> np.dtype:
        return _checked_dtype(node["str"], ARRAY_KINDS + "O")

    def function(self, node: dict[str, Any]) -> Any:
        return resolve_function(node["name"])

    def ndarray(self, node: dict[str, Any]) -> np.ndarray:
        key = str(node["key"])
        if key == PARAMS_KEY or key not in self.arrays.files:
            raise ValueError(f"array {key!r} is referenced but not stored")
        array = self.arrays[key]
        _checked_dtype(array.dtype.str, ARRAY_KINDS)
        if node.get("object"):
            if array.dtype.kind != "U":
                raise ValueError(f"array {key!r} is marked as strings but holds {array.dtype}")
            return array.astype(object)
        return array

    def object_array(self, node: dict[str, Any]) -> np.ndarray:
        shape = tuple(int(n) for n in node["shape"])
        items = [self.decode(item) for item in node["items"]]
        array = np.empty(len(items), dtype=object)
        for index, item in enumerate(items):
            array[index] = item  # one by one: nested arrays must stay elements, not axes
        return array.reshape(shape)

    def ref(self, node: dict[str, Any]) -> Any:
        return self.objects[int(node["id"])]

    def estimator(self, node: dict[str, Any]) -> Any:
        kind = KINDS_BY_NAME.get(node["class"])
        if kind is None:
            raise _unknown_codec(node["class"], self.path)
        allowed = set(kind.cls._get_param_names())
        params = {name: self.decode(value) for name, value in node["params"].items()}
        _refuse_unknown(kind, "parameter", set(params) - allowed, self.path)
        _refuse_unknown(kind, "fitted attribute", set(node["state"]) - _state(kind), self.path)
        obj = kind.cls(**params)
        refused = kind.refuse(obj) if kind.refuse else None
        if refused:  # written by hand: write_native never stores such a configuration
            raise UnsupportedFormatError(
                f"{self.path.name} stores a {kind.cls.__name__} with a configuration no native "
                f"step holds: {refused}. Nothing was read from the input's files. The file "
                "was altered or written by another tool: restore the bundle from its release.",
                found=refused,
                supported=sorted(KINDS_BY_NAME),
            )
        self.objects[int(node["id"])] = obj
        for name, value in node["state"].items():
            decoded = self.decode(value)
            codec = kind.values.get(name)
            setattr(obj, name, decoded if codec is None else codec.decode(decoded))
        return obj


_DECODERS: dict[str, Callable[[_Reader, dict[str, Any]], Any]] = {
    "float": _Reader.float_,
    "tuple": _Reader.tuple_,
    "dict": _Reader.dict_,
    "slice": _Reader.slice_,
    "scalar": _Reader.scalar,
    "scalar_type": _Reader.scalar_type,
    "dtype": _Reader.dtype,
    "function": _Reader.function,
    "ndarray": _Reader.ndarray,
    "objarray": _Reader.object_array,
    "ref": _Reader.ref,
    "estimator": _Reader.estimator,
}


def _unknown_codec(name: Any, path: Path) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{path.name} names class {name!r}, which has no native codec; nothing was "
        f"imported. Known codecs: {', '.join(sorted(KINDS_BY_NAME))}. The file was "
        "written by a newer keras-bundle or altered: upgrade keras-bundle, or re-save the "
        "step.",
        found=name,
        supported=sorted(KINDS_BY_NAME),
    )


def _refuse_unknown(kind: Kind, what: str, names: set[str], path: Path) -> None:
    if names:
        raise UnsupportedFormatError(
            f"{path.name} gives {kind.cls.__name__} {len(names)} {what}(s) its codec does "
            f"not know:\n{bullet_list(sorted(names))}\nThe file was written by a newer "
            "keras-bundle or altered: upgrade keras-bundle, or re-save the step.",
            found=sorted(names),
            supported=sorted(_state(kind)),
        )


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def unsupported_parts(obj: Any, *, name: str | None = None) -> list[str]:
    """List the parts of `obj` that cannot be stored natively.

    Args:
        obj: a (fitted or unfitted) scikit-learn object.
        name: optional name of `obj` shown at the start of each path.

    Returns:
        ``[]`` when `obj` can be stored by `write_native`; otherwise one readable path per
        unsupported sub-object, e.g. ``"ColumnTransformer > transformers['cat'] > Pipeline
        > steps['enc'] (mypkg.MyEncoder)"``.
    """
    writer = _Writer()
    writer.root(obj, name)
    return writer.problems


def native_imports(obj: Any) -> list[str]:
    """Sorted ``module.Name`` of every class and function inside `obj`, for the manifest."""
    writer = _Writer()
    writer.root(obj, None)
    return sorted(writer.imports)


def write_native(obj: Any, path: Path) -> None:
    """Write fitted `obj` to one ``.npz`` file that loads without pickle.

    Args:
        obj: a fitted object whose every part has a codec (see `unsupported_parts`).
        path: the file to write (written as given; no ``.npz`` suffix is added).

    Raises:
        UnsupportedFormatError: some part has no native codec; the message lists them all.
    """
    writer = _Writer()
    tree = writer.root(obj, None)
    if writer.problems:
        raise UnsupportedFormatError(
            f"Cannot store {type(obj).__name__} without pickle: {len(writer.problems)} "
            f"part(s) have no native codec:\n{bullet_list(writer.problems)}\n"
            f"Native codecs exist for {known_classes()} (functions: NumPy ufuncs and "
            f"{ALLOWED_MODULES}). Replace these parts, or store the step with joblib "
            "(loading it then needs trusted=True).",
            found=writer.problems,
            supported=sorted(KINDS_BY_NAME),
        )
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "sklearn": sklearn.__version__,
        "root": tree,
    }
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    with open(path, "wb") as handle:
        np.savez(handle, **{PARAMS_KEY: np.array(text)}, **writer.arrays)


def read_native(path: Path) -> Any:
    """Rebuild the fitted object stored by `write_native`, without pickle or imports.

    Args:
        path: the ``.npz`` file.

    Returns:
        A real fitted scikit-learn object of the stored class.

    Raises:
        UnsupportedFormatError: the file is not a native step, is from a newer format
            version, names an unknown class or a function outside `FUNCTION_MODULES`, or is
            malformed.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _not_native(path, exc) from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise _not_native(path, "it holds a single array, not an npz archive")
    with data:
        payload = _read_payload(data, path)
        try:
            return _Reader(data, path).decode(payload["root"])
        except UnsupportedFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RecursionError) as exc:
            raise _not_native(path, f"malformed tree: {type(exc).__name__}: {exc}") from exc


def _read_payload(data: Any, path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(str(data[PARAMS_KEY][()]))
    except (KeyError, ValueError, IndexError) as exc:
        raise _not_native(path, f"no readable {PARAMS_KEY!r} entry ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise _not_native(path, f"its params do not say format {FORMAT_NAME!r}")
    version = payload.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path.name} uses native format version {version!r}; this keras-bundle reads "
            f"versions 1 to {FORMAT_VERSION}. Upgrade keras-bundle.",
            found=version,
            supported=list(range(1, FORMAT_VERSION + 1)),
        )
    root = payload.get("root")
    if not isinstance(root, dict) or root.get(TYPE_KEY) != "estimator":
        raise _not_native(path, "its root is not an estimator")
    return payload


def _not_native(path: Path, why: object) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{path.name} is not a readable native step: {why}. Native steps are written by "
        "bundle.steps.native.write_native; re-save the bundle if the file was damaged.",
        found=str(why),
        supported=[FORMAT_NAME],
    )
