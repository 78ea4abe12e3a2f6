"""Subprocess entry point of the bench harness: ``python -m edgekit.measure.bench_worker '<json>'``.

Prints one JSON line. Imports only numpy and the file's runtime, so its RSS is the runtime's.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. ru_maxrss is not used: Linux carries the
    parent's peak across fork+exec, so it would report the build process's memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    import numpy as np

    from edgekit.measure.bench import summarize
    from edgekit.core.errors import UsageError
    from edgekit.runtimes import import_runtime, open_runner, runtime_for
    from edgekit.core.iospec import synthetic_input

    args = json.loads(argv[0])
    if "compare" in args:
        return _compare(args)
    try:
        runtime = runtime_for(args["path"], args["runtime"])
        if runtime == "executorch":  # the runtime without the exporter; its thread pool is process-wide: both
            from edgekit.runtimes.executorch import import_runtime_only, set_threads  # here, in the worker, only
            import_runtime_only()
            set_threads(args["threads"])
        import_runtime(runtime)
        rss_before = _status_mb("VmRSS")
        opened = time.perf_counter()
        runner = open_runner(args["path"], args["runtime"], threads=args["threads"])
        init_ms = (time.perf_counter() - opened) * 1000
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    spec = runner.file_spec  # the bench process feeds the file its own tensors
    if args["sample"]:
        with np.load(args["sample"]) as npz:
            one = {t.name: npz[t.name][:1] for t in spec.inputs}
    else:
        one = {t.name: synthetic_input(t) for t in spec.inputs}
    first = time.perf_counter()
    runner.run(one)
    first_run_ms = (time.perf_counter() - first) * 1000
    for _ in range(args["warmup"]):
        runner.run(one)
    times, round_p50 = [], []
    for _ in range(args.get("repeat", 1)):
        begun = time.perf_counter()
        deadline, mine = begun + args["max_seconds"], []
        while (len(mine) < args["runs"] or time.perf_counter() - begun < args.get("min_seconds", 0.0)) \
                and (time.perf_counter() < deadline or len(mine) < 10):
            start = time.perf_counter()
            runner.run(one)
            mine.append((time.perf_counter() - start) * 1000)
        times += mine
        round_p50.append(float(np.percentile(mine, 50)))
    stats = summarize(times)
    peak_b1 = _status_mb("VmHWM")
    batch, throughput = None, None
    if spec.batch_dynamic and args["batch"] > 1:
        batch = args["batch"]
        big = {k: np.repeat(v, batch, axis=0) for k, v in one.items()}
        runner.run(big)
        n, start = 0, time.perf_counter()
        while n < 5 or (n < 50 and time.perf_counter() - start < args["max_seconds"] / 4):
            runner.run(big)
            n += 1
        throughput = n * batch / (time.perf_counter() - start)
    by_batch = [_at_batch(runner, one, b, spec.batch_dynamic, min(1.5, args["max_seconds"] / max(len(args["batches"]), 1)))
                for b in args.get("batches") or ()]
    peak = _status_mb("VmHWM")
    result = {"file": args["path"], "runtime": runner.runtime, "threads": args["threads"], "runs": len(times),
              "warmup": args["warmup"], **stats, "throughput_b1": 1000.0 / stats["mean_ms"], "batch": batch,
              "throughput_batch": throughput, "peak_rss_mb": peak, "rss_growth_mb": max(0.0, peak_b1 - rss_before),
              "file_bytes": _file_bytes(Path(args["path"])),
              "runner_notes": list(getattr(runner, "notes", ())), "init_ms": init_ms, "first_run_ms": first_run_ms, "round_p50_ms": round_p50,
              "by_batch": by_batch}
    print(json.dumps(result))
    return 0


def _file_bytes(path: Path) -> int:
    """The file's size; an OpenVINO IR's with its weights (.bin) beside it."""
    weights = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return path.stat().st_size + (weights.stat().st_size if weights is not None and weights.is_file() else 0)


def _at_batch(runner, one: dict, batch: int, dynamic: bool, seconds: float) -> dict:
    """Latency of one request of ``batch`` samples and the samples per second. A file with a fixed batch of
    1 answers the request as ``batch`` sequential runs (as a server without batching would)."""
    import numpy as np

    from edgekit.measure.bench import summarize

    batched = dynamic or batch == 1
    big = {k: np.repeat(v, batch, axis=0) for k, v in one.items()} if batched else one

    def request():
        if batched:
            runner.run(big)
        else:
            for _ in range(batch):
                runner.run(one)

    for _ in range(3):  # warm-up at this size (arena and thread pool resized)
        request()
    times, begun = [], time.perf_counter()
    while len(times) < 10 or (len(times) < 100 and time.perf_counter() - begun < seconds):
        start = time.perf_counter()
        request()
        times.append((time.perf_counter() - start) * 1000)
    stats = summarize(times)
    return {"batch": batch, "mode": "batched" if batched else "sequential (fixed batch of 1)", "runs": len(times),
            **{k: stats[k] for k in ("p50_ms", "p90_ms", "p99_ms")},
            "samples_per_s": batch * len(times) / (sum(times) / 1000)}


def _compare(args: dict) -> int:
    """Interleaved rounds over several files in one process: each round times every file in turn, so a
    busy spell of the machine slows every file alike. Prints the p50 of each file in each round."""
    import numpy as np

    from edgekit.core.errors import UsageError
    from edgekit.runtimes import open_runner, runtime_for

    runners, samples = [], []
    try:
        if any(runtime_for(f["path"], f["runtime"]) == "executorch" for f in args["compare"]):
            from edgekit.runtimes.executorch import import_runtime_only, set_threads
            import_runtime_only()  # the runtime without the exporter
            set_threads(args["threads"])  # process-wide: this worker process only
        for f in args["compare"]:
            runner = open_runner(f["path"], f["runtime"], threads=args["threads"])
            with np.load(f["sample"]) as npz:
                samples.append({t.name: npz[t.name][:1] for t in runner.file_spec.inputs})
            runners.append(runner)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for runner, one in zip(runners, samples):
        for _ in range(args["warmup"]):
            runner.run(one)
    rounds = [[] for _ in runners]
    for _ in range(args["rounds"]):
        for i, (runner, one) in enumerate(zip(runners, samples)):
            times, deadline = [], time.perf_counter() + args["round_seconds"]
            while len(times) < args["runs"] and (time.perf_counter() < deadline or len(times) < 5):
                start = time.perf_counter()
                runner.run(one)
                times.append((time.perf_counter() - start) * 1000)
            rounds[i].append(float(np.median(times)))
    print(json.dumps({"p50_by_round": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
