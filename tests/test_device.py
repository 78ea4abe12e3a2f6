"""--device: the URL parser, the runner protocol, the local transport, and bench / validate / build end to end
through a real OpenSSH sshd on 127.0.0.1 (tests/sshd_fixture.py), with every error path."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.device import open_device, parse_device
from edgekit.device.remote import DeviceRunner, device_bench
from edgekit.device.session import parse_line
from edgekit.core.errors import UsageError
from edgekit.runtimes import open_runner
from edgekit.runtimes.base import run_batched

HERE = Path(__file__).parent


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def device_build(sshd, tmp_path_factory):
    """`edgekit build --profile rpi4 --device ssh://…` against the loopback sshd, as a user runs it (pruning
    off to keep the suite short: it does not change where numbers are measured)."""
    out = tmp_path_factory.mktemp("bundle")
    r = cli("build", "--profile", "rpi4", "--out", str(out), "--device", sshd.url(), "--prune-method", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    return r, out / "digits_cnn-rpi4"


@pytest.fixture(scope="module")
def files(device_build):
    """The example's fp32 ONNX file and its int8 TFLite file from that bundle."""
    folder = device_build[1]
    return {"onnx": folder / "digits_cnn.onnx", "tflite": folder / "digits_cnn_int8.tflite"}


def one_sample(runner):
    rng = np.random.default_rng(0)
    return {t.name: rng.random([1 if isinstance(d, str) else d for d in t.shape]).astype(t.dtype)
            for t in runner.file_spec.inputs}


def test_parse_device_urls():
    d = parse_device("ssh://pi@rpi4.local:2222?python=/home/pi/venv/bin/python")
    assert (d.kind, d.user, d.host, d.port, d.option("python")) == ("ssh", "pi", "rpi4.local", 2222,
                                                                    "/home/pi/venv/bin/python")
    assert parse_device("ssh://pi@rpi4.local").port == 22
    assert parse_device("adb:emulator-5554").serial == "emulator-5554"
    assert parse_device("local").kind == "local"
    for bad, why in (("ssh://pi:secret@host", "no passwords"), ("ssh://host", "USER@HOST"),
                     ("ssh://pi@host?colour=red", "unknown option"), ("adb:", "adb:SERIAL"),
                     ("telnet://host", "expected ssh://"), ("ssh://pi@host:port", "not a number")):
        with pytest.raises(UsageError, match=why):
            parse_device(bad)


def test_runner_line_protocol():
    good = json.dumps({"edgekit_device_runner": 1, "mode": "bench", "samples_ms": [[0.1]]})
    assert parse_line("some banner\n" + good + "\n", "ssh://x@y:22")["mode"] == "bench"
    with pytest.raises(UsageError, match=r"ssh://x@y:22: malformed runner output.*'garbage'"):
        parse_line("garbage", "ssh://x@y:22")
    with pytest.raises(UsageError, match="speaks version 2"):
        parse_line(json.dumps({"edgekit_device_runner": 2}), "adb:S")


def test_local_transport_round_trip_leaves_nothing(files):
    host = open_runner(files["onnx"])
    with open_device("local") as dev:
        folder = dev.transport.folder
        assert dev.can_run("onnxruntime") and dev.info["cpu"]["cores"] == os.cpu_count()
        r = device_bench(dev, files["onnx"], "onnxruntime", one_sample(host), runs=50, warmup=5, repeat=2)
        assert r.runs == 100 and r.measured_on == "local" and 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.init_ms > 0 and r.first_run_ms > 0 and r.device["runtime"] == "onnxruntime"
        assert any("p50 of each of the 2 rounds" in n for n in r.notes)
        assert folder.is_dir()
    assert not folder.exists()


