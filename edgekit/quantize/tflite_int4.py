"""4-bit TFLite weights for LiteRT through ai-edge-quantizer (weight-only: int4 weights feed a DEQUANTIZE
op, compute stays float, so the file is smaller, not faster).

ai-edge-quantizer covers CONV_2D and FULLY_CONNECTED here; other weighted ops (e.g. depthwise convs)
stay float, and the precision map read back from the file says so. When the file misses the
accuracy budget, layers are ranked by the drop they cause alone at int4 and moved up one at a time,
worst first, int4 -> int8 and then int8 -> float, until it fits (time-boxed). TFLite-Micro has no
int4 kernels: the C array keeps int8.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import UsageError

TIME_BOX_S = 120.0


def write_int4(src: Path, target: Path, int8_scopes: tuple[str, ...] = (), float_scopes: tuple[str, ...] = (),
               only: str | None = None) -> None:
    """``src`` (fp32 .tflite) with int4 weight-only quantization; ``int8_scopes`` get int8 weights instead,
    ``float_scopes`` stay float; ``only``: quantize just that op scope (for sensitivity)."""
    try:
        from ai_edge_quantizer import algorithm_manager, quantizer, recipe_manager
        from ai_edge_quantizer.recipe import TFLOperationName
    except ImportError:
        raise UsageError("4-bit TFLite needs ai-edge-quantizer: pip install ai-edge-quantizer") from None
    from ..native_output import capture_fd2

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=_exactly(only) if only else ".*", operation_name=TFLOperationName.ALL_SUPPORTED,
                              num_bits=4)
    for scope in int8_scopes:
        rm.add_weight_only_config(regex=_exactly(scope), operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=8)
    for scope in float_scopes:
        rm.add_quantization_config(regex=_exactly(scope), operation_name=TFLOperationName.ALL_SUPPORTED,
                                   algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    made = {}

    def run() -> None:
        made["model"] = quantizer.Quantizer(str(src), rm.get_quantization_recipe()).quantize().quantized_model

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a size summary
        capture_fd2(run)
    target.write_bytes(bytes(made["model"]))


def _exactly(scope: str) -> str:
    """A regex for one op's scope: ai-edge-quantizer names an op by its output tensors, each followed by ';'."""
    return "^" + re.escape(scope) + ";"


def int4_file(fp32: Path, target: Path, drop_of, budget: float) -> dict:
    """Write ``target`` and repair it when ``drop_of(path)`` exceeds ``budget``; returns what was done."""
    from ..tflite_info import read_tflite

    started = time.perf_counter()
    write_int4(fp32, target)
    drop = drop_of(target)
    info = {"exporter": "ai-edge-quantizer (weight-only int4, float compute)", "from": fp32.name,
            "int4_attempts": [{"name": "int4 everywhere it applies", "drop": drop}]}
    if drop <= budget:
        return info
    first = read_tflite(target)
    scopes = first.scopes
    quantized = [w for w, p in first.precision_map.items() if p == "int4"]
    ranked = []
    with tempfile.TemporaryDirectory(prefix="edgekit-int4-") as tmp:
        probe = Path(tmp) / "probe.tflite"
        for weight in quantized:
            if time.perf_counter() - started > TIME_BOX_S:
                info["notes"] = [f"repair stopped at its {TIME_BOX_S:g} s time box while ranking layers "
                                 f"({len(ranked)} of {len(quantized)} measured)"]
                break
            write_int4(fp32, probe, only=scopes[weight])
            ranked.append((drop_of(probe), weight))
        ranked.sort(reverse=True)
        info["sensitivity"] = [{"layer": w, "drop_alone": d} for d, w in ranked]
        int8: list[str] = []
        floats: list[str] = []
        best = (drop, (), ())
        out_of_time = len(ranked) < len(quantized)  # no time left to move any layer
        steps = [] if out_of_time else [(w, "int8") for _, w in ranked] + [(w, "fp32") for _, w in ranked]
        for weight, level in steps:
            if time.perf_counter() - started > TIME_BOX_S:
                info.setdefault("notes", []).append(f"repair stopped at its {TIME_BOX_S:g} s time box")
                break
            if level == "int8":
                int8.append(weight)
            else:
                int8.remove(weight)
                floats.append(weight)
            write_int4(fp32, probe, int8_scopes=tuple(scopes[w] for w in int8),
                       float_scopes=tuple(scopes[w] for w in floats))
            drop = drop_of(probe)
            info["int4_attempts"].append({"name": f"repair: {weight} -> {level}", "drop": drop})
            if drop < best[0]:
                best = (drop, tuple(int8), tuple(floats))
                shutil.copyfile(probe, target)
            if drop <= budget:
                break
        else:
            if steps:
                info.setdefault("notes", []).append(f"repair could not meet the budget: best drop {best[0]:.4f} "
                                                    f"(gap {best[0] - budget:.4f})")
    info["int8_layers"], info["float_layers"] = list(best[1]), list(best[2])
    if quantized and len(best[2]) == len(quantized):
        info.setdefault("notes", []).append("every layer ended in float: the file holds no int4 weights")
    return info
