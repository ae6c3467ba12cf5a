"""TensorFlow's start-up banner kept off stderr, unless the user asks for it.

Importing TensorFlow 2.16+ prints lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796405869.479990   31813 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796405869.524949   31813 cpu_feature_guard.cc:227] This TensorFlow binary ...
    To enable the following instructions: AVX2 AVX512F ..., rebuild TensorFlow with ...

from native code, before its logging is configured: ``TF_CPP_MIN_LOG_LEVEL`` hides the CPU
feature line but not the oneDNN one, which only ``TF_ENABLE_ONEDNN_OPTS=0`` silences, and
that changes the numbers. So while TensorFlow is imported, file descriptor 2 goes to a
temporary file; afterwards every line that is not one of these banners is written to stderr
as it came. ``KERAS_BUNDLE_VERBOSE=1`` (``bundle --verbose``) leaves stderr alone and lets
TensorFlow log at its own default level.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

VERBOSE_ENV = "KERAS_BUNDLE_VERBOSE"
"""Set to 1 to see TensorFlow's native start-up and log lines."""

# The banner's lines, as TensorFlow and absl print them; anything else is passed through.
BANNER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard|cpu_utils)\.cc:\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow with"
    r"|oneDNN custom operations are on"
)

__all__ = ["BANNER", "VERBOSE_ENV", "import_quietly", "verbose"]


def verbose() -> bool:
    """True when the user asked for TensorFlow's own output (``KERAS_BUNDLE_VERBOSE``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def import_quietly(name: str) -> ModuleType:
    """Import module `name` with TensorFlow's start-up banner dropped from stderr.

    A module imported already is returned as is: only the first import prints the banner.
    """
    if name in sys.modules or "tensorflow" in sys.modules or verbose():
        return importlib.import_module(name)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING after start-up
    with _stderr_filtered():
        return importlib.import_module(name)


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
    """Send fd 2 to a temporary file; then replay its lines but the banner's to stderr."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        _flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not _banner(line)]
            if kept:
                os.write(2, b"".join(kept))


def _banner(line: bytes) -> bool:
    return BANNER.search(line.decode("utf-8", "replace")) is not None


def _flush() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
