"""The trust policy: one decision, from the manifest alone, on what may load without trust.

Loading a pickle runs code stored in it. A part is safe only when its serializer is one
that runs no stored code (native codecs, the Keras model under ``safe_mode``, references to
installed packages); everything else needs the caller's ``trusted=True``. The decision is
taken before anything is unpickled or imported, and it follows the serializer, never the
manifest's own ``executes_code`` flag (whoever wrote the bundle wrote that flag too).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UnsafeLoadError, bullet_list

# Serializers whose loading runs no code from the bundle (Keras' own safe_mode guards the
# model file). Anything else is treated as a pickle, whatever the manifest claims.
SAFE_SERIALIZERS = frozenset({"native", "keras", "reference"})
# Plumbing every pickle references; listing it would hide what matters in a refusal.
PLUMBING = ("builtins.", "copyreg.", "_codecs.", "numpy.", "cloudpickle.", "joblib.")

__all__ = ["PLUMBING", "SAFE_SERIALIZERS", "check_trust", "executes_code", "trust_parts"]


def executes_code(part: Mapping[str, Any]) -> bool:
    """True if loading this manifest record may run code stored in the bundle.

    Decided from the serializer, not only from the record's ``executes_code`` flag: the
    flag is written by whoever made the bundle, so a pickle flagged ``false`` is still a
    pickle. Only the serializers in `SAFE_SERIALIZERS` can be loaded without trust.
    """
    if part.get("executes_code") or part.get("storage") == "value":
        return True
    serializer = part.get("serializer")
    if serializer is None and part.get("storage") == "reference":
        serializer = "reference"
    if serializer == "reference" and not _plausible_reference(part):
        return True
    return serializer not in SAFE_SERIALIZERS


def _plausible_reference(part: Mapping[str, Any]) -> bool:
    """A by-reference custom object names a class or function of an installed package.

    Importing it runs that package's import code, as any ``import`` does; what must not
    happen without trust is a manifest steering the import to ``__main__``, a local
    function, or a standard-library module (no Keras custom object lives there, but some
    of its modules act on import).
    """
    module, qualname = str(part.get("module", "")), str(part.get("qualname", ""))
    top = module.split(".")[0]
    local = top == "__main__" or "<locals>" in qualname
    return bool(top) and not local and top not in sys.stdlib_module_names


def check_trust(parts: Iterable[Mapping[str, Any]], *, trusted: bool, label: str) -> None:
    """Refuse, before anything is unpickled, to load parts whose loading executes code.

    Args:
        parts: manifest records with ``file``, ``serializer``, ``executes_code`` and
            optionally ``imports`` (the globals the pickle references, recorded at save).
        trusted: the caller's explicit opt-in.
        label: how to name the bundle in the message.

    Raises:
        UnsafeLoadError: listing each file, its serializer and what it references.
    """
    unsafe = [part for part in parts if executes_code(part)]
    if trusted or not unsafe:
        return
    described = []
    for part in unsafe:
        imports = [i for i in part.get("imports") or [] if not i.startswith(PLUMBING)]
        inside = ", ".join(imports[:8])
        if len(imports) > 8:
            inside += f", ... ({len(imports) - 8} more)"
        what = part.get("class") or f"{part.get('module')}.{part.get('qualname')}"
        pickle = f"{part['serializer']} pickle" if part.get("serializer") else "pickle"
        described.append(
            f"{part['file']}: a {pickle} of {what}" + (f" (references {inside})" if inside else "")
        )
    raise UnsafeLoadError(
        f"Refusing to load {label}: {len(unsafe)} part(s) are pickles, and unpickling runs "
        "code stored in the bundle:\n"
        + bullet_list(described, limit=10)
        + "\nIf you made this bundle or trust its source: Bundle.load(path, trusted=True)"
        " (or `--trusted` on the command line).",
        parts=[
            (part["file"], part.get("serializer") or "pickle", part.get("imports") or [])
            for part in unsafe
        ],
    )


def trust_parts(manifest: Any) -> list[dict[str, Any]]:
    """Every part of a manifest that the trust policy rules on: model, steps, custom objects."""
    model = manifest.model
    model_part = {
        "file": model["file"],
        "serializer": "keras",
        "executes_code": model["executes_code"],
        "class": "a Keras model with Lambda layers (Python code stored in the file)",
        "imports": [],
    }
    return [model_part, *manifest.preprocess, *manifest.postprocess, *manifest.custom_objects]