def test_bench_and_validate_over_ssh_match_the_host(sshd, files):
    """Through sshd: the device runs what the host runs, so its outputs are the host's bit for bit."""
    for kind in ("onnx", "tflite"):
        host = open_runner(files[kind])
        x = {t.name: np.random.default_rng(1).random((70, *t.shape[1:])).astype("float32") for t in host.iospec.inputs}
        with open_device(sshd.url()) as dev:
            folder = dev.transport.folder
            assert Path(folder).is_dir() and dev.where == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
            got = run_batched(DeviceRunner(dev, files[kind], host), x)
            r = device_bench(dev, files[kind], host.runtime, one_sample(host), runs=100, warmup=10)
        want = run_batched(host, x)
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
        assert r.measured_on == dev.where and r.runs == 100 and r.device["uname_m"] == os.uname().machine
        assert not Path(folder).exists()  # the guardian removed the device's folder


def test_cli_bench_and_validate_on_device(sshd, files):
    r = cli("bench", str(files["tflite"]), "--device", sshd.url(), "--runs", "80", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["measured_on"].startswith("ssh://") and result["runs"] == 80 and result["p90_ms"] > 0
    assert result["device"]["runtime_version"] and result["init_ms"] > 0
    r = cli("validate", str(files["onnx"]), "--device", sshd.url())
    assert r.returncode == 0, r.stderr
    top1 = [line for line in r.stdout.splitlines() if " top1 " in f" {line} "]
    host, there = (float(v) for v in top1[0].split("│")[2].split("|"))
    assert host == there > 0.9  # the same metric to the last printed digit
    assert "max |diff| 0" in r.stdout


def test_build_on_device_gates_cite_device_numbers(sshd, device_build):
    r, folder = device_build
    manifest = json.loads((folder / "manifest.json").read_text())
    where = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    measured = [g for g in manifest["gates"] if g["name"] in ("accuracy", "p90_latency", "rss")]
    assert measured and all(g["measured_on"] == where for g in measured)
    for f in manifest["files"]:
        assert f["latency"]["measured_on"] == where and f["validated_on"] == where
        assert f["latency"]["device"]["runtime"] == f["runtime"]
    report = json.loads((folder / "report.json").read_text())
    assert report["device"]["url"] == where
    for a in report["artifacts"]:
        check = a["export"]["device_check"]
        assert check["within_tolerance_of_host"] and check["host"]["drop"] == a["validation"]["drop"]
    assert f"measured on {where}" in r.stdout


def test_build_device_from_profile_and_host_fallback(sshd, tmp_path):
    """`[target] device` in a profile; a device without LiteRT: the TFLite file is measured here, labelled so."""
    block = tmp_path / "block" / "ai_edge_litert"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('No module named ai_edge_litert')\n")
    python = tmp_path / "python-without-litert"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={block.parent} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    profile = tmp_path / "pi.toml"
    profile.write_text(f'name = "pi"\nextends = "rpi4"\n[target]\ndevice = "{sshd.url(python=str(python))}"\n'
                       '[prune]\nmethod = "none"\n[quantize]\nweight_bits = 32\n')
    r = cli("build", "--profile", str(profile), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "digits_cnn-pi" / "manifest.json").read_text())
    by_file = {f["file"]: f for f in manifest["files"]}
    assert by_file["digits_cnn.onnx"]["latency"]["measured_on"].startswith("ssh://")
    assert by_file["digits_cnn.tflite"]["latency"]["measured_on"] == "host"
    report = json.loads((tmp_path / "out" / "digits_cnn-pi" / "report.json").read_text())
    tfl = next(a for a in report["artifacts"] if a["file"] == "digits_cnn.tflite")
    assert tfl["export"]["measured_on"].startswith("host: ssh://") and "has no litert" in tfl["export"]["measured_on"]


