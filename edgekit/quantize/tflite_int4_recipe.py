"""4-bit TFLite weights for LiteRT through ai-edge-quantizer (in the converter worker). Weight-only: int4
weights feed a DEQUANTIZE op and compute stays float, so the file is smaller, not faster.

ai-edge-quantizer covers CONV_2D and FULLY_CONNECTED here; other weighted ops (e.g. depthwise convs)
stay float, and the precision map read back from the file says so. The repair that moves layers up
when the file misses the budget is quantize/tflite_int4.py. TFLite-Micro has no int4 kernels.
"""
from __future__ import annotations

from pathlib import Path


def write_int4(tf, src: Path, target: Path, int8_scopes: tuple[str, ...] = (), float_scopes: tuple[str, ...] = (),
               only: str | None = None) -> None:
    """``src`` (fp32 .tflite) with int4 weight-only quantization; ``int8_scopes`` get int8 weights instead,
    ``float_scopes`` stay float; ``only``: quantize just that op scope (for sensitivity). ``tf``: the worker."""
    tf.call("int4", "quantize tflite int4", src=str(Path(src).resolve()), out=str(Path(target).resolve()),
            int8_scopes=list(int8_scopes), float_scopes=list(float_scopes), only=only)
