"""ONNX Runtime runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UsageError


def cuda_available() -> bool:
    """A CUDA device this onnxruntime build can use: the CUDA provider is compiled in and a GPU device node
    exists (NVIDIA_VISIBLE_DEVICES alone proves nothing: CUDA base images set it without a GPU)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and any(Path("/dev").glob("nvidia[0-9]*"))


class OrtRunner:
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1, providers: list | None = None, strict: bool = False):
        """``providers`` as ONNX Runtime takes them (names or (name, options) pairs). ``strict``: the first
        provider must be the one in use, with no CPU fallback for nodes it cannot take
        (``session.disable_cpu_ep_fallback``); anything else is an error that names the provider."""
        import onnxruntime as ort

        from ..files.onnx_io import iospec_from_onnx

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 4  # load failures surface as exceptions; the C++ log would repeat them on stderr
        providers = providers or ["CPUExecutionProvider"]
        asked = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if strict:
            available = ort.get_available_providers()
            if asked not in available:  # ORT itself would warn and run on the CPU
                raise UsageError(f"{asked} is not in this onnxruntime build (it has {', '.join(available)}); "
                                 "install the onnxruntime package for that device, or serve on the CPU")
            if asked != "CPUExecutionProvider":
                opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            if strict and asked != "CPUExecutionProvider":
                raise UsageError(f"{self.path}: {asked} cannot start a session for it "
                                 f"({str(exc).splitlines()[0][:200]}); no CPU fallback is taken") from None
            raise UsageError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]}); "
                             "re-export the model") from None
        if strict and self.session.get_providers()[0] != asked:
            raise UsageError(f"{self.path}: asked for {asked}, but ONNX Runtime runs it on "
                             f"{self.session.get_providers()[0]}; no CPU fallback is taken")
        self.iospec = self.file_spec = iospec_from_onnx(self.path)
        self.threads = threads
        self.providers = self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {t.name: np.ascontiguousarray(inputs[t.name], dtype=t.dtype) for t in self.iospec.inputs}
        outs = self.session.run(None, feed)
        return dict(zip(self.iospec.output_names, outs))
