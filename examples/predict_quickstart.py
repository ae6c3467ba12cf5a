"""The serving side of the quickstart: load the newest bundle under a root and predict."""

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

from bundle import Bundle, CompileStateSkippedWarning

root = Path(sys.argv[1])
rows = pd.read_csv(root.parent / "wine_test.csv")
# No trusted=True: the bundle's only stored code is the custom loss of the training script's
# __main__ (a pickle), and prediction never uses a loss. It is skipped, never unpickled, and
# a CompileStateSkippedWarning says so; Bundle.load(root, trusted=True) would restore the
# compile state, to continue training.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", CompileStateSkippedWarning)
    loaded = Bundle.load(root)
for warning in caught:
    if issubclass(warning.category, CompileStateSkippedWarning):
        print("skipped (needed only to compile):", ", ".join(warning.message.skipped))
labels = loaded.predict(rows)
scores = loaded.predict(rows, postprocess=False)
expected = np.load(root.parent / "wine_expected.npy")
print(f"loaded {loaded!r}")
print("first predictions:", labels[:5].tolist())
print(f"max |difference| vs the training process: {np.max(np.abs(scores - expected)):.2e}")
print("one row as a dict:", loaded.predict(rows.iloc[0].to_dict()).tolist())
assert np.allclose(scores, expected, rtol=0, atol=1e-6), "replay differs from training"
print("OK: the fresh process reproduced the training process's predictions.")
