"""ONNX Runtime runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError


class OrtRunner:
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1, providers: list[str] | None = None):
        import onnxruntime as ort

        from ..onnx_io import iospec_from_onnx

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 4  # load failures surface as exceptions; the C++ log would repeat them on stderr
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise UsageError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]}); "
                             "re-export the model") from None
        self.iospec = self.file_spec = iospec_from_onnx(self.path)
        self.threads = threads
        self.providers = self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {t.name: np.ascontiguousarray(inputs[t.name], dtype=t.dtype) for t in self.iospec.inputs}
        outs = self.session.run(None, feed)
        return dict(zip(self.iospec.output_names, outs))
