"""PyTorch backend: the model called eagerly under ``torch.inference_mode``.

No compilation: ``torch.compile`` of a Keras model was measured (benchmarks/RESULTS.md,
"Backends") to compile twice per process at 3 to 10 s each (a batch of one, then dynamic
shapes); afterwards the dense tabular model ran at 2.2x the rows/s, the conv net at the
same rate and slower on one row. Serving and Spark workers would pay the compilations on
every start for a gain on some models only; inference mode alone skips autograd's
bookkeeping."""

from __future__ import annotations

from typing import Any

import numpy as np

from .inference import REDUCED_PRECISION, InferenceFunction, to_numpy

__all__ = ["TorchInference"]


class TorchInference(InferenceFunction):
    """The forward pass in ``torch.inference_mode``, one conversion plan per input dtype.

    Inputs go to the model's device as they are and narrower dtypes that convert exactly
    (uint8 images) are cast there by PyTorch; outputs come back as NumPy arrays.
    """

    backend = "torch"

    def _build(self, dtypes: tuple[str, ...]) -> Any:
        import torch

        model, inputs, multi = self.model, self.inputs, self.multi_input
        variables = list(model.variables)
        device = variables[0].value.device if variables else torch.device("cpu")
        targets = [getattr(torch, np.dtype(spec["dtype"]).name) for spec in inputs]

        def tensor(array: Any, target: Any) -> Any:
            array = np.asarray(array)
            if not array.flags.writeable:  # torch shares memory and warns on read-only arrays
                array = array.copy()
            t = torch.as_tensor(array, device=device)
            return t if t.dtype == target else t.to(target)

        def to_host(t: Any) -> np.ndarray:
            if str(t.dtype).removeprefix("torch.") in REDUCED_PRECISION:
                t = t.float()
            return t.detach().cpu().numpy()

        def forward(x: Any) -> Any:
            with torch.inference_mode():
                if multi:
                    x = {
                        spec["name"]: tensor(x[spec["name"]], target)
                        for spec, target in zip(inputs, targets, strict=True)
                    }
                else:
                    x = tensor(x, targets[0])
                return to_numpy(model(x, training=False), to_host)

        return forward

    def _run(self, function: Any, x: Any) -> Any:
        return function(x)
