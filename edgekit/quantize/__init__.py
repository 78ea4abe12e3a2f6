"""Quantization passes ``Exported -> Exported``: fp16/int8/int4 for ONNX (ONNX Runtime's quantizer) and
fp16/int8/int16x8/int4 for TFLite (the TFLite converter on the exporter's SavedModel, ai-edge-quantizer).
Each pass lives beside its repair: onnx.py (ORT int8/int4, arrangements and the ladder; the quantizer calls in
onnx_ort.py), tflite_int8.py and tflite_int4.py (recipe in tflite_int4_recipe.py), openvino.py (NNCF),
executorch.py (PT2E), qat.py (the QAT rung; the weight grids in qat_grid.py), ladder.py (the one ladder).
``pipeline.plan.QUANTIZERS`` maps (format, precision) to its pass. Every file is measured, never assumed."""
