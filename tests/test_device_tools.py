"""--benchmark-binary: the parsers on real captured outputs of benchmark_model and onnxruntime_perf_test,
and the push/run/parse path on a device reached through sshd and adb (the "binary" prints a captured output)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.device.tool_output import parse_benchmark_model, parse_perf_test

DATA = Path(__file__).parent / "data"


def test_benchmark_model_with_median():
    r = parse_benchmark_model((DATA / "benchmark_model_p5_median_p95.txt").read_text())
    assert r["runs"] == 50  # the timed runs, not the warm-up's count=1
    assert r["mean_ms"] == pytest.approx(1240.27) and r["std_ms"] == pytest.approx(2.565)
    assert r["p50_ms"] == pytest.approx(1239.807)
    assert r["p90_ms"] is None and r["p99_ms"] is None  # benchmark_model prints neither
    assert r["init_ms"] == pytest.approx(5.579) and r["first_run_ms"] == pytest.approx(1357.602)
    assert r["peak_rss_mb"] == pytest.approx(109.832)


def test_benchmark_model_older_build_has_no_median():
    r = parse_benchmark_model((DATA / "benchmark_model_older.txt").read_text())
    assert r["runs"] == 50 and r["mean_ms"] == pytest.approx(2950.34) and r["p50_ms"] is None


def test_perf_test():
    r = parse_perf_test((DATA / "onnxruntime_perf_test.txt").read_text())
    assert r["runs"] == 100 and r["mean_ms"] == pytest.approx(19.918) and r["std_ms"] is None
    assert (r["p50_ms"], r["p90_ms"], r["p99_ms"]) == pytest.approx((19.9047, 20.0251, 20.2704))
    assert r["init_ms"] == pytest.approx(50.8382) and r["first_run_ms"] is None
    assert r["peak_rss_mb"] == pytest.approx(109531136 / 2 ** 20)


def test_garbage_is_refused():
    with pytest.raises(ValueError):
        parse_benchmark_model("Segmentation fault")
    with pytest.raises(ValueError):
        parse_perf_test("usage: onnxruntime_perf_test [options...] model_path")


def cli(*args):
    return subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", *args], capture_output=True,
                          text=True, timeout=300)


def tool(tmp_path, name, capture, rc=0):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho \"args: $*\" >&2\ncat <<'EOF'\n{capture}EOF\nexit {rc}\n")
    path.chmod(0o644)  # edgekit makes it executable on the device
    return path


@pytest.mark.parametrize("suffix,capture,shown", [
    (".tflite", "benchmark_model_p5_median_p95.txt", ("1239.807 / n/a / n/a ms", "p90, p99: shown as n/a")),
    (".onnx", "onnxruntime_perf_test.txt", ("19.905 / 20.025 / 20.270 ms", "does not print std")),
])
def test_benchmark_binary_over_ssh(sshd, tmp_path, suffix, capture, shown):
    model = tmp_path / f"model{suffix}"
    model.write_bytes(b"\0" * 1024)  # never opened on the host: the binary on the device reads it
    binary = tool(tmp_path, "benchmark_model", (DATA / capture).read_text())
    r = cli("bench", str(model), "--device", sshd.url(python="/nonexistent"), "--benchmark-binary", str(binary),
            "--runs", "50", "--threads", "4")
    assert r.returncode == 0, r.stderr
    assert shown[0] in r.stdout and shown[1] in r.stdout
    j = json.loads(cli("bench", str(model), "--device", sshd.url(), "--benchmark-binary", str(binary),
                       "--json").stdout)
    assert j["measured_on"].startswith("ssh://") and j["device"]["runtime"] in ("benchmark_model",
                                                                                "onnxruntime_perf_test")


def test_benchmark_binary_errors(sshd, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"\0" * 64)
    crash = tool(tmp_path, "crash", "ERROR: Could not open 'model.tflite'.\n", rc=1)
    r = cli("bench", str(model), "--device", sshd.url(), "--benchmark-binary", str(crash))
    assert r.returncode == 2 and "crash failed (exit 1)" in r.stderr
    garbage = tool(tmp_path, "garbage", "hello\n")
    r = cli("bench", str(model), "--device", sshd.url(), "--benchmark-binary", str(garbage))
    assert r.returncode == 2 and "malformed output of garbage" in r.stderr
    r = cli("bench", str(model), "--benchmark-binary", str(garbage))
    assert r.returncode == 2 and "--benchmark-binary needs --device" in r.stderr
