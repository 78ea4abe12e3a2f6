"""Benching and running a file on a device through its runner; the figures come back in the host's types."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..measure.bench import noise_notes, summarize
from ..core.errors import UsageError
from ..core.results import BenchResult
from ..runtimes.mapping import to_file, to_source
from .session import Device


def need_runtime(device: Device, runtime: str, path: Path) -> None:
    if not device.can_run(runtime):
        from ..runtimes.device_runner import INSTALL
        raise UsageError(f"{device.where}: {runtime} is not installed there (for {Path(path).name}); on the device "
                         f"run: {INSTALL.get(runtime, 'python3 -m pip install numpy')}")


def fingerprint(raw: dict, runtime: str) -> dict:
    return {"uname_m": raw.get("uname_m"), "cpu": raw.get("cpu", {}), "runtime": runtime,
            "runtime_version": raw.get("runtime_version"), "threads": raw.get("threads")}


def device_bench(device: Device, path: str | Path, runtime: str, inputs: dict[str, np.ndarray], *, threads: int = 1,
                 warmup: int = 20, runs: int = 200, min_seconds: float = 0.0, repeat: int = 1,
                 max_seconds: float = 10.0) -> BenchResult:
    """Time ``path`` on the device with ``inputs`` (one batch-1 sample keyed by the file's own tensors)."""
    path = Path(path)
    need_runtime(device, runtime, path)
    name = device.push(path)
    with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
        sample = Path(tmp) / "sample.npz"
        np.savez(sample, **inputs)
        sample_name = device.push(sample, fresh=True)
    raw = device.call("bench", {"model": name, "runtime": runtime, "inputs": sample_name, "threads": threads,
                                "warmup": warmup, "runs": runs, "min_seconds": min_seconds, "repeat": repeat,
                                "max_seconds": max(max_seconds, min_seconds * 1.5)},
                      timeout=120 + repeat * max(max_seconds, min_seconds * 1.5) * 2)
    try:
        times = [float(t) for rnd in raw["samples_ms"] for t in rnd]
        if not times:
            raise ValueError("no samples")
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{device.where}: malformed runner output (bench samples: {exc})") from None
    stats = summarize(times)
    result = {"file": str(path), "runtime": runtime, "threads": threads, "runs": len(times), "warmup": warmup,
              **stats, "throughput_b1": 1000.0 / stats["mean_ms"], "batch": None, "throughput_batch": None,
              "peak_rss_mb": float(raw["peak_rss_mb"]), "rss_growth_mb": float(raw["rss_growth_mb"]),
              "file_bytes": path.stat().st_size}
    notes = list(raw.get("notes", ())) + noise_notes(result, requested_runs=runs * repeat)
    if repeat > 1:
        p50s = [float(np.percentile(r, 50)) for r in raw["samples_ms"]]
        notes.append(f"p50 of each of the {repeat} rounds: " + ", ".join(f"{p:.4g}" for p in p50s) + " ms")
    return BenchResult(**result, cpu=raw.get("cpu", {}), notes=tuple(notes), init_ms=float(raw["init_ms"]),
                       first_run_ms=float(raw["first_run_ms"]), measured_on=device.where,
                       device=fingerprint(raw, runtime))


class DeviceRunner:
    """The Runner protocol over a device: the host runner's tensor views (``iospec``/``file_spec``), the
    inference on the device. ``run_all`` takes a whole split in one round trip, chunked on the device the
    way ``run_batched`` chunks on the host, so the outputs are the same computation."""

    def __init__(self, device: Device, path: str | Path, host_runner):
        self.device, self.path, self.where = device, Path(path), device.where
        self.runtime = host_runner.runtime
        self.iospec, self.file_spec, self.threads = host_runner.iospec, host_runner.file_spec, host_runner.threads
        self.notes: tuple[str, ...] = ()
        need_runtime(device, self.runtime, self.path)
        self._name = device.push(self.path)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_all(inputs, chunk=len(next(iter(inputs.values()))))

    def run_all(self, inputs: dict[str, np.ndarray], chunk: int | None = None) -> dict[str, np.ndarray]:
        if chunk is None:
            chunk = 64 if self.iospec.batch_dynamic else 1
        feed = {t.name: to_file(t, np.asarray(inputs[t.source_name or t.name])) for t in self.file_spec.inputs}
        with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
            np.savez(Path(tmp) / "inputs.npz", **feed)
            in_name = self.device.push(Path(tmp) / "inputs.npz", fresh=True)
            out_name = in_name.replace("inputs", "outputs")
            raw = self.device.call("run", {"model": self._name, "runtime": self.runtime, "inputs": in_name,
                                           "outputs": out_name, "threads": self.threads, "chunk": chunk})
            self.notes = tuple(raw.get("notes", ()))
            self.device.pull(out_name, Path(tmp) / "outputs.npz")
            with np.load(Path(tmp) / "outputs.npz") as npz:
                got = {k: npz[k] for k in npz.files}
        missing = [t.name for t in self.file_spec.outputs if t.name not in got]
        if missing:
            raise UsageError(f"{self.device.where}: malformed runner output (outputs {', '.join(missing)} missing)")
        return {t.source_name or t.name: to_source(t, got[t.name]) for t in self.file_spec.outputs}


def validate_on_device(device: Device, path: str | Path, host_runner, reference, data, tolerance,
                       host_outputs: dict[str, np.ndarray] | None = None):
    """The validation split on the device, judged by the host's code; with ``host_outputs`` (the same
    file on the host) also how far the two runs differ. (ValidationResult, side-by-side figures)."""
    from ..runtimes.base import run_batched
    from ..measure.validate import judge_outputs

    runner = DeviceRunner(device, path, host_runner)
    outputs = run_batched(runner, data.validation.inputs)
    result = judge_outputs(outputs, path, runner.runtime, reference, data, tolerance, raise_on_failure=False,
                           measured_on=device.where)
    side = {"device": device.where, "notes": list(runner.notes)}
    if host_outputs is not None:
        side["max_abs_diff_vs_host"] = {}
        side["within_tolerance_of_host"] = True
        for name, got in outputs.items():
            ref = host_outputs.get(name)
            if ref is None or ref.shape != got.shape:
                side["within_tolerance_of_host"] = False
                continue
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            side["max_abs_diff_vs_host"][name] = float(diff.max()) if diff.size else 0.0
            if tolerance is not None and bool((diff > tolerance.atol + tolerance.rtol * np.abs(ref)).any()):
                side["within_tolerance_of_host"] = False
    return result, side


def bench_on_device(file: str | Path, device: str, *, threads: int = 1, warmup: int = 20, runs: int = 200,
                    min_seconds: float = 0.0, repeat: int = 1, max_seconds: float = 10.0,
                    inputs: dict[str, np.ndarray] | None = None, accept_host_key: bool = False) -> BenchResult:
    """``edgekit bench FILE --device URL``: time ``file`` on the device (``inputs``: one sample keyed by the
    source's or the file's tensors; default: synthetic inputs of the file's own shapes and dtypes)."""
    from ..core.iospec import synthetic_input
    from ..runtimes import open_runner, runtime_for
    from .session import open_device

    path = Path(file)
    runtime = runtime_for(path)
    host = open_runner(path, runtime, threads=threads)  # the file's own tensors, read here
    if inputs is None:
        one = {t.name: synthetic_input(t) for t in host.file_spec.inputs}
    else:
        one = {t.name: to_file(t, np.asarray(inputs.get(t.name, inputs.get(t.source_name or t.name)))[:1])
               for t in host.file_spec.inputs}
    with open_device(device, accept_host_key=accept_host_key) as dev:
        return device_bench(dev, path, runtime, one, threads=threads, warmup=warmup, runs=runs,
                            min_seconds=min_seconds, repeat=repeat, max_seconds=max_seconds)


def bench_with_binary(file: str | Path, device: str, binary: str | Path, *, threads: int = 1, warmup: int = 20,
                      runs: int = 200, min_seconds: float = 0.0, accept_host_key: bool = False) -> BenchResult:
    """``edgekit bench FILE --device URL --benchmark-binary PATH``: the user's own ``benchmark_model`` (for
    .tflite) or ``onnxruntime_perf_test`` (for .onnx) pushed and run on a device without Python; its output
    parsed. Figures the tool does not print stay None."""
    from .session import open_device
    from .tool_output import parse_benchmark_model, parse_perf_test

    path, binary = Path(file), Path(binary)
    for p, what in ((path, "file"), (binary, "--benchmark-binary")):
        if not p.is_file():
            raise UsageError(f"{what} {p} not found; check the path")
    if path.suffix not in (".tflite", ".onnx"):
        raise UsageError(f"{path}: --benchmark-binary runs .tflite (benchmark_model) or .onnx (onnxruntime_perf_test)")
    with open_device(device, accept_host_key=accept_host_key, runner=False) as dev:
        tool, model = dev.push(binary, fresh=True), dev.push(path)
        dev.transport.run(["chmod", "755", tool], 30)
        if path.suffix == ".tflite":
            argv = [f"./{tool}", f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                    f"--num_runs={runs}", f"--min_secs={min_seconds:g}"]
            parse, runtime = parse_benchmark_model, "litert"
        else:
            argv = [f"./{tool}", "-m", "times", "-r", str(runs), "-x", str(threads), "-y", "1", "-I", "-s", model]
            parse, runtime = parse_perf_test, "onnxruntime"
        rc, out, err = dev.transport.run(argv, 600 + 2 * min_seconds)
        tail = " | ".join((err or out).strip().splitlines()[-3:])[:300]
        if rc == -1:
            raise UsageError(f"{dev.where}: connection lost during the benchmark binary ({tail})")
        if rc != 0:
            raise UsageError(f"{dev.where}: {binary.name} failed (exit {rc}): {tail or 'no output'}")
        try:
            raw = parse(out + "\n" + err)
        except ValueError as exc:
            raise UsageError(f"{dev.where}: malformed output of {binary.name} ({exc}); it printed "
                             f"{(out or err).strip()[:160]!r}") from None
        info = dev.info
    mean = raw["mean_ms"]
    notes = [f"{raw['tool']} does not print {', '.join(k[:-3] for k in ('p50_ms', 'p90_ms', 'p99_ms', 'std_ms') if raw[k] is None)}: "
             "shown as n/a"] if any(raw[k] is None for k in ("p50_ms", "p90_ms", "p99_ms", "std_ms")) else []
    return BenchResult(file=str(path), runtime=runtime, threads=threads, runs=raw["runs"] or runs, warmup=warmup,
                       p50_ms=raw["p50_ms"], p90_ms=raw["p90_ms"], p99_ms=raw["p99_ms"], mean_ms=mean,
                       std_ms=raw["std_ms"], throughput_b1=1000.0 / mean if mean else None, batch=None,
                       throughput_batch=None, peak_rss_mb=raw["peak_rss_mb"], rss_growth_mb=None,
                       file_bytes=path.stat().st_size, cpu=info.get("cpu", {}), notes=tuple(notes),
                       init_ms=raw["init_ms"], first_run_ms=raw["first_run_ms"], measured_on=dev.where,
                       device={"uname_m": info.get("uname_m"), "cpu": info.get("cpu", {}), "runtime": raw["tool"],
                               "runtime_version": None, "threads": threads})
