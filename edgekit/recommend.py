"""Which file to recommend per runtime, and the notes quantization leaves in the report."""
from __future__ import annotations

from .artifact import Artifact
from .profiles import DeviceProfile


def recommend(artifacts: list[Artifact], budget: float) -> dict[str, dict]:
    """Per runtime, the fastest file within the accuracy budget that is not slower than its fp32 twin."""
    out = {}
    for runtime in sorted({a.runtime for a in artifacts}):
        mine = [a for a in artifacts if a.runtime == runtime and a.validation is not None]
        twin = next((a for a in mine if a.precision == "fp32"), None)
        twin_p50 = twin.bench.p50_ms if twin is not None and twin.bench is not None else None
        ok = [a for a in mine if a.validation.drop <= budget]
        flagged = [a.file for a in ok if twin_p50 and a.bench and a.bench.p50_ms > twin_p50 and a is not twin]
        fast = [a for a in ok if a.file not in flagged]
        if not fast:
            continue
        if all(a.bench is not None for a in fast):
            best = min(fast, key=lambda a: (a.bench.p50_ms, a.bytes))
            why = "fastest file within the accuracy budget"
        else:  # TFLite-Micro is not timed on the host: the smallest file that passes
            best = min(fast, key=lambda a: a.device_bytes)
            why = "smallest file within the accuracy budget"
        out[runtime] = {"file": best.file, "why": why, "slower_than_fp32": flagged}
    return out


def quantization_notes(profile: DeviceProfile, artifacts: list[Artifact]) -> list[str]:
    notes = []
    if profile.quantize.weight_bits == 16:
        notes.append("fp16 files are a size option on CPU: the runtimes insert casts and compute in fp32")
    if any(a.precision == "int4" and a.format == "tflite" for a in artifacts):
        notes.append("4-bit TFLite is weight-only (ai-edge-quantizer: int4 weights, a DEQUANTIZE op feeds float "
                     "compute), a size option for LiteRT, not a speed one; ops it does not cover (e.g. depthwise convs) stay "
                     "float, as the precision map shows. TFLite-Micro has no int4 kernels, so the C array embeds "
                     "full-integer int8")
    for a in artifacts:
        for note in a.export.notes:
            notes.append(f"{a.file}: {note}")
    return notes
