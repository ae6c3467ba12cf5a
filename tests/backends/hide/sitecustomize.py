"""Make packages look uninstalled in a child process: ``KERAS_BUNDLE_HIDE=tensorflow``.

Put this directory on the child's ``PYTHONPATH``: Python imports ``sitecustomize`` at
start-up, before any other code. The path finder is wrapped so that the hidden packages are
neither importable (``import tensorflow`` raises ``ModuleNotFoundError``,
``importlib.util.find_spec`` returns None) nor visible to ``importlib.metadata``: the child
sees what a machine without them would show. This proves, inside one CI venv, that
keras-bundle needs no TensorFlow when Keras runs on JAX or PyTorch.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

# Import package -> the distributions that provide it.
DISTRIBUTIONS = {
    "tensorflow": {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos"},
    "tf_keras": {"tf-keras"},
    "jax": {"jax"},
    "jaxlib": {"jaxlib"},
    "torch": {"torch"},
}


class HidingPathFinder:
    """The standard path finder, minus the hidden packages and their distributions."""

    def __init__(self, finder, hidden: set[str]):
        self.finder = finder
        self.hidden = hidden
        self.distributions = set().union(*(DISTRIBUTIONS.get(h, {h}) for h in hidden))

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.hidden:
            return None
        return self.finder.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        for distribution in self.finder.find_distributions(*args, **kwargs):
            name = (distribution.metadata["Name"] or "").lower().replace("_", "-")
            if name not in self.distributions:
                yield distribution

    def __getattr__(self, name):
        return getattr(self.finder, name)


def hide(packages: set[str]) -> None:
    sys.meta_path[:] = [
        HidingPathFinder(finder, packages) if finder is importlib.machinery.PathFinder else finder
        for finder in sys.meta_path
    ]


_hidden = {name for name in os.environ.get("KERAS_BUNDLE_HIDE", "").split(",") if name}
if _hidden:
    hide(_hidden)