def fake_python(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_device_errors_are_one_line_exit_2(sshd, files, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_known = tmp_path / "wrong_known_hosts"
    wrong_known.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    crash = fake_python(tmp_path, "crash", "echo 'Segmentation fault in the runtime' >&2; exit 139")
    garbage = fake_python(tmp_path, "garbage", "echo 'hello from a banner'; exit 0")
    cases = [
        (sshd.url(known_hosts=tmp_path / "empty"), r"unknown host key .*refused.*--accept-host-key"),
        (sshd.url(known_hosts=wrong_known), r"host key CHANGED.*ssh-keygen .* -R"),
        (sshd.url(identity=other), r"authentication refused"),
        (f"ssh://nobody@127.0.0.1:1?known_hosts={sshd.known_hosts}", r"ssh://nobody@127.0.0.1:1: unreachable"),
        (sshd.url(python="/usr/bin/python3-missing"), r"no /usr/bin/python3-missing there"),
        (sshd.url(python=str(crash)), r"the device runner crashed \(exit 139\).*Segmentation fault"),
        (sshd.url(python=str(garbage)), r"malformed runner output.*hello from a banner"),
    ]
    for url, why in cases:
        r = cli("bench", str(files["onnx"]), "--device", url, "--runs", "20")
        assert r.returncode == 2, (url, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith("edgekit: error: ssh://"), lines
        assert re.search(why, lines[0]), (why, lines[0])


def test_missing_runtime_on_the_device_names_the_pip_line(sshd, files, tmp_path):
    block = tmp_path / "block" / "onnxruntime"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    python = fake_python(tmp_path, "python-without-ort", f'PYTHONPATH={block.parent} exec {sys.executable} "$@"')
    r = cli("bench", str(files["onnx"]), "--device", sshd.url(python=str(python)))
    assert r.returncode == 2 and "onnxruntime is not installed there" in r.stderr
    assert "pip install onnxruntime numpy" in r.stderr


def test_accept_host_key_records_it(sshd, files, tmp_path):
    known = tmp_path / "known_hosts"
    r = cli("bench", str(files["onnx"]), "--device", sshd.url(known_hosts=known), "--runs", "20", "--accept-host-key")
    assert r.returncode == 0, r.stderr
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()
    r = cli("bench", str(files["onnx"]), "--device", sshd.url(known_hosts=known), "--runs", "20")
    assert r.returncode == 0, r.stderr


def test_dropped_connection_leaves_no_files_on_the_device(sshd, files):
    """The connection dies in the middle of a 20-second bench: the call fails naming the device, and the
    device's temporary folder is gone (its guardian shell saw its stdin close)."""
    host = open_runner(files["onnx"])
    dev = open_device(sshd.url())
    folder = Path(dev.transport.folder)
    errors = []

    def long_bench():
        try:
            device_bench(dev, files["onnx"], "onnxruntime", one_sample(host), runs=10, min_seconds=20)
        except UsageError as exc:
            errors.append(str(exc))
    worker = threading.Thread(target=long_bench)
    worker.start()
    deadline = time.time() + 20
    while time.time() < deadline and not any(p.name.startswith("f2-") for p in folder.iterdir()):
        time.sleep(0.05)
    time.sleep(1.0)  # the runner is in its timed runs now
    dev.transport.client.get_transport().sock.close()  # the network goes away
    worker.join(timeout=30)
    assert errors and "connection lost" in errors[0] and dev.where in errors[0], errors
    deadline = time.time() + 10
    while time.time() < deadline and folder.exists():
        time.sleep(0.1)
    assert not folder.exists()
    time.sleep(0.5)
    runners = subprocess.run(["pgrep", "-f", 'device_runner.py.*"min_seconds": 20'], capture_output=True,
                             text=True).stdout.split()
    assert not runners  # the runner stopped too (it watches its stdin)


@pytest.fixture
def adb_server(tmp_path, monkeypatch):
    """The real `adb` client (Debian's) against tests/fake_adb_server.py on a loopback port."""
    import shutil

    from fake_adb_server import FakeAdbServer

    if not shutil.which("adb"):
        pytest.skip("Debian's adb client is not installed: apt-get install adb (.ci/run does)")
    device_tmp = tmp_path / "device-tmp"
    device_tmp.mkdir()
    server = FakeAdbServer(["EMU5554"], str(device_tmp))
    monkeypatch.setenv("ADB_SERVER_SOCKET", server.socket_spec)
    yield server, device_tmp
    server.stop()


def test_bench_and_validate_over_adb(adb_server, files):
    server, device_tmp = adb_server
    for kind in ("onnx", "tflite"):
        host = open_runner(files[kind])
        x = {t.name: np.random.default_rng(2).random((40, *t.shape[1:])).astype("float32") for t in host.iospec.inputs}
        with open_device(f"adb:EMU5554?python={sys.executable}") as dev:
            assert dev.transport.folder.startswith(str(device_tmp))
            got = run_batched(DeviceRunner(dev, files[kind], host), x)
            r = device_bench(dev, files[kind], host.runtime, one_sample(host), runs=50, warmup=5)
        want = run_batched(host, x)
        assert all(np.array_equal(got[k], want[k]) for k in want)
        assert r.measured_on == "adb:EMU5554" and r.runs == 50
        assert not [p for p in device_tmp.iterdir() if p.name.startswith("edgekit-")]
    assert any(s.startswith("shell,v2") for s in server.log) and "sync:" in server.log  # the real client's path


def test_adb_cli_and_errors(adb_server, files):
    r = cli("bench", str(files["onnx"]), "--device", f"adb:EMU5554?python={sys.executable}", "--runs", "30", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["measured_on"] == "adb:EMU5554"
    r = cli("bench", str(files["onnx"]), "--device", "adb:NOSUCH")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "edgekit: error: adb:NOSUCH: no such adb serial ready (adb devices lists EMU5554); check the cable, the "
        "authorization prompt on the phone, or `adb devices`"]
    r = cli("bench", str(files["onnx"]), "--device", "adb:EMU5554?python=/system/bin/python-missing")
    assert r.returncode == 2 and "no /system/bin/python-missing there" in r.stderr


def test_adb_dropped_connection_removes_the_folder(adb_server, files):
    _, device_tmp = adb_server
    dev = open_device(f"adb:EMU5554?python={sys.executable}")
    folder = Path(dev.transport.folder)
    assert folder.is_dir()
    dev.transport._guard.kill()  # the adb link dies: the device's shell is hung up on
    deadline = time.time() + 30  # a loaded 2-core machine can take seconds to run the server's hang-up thread
    while time.time() < deadline and folder.exists():
        time.sleep(0.1)
    assert not folder.exists()


@pytest.mark.skipif(not os.environ.get("EDGEKIT_TEST_SSH"), reason="set EDGEKIT_TEST_SSH=ssh://user@board to run "
                    "on real hardware")
def test_real_board_over_ssh(files):
    with open_device(os.environ["EDGEKIT_TEST_SSH"]) as dev:
        host = open_runner(files["tflite"])
        r = device_bench(dev, files["tflite"], "litert", one_sample(host), runs=100)
    assert r.runs == 100 and r.p50_ms > 0 and r.device["uname_m"]


@pytest.mark.skipif(not os.environ.get("EDGEKIT_TEST_ADB_SERIAL"), reason="set EDGEKIT_TEST_ADB_SERIAL=SERIAL (a "
                    "phone with Python, e.g. Termux) to run on real hardware")
def test_real_phone_over_adb(files):
    python = os.environ.get("EDGEKIT_TEST_ADB_PYTHON", "python3")
    with open_device(f"adb:{os.environ['EDGEKIT_TEST_ADB_SERIAL']}?python={python}") as dev:
        host = open_runner(files["tflite"])
        r = device_bench(dev, files["tflite"], "litert", one_sample(host), runs=100)
    assert r.runs == 100 and r.p50_ms > 0


def test_device_failing_mid_build_leaves_no_half_bundle(sshd, tmp_path):
    """The device's runner dies at its first timed run of the build: exit 2 naming the device, no bundle."""
    python = fake_python(tmp_path, "python-dies-at-bench",
                         f'case "$*" in *\'"mode": "bench"\'*) echo "Killed" >&2; exit 137;; esac\nexec {sys.executable} "$@"')
    r = cli("build", "--profile", "rpi4", "--out", str(tmp_path / "out"), "--formats", "onnx", "--prune-method",
            "none", "--device", sshd.url(python=str(python)))
    assert r.returncode == 2, r.stderr[-1000:]
    assert "the device runner crashed (exit 137) during bench: Killed" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "digits_cnn-rpi4").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["digits_cnn-rpi4.failed.log"]
