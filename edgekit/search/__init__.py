"""Every search in one place: the pruning back-off (prune.py), the int8 arrangement choice and the
repair ladder of quantized files (onnx_quant.py, tflite_int4.py, ladder.py)."""
