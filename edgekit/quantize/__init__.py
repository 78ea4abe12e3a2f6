"""Quantization passes ``Exported -> Exported``: fp16/int8/int4 for ONNX (ONNX Runtime's quantizer) and
fp16/int8/int16x8/int4 for TFLite (the TFLite converter on the exporter's SavedModel, ai-edge-quantizer).
The passes that search (arrangements, repair ladders) live in search/; ``plan.QUANTIZERS`` maps
(format, precision) to its pass. Every file is measured, never assumed."""
