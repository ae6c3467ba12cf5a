"""The report of `Bundle.verify()`: which checks passed, which drifted, and by how much."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IntegrityError
from .environment import compare_environment
from .integrity import verify_files
from .manifest import Manifest

__all__ = ["Check", "VerifyReport", "compare_outputs", "environment_check", "files_check"]


@dataclass(frozen=True)
class Check:
    """One verification step: its name, whether it passed, and what was found."""

    name: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}" + (
            f": {self.detail}" if self.detail else ""
        )


@dataclass(frozen=True)
class VerifyReport:
    """Every check `verify()` ran. Truthy when all passed."""

    label: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = "verified" if self.ok else f"FAILED ({len(self.failed)} of {len(self.checks)})"
        return "\n".join([f"{self.label}: {verdict}", *(str(c) for c in self.checks)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.label,
            "ok": self.ok,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
        }


def compare_outputs(name: str, expected: Any, got: Any, *, rtol: float, atol: float) -> Check:
    """Compare stored golden outputs with replayed ones (numbers within tolerance, labels equal)."""
    if isinstance(expected, Mapping) != isinstance(got, Mapping) or (
        isinstance(expected, Mapping) and sorted(expected) != sorted(got)
    ):
        return Check(name, False, f"outputs {_outputs(got)} now, {_outputs(expected)} at save time")
    if isinstance(expected, dict):
        checks = [
            compare_outputs(f"{name}[{k}]", expected[k], got[k], rtol=rtol, atol=atol)
            for k in expected
        ]
        failed = [c for c in checks if not c.passed]
        return Check(name, not failed, "; ".join(c.detail for c in (failed or checks)))
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        return Check(name, False, f"shape {got.shape} now, {expected.shape} at save time")
    if expected.dtype.kind in "fc":
        diff = np.abs(got.astype("float64") - expected.astype("float64"))
        bound = atol + rtol * np.abs(expected.astype("float64"))
        bad = int(np.count_nonzero(diff > bound))
        worst = float(diff.max()) if diff.size else 0.0
        detail = (
            f"max |difference| {worst:.3g} over {expected.size} values (rtol={rtol}, atol={atol})"
        )
        if bad:
            detail = f"{bad} of {expected.size} values drifted; " + detail
        return Check(name, bad == 0, detail)
    equal = int(np.count_nonzero(expected.astype(str) == got.astype(str)))
    return Check(name, equal == expected.size, f"{equal} of {expected.size} equal")


def _outputs(value: Any) -> str:
    if isinstance(value, Mapping):
        return "named " + ", ".join(map(repr, sorted(value)))
    return f"one array {np.shape(value)}"


def files_check(path: Path, manifest: Manifest) -> Check:
    """Every file's sha256 and size against the manifest, as a check."""
    try:
        verify_files(path, manifest.files, label=manifest.label)
    except IntegrityError as exc:
        return Check("files", False, str(exc))
    return Check("files", True, f"{len(manifest.files)} files match their sha256 and size")


def environment_check(recorded: Mapping[str, str | None]) -> Check:
    """Informational: which recorded versions differ from the running ones (``!`` marks the
    differences `Bundle.load` warns about)."""
    differing = [
        f"{d.package} {d.saved} -> {d.running}" + (" !" if d.significant else "")
        for d in compare_environment(recorded)
        if d.package in recorded
    ]
    if not differing:
        return Check("environment", True, "same versions as at save time")
    return Check("environment", True, "differs (informational): " + ", ".join(differing))
