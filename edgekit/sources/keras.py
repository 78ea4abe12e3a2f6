"""Keras sources: a .keras file or a TensorFlow SavedModel folder.

.keras files load with ``safe_mode=True``, so a Lambda layer's pickled code is never run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UsageError, one_line
from ..core.iospec import IOSpec, TensorSpec, default_layout, synthetic_input
from ..core.model import Model
from ..runtimes.keras import SavedModelFn

def is_keras_source(path: Path) -> bool:
    return path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").is_file())


def load_keras(path: Path, sample_inputs: dict | None = None) -> Model:
    from ..files.tf_import import import_tf

    tf = import_tf()
    if path.is_dir():
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except Exception as exc:
            raise UsageError(f"{path} is not a loadable SavedModel with a serving_default signature ({one_line(exc)})") from None
        ins = fn.structured_input_signature[1]
        outs = fn.structured_outputs
        inputs = tuple(_spec(name, s.shape, s.dtype.name) for name, s in ins.items())
        outputs = tuple(_spec(name, s.shape, s.dtype.name) for name, s in outs.items())
        module = SavedModelFn(fn, loaded)
        loader = "saved_model"
    else:
        if not path.is_file():
            raise UsageError(f"model file {path} not found; check the path")
        import keras
        try:
            module = keras.saving.load_model(str(path), safe_mode=True, compile=False)
        except Exception as exc:
            raise UsageError(f"{path} is not a loadable Keras model (truncated or corrupt?): {one_line(exc)}") from None
        inputs = tuple(_spec(t.name, t.shape, t.dtype) for t in module.inputs)
        outputs = tuple(_spec(n, t.shape, t.dtype) for n, t in zip(module.output_names, module.outputs))
        loader = "keras"
    spec = IOSpec(inputs, outputs)
    examples = {t.name: _example(t, sample_inputs) for t in spec.inputs}
    return Model(name=path.stem if path.is_file() else path.name, kind="keras", loader=loader, origin=str(path),
                 iospec=spec, example_inputs=examples, module=module, meta={"keras_path": str(path)})


def _spec(name: str, shape, dtype) -> TensorSpec:
    dims = tuple(("batch" if i == 0 else f"{name}_dim{i}") if d is None else int(d) for i, d in enumerate(shape))
    dtype = str(np.dtype(getattr(dtype, "name", dtype)))
    layout = "NHWC" if default_layout(dims, dtype) else None
    return TensorSpec(name.split(":")[0], dims, dtype, layout)


def _example(t: TensorSpec, samples: dict | None) -> np.ndarray:
    if samples and t.name in samples:
        return np.asarray(samples[t.name][:1])
    if samples and "x" in samples:
        return np.asarray(samples["x"][:1])
    return synthetic_input(t)
