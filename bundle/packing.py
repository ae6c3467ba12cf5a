"""`pack`: a bundle from the files a team already has, without retraining.

A release made before keras-bundle is usually a model file (``.keras`` or a legacy
``.h5``), the fitted preprocessing pickled with joblib or pickle, and some example rows.
`pack` loads them, checks them together (the example goes through the steps and the model,
and the bundle proves it loads, as every save does) and saves a bundle.

Unpickling runs code: `pack` is for files you made or trust, and says which it unpickled.
The bundle it writes stores the steps without pickle where their kinds allow (see the
README's supported classes), so loading it needs no trust unless a step has no kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import Bundle
from .errors import UsageError

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
EXAMPLE_ROWS = 1000

__all__ = ["PICKLE_SUFFIXES", "Packed", "pack"]


@dataclass(frozen=True)
class Packed:
    """What `pack` wrote, and the files it unpickled to do it."""

    location: Path | str
    label: str
    unpickled: list[str] = field(default_factory=list)


def pack(
    root: str | Path,
    *,
    model: str | Path,
    preprocess: Sequence[str | Path] = (),
    postprocess: Sequence[str | Path] | Mapping[str, str | Path] = (),
    example: str | Path | None = None,
    name: str | None = None,
    version: str | None = None,
    custom_objects: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    include_optimizer: bool = True,
    overwrite: bool = False,
) -> Packed:
    """Build and save a bundle from a model file, pickled steps and an example file.

    Args:
        root: where to save (as `Bundle.save`).
        model: a ``.keras`` or legacy ``.h5`` Keras model file. A TensorFlow SavedModel is
            refused with what to do.
        preprocess: joblib or pickle files of fitted transformers, in replay order.
        postprocess: the same for postprocess steps; for a model with several outputs, a
            mapping of output name -> file.
        example: a Parquet, CSV or JSON Lines file of raw input rows (the first 1000 become
            the stored example; the whole file is profiled), or a ``.npy`` array.
        name, version, metadata: as for `Bundle`.
        custom_objects: import paths (``package.module:Name``) of custom layers, losses or
            functions the model file needs.
        include_optimizer: as for `Bundle.save`.
        overwrite: replace an existing version.

    Returns:
        A `Packed`: the saved location and the files unpickled.

    Raises:
        UsageError: a file is missing or of an unknown kind.
        ModelError: the model cannot be loaded or bundled (a TFSMLayer), or the packed
            bundle does not replay its example.
    """
    from .model.legacy import load_model_file

    objects = _import_objects(custom_objects)
    keras_model = load_model_file(model, objects)
    unpickled: list[str] = []
    pre = [_unpickle(path, unpickled) for path in preprocess]
    if isinstance(postprocess, Mapping):
        post: Any = {key: _unpickle(path, unpickled) for key, path in postprocess.items()}
    else:
        post = [_unpickle(path, unpickled) for path in postprocess]
    rows = None if example is None else _read_example(Path(example))
    bundle = Bundle(
        keras_model,
        preprocess=pre,
        postprocess=post or None,
        custom_objects=objects,
        input_example=rows,
        name=name or Path(model).stem,
        version=version,
        metadata={**dict(metadata or {}), "packed_from": _sources(model, preprocess, postprocess)},
    )
    profile = Path(example) if example is not None and Path(example).suffix != ".npy" else None
    location = bundle.save(
        root,
        overwrite=overwrite,
        profile_data=str(profile) if profile is not None else None,
        include_optimizer=include_optimizer,
    )
    return Packed(location, bundle.manifest.label, unpickled)


def _sources(model: Any, preprocess: Sequence[Any], postprocess: Any) -> dict[str, Any]:
    post = dict(postprocess) if isinstance(postprocess, Mapping) else list(postprocess)
    return {
        "model": Path(model).name,
        "preprocess": [Path(p).name for p in preprocess],
        "postprocess": {k: Path(v).name for k, v in post.items()}
        if isinstance(post, dict)
        else [Path(p).name for p in post],
    }


def _unpickle(path: str | Path, unpickled: list[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"No file at {path}.")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise UsageError(
            f"{path.name}: expected a joblib or pickle file ({', '.join(PICKLE_SUFFIXES)})."
        )
    import joblib

    try:
        step = joblib.load(path)  # reads plain pickles too
    except Exception as exc:
        raise UsageError(
            f"{path.name} could not be unpickled: {type(exc).__name__}: {exc}\n"
            "It may need the package that defined its classes: install it here."
        ) from exc
    unpickled.append(str(path))
    return step


def _read_example(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"No example file at {path}.")
    if path.suffix.lower() == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False)[:EXAMPLE_ROWS]
    from .fileio import tabular as tabular_io

    fmt = tabular_io.file_format(path)
    first = next(tabular_io.iter_batches(path, batch_size=EXAMPLE_ROWS, fmt=fmt), None)
    if first is None or len(first) == 0:
        raise UsageError(f"The example file {path} holds no rows.")
    return first.iloc[:EXAMPLE_ROWS].reset_index(drop=True)


def _import_objects(paths: Sequence[str]) -> dict[str, Any]:
    """``package.module:Name`` import paths as ``{Name: object}`` (trusted: the user's)."""
    objects = {}
    for text in paths:
        module_name, _, qualname = str(text).partition(":")
        if not module_name or not qualname:
            raise UsageError(
                f"Custom object {text!r}: expected an import path like package.module:Name."
            )
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"Custom object {text!r} cannot be imported: {exc}.") from exc
        objects[qualname.split(".")[-1]] = obj
    return objects
