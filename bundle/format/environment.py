"""The training environment: record it, pin it in requirements.txt, compare it at load."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import EnvironmentMismatchWarning

# Recorded name -> distributions that provide it (the first one installed wins).
PACKAGES = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel"),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "torch": ("torch",),
    "keras": ("keras",),
    "scikit-learn": ("scikit-learn",),
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "pyarrow": ("pyarrow",),
    "joblib": ("joblib",),
    "cloudpickle": ("cloudpickle",),
    "keras-bundle": ("keras-bundle",),
}
# Why a difference matters, for the packages where it matters most.
CONSEQUENCES = {
    "scikit-learn": "its pickles are version-specific, and transformers may change behaviour",
    "tensorflow": "kernels and numerics can change between releases",
    "jax": "XLA's kernels and numerics can change between releases",
    "jaxlib": "XLA's kernels and numerics can change between releases",
    "torch": "kernels and numerics can change between releases",
    "keras": "layer implementations and the saving format can change between releases",
}

__all__ = [
    "VersionDifference",
    "capture_environment",
    "compare_environment",
    "major_minor",
    "requirements_text",
    "warn_on_mismatch",
]


def _installed(names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def capture_environment() -> dict[str, str | None]:
    """Python, platform and the versions of every package a bundle's parts depend on."""
    environment: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }
    for key, names in PACKAGES.items():
        found = _installed(names)
        environment[key] = found[1] if found else None
    return environment


def requirements_text(environment: Mapping[str, str | None]) -> str:
    """``requirements.txt`` pinning the recorded versions (the installed distribution names)."""
    lines = [f"# Training environment: Python {environment.get('python')}"]
    for key, names in PACKAGES.items():
        version = environment.get(key)
        if version:
            found = _installed(names)
            distribution = found[0] if found else names[0]
            lines.append(f"{distribution}=={version}")
    return "\n".join(lines) + "\n"


def major_minor(version: str) -> tuple[str, ...]:
    """``"2.21.0+cpu"`` -> ``("2", "21")``: the part of a version whose change we warn about."""
    return tuple(version.split("+")[0].split(".")[:2])


@dataclass(frozen=True)
class VersionDifference:
    """One recorded entry of the environment that differs from the running one.

    Attributes:
        package: the recorded key ("numpy", "python", "platform", ...).
        saved: the version at save time (None: not recorded).
        running: the version now (None: not installed).
        significant: predictions may differ (`is_significant`): load warns, the CLI marks it.
    """

    package: str
    saved: str | None
    running: str | None
    significant: bool


def is_significant(package: str, saved: str | None, running: str | None) -> bool:
    """The one policy on environment differences.

    A difference matters when a package the bundle's parts run on changed its major.minor
    (patch releases and local builds keep behaviour). Python, the platform and keras-bundle
    itself are recorded for the record: the format version, not the package version, says
    whether a bundle can be read, and a package missing on one side has nothing to compare.
    """
    if package not in PACKAGES or package == "keras-bundle" or not saved or not running:
        return False
    return major_minor(saved) != major_minor(running)


def compare_environment(
    recorded: Mapping[str, str | None], running: Mapping[str, str | None] | None = None
) -> list[VersionDifference]:
    """Every entry of `recorded` (and every known package) whose running version differs,
    in a stable order: python, platform, the known packages, then any other recorded key."""
    running = capture_environment() if running is None else running
    keys = ["python", "platform", *PACKAGES]
    keys += [key for key in recorded if key not in keys]
    return [
        VersionDifference(key, saved, now, is_significant(key, saved, now))
        for key in keys
        if (saved := recorded.get(key)) != (now := running.get(key))
    ]


def warn_on_mismatch(recorded: Mapping[str, str | None], *, label: str) -> list[str]:
    """Warn once per significant difference (`is_significant`).

    Returns:
        The names of the packages that differ significantly.
    """
    differing = []
    for difference in compare_environment(recorded):
        if not difference.significant:
            continue
        key, saved, running = difference.package, difference.saved, difference.running
        differing.append(key)
        why = CONSEQUENCES.get(key, "behaviour may differ")
        warnings.warn(
            EnvironmentMismatchWarning(
                f"{label} was saved with {key} {saved}; running {running}. "
                f"Predictions may differ: {why}. "
                f"The bundle's requirements.txt pins the training versions.",
                package=key,
                saved=saved,
                running=running,
            ),
            stacklevel=3,
        )
    return differing
