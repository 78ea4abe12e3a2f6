"""OpenVINO runner: an IR (``.xml`` + ``.bin``) compiled for the CPU with the profile's threads, one stream,
the LATENCY hint and an explicit ``INFERENCE_PRECISION_HINT``.

OpenVINO's CPU plugin runs an "fp32" IR in bf16 on CPUs with AVX512-BF16 or AMX unless told otherwise, so
the hint is always set: the one the IR carries in its rt_info (``edgekit/inference_precision_hint``, written
by edgekit's exporter and passes), else the one asked for, else f32.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..core.iospec import IOSpec, TensorSpec, default_layout

HINT_KEY = ["edgekit", "inference_precision_hint"]
HINTS = ("f32", "bf16", "f16")
EXTRA = "pip install 'edgekit[openvino]'"


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise UsageError(f"OpenVINO files need the openvino extra ({exc.name} is not installed): {EXTRA}") from None
    return openvino


def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin can compute in here (FP32, BF16, INT8, ...)."""
    return tuple(import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def has_bf16() -> bool:
    return "BF16" in cpu_capabilities()


def stored_hint(model) -> str | None:
    """The precision hint an IR (an ``openvino.Model``) carries in its rt_info, if edgekit wrote one."""
    try:
        value = model.get_rt_info(HINT_KEY)
        return str(value.astype(str) if hasattr(value, "astype") else value)
    except Exception:  # noqa: BLE001 - openvino raises its own error type for a missing key
        return None


def _spec(port, index: int, prefix: str) -> TensorSpec:
    names = sorted(port.get_names())
    name = port.get_any_name() if names else f"{prefix}_{index}"
    shape = tuple(int(d.get_length()) if d.is_static else ("batch" if i == 0 else f"{name}_dim{i}")
                  for i, d in enumerate(port.get_partial_shape()))
    dtype = str(np.dtype(port.get_element_type().to_dtype()))
    return TensorSpec(name, shape, dtype, default_layout(shape, dtype))


class OpenVINORunner:
    runtime = "openvino"

    def __init__(self, path: str | Path, threads: int = 1, mapping: IOSpec | None = None,
                 precision_hint: str | None = None):
        ov = import_openvino()
        self.path = Path(path)
        if not self.path.with_suffix(".bin").is_file():
            raise UsageError(f"{self.path}: the IR's weights {self.path.with_suffix('.bin').name} are not next to it; "
                             "keep the .xml and .bin together")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - openvino raises RuntimeError subclasses of its own
            raise UsageError(f"{self.path}: OpenVINO cannot read it ({str(exc).splitlines()[0][:200]}); "
                             "re-export the model") from None
        hint = precision_hint or stored_hint(model) or "f32"
        if hint not in HINTS:
            raise UsageError(f"{self.path}: unknown inference precision hint {hint!r}; known: {', '.join(HINTS)}")
        if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise UsageError(f"{self.path}: asks for bf16 inference, and this CPU has no bf16 "
                             "(OpenVINO's OPTIMIZATION_CAPABILITIES); run it with precision_hint='f32'")
        config = {"INFERENCE_NUM_THREADS": max(1, threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": hint}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"{self.path}: OpenVINO cannot compile it for the CPU "
                             f"({str(exc).splitlines()[0][:200]}); re-export the model") from None
        self.request = self.compiled.create_infer_request()
        compiled_hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type
        self.precision_hint = compiled_hint.get_type_name() if hasattr(compiled_hint, "get_type_name") else str(compiled_hint)
        own = IOSpec(tuple(_spec(p, i, "input") for i, p in enumerate(model.inputs)),
                     tuple(_spec(p, i, "output") for i, p in enumerate(model.outputs)))
        self.file_spec = own
        self.iospec = mapping or own
        self.threads = threads
        self.providers = [f"CPU ({self.precision_hint})"]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {i: np.ascontiguousarray(inputs[t.name], dtype=t.dtype) for i, t in enumerate(self.iospec.inputs)}
        # shared in and out (no copies inside OpenVINO); the outputs are copied here, before the next call
        # overwrites the request's tensors. On a 10-feature MLP this is 33 us a call instead of 50-100 us.
        result = self.request.infer(feed, share_inputs=True, share_outputs=True)
        outs = [np.array(value) for value in result.to_tuple()]
        return dict(zip(self.iospec.output_names, outs))
