"""The device side of ``--device``: one file, pushed with the model into a temporary folder on the device.

It needs Python 3, numpy and the file's runtime (onnxruntime or ai-edge-litert), never edgekit: it imports
nothing from the package, so the host can copy this file as it is. ``python3 device_runner.py '<json>'``
prints one JSON line tagged ``{"edgekit_device_runner": VERSION}``:

- ``preflight``: the device fingerprint and which runtimes import; exit 2 naming the ``pip install``
  line when the asked runtime is missing.
- ``bench``: init and first-run time, then ``repeat`` rounds of timed runs (at least ``runs`` and at least
  ``min_seconds`` each); the raw samples in ms. The host computes the percentiles, with the same code as
  its own bench.
- ``run``: every sample of ``inputs.npz`` through the file (in chunks of ``chunk``), into ``outputs.npz``.

Inputs arrive keyed by the file's own tensor names in the file's layout, as float or integer arrays; an
integer input tensor with a scale is quantized here with its own parameters, and integer outputs are
dequantized, exactly as the host's runners do. While it runs it watches stdin: when the host's connection
drops, stdin closes and the runner exits at once.
"""
import json
import os
import platform
import sys
import threading
import time

VERSION = 1
TAG = "edgekit_device_runner"
INSTALL = {"onnxruntime": "python3 -m pip install onnxruntime numpy",
           "litert": "python3 -m pip install ai-edge-litert numpy"}
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "sve", "i8mm")


def cpu_info() -> dict:
    """CPU model and the SIMD flags that matter for inference kernels (x86 ``flags``, ARM ``Features``)."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Hardware", "Model", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(), "machine": platform.machine(),
            "cores": os.cpu_count(), "flags": [f for f in flags if f in CPU_FLAGS]}


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc (ru_maxrss carries the parent's peak)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(payload: dict) -> None:
    sys.stdout.write(json.dumps({TAG: VERSION, **payload}) + "\n")
    sys.stdout.flush()


def runtime_version(runtime: str):
    """The runtime's version, or None when it does not import."""
    try:
        if runtime == "onnxruntime":
            import onnxruntime
            return onnxruntime.__version__
        from ai_edge_litert import interpreter  # noqa: F401
        try:
            from importlib.metadata import version
            return version("ai-edge-litert")
        except Exception:
            return "unknown"
    except ImportError:
        return None


