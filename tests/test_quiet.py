"""Loading a bundle in a quiet process prints nothing on stderr: no TensorFlow banner.

TensorFlow prints its start-up lines (absl's pre-initialization warning, oneDNN, CPU
features) from native code, whatever ``TF_CPP_MIN_LOG_LEVEL`` says about some of them. Each
test runs a fresh process with the user's environment minus that variable, and reads its
stderr; ``--verbose`` / ``KERAS_BUNDLE_VERBOSE=1`` bring the lines back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bundle import Bundle
from bundle.model.quiet import BANNER

BUNDLE = shutil.which("bundle", path=os.path.dirname(sys.executable))


def _quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_BUNDLE"))}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def _run(args: list[str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, env=_quiet_env(**extra), timeout=300, check=False
    )


@pytest.fixture(scope="module")
def quiet_bundle(tmp_path_factory):
    """An uncompiled model (no optimizer warnings of its own) with an example."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    root = tmp_path_factory.mktemp("quiet") / "root"
    Bundle(model, input_example=np.zeros((4, 2), "float32"), name="q", version="1").save(root)
    return root


@pytest.fixture(scope="module")
def banner_lines() -> list[str]:
    """What importing TensorFlow prints in this environment (skip when it prints nothing)."""
    result = _run([sys.executable, "-c", "import tensorflow"])
    lines = [line for line in result.stderr.splitlines() if BANNER.search(line)]
    if not lines:
        pytest.skip("this TensorFlow build prints no start-up banner")
    return lines


@pytest.mark.slow
def test_bundle_load_in_a_quiet_process_prints_nothing(quiet_bundle, banner_lines):
    code = (
        "from bundle import Bundle\n"
        f"loaded = Bundle.load({str(quiet_bundle)!r})\n"
        "print(loaded.predict([[1.0, 2.0]]).shape)\n"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1)"
    assert result.stderr == ""


@pytest.mark.slow
@pytest.mark.skipif(BUNDLE is None, reason="the `bundle` script is not installed")
def test_bundle_commands_print_no_banner_unless_verbose(quiet_bundle, banner_lines, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("0,1\n1.0,2.0\n")
    quiet = _run([BUNDLE, "predict", str(quiet_bundle), str(rows), "-o", str(tmp_path / "o.csv")])
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    verbose = _run([BUNDLE, "--verbose", "verify", str(quiet_bundle)])
    assert verbose.returncode == 0, verbose.stderr
    assert [line for line in verbose.stderr.splitlines() if BANNER.search(line)]
    by_env = _run([BUNDLE, "verify", str(quiet_bundle)], KERAS_BUNDLE_VERBOSE="1")
    assert [line for line in by_env.stderr.splitlines() if BANNER.search(line)]


def test_other_stderr_output_of_the_import_is_kept(capfd):
    """Only the banner is dropped: anything else written while importing reaches stderr."""
    from bundle.model import quiet

    with quiet._stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called\n")
        os.write(2, b"a real problem while importing\n")
    assert capfd.readouterr().err == "a real problem while importing\n"
