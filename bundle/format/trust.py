"""The trust policy: the one decision on which parts of a bundle may load without trust.

Without ``trusted=True`` no code that a bundle stores or chooses may run. A part is unsafe
when loading it would run such code:

- a pickle (joblib, cloudpickle: any serializer outside `SAFE_SERIALIZERS`, whatever the
  manifest's ``executes_code`` flag says: whoever wrote the bundle wrote that flag too);
- a custom object stored by value (a pickle), or by reference to a module that is not an
  installed distribution's (`references.reference_problem`: the standard library,
  ``__main__``, the working directory, an editable install, the bundle itself);
- a model whose ``config.json`` holds a ``Lambda`` layer, a ``TFSMLayer`` or a serialized
  lambda (read from the model file's bytes when available, never from the manifest alone).

Each unsafe part is needed either to predict (the model, the steps, custom layers,
activations, initializers and anything else the architecture names) or only to compile
(losses, metrics, optimizers and their schedules). Without trust, a part needed to predict
is refused (`UnsafeLoadError`); a compile-only part is skipped, and the model is rebuilt
without its compile state. The decision is taken before anything is unpickled or imported,
and `bundle inspect`, the model card and `Bundle.load` all take it here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UnsafeLoadError, bullet_list
from .keras_config import ModelConfig
from .references import reference_problem

# Serializers whose loading runs no code from the bundle (Keras' own safe_mode guards the
# model file). Anything else is treated as a pickle, whatever the manifest claims.
SAFE_SERIALIZERS = frozenset({"native", "keras", "reference"})
# Plumbing every pickle references; listing it would hide what matters in a refusal.
PLUMBING = ("builtins.", "copyreg.", "_codecs.", "numpy.", "cloudpickle.", "joblib.")
PREDICT = "predict"
COMPILE = "compile"
# Custom object kinds that only `compile` uses, for records that predate `needed_for`
# and are read without the model file.
COMPILE_KINDS = frozenset({"loss", "metric", "optimizer", "schedule"})
SHOWN_IMPORTS = 8

__all__ = [
    "COMPILE",
    "PLUMBING",
    "PREDICT",
    "SAFE_SERIALIZERS",
    "TrustDecision",
    "UnsafePart",
    "check_trust",
    "decide",
    "executes_code",
    "trust_parts",
    "unsafe_reason",
]


def unsafe_reason(part: Mapping[str, Any], *, inside: Path | None = None) -> str | None:
    """Why loading this manifest record would run code the bundle chose; None if it would not.

    Decided from the serializer (and, for references, from where the module's files are),
    never from the record's own ``executes_code`` flag alone.

    Args:
        part: a step, custom object or model record of the manifest.
        inside: the bundle's directory, from which nothing may be imported.
    """
    storage, serializer = part.get("storage"), part.get("serializer")
    if serializer is None and storage == "reference":
        serializer = "reference"
    if storage == "value" or serializer not in SAFE_SERIALIZERS:
        return "unpickling runs code stored in the bundle"
    if serializer == "reference":
        module, qualname = str(part.get("module") or ""), str(part.get("qualname") or "")
        problem = reference_problem(module, qualname, inside=inside)
        if problem is not None:
            return f"importing it is not allowed without trust: {problem}"
        if part.get("executes_code"):  # set at save for what is no Keras object
            return (
                "it is no Keras class or registered Keras function, so Keras could call it "
                "with arguments taken from the model file"
            )
        return None
    if part.get("executes_code"):
        return "it holds Python code that runs when it loads"
    return None


def executes_code(part: Mapping[str, Any]) -> bool:
    """True if loading this manifest record may run code the bundle stores or chooses."""
    return unsafe_reason(part) is not None


@dataclass(frozen=True)
class UnsafePart:
    """One part whose loading would run code the bundle chose, and what it is needed for.

    Attributes:
        record: the manifest record (model, step or custom object).
        reason: why loading it runs code.
        needed_for: `PREDICT` or `COMPILE` (a loss, metric or optimizer only).
    """

    record: Mapping[str, Any]
    reason: str
    needed_for: str

    @property
    def name(self) -> str:
        return str(self.record.get("name") or "model")

    @property
    def file(self) -> str | None:
        return self.record.get("file")

    @property
    def serializer(self) -> str:
        serializer = self.record.get("serializer")
        if serializer is None:
            storage = self.record.get("storage")
            serializer = "reference" if storage == "reference" else "pickle"
        return str(serializer)

    @property
    def imports(self) -> list[str]:
        return list(self.record.get("imports") or [])

    @property
    def references(self) -> list[str]:
        """What the part references, minus the plumbing every pickle names."""
        return [i for i in self.imports if not i.startswith(PLUMBING)]

    @property
    def what(self) -> str:
        """``a cloudpickle pickle of __main__.loss``, ``a reference to pkg.mod.Layer``, ..."""
        if self.record.get("part") == "model":
            return str(self.record.get("class"))
        target = (
            self.record.get("class") or f"{self.record.get('module')}.{self.record.get('qualname')}"
        )
        if self.serializer == "reference":
            return f"a reference to {target}"
        if self.serializer == "pickle":
            return f"a pickle of {target}"
        return f"a {self.serializer} pickle of {target}"

    def describe(self) -> str:
        """One line for a refusal or a warning."""
        where = self.file or f"custom object {self.name!r}"
        line = f"{where}: {self.what}"
        shown = self.references
        if self.serializer != "reference" and shown:
            inside = ", ".join(shown[:SHOWN_IMPORTS])
            if len(shown) > SHOWN_IMPORTS:
                inside += f", ... ({len(shown) - SHOWN_IMPORTS} more)"
            line += f" (references {inside})"
        if self.serializer == "reference":
            line += f": {self.reason}"
        return line


@dataclass(frozen=True)
class TrustDecision:
    """Every unsafe part of a bundle; which ones prediction needs and which it can skip."""

    unsafe: tuple[UnsafePart, ...]

    @property
    def refused(self) -> list[UnsafePart]:
        """Unsafe parts prediction needs: without trust, the load is refused."""
        return [part for part in self.unsafe if part.needed_for == PREDICT]

    @property
    def skipped(self) -> list[UnsafePart]:
        """Unsafe compile-only parts: without trust, skipped (no compile state)."""
        return [part for part in self.unsafe if part.needed_for == COMPILE]

    def check(self, *, trusted: bool, label: str) -> None:
        """Refuse, before anything is unpickled or imported, what prediction needs unsafely.

        Raises:
            UnsafeLoadError: listing each refused part, what it is and what it references.
        """
        refused = self.refused
        if trusted or not refused:
            return
        pickles = all(part.reason.startswith("unpickling") for part in refused)
        lead = (
            f"{len(refused)} part(s) are pickles, and unpickling runs code stored in the bundle"
            if pickles
            else f"{len(refused)} part(s) would run code that the bundle stores or chooses"
        )
        raise UnsafeLoadError(
            f"Refusing to load {label}: {lead}:\n"
            + bullet_list([part.describe() for part in refused], limit=10)
            + "\nIf you made this bundle or trust its source: Bundle.load(path, trusted=True)"
            " (or `--trusted` on the command line).",
            parts=[(part.file or part.name, part.serializer, part.imports) for part in refused],
        )


def decide(
    manifest: Any, *, model_config: ModelConfig | None = None, inside: Path | None = None
) -> TrustDecision:
    """The trust decision for a whole bundle, from its manifest and its model's config.

    Args:
        manifest: the bundle's `Manifest`.
        model_config: the model file's audited ``config.json`` (`read_model_config`); without
            it (a remote `inspect`), the manifest's own records are used.
        inside: the bundle's directory (nothing under it may be imported).
    """
    unsafe = []
    model = manifest.model
    model_part = dict(trust_parts(manifest)[0])
    code = list(model_config.code) if model_config is not None else []
    if model_config is None and model.get("executes_code"):
        code = ["Lambda layers (Python code stored in the file)"]
    if code:
        model_part["class"] = "a Keras model with " + "; ".join(code)
        unsafe.append(UnsafePart(model_part, "its code runs when the model loads", PREDICT))
    if model_config is not None and model_config.compile_code:
        compile_part = {
            "name": "compile config",
            "file": model["file"],
            "serializer": "keras",
            "part": "model",
            "class": "a compile config with " + "; ".join(model_config.compile_code),
        }
        unsafe.append(UnsafePart(compile_part, "its code runs when the model is compiled", COMPILE))
    for record in [*manifest.preprocess, *manifest.postprocess]:
        reason = unsafe_reason(record, inside=inside)
        if reason is not None:
            unsafe.append(UnsafePart(record, reason, PREDICT))
    for record in manifest.custom_objects:
        reason = unsafe_reason(record, inside=inside)
        if reason is not None:
            unsafe.append(UnsafePart(record, reason, needed_for(record, model_config)))
    return TrustDecision(tuple(unsafe))


def needed_for(record: Mapping[str, Any], model_config: ModelConfig | None = None) -> str:
    """`PREDICT` or `COMPILE`: whether rebuilding the model for prediction needs this object.

    The recorded ``needed_for`` (decided at save from the model's config) and the model
    file's config both count: prediction needs the object when either says so. A record
    without ``needed_for`` read without the model file falls back to its kind.
    """
    recorded = record.get("needed_for")
    if model_config is not None:
        if model_config.needed_to_predict(str(record.get("name"))) or recorded == PREDICT:
            return PREDICT
        return COMPILE
    if recorded is not None:
        return PREDICT if recorded == PREDICT else COMPILE
    return COMPILE if record.get("kind") in COMPILE_KINDS else PREDICT


def check_trust(parts: Iterable[Mapping[str, Any]], *, trusted: bool, label: str) -> None:
    """Refuse loading these records (all needed to predict) unless `trusted`.

    Raises:
        UnsafeLoadError: listing each unsafe record.
    """
    unsafe = []
    for part in parts:
        reason = unsafe_reason(part)
        if reason is not None:
            unsafe.append(UnsafePart(part, reason, PREDICT))
    TrustDecision(tuple(unsafe)).check(trusted=trusted, label=label)


def trust_parts(manifest: Any) -> list[dict[str, Any]]:
    """Every part of a manifest that the trust policy rules on: model, steps, custom objects."""
    model = manifest.model
    model_part = {
        "name": "model",
        "file": model["file"],
        "serializer": "keras",
        "part": "model",
        "executes_code": model["executes_code"],
        "class": "a Keras model with Lambda layers (Python code stored in the file)",
        "imports": [],
    }
    return [model_part, *manifest.preprocess, *manifest.postprocess, *manifest.custom_objects]