def quantize_in(array, dtype, scale: float, zero_point: int):
    """Float data into an integer input tensor (int8-I/O files), using the tensor's own scale. The host's
    runners call this same function (runtimes.mapping), so host and device feed identical bytes."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or array.dtype.kind != "f" or not scale:
        return np.ascontiguousarray(array, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_out(array, scale: float, zero_point: int):
    import numpy as np

    if array.dtype.kind not in "iu" or not scale:
        return array
    return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)


class Session:
    """One file in its runtime with the asked threads; ``run(feed) -> [outputs]`` in the file's order."""

    def __init__(self, path: str, runtime: str, threads: int):
        import numpy as np

        self.np, self.notes = np, []
        if runtime == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, threads)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 4
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.inputs = [(i.name, None) for i in self.session.get_inputs()]
            types = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
                     "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
                     "tensor(bool)": "bool", "tensor(double)": "float64"}
            self.dtypes = {i.name: types.get(i.type, "float32") for i in self.session.get_inputs()}
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.run = self._run_ort
        elif runtime == "litert":
            from ai_edge_litert import interpreter

            self.path, self.threads, self.interpreter = path, threads, interpreter
            try:
                self._load(delegates=True)
            except (ValueError, RuntimeError) as exc:
                if "delegate" not in str(exc).lower() and "xnnpack" not in str(exc).lower():
                    raise
                self._load(delegates=False)
                self.notes.append("XNNPACK cannot prepare this file; it ran on LiteRT's builtin kernels")
            self.run = self._run_litert
        else:
            raise ValueError(f"unknown runtime {runtime!r}")

    def _load(self, delegates: bool) -> None:
        kwargs = {} if delegates else {
            "experimental_op_resolver_type": self.interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        self.interp = self.interpreter.Interpreter(model_path=self.path, num_threads=max(1, self.threads), **kwargs)
        self.interp.allocate_tensors()
        self._details()

    def _details(self) -> None:
        self.ins = {d["name"]: d for d in self.interp.get_input_details()}
        self.outs = list(self.interp.get_output_details())
        self.output_names = [d["name"] for d in self.outs]

    def _run_ort(self, feed: dict) -> list:
        np = self.np
        return self.session.run(None, {n: np.ascontiguousarray(feed[n], dtype=self.dtypes[n]) for n in feed})

    def _run_litert(self, feed: dict) -> list:
        np = self.np
        arrays = {name: quantize_in(np.asarray(feed[name]), d["dtype"], *d["quantization"])
                  for name, d in self.ins.items()}
        if any(tuple(self.ins[n]["shape"]) != a.shape for n, a in arrays.items()):
            for n, a in arrays.items():
                self.interp.resize_tensor_input(self.ins[n]["index"], list(a.shape))
            self.interp.allocate_tensors()
            self._details()
        for n, a in arrays.items():
            self.interp.set_tensor(self.ins[n]["index"], a)
        self.interp.invoke()
        return [dequantize_out(self.interp.get_tensor(d["index"]), *d["quantization"]) for d in self.outs]


def preflight(args: dict) -> int:
    runtimes = {rt: runtime_version(rt) for rt in ("onnxruntime", "litert")}
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    emit({"mode": "preflight", "python": platform.python_version(), "numpy": numpy_version, "runtimes": runtimes,
          "uname_m": platform.machine(), "cpu": cpu_info()})
    asked = args.get("runtime")
    if numpy_version is None or (asked and runtimes.get(asked) is None):
        missing = "numpy" if numpy_version is None else asked
        sys.stderr.write(f"{missing} does not import with {sys.executable}; on the device run: "
                         f"{INSTALL.get(asked, 'python3 -m pip install numpy')}\n")
        return 2
    return 0


def load_inputs(path: str) -> dict:
    import numpy as np

    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def bench(args: dict) -> int:
    rss0 = status_mb("VmRSS")
    start = time.perf_counter()
    session = Session(args["model"], args["runtime"], args["threads"])
    init_ms = (time.perf_counter() - start) * 1000
    one = load_inputs(args["inputs"])
    start = time.perf_counter()
    session.run(one)
    first_ms = (time.perf_counter() - start) * 1000
    for _ in range(args["warmup"]):
        session.run(one)
    rounds = []
    for _ in range(max(1, args.get("repeat", 1))):
        times, t0 = [], time.perf_counter()
        while len(times) < args["runs"] or time.perf_counter() - t0 < args.get("min_seconds", 0.0):
            if time.perf_counter() - t0 > args["max_seconds"] and len(times) >= 10:
                break
            s = time.perf_counter()
            session.run(one)
            times.append((time.perf_counter() - s) * 1000)
        rounds.append(times)
    emit({"mode": "bench", "samples_ms": rounds, "init_ms": init_ms, "first_run_ms": first_ms,
          "peak_rss_mb": status_mb("VmHWM"), "rss_growth_mb": max(0.0, status_mb("VmHWM") - rss0),
          "runtime_version": runtime_version(args["runtime"]), "threads": args["threads"],
          "uname_m": platform.machine(), "cpu": cpu_info(), "notes": session.notes,
          "file_bytes": os.path.getsize(args["model"])})
    return 0


def run(args: dict) -> int:
    import numpy as np

    session = Session(args["model"], args["runtime"], args["threads"])
    inputs = load_inputs(args["inputs"])
    n = len(next(iter(inputs.values())))
    step = max(1, args.get("chunk", 1))
    parts = [[] for _ in session.output_names]
    for s in range(0, n, step):
        for i, out in enumerate(session.run({k: v[s:s + step] for k, v in inputs.items()})):
            parts[i].append(np.asarray(out))
    outputs = {name: np.concatenate(p, axis=0) for name, p in zip(session.output_names, parts)}
    tmp = args["outputs"] + ".part.npz"
    np.savez(tmp, **outputs)
    os.replace(tmp, args["outputs"])
    emit({"mode": "run", "samples": n, "outputs": list(outputs), "notes": session.notes,
          "runtime_version": runtime_version(args["runtime"])})
    return 0


def watch_stdin() -> None:
    """The host holds this process's stdin open; EOF means its connection is gone: stop now."""
    def wait():
        try:  # the raw fd: a daemon thread inside sys.stdin's buffer would block the interpreter's exit
            while os.read(0, 4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(75)
    threading.Thread(target=wait, daemon=True).start()


def main(argv: list) -> int:
    args = json.loads(argv[0])
    os.environ.setdefault("OMP_NUM_THREADS", str(args.get("threads", 1)))  # as the host's bench process has it
    if args.get("watch_stdin"):
        watch_stdin()
    mode = args["mode"]
    if mode != "preflight" and runtime_version(args["runtime"]) is None:
        sys.stderr.write(f"{args['runtime']} does not import with {sys.executable}; on the device run: "
                         f"{INSTALL[args['runtime']]}\n")
        return 2
    return {"preflight": preflight, "bench": bench, "run": run}[mode](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
