"""Quantization: fp16/int8/int4 for ONNX (ONNX Runtime's quantizer) and int8/int16x8 for TFLite
(the TFLite converter with a representative dataset). Every file is measured, never assumed."""
from __future__ import annotations

BITS_PRECISIONS = {
    # profile/--bits -> the precisions each format produces (besides its fp32 twin)
    16: {"onnx": ("fp16",), "tflite": ("fp16",)},
    8: {"onnx": ("int8",), "tflite": ("int8",)},
    4: {"onnx": ("int4",), "tflite": ("int8",)},  # TFLite/TFLM: int8 (see report note)
    32: {"onnx": (), "tflite": ()},
}
