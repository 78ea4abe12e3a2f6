"""The reference runner for Keras sources: the Keras model (or SavedModel signature) itself."""
from __future__ import annotations

import numpy as np

from ..core.iospec import IOSpec


class SavedModelFn:
    """A SavedModel signature called like a Keras model: dict of arrays in, dict out."""

    def __init__(self, fn, keep_alive):
        self.fn, self._keep = fn, keep_alive

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..files.tf_import import import_tf

        tf = import_tf()
        return {k: v.numpy() for k, v in self.fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


class KerasRunner:
    runtime = "tensorflow"

    def __init__(self, module, iospec: IOSpec, threads: int = 1):
        self.module, self.iospec, self.file_spec, self.threads = module, iospec, iospec, threads

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {t.name: np.asarray(inputs[t.name], dtype=t.dtype) for t in self.iospec.inputs}
        if isinstance(self.module, SavedModelFn):
            return self.module.run(feed)
        args = [feed[n] for n in self.iospec.input_names]
        result = self.module(args[0] if len(args) == 1 else args, training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return {name: np.asarray(r) for name, r in zip(self.iospec.output_names, result)}
