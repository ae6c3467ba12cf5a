"""`InputSchema`: the contract's common interface (coerce, problems, to_dict/from_dict)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import ExtraColumnsWarning
from .messages import _capped, _plural, _Problem, _schema_error, _sorted


@dataclass(frozen=True)
class _Checked:
    canonical: Any
    problems: list[_Problem]
    extra: list[str] = field(default_factory=list)


SCHEMA_READERS: dict[str, Callable[[Mapping[str, Any]], InputSchema]] = {}
"""Schema kind -> reader; each schema module registers its own class."""


class InputSchema:
    """The input contract of a bundle: what training saw, and how raw input must look.

    Subclasses: `TabularSchema`, `ArraySchema`, `MultiInputSchema`.
    """

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The schema as a JSON-able dict (stored in ``manifest.json["input_schema"]``)."""
        raise NotImplementedError

    @staticmethod
    def from_dict(d: dict[str, Any]) -> InputSchema:
        """Read a schema written by `to_dict`.

        Raises:
            ValueError: unknown or missing keys, an unknown kind or dtype.
        """
        if not isinstance(d, Mapping) or "kind" not in d:
            raise ValueError("An input schema must be a JSON object with a 'kind' key.")
        reader = SCHEMA_READERS.get(d["kind"])
        if reader is None:
            raise ValueError(
                f"Unknown input schema kind {d['kind']!r}; "
                f"known kinds: {', '.join(SCHEMA_READERS)}."
            )
        return reader(d)

    def coerce(self, raw: Any, *, strict: bool = False) -> pd.DataFrame | np.ndarray | dict:
        """Turn raw input into the canonical form the preprocessing was fitted on.

        Args:
            raw: any accepted raw form (see the module docstring).
            strict: refuse DataFrame columns the bundle does not know, instead of dropping
                them with one `ExtraColumnsWarning`.

        Returns:
            A DataFrame (tabular), an ndarray (array) or a dict of those (multi).

        Raises:
            SchemaError: listing every problem found (``err.problems``).

        Example:
            >>> schema = infer_schema(pd.DataFrame({"age": [31, 45]}))
            >>> schema.coerce([{"age": 52}])["age"].dtype
            dtype('int64')
        """
        checked = self._check(raw, strict, "Input")
        if checked.problems:
            raise _schema_error(checked.problems)
        if checked.extra:
            warnings.warn(_extra_warning(checked.extra), stacklevel=2)
        return checked.canonical

    def problems(self, raw: Any, *, strict: bool = False) -> list[str]:
        """Every problem `coerce` would report, [] if none; never raises for bad input."""
        return [problem.text for problem in self._check(raw, strict, "Input").problems]

    def n_rows(self, canonical: Any) -> int:
        """The number of rows (samples) in a canonical input."""
        raise NotImplementedError

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        raise NotImplementedError


def _extra_warning(extra: Sequence[str]) -> ExtraColumnsWarning:
    message = (
        f"Ignoring {_plural(len(extra), 'input column')} the bundle does not know:\n"
        f"{_capped(_sorted(extra), len(extra))}\n"
        "Drop them to silence this warning, or pass strict=True to refuse them."
    )
    return ExtraColumnsWarning(message, extra=extra)
