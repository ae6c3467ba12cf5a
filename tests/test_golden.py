"""Bundles written by earlier releases keep loading: one golden bundle per format version.

`tests/data/golden-v<N>/` is written once, when format version N ships, and never again:
if a change to the package makes these tests fail, that change broke old releases.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from bundle import Bundle, EnvironmentMismatchWarning
from bundle.format.golden import read_example, read_outputs

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(DATA.glob("golden-v*/*"))


@pytest.mark.parametrize("path", GOLDEN, ids=[p.parent.name for p in GOLDEN])
def test_golden_bundle_loads_and_replays_its_outputs(path):
    manifest = json.loads((path / "manifest.json").read_text())
    assert f"golden-v{manifest['format_version']}" == path.parent.name
    with warnings.catch_warnings():
        # Saved with the package versions of its day; newer ones only warn.
        warnings.simplefilter("ignore", EnvironmentMismatchWarning)
        loaded = Bundle.load(path)  # native parts only: no trusted=True
    report = loaded.verify()
    assert report.ok, str(report)
    example = read_example(path, manifest["example"]["input"])
    scores = loaded.predict(example, postprocess=False)
    np.testing.assert_allclose(
        scores,
        read_outputs(path / manifest["example"]["scores"]),
        rtol=manifest["example"]["rtol"],
        atol=manifest["example"]["atol"],
    )
    stored = read_outputs(path / manifest["example"]["predictions"])
    assert loaded.predict(example).astype(str).tolist() == stored.astype(str).tolist()


def test_there_is_a_golden_bundle_for_the_current_format():
    from bundle.format.manifest import FORMAT_VERSION

    assert (DATA / f"golden-v{FORMAT_VERSION}").is_dir(), (
        f"Format version {FORMAT_VERSION} has no golden bundle: save one under "
        f"tests/data/golden-v{FORMAT_VERSION}/ when the format version is bumped."
    )
