"""TFLite-Micro runner (the tflite-micro Python interpreter): op coverage and the measured arena."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..files.tf_import import missing
from ..files.native_output import capture_fd2
from ..core.iospec import IOSpec
from .mapping import dequantize_out, quantize_in, source_view, to_file, to_source

PROBE_ARENA = 64 * 1024 * 1024  # generous arena for the first load; the real need is then measured


def import_tflm():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise missing("TFLite-Micro checks", exc.name) from None
    return runtime


class TflmRunner:
    """Runs sample by sample (TFLM has a fixed batch of 1)."""

    runtime = "tflm"

    def __init__(self, path: str | Path, threads: int = 1, mapping: IOSpec | None = None,
                 arena_bytes: int = PROBE_ARENA):
        runtime = import_tflm()
        self.path = Path(path)
        data = self.path.read_bytes()
        errors: list[str] = []

        def make():
            try:
                self.interp = runtime.Interpreter.from_bytes(data, arena_size=arena_bytes)
            except (RuntimeError, ValueError) as exc:
                errors.append(str(exc))
        log = capture_fd2(make)
        if errors:
            raise UsageError(f"{self.path}: TFLite-Micro cannot load it: {_first(errors[0] + chr(10) + log)}")
        from .litert import LiteRTRunner
        own = LiteRTRunner(self.path).file_spec  # the file's tensors in its subgraph order, as TFLM indexes them
        self.file_spec = mapping or own
        try:  # a mapping may list them in another order (TF orders signature outputs by name): index by name
            self._in_pos = [[t.name for t in own.inputs].index(t.name) for t in self.file_spec.inputs]
            self._out_pos = [[t.name for t in own.outputs].index(t.name) for t in self.file_spec.outputs]
        except ValueError:
            raise UsageError(f"{self.path}: the mapping names tensors the file does not have") from None
        self.iospec = source_view(self.file_spec)
        self.threads = 1

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [to_file(t, np.asarray(inputs[t.source_name or t.name])) for t in self.file_spec.inputs]
        qin = [_quant(self.interp.get_input_details(k)) for k in self._in_pos]
        qout = [_quant(self.interp.get_output_details(k)) for k in self._out_pos]
        outs: list[list[np.ndarray]] = [[] for _ in self.file_spec.outputs]
        for i in range(len(arrays[0])):
            for k, (t, a) in enumerate(zip(self.file_spec.inputs, arrays)):
                self.interp.set_input(quantize_in(a[i:i + 1], t.dtype, *qin[k]), self._in_pos[k])
            self.interp.invoke()
            for k, pos in enumerate(self._out_pos):
                outs[k].append(dequantize_out(np.array(self.interp.get_output(pos)), *qout[k]))
        return {t.source_name or t.name: to_source(t, np.concatenate(o, axis=0))
                for t, o in zip(self.file_spec.outputs, outs)}

    def arena_used_bytes(self) -> int:
        """The arena the model really used, as TFLM's recording allocator reports it (after a run)."""
        text = capture_fd2(self.interp.print_allocations)
        match = re.search(r"Arena allocation total (\d+) bytes", text)
        if not match:
            raise RuntimeError(f"TFLM did not report its arena use: {text[:200]!r}")
        return int(match.group(1))


def _quant(details: dict) -> tuple[float, int]:
    q = details.get("quantization_parameters", {})
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    return (float(scales[0]), int(zps[0])) if len(scales) else (0.0, 0)


def _first(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    wanted = [line for line in lines if "op" in line.lower() or "registration" in line.lower()]
    return "; ".join(dict.fromkeys(wanted or lines[:1]))[:400]
