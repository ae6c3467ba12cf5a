"""The quickstart runs as `make demo` runs it, and its serving side needs no trusted=True."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_the_quickstart_predicts_in_a_fresh_process_without_trust(tmp_path):
    """Its bundle's only stored code is a __main__ loss: compile only, so the serving
    process loads it untrusted (issue 21) and still reproduces the training predictions."""
    serving = (REPO / "examples" / "predict_quickstart.py").read_text().splitlines()
    code = [line for line in serving if not line.lstrip().startswith("#")]
    assert not [line for line in code if "trusted" in line]
    for script in ("quickstart.py", "predict_quickstart.py"):
        shutil.copy(REPO / "examples" / script, tmp_path / script)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "TF_CPP_MIN_LOG_LEVEL": "3",
        },
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "skipped (needed only to compile): smoothed_crossentropy" in result.stdout
    assert "OK: the fresh process reproduced the training process's predictions." in (result.stdout)
