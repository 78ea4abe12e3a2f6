import pytest

from edgekit.core.artifact import Artifact
from edgekit.files.bundle import staging
from edgekit.core.errors import UsageError
from edgekit.measure.gates import evaluate, missed
from edgekit.targets.profiles import load_profile, with_overrides
from edgekit.core.results import BenchResult, ExportInfo, ValidationResult


def bench_result(p50=1.0, p90=1.0, rss=10.0) -> BenchResult:
    return BenchResult(file="m", runtime="onnxruntime", threads=1, runs=100, warmup=10, p50_ms=p50, p90_ms=p90,
                       p99_ms=p90, mean_ms=p50, std_ms=0.0, throughput_b1=1000 / p50, batch=None,
                       throughput_batch=None, peak_rss_mb=100.0, rss_growth_mb=rss, file_bytes=1)


def _artifact(drop=0.0, p90=1.0, size=1000 * 1024, rss=10.0):
    return Artifact(file="m.onnx", format="onnx", precision="fp32", runtime="onnxruntime", sha256="0", bytes=size,
                    iospec={}, precision_map={}, export=ExportInfo("test"),
                    validation=ValidationResult("m.onnx", "onnxruntime", {}, drop),
                    bench=bench_result(p90=p90, rss=rss))


def test_gates_pass_and_miss_with_numbers():
    iot = load_profile("iot")
    gates = evaluate(iot, [_artifact()])
    assert {g.name for g in gates if g.passed} == {"accuracy", "p90_latency", "flash", "rss"}
    ram = next(g for g in gates if g.name == "ram")
    assert ram.passed is None and "not applied yet" in ram.note
    bad = missed(evaluate(iot, [_artifact(drop=0.05, p90=25.0, size=3000 * 1024, rss=100)]))
    assert {g.name for g in bad} == {"accuracy", "p90_latency", "flash", "rss"}
    flash = next(g for g in bad if g.name == "flash")
    assert flash.describe() == "flash gate MISSED on m.onnx: 3000 KB vs limit 2048 KB"


def test_latency_gate_only_for_target_runtimes():
    prof = with_overrides(load_profile("iot"), {"target.runtimes": ["tflm"]})
    assert "p90_latency" not in {g.name for g in evaluate(prof, [_artifact(p90=99.0)])}


def test_staging_is_atomic(tmp_path):
    final = tmp_path / "out" / "m-iot"
    with pytest.raises(RuntimeError):
        with staging(final, force=False) as folder:
            (folder / "half.onnx").write_bytes(b"x")
            raise RuntimeError("stage blew up")
    assert not final.exists() and list((tmp_path / "out").iterdir()) == []
    with staging(final, force=False) as folder:
        (folder / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(UsageError, match="already exists; pass --force"):
        with staging(final, force=False):
            pass
    with staging(final, force=True) as folder:
        (folder / "b.txt").write_text("two")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m-iot"]
