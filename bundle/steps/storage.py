"""How a step is stored: the safest serializer that can hold it, and how it is read back.

Each step is stored with the first serializer that can hold it:

============  ===========================================  ====================
serializer    used for                                      loading runs code?
============  ===========================================  ====================
native        classes with a kind: JSON + .npz                no
joblib        other objects importable from installed code  yes (trusted=True)
cloudpickle   objects using ``__main__`` or local modules   yes (trusted=True)
============  ===========================================  ====================

A container (Pipeline, ColumnTransformer, FeatureUnion) that holds one unsupported
transformer is stored whole with joblib or cloudpickle: a half-native container would
still need the pickle, so it would buy no safety.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UnsupportedFormatError
from ..format.layout import STEP_EXTENSIONS, STEPS_DIR
from ..format.pickling import dumps_by_value, needs_by_value, pickle_globals
from ..format.trust import executes_code
from .naming import class_path
from .runtime import postprocess_mode

__all__ = ["choose_serializer", "load_step", "save_step"]


def choose_serializer(obj: Any) -> str:
    """The safest serializer that can hold `obj`: native, then joblib, then cloudpickle."""
    from . import native

    if not native.unsupported_parts(obj):
        return "native"
    return "cloudpickle" if needs_by_value(obj) else "joblib"


def save_step(obj: Any, directory: Path, *, stage: str, index: int) -> dict[str, Any]:
    """Write one step into ``<directory>/steps/`` and return its manifest record."""
    serializer = choose_serializer(obj)
    name = f"{stage}[{index}]"
    slug = "pre" if stage == "preprocess" else "post"
    stem = f"{index:03d}-{slug}-{type(obj).__name__.lower()}"
    relative = f"{STEPS_DIR}/{stem}.{STEP_EXTENSIONS[serializer]}"
    path = Path(directory) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    imports: list[str]
    if serializer == "native":
        from . import native

        native.write_native(obj, path)
        imports = native.native_imports(obj)
    elif serializer == "joblib":
        import joblib

        joblib.dump(obj, path)
        imports = _pickled_imports(obj)
    else:
        data = dumps_by_value(obj)
        path.write_bytes(data)
        imports = pickle_globals(data)
    record = {
        "name": name,
        "class": class_path(obj),
        "file": relative,
        "serializer": serializer,
        "imports": imports,
    }
    record["executes_code"] = executes_code(record)  # the trust policy's one decision
    if stage == "postprocess":
        record["mode"] = postprocess_mode(obj)
    return record


def _pickled_imports(obj: Any) -> list[str]:
    import pickle

    return pickle_globals(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def load_step(directory: Path, record: dict[str, Any]) -> Any:
    """Rebuild one step from its file (the caller has already checked trust)."""
    path = Path(directory) / record["file"]
    serializer = record["serializer"]
    if serializer == "native":
        from . import native

        return native.read_native(path)
    if serializer == "joblib":
        import joblib

        return joblib.load(path)
    if serializer == "cloudpickle":
        import cloudpickle

        with open(path, "rb") as handle:
            return cloudpickle.load(handle)
    raise UnsupportedFormatError(
        f"Step {record['name']} ({record['file']}) uses serializer {serializer!r}; "
        f"this keras-bundle knows {sorted(STEP_EXTENSIONS)}. Upgrade keras-bundle.",
        found=serializer,
        supported=sorted(STEP_EXTENSIONS),
    )
