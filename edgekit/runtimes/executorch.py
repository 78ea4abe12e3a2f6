"""ExecuTorch runner: a ``.pte`` program run by ExecuTorch's own runtime (``executorch.runtime``).

edgekit's exporter stores the tensor names in the program as a constant method (``edgekit_io``:
"in1,in2|out1"), so a lone ``.pte`` is fed by name like every other file. ExecuTorch's XNNPACK thread pool is
process-wide: it is set only in the bench worker process (``set_threads``), never here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..core.iospec import IOSpec, TensorSpec, default_layout

EXTRA = "pip install 'edgekit[executorch]'"
IO_METHOD = "edgekit_io"
# c10::ScalarType codes, as TensorInfo.dtype() gives them
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
           11: "bool", 15: "bfloat16"}


def import_executorch(lowering: bool = False):
    """``executorch.runtime`` (and, with ``lowering``, the exporter's modules), imported once with the start-up
    chatter of its native code and of torchao (cpuinfo probes, kernel-library notices) kept off the terminal."""
    import sys

    from ..files.native_output import capture_fd2

    def load():
        from executorch import runtime
        runtime.Runtime.get()
        if lowering:
            import executorch.backends.xnnpack.partition.xnnpack_partitioner  # noqa: F401
            import executorch.exir  # noqa: F401
            import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401

    if lowering and getattr(sys.modules.get("executorch.exir"), "__edgekit_bare__", False):
        raise RuntimeError("this process loaded ExecuTorch's runtime only (import_runtime_only, for bench workers); "
                           "lowering a program needs a process that has not")
    wanted = ("executorch.exir",) if lowering else ("executorch.runtime",)
    if not all(m in sys.modules for m in wanted):
        try:
            capture_fd2(load)
        except ImportError as exc:
            raise UsageError(f"ExecuTorch files need the executorch extra ({exc.name} is not installed): "
                             f"{EXTRA}") from None
    from executorch import runtime
    return runtime


def import_runtime_only() -> None:
    """For a worker process that only runs programs (the bench worker): ExecuTorch's pybindings import
    ``executorch.exir._warnings``, and with it ``executorch.exir``'s ``__init__``, the whole exporter (about 4 s of
    torch._dynamo and inductor imports). Here ``executorch.exir`` is registered as its own package directory with that
    ``__init__`` not run, so only ``_warnings.py`` loads. Never in a process that lowers programs; if the bare
    package is not enough for this executorch version, the full import runs instead."""
    import importlib.util
    import sys

    if "executorch.runtime" in sys.modules or "executorch.exir" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("executorch.exir")
    except ImportError:  # no executorch at all: import_executorch says so, with the pip line
        spec = None
    if spec is None or not spec.submodule_search_locations:
        import_executorch()
        return
    bare = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    bare.__edgekit_bare__ = True  # import_executorch(lowering=True) refuses to run after it
    sys.modules["executorch.exir"] = bare
    if "executorch" in sys.modules:
        sys.modules["executorch"].exir = bare
    try:
        import_executorch()
    except Exception:  # noqa: BLE001 - fall back to the full import, from a clean slate
        for name in [m for m in sys.modules if m == "executorch" or m.startswith("executorch.")]:
            del sys.modules[name]
    import_executorch()


def set_threads(threads: int) -> None:
    """Resize ExecuTorch's process-wide thread pool: for the bench worker process only."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(max(1, threads))


def _spec(meta, name: str) -> TensorSpec:
    shape = tuple(int(s) for s in meta.sizes())
    code = meta.dtype()
    dtype = _DTYPES.get(int(code) if not hasattr(code, "value") else int(code.value), "float32")
    return TensorSpec(name, shape, dtype, default_layout(shape, dtype))


class ExecuTorchRunner:
    runtime = "executorch"

    def __init__(self, path: str | Path, threads: int = 1, mapping: IOSpec | None = None):
        runtime = import_executorch()
        import torch  # noqa: F401 - the runtime takes and returns torch tensors

        self.path = Path(path)
        from ..files.native_output import capture_fd2

        loaded = {}

        def load():  # XNNPACK's first start probes the CPU on fd 2
            loaded["program"] = runtime.Runtime.get().load_program(str(self.path))
            loaded["method"] = loaded["program"].load_method("forward")

        try:
            capture_fd2(load)
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError
            raise UsageError(f"{self.path}: ExecuTorch cannot load it ({str(exc).splitlines()[0][:200]}); "
                             "re-export the model") from None
        program, self.method = loaded["program"], loaded["method"]
        names_in, names_out = [], []
        self.precision = None  # what edgekit's exporter recorded: fp32 or int8 (the delegate's blob hides the weights)
        if "edgekit_precision" in program.method_names:
            self.precision = str(program.load_method("edgekit_precision").execute([])[0])
        if IO_METHOD in program.method_names:
            text = str(program.load_method(IO_METHOD).execute([])[0])
            ins, _, outs = text.partition("|")
            names_in, names_out = ins.split(",") if ins else [], outs.split(",") if outs else []
        meta = self.method.metadata
        n_in, n_out = meta.num_inputs(), meta.num_outputs()
        names_in = names_in if len(names_in) == n_in else [f"input_{i}" for i in range(n_in)]
        names_out = names_out if len(names_out) == n_out else [f"output_{i}" for i in range(n_out)]
        self.file_spec = IOSpec(tuple(_spec(meta.input_tensor_meta(i), names_in[i]) for i in range(n_in)),
                                tuple(_spec(meta.output_tensor_meta(i), names_out[i]) for i in range(n_out)))
        self.iospec = mapping or self.file_spec
        self.threads = threads
        self.providers = ["XNNPACK"]
        self._ran = False

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        first = np.asarray(inputs[self.iospec.inputs[0].name])
        own = self.file_spec.inputs[0].shape[0] if self.file_spec.inputs[0].shape else 1
        if first.ndim and first.shape[0] != own:  # a static program of batch ``own``: run sample by sample
            parts = [self.run({k: np.asarray(v)[i:i + own] for k, v in inputs.items()})
                     for i in range(0, first.shape[0], own)]
            return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
        feed = [torch.from_numpy(np.ascontiguousarray(inputs[t.name], dtype=f.dtype))
                for t, f in zip(self.iospec.inputs, self.file_spec.inputs)]
        if not self._ran:  # the thread pool starts on the first parallel op and probes the CPU on fd 2
            from ..files.native_output import capture_fd2

            got = {}
            capture_fd2(lambda: got.setdefault("outs", self.method.execute(feed)))
            outs, self._ran = got["outs"], True
        else:
            outs = self.method.execute(feed)
        return {t.name: o.detach().numpy().copy() for t, o in zip(self.iospec.outputs, outs)}
