"""What every benchmark reports the same way: the machine, and its RESULTS.md section."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def versions(distributions: Iterable[str]) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones left out)."""
    found = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def versions_line(distributions: Iterable[str]) -> str:
    """``tensorflow-cpu 2.21.0, keras 3.15.1, ...`` for the installed ones of `distributions`."""
    return ", ".join(f"{name} {version}" for name, version in versions(distributions).items())


def machine_line(distributions: Iterable[str]) -> str:
    """``2 cores, <CPU>, Python 3.11.7; tensorflow-cpu 2.21.0, ...`` for a results heading."""
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {python}; {versions_line(distributions)}"


def write_section(section: str, text: str, results: Path = RESULTS) -> None:
    """Replace (or append) the ``## <section>`` part of RESULTS.md, leaving others alone."""
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip() + "\n\n", current).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + text.rstrip() + "\n"
    results.write_text(updated)


def run_child(code: str, *, timeout: int = 3600) -> str:
    """The stdout of `code` run in a fresh Python process (quiet TensorFlow); fails loudly."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"child failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return result.stdout
