"""LiteRT (ai-edge-litert) interpreter runner, XNNPACK on, with the profile's threads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..files.tf_import import missing
from ..core.iospec import IOSpec, TensorSpec
from .mapping import dequantize_out, quantize_in, source_view, to_file, to_source


def import_litert():
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:
        raise missing("running .tflite files (the LiteRT interpreter)", exc.name) from None
    return interpreter


def tflite_iospec(details_in: list[dict], details_out: list[dict]) -> IOSpec:
    def spec(d: dict, i: int) -> TensorSpec:
        sig = d.get("shape_signature", d["shape"])
        shape = tuple(("batch" if j == 0 else f"{d['name']}_dim{j}") if int(s) < 0 else int(s) for j, s in enumerate(sig))
        layout = "NHWC" if len(shape) == 4 and np.dtype(d["dtype"]).kind == "f" else None
        return TensorSpec(d["name"], shape, np.dtype(d["dtype"]).name, layout)
    return IOSpec(tuple(spec(d, i) for i, d in enumerate(details_in)), tuple(spec(d, i) for i, d in enumerate(details_out)))


class LiteRTRunner:
    runtime = "litert"

    def __init__(self, path: str | Path, threads: int = 1, mapping: IOSpec | None = None):
        interpreter = import_litert()
        self.path = Path(path)
        self._interpreter = interpreter
        self.notes: tuple[str, ...] = ()
        try:
            self._load(interpreter, threads, delegates=True)
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            if "Select TensorFlow op" in str(exc):
                raise UsageError(f"{self.path}: needs TF Select (Flex) ops, which the LiteRT builtin interpreter "
                                 "does not include; re-export with builtin ops only") from None
            if "delegate" not in str(exc).lower() and "xnnpack" not in str(exc).lower():
                raise UsageError(f"{self.path}: LiteRT cannot load it ({first}); is it a .tflite flatbuffer?") from None
            try:  # XNNPACK refused a node: LiteRT's builtin kernels run the whole graph instead
                self._load(interpreter, threads, delegates=False)
            except (ValueError, RuntimeError) as again:
                raise UsageError(f"{self.path}: LiteRT cannot prepare it, with XNNPACK ({first}) or without "
                                 f"({str(again).splitlines()[0][:200]})") from None
            self.notes = (f"XNNPACK cannot prepare this file ({first}); it runs on LiteRT's builtin kernels "
                          "without the delegate, and its latency is measured that way",)
        self._in = {d["name"]: d for d in self.interp.get_input_details()}
        self._out = {d["name"]: d for d in self.interp.get_output_details()}
        self.file_spec = mapping or tflite_iospec(list(self._in.values()), list(self._out.values()))
        self.signature_names = self._signature_names()
        self.iospec = source_view(self.file_spec)
        self.threads = threads

    def _load(self, interpreter, threads: int, delegates: bool) -> None:
        from ..files.native_output import capture_fd2

        kwargs = {} if delegates else {
            "experimental_op_resolver_type": interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}

        def load():  # LiteRT announces its XNNPACK delegate on fd 2; keep the terminal clean
            self.interp = interpreter.Interpreter(model_path=str(self.path), num_threads=max(1, threads), **kwargs)
            self.interp.allocate_tensors()
        capture_fd2(load)

    def _signature_names(self) -> dict[str, str]:
        """Tensor name -> the name the file's first signature gives it (TF names a signature's tensors by
        key, and orders them by name, not by the source's order)."""
        try:
            sigs = self.interp._get_full_signature_list() or {}
        except AttributeError:
            return {}
        sig = sigs.get("serving_default") or next(iter(sigs.values()), {})
        by_index = {d["index"]: d["name"] for d in list(self._in.values()) + list(self._out.values())}
        return {by_index[i]: key for part in ("inputs", "outputs") for key, i in sig.get(part, {}).items()
                if i in by_index}

    def _resize(self, feeds) -> None:
        for d, a in feeds:
            self.interp.resize_tensor_input(d["index"], list(a.shape))
        self.interp.allocate_tensors()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = []
        for t in self.file_spec.inputs:
            array = to_file(t, np.asarray(inputs[t.source_name or t.name]))
            d = self._in[t.name]
            feeds.append((d, quantize_in(array, d["dtype"], *d["quantization"])))
        if any(tuple(d["shape"]) != a.shape for d, a in feeds):
            try:
                self._resize(feeds)
            except RuntimeError as exc:
                if self.notes:
                    raise
                self._load(self._interpreter, self.threads, delegates=False)  # XNNPACK cannot take this shape
                self.notes = (f"XNNPACK cannot reshape this file ({str(exc).splitlines()[0][:160]}); it runs on "
                              "LiteRT's builtin kernels without the delegate, and its latency is measured that way",)
                self._resize(feeds)
            self._in = {d["name"]: d for d in self.interp.get_input_details()}
            feeds = [(self._in[d["name"]], a) for d, a in feeds]
        for d, a in feeds:
            self.interp.set_tensor(d["index"], a)
        self.interp.invoke()
        return {t.source_name or t.name: to_source(t, dequantize_out(self.interp.get_tensor(self._out[t.name]["index"]),
                                                                     *self._out[t.name]["quantization"]))
                for t in self.file_spec.outputs}
