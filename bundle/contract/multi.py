"""`MultiInputSchema`: a dict of inputs, one contract per model input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import SCHEMA_READERS, InputSchema, _Checked
from .columns import _MULTI_FIELDS, _check_fields
from .messages import _capped, _name_mismatch, _plural, _Problem, _sorted, _unsupported


@dataclass(frozen=True)
class MultiInputSchema(InputSchema):
    """A model with several inputs: one schema per model input name."""

    inputs: dict[str, InputSchema]
    kind: ClassVar[str] = "multi"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": {name: s.to_dict() for name, s in self.inputs.items()}}

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> MultiInputSchema:
        _check_fields(d, _MULTI_FIELDS, _MULTI_FIELDS, "a multi-input schema")
        inputs = {name: InputSchema.from_dict(sub) for name, sub in d["inputs"].items()}
        if any(isinstance(sub, MultiInputSchema) for sub in inputs.values()):
            raise ValueError("A multi-input schema cannot nest another multi-input schema.")
        return cls(inputs)

    def n_rows(self, canonical: Mapping[str, Any]) -> int:
        return next((self.inputs[name].n_rows(part) for name, part in canonical.items()), 0)

    def __str__(self) -> str:
        parts = [
            f"input {name!r}: " + str(schema).replace("\n", "\n  ")
            for name, schema in self.inputs.items()
        ]
        header = f"Multi-input: {_plural(len(self.inputs), 'input')}, as a dict keyed by input name"
        return "\n\n".join([header, *parts])

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        if not isinstance(raw, Mapping):
            forms = [
                f"a dict keyed by the model's input names: {', '.join(map(repr, self.inputs))}"
            ]
            return _Checked(None, [_unsupported(raw, subject, forms)])
        problems = _key_problems(raw, list(self.inputs), subject)
        checked = {
            name: schema._check(raw[name], strict, f"Input {name!r}")
            for name, schema in self.inputs.items()
            if name in raw
        }
        problems += [problem for part in checked.values() for problem in part.problems]
        extra = [f"{name}.{column}" for name, part in checked.items() for column in part.extra]
        if problems:
            return _Checked(None, problems, extra)
        canonical = {name: part.canonical for name, part in checked.items()}
        return _Checked(canonical, _row_count_problems(canonical, self.inputs), extra)


def _key_problems(raw: Mapping[str, Any], names: Sequence[str], subject: str) -> list[_Problem]:
    missing = [name for name in names if name not in raw]
    extra = [key for key in raw if key not in set(names)]
    if not missing and not extra:
        return []
    remedy = f"Pass a dict keyed by the model's input names: {', '.join(map(str, names))}."
    text = _name_mismatch(
        missing, extra, total=len(names), nouns=("input", "key"), subject=subject, remedy=remedy
    )
    return [_Problem(text, str(missing[0]) if missing else str(_sorted(extra)[0]))]


def _row_count_problems(
    canonical: Mapping[str, Any], inputs: Mapping[str, InputSchema]
) -> list[_Problem]:
    rows = {name: inputs[name].n_rows(part) for name, part in canonical.items()}
    if len(set(rows.values())) <= 1:
        return []
    shown = [f"{name}: {_plural(count, 'row')}" for name, count in rows.items()]
    text = (
        f"The model's inputs have different numbers of rows:\n{_capped(shown, len(shown))}\n"
        "Pass the same samples, in the same order, to every input."
    )
    return [_Problem(text)]


SCHEMA_READERS[MultiInputSchema.kind] = MultiInputSchema._read
