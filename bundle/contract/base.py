"""`InputSchema`: the contract's common interface (coerce, problems, to_dict/from_dict)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import ExtraColumnsWarning, ManifestError
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
            ManifestError: not a schema this package wrote: unknown or missing keys, an
                unknown kind or dtype, values of the wrong type.
        """
        if not isinstance(d, Mapping) or "kind" not in d:
            raise _malformed("it must be a JSON object with a 'kind' key")
        reader = SCHEMA_READERS.get(d["kind"]) if isinstance(d["kind"], str) else None
        if reader is None:
            raise _malformed(
                f"unknown kind {d['kind']!r}; known kinds: {', '.join(SCHEMA_READERS)}"
            )
        try:
            return reader(d)
        except ManifestError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            # Readers index and convert what to_dict wrote; anything else is a malformed
            # manifest, whatever Python exception its shape happens to cause.
            if isinstance(exc, KeyError):
                detail = f"missing key {exc}"
            elif isinstance(exc, ValueError):
                detail = str(exc).rstrip(".")
            else:
                detail = f"{type(exc).__name__}: {exc}"
            raise _malformed(detail) from exc
        except RecursionError as exc:
            raise _malformed("it nests too deeply") from exc

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


def _malformed(problem: str) -> ManifestError:
    return ManifestError(
        f"The manifest's input_schema is not one keras-bundle writes: {problem}.\n"
        "The manifest was edited by hand or written by a broken tool; restore it from the "
        "release."
    )


def _extra_warning(extra: Sequence[str]) -> ExtraColumnsWarning:
    message = (
        f"Ignoring {_plural(len(extra), 'input column')} the bundle does not know:\n"
        f"{_capped(_sorted(extra), len(extra))}\n"
        "Drop them to silence this warning, or pass strict=True to refuse them."
    )
    return ExtraColumnsWarning(message, extra=extra)
