"""TFLite integer files from a SavedModel with the TFLite converter and a representative dataset
drawn from the calibration split: full-integer int8 (optionally int8 I/O for MCUs) and int16
activations with int8 weights."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data import Split
from ..errors import StageError
from ..iospec import IOSpec
from ..runtimes.mapping import to_file


def representative(calibration: Split, mapping: IOSpec, signature_names: list[str]) -> callable:
    """Samples in the file's layout, keyed by the SavedModel signature's input names."""
    def clean(name: str) -> str:
        return name.split(":")[0].removeprefix("serving_default_")

    by_clean = {clean(t.name): t for t in mapping.inputs}

    def gen() -> Iterator[dict]:
        for i in range(len(calibration)):
            sample = {}
            for j, name in enumerate(signature_names):
                t = by_clean.get(name) or mapping.inputs[j]
                src = calibration.inputs[t.source_name or t.name][i:i + 1]
                sample[name] = np.ascontiguousarray(to_file(t, src), dtype=np.float32)
            yield sample
    return gen


def convert_integer(saved_model: str, precision: str, calibration: Split, mapping: IOSpec, int8_io: bool) -> bytes:
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model)
    names = list(loaded.signatures["serving_default"].structured_input_signature[1])
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(calibration, mapping, names)
    if precision == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    from ..native_output import capture_fd2

    result: list[bytes] = []
    try:
        capture_fd2(lambda: result.append(converter.convert()), fds=(1, 2))  # the converter prints natively
        return result[0]
    except Exception as exc:
        line = next((x for x in str(exc).splitlines() if x.strip()), type(exc).__name__)
        raise StageError("quantize tflite", f"{precision}: TFLite converter: {line[:300]}") from None
