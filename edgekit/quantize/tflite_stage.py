"""TFLite quantization stages: an int16-activation file when the int8 file misses the budget, and the
4-bit weight-only file for LiteRT."""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from ..artifact import Artifact
from ..export import EXPORTERS, Exported, ExportJob
from ..profiles import DeviceProfile


def int16_fallback(job: ExportJob, artifacts: list[Artifact], produced: list[Exported],
                   prof: DeviceProfile) -> list[Exported]:
    """When the int8 TFLite file misses the accuracy budget, add an int16-activation file.

    The int8 entry in ``produced`` is marked so the C array embeds the better file."""
    int8 = next((a for a in artifacts if a.format == "tflite" and a.precision == "int8"), None)
    if int8 is None or int8.validation.get("drop", 0.0) <= prof.budget.max_accuracy_drop:
        return []
    index = next(i for i, e in enumerate(produced) if e.format == "tflite" and e.precision == "int8")
    produced[index] = dataclasses.replace(produced[index], info={**produced[index].info, "meets_budget": False})
    with tempfile.TemporaryDirectory(prefix="edgekit-int16-") as tmp:
        made = EXPORTERS["tflite"](dataclasses.replace(job, folder=Path(tmp), precisions=("fp32", "int16x8")))
        entry = next(e for e in made if e.precision == "int16x8")
        target = job.folder / entry.path.name
        shutil.move(str(entry.path), target)
    fixed = dataclasses.replace(entry, path=target, info={**entry.info, "why": f"{int8.file} missed the accuracy budget "
                                                          f"(drop {int8.validation['drop']:.4f})"})
    produced.append(fixed)
    return [fixed]


def tflite_int4_stage(job: ExportJob, produced: list[Exported], reference, data, prof: DeviceProfile) -> Exported:
    """``<model>_int4.tflite`` from the fp32 .tflite (ai-edge-quantizer), repaired to the accuracy budget."""
    from ..runtimes import open_runner
    from ..validate import validate_file
    from .tflite_int4 import int4_file

    fp32 = next(e for e in produced if e.format == "tflite" and e.precision == "fp32")
    target = job.folder / f"{job.model.name}_int4.tflite"
    threads = prof.target.resolved_threads

    def drop_of(path: Path) -> float:
        runner = open_runner(path, "litert", threads=threads, mapping=fp32.mapping)  # the file's own layout
        return validate_file(path, reference, data, None, runtime="litert", threads=threads,
                             raise_on_failure=False, runner=runner).drop

    info = int4_file(fp32.path, target, drop_of, prof.budget.max_accuracy_drop)
    entry = Exported(target, "tflite", "int4", info, fp32.mapping)
    produced.append(entry)
    return entry
