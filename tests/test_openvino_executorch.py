"""OpenVINO IR and ExecuTorch .pte, built as a user would (a factory file, weights and samples) and validated,
timed and recorded in their own runtimes; the refusals; the Python app running the OpenVINO file."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import main
from edgekit.core.errors import UsageError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
LIGHT = """name = "light-x86"
extends = "x86-edge"
[target]
threads = 1
[bench]
warmup = 3
runs = 40
batch = 4
max_seconds = 1.0
attempt_runs = 20
attempt_max_seconds = 0.3
[quantize]
repair_time_box_s = 20.0
"""


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from small_cnn import write_user_folder

    folder = tmp_path_factory.mktemp("ov-et-user")
    write_user_folder(folder, epochs=15)
    (folder / "light.toml").write_text(LIGHT)
    return folder


@pytest.fixture(scope="module")
def bundle(user) -> tuple[int, str, Path]:
    code, _, err = run("build", user / "model.py:make_model", "--weights", user / "model.pt", "--data",
                       user / "digits.npz", "--profile", user / "light.toml", "--prune-method", "none",
                       "--formats", "onnx,openvino,executorch", "--out", user / "out")
    folder = next((user / "out").iterdir())
    return code, err, folder


def _files(manifest: dict, fmt: str) -> dict[str, dict]:
    return {f["precision"]: f for f in manifest["files"] if f["format"] == fmt}


def test_both_formats_validated_in_their_runtimes(bundle):
    import openvino as ov

    from edgekit.runtimes.openvino import has_bf16, stored_hint

    code, err, folder = bundle
    assert code == 0, err
    assert "Traceback" not in err and "cpuinfo" not in err  # native start-up chatter stays off the terminal
    manifest = json.loads((folder / "manifest.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    budget = manifest["profile"]["budget"]["max_accuracy_drop"]
    ovf = _files(manifest, "openvino")
    want = {"fp32", "bf16", "int8"} if has_bf16() else {"fp32", "fp16", "int8"}
    assert set(ovf) == want, ovf.keys()
    for precision, f in ovf.items():
        assert f["runtime"] == "openvino" and f["validated_on"] == "host"
        assert (folder / f["weights_file"]).is_file() and f["weights_file"] == f["file"].replace(".xml", ".bin")
        assert f["bytes"] == (folder / f["file"]).stat().st_size + (folder / f["weights_file"]).stat().st_size
        hint = f["runtime_options"]["INFERENCE_PRECISION_HINT"]
        assert hint == ("bf16" if precision == "bf16" else "f32")
        assert stored_hint(ov.Core().read_model(str(folder / f["file"]))) == hint  # the IR carries it too
        assert f["metric_drop"] <= budget, (f["file"], f["metric_drop"])
        assert f["latency"]["p50_ms"] > 0
    int8 = next(a for a in report["artifacts"] if a["file"] == ovf["int8"]["file"])
    ignored = set(int8["export"]["ignored_scope"])  # layers the repair ladder left float, if any
    assert len(ovf["int8"]["precision_map"]) == 4 and len(ignored) < 4
    assert {k: v for k, v in ovf["int8"]["precision_map"].items()} == {
        k: "fp32" if k in ignored else "int8" for k in ovf["int8"]["precision_map"]}
    if ignored:
        assert int8["export"]["chosen"].startswith("repair: ") and int8["export"]["attempts"][0]["drop"] > budget
    assert set(ovf["fp32"]["precision_map"].values()) == {"fp32"}
    etf = _files(manifest, "executorch")
    assert set(etf) == {"fp32", "int8"}
    for precision, f in etf.items():
        d = f["delegation"]
        assert d["delegate"] == "XNNPACK" and d["delegated_share"] >= 0.9
        assert d["delegated_share"] == pytest.approx(d["delegated_nodes"] / d["nodes"], abs=1e-4)
        assert f["precision_map"] == {"XNNPACK delegate": precision}
        assert f["iospec"]["inputs"][0]["shape"] == [1, 1, 8, 8]  # a static batch-1 program
        assert f["metric_drop"] <= budget
    fp32_pte = next(a for a in report["artifacts"] if a["file"] == etf["fp32"]["file"])
    assert fp32_pte["validation"]["outputs"]["logits"]["within_tolerance"]  # fp32 .pte matches torch to 1e-4
    # the fastest validated file within every budget, of any format, by the interleaved rounds
    fastest = manifest["fastest"]
    timed = {a["file"]: a for a in report["artifacts"] if a["bench"]}
    failed = {g["file"] for g in manifest["gates"] if g["passed"] is False}
    medians = {f: sorted(v["p50_by_round"])[len(v["p50_by_round"]) // 2] for f, v in report["speed"].items()
               if f in timed and f not in failed and timed[f]["runtime"] in ("onnxruntime", "openvino")}
    from edgekit.measure.recommend import TIE

    near = {f for f, m in medians.items() if m <= min(medians.values()) * (1 + TIE)}  # tied: the smaller file wins
    assert fastest["file"] == min(near, key=lambda f: (timed[f]["bytes"], medians[f]))
    assert set(fastest["tied_with"]) == near - {fastest["file"]}
    assert fastest["p50_ms"] == pytest.approx(medians[fastest["file"]], rel=1e-3) and fastest["cpu"]


def test_lone_files_validate_bench_inspect(bundle, user):
    _, _, folder = bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    ref = ("--model", user / "model.py:make_model", "--weights", user / "model.pt", "--data", user / "digits.npz")
    for f in manifest["files"]:
        if f["format"] not in ("openvino", "executorch"):
            continue
        code, out, err = run("validate", folder / f["file"], *ref)
        assert code == 0, (f["file"], err)
        assert "top1" in out
        code, out, err = run("inspect", folder / f["file"], "--json")
        assert code == 0, err
        info = json.loads(out)
        assert info["bytes"] == f["bytes"]
        assert [t["name"] for t in info["iospec"]["inputs"]] == ["x"]
        if f["format"] == "executorch":
            assert info["delegates"] == {"XnnpackBackend": f["delegation"]["subgraphs"]}  # the file agrees with the build
            assert info["non_delegated_ops"] == sum(f["delegation"]["not_delegated"].values())
        else:
            assert info["inference_precision_hint"] == f["runtime_options"]["INFERENCE_PRECISION_HINT"]
    pte = next(f["file"] for f in manifest["files"] if f["format"] == "executorch" and f["precision"] == "int8")
    code, out, err = run("bench", folder / pte, "--runs", "30", "--json")
    assert code == 0, err
    assert json.loads(out)["p50_ms"] > 0


def test_python_app_runs_the_openvino_file_and_agrees_with_onnxruntime(bundle, user):
    _, _, folder = bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    x = np.load(user / "digits.npz")["x"][:12]
    samples = []
    for i, sample in enumerate(x):
        np.save(user / f"s{i}.npy", sample)
        samples.append(str(user / f"s{i}.npy"))
    app = REPO / "apps" / "python" / "edgekit_app.py"

    def probabilities(file: str) -> np.ndarray:
        proc = subprocess.run([sys.executable, str(app), str(folder), *samples, "--file", file, "--preprocessed",
                               "--json"], capture_output=True, text=True, cwd=app.parent)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert {r["file"] for r in rows} == {file}
        return np.array([r["probabilities"] for r in rows])

    onnx = _files(manifest, "onnx")["fp32"]["file"]
    xml = _files(manifest, "openvino")["fp32"]["file"]
    assert np.abs(probabilities(xml) - probabilities(onnx)).max() < 1e-4  # f32 hint: the same numbers
    int8 = probabilities(_files(manifest, "openvino")["int8"]["file"])
    assert (int8.argmax(1) == probabilities(onnx).argmax(1)).mean() >= 0.9


def test_onnx_source_asked_for_pte_is_refused(bundle, user):
    _, _, folder = bundle
    onnx = next(f["file"] for f in json.loads((folder / "manifest.json").read_text())["files"]
                if f["format"] == "onnx" and f["precision"] == "fp32")
    code, _, err = run("build", folder / onnx, "--data", user / "digits.npz", "--profile", user / "light.toml",
                       "--formats", "onnx,executorch", "--out", user / "refused")
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("edgekit:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "ExecuTorch lowers a torch program" in lines[0] and "FILE.py:FUNC --weights" in lines[0]
    assert not (user / "refused").exists()


MOSTLY_PORTABLE = '''import torch


class Scan(torch.nn.Module):
    """A linear layer, then ops XNNPACK has no kernels for (cumulative sums, sorting, flipping)."""
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        y = torch.cumsum(y, dim=-1)
        y = torch.tanh(y)
        y = torch.sort(y, dim=-1).values
        return torch.flip(torch.cumsum(y, dim=-1), dims=[-1])

    def example_inputs(self):
        return (torch.zeros(1, 8),)


def make():
    return Scan()
'''


def test_a_mostly_undelegated_program_is_refused(tmp_path):
    import torch

    from edgekit.export.executorch import lower
    from edgekit.core.iospec import IOSpec, TensorSpec
    from edgekit.core.errors import StageError

    (tmp_path / "scan.py").write_text(MOSTLY_PORTABLE)
    sys.path.insert(0, str(tmp_path))
    try:
        import scan
    finally:
        sys.path.pop(0)
    spec = IOSpec((TensorSpec("x", (1, 8), "float32"),), (TensorSpec("y", (1, 8), "float32"),))
    args = (torch.zeros(1, 8),)
    _, summary = lower(scan.make().eval(), args, spec, "export executorch", 0.0)
    assert summary["delegated_share"] < 0.9 and summary["not_delegated"]
    with pytest.raises(StageError, match=r"only \d+% of the graph's \d+ ops were delegated to XNNPACK"):
        lower(scan.make().eval(), args, spec, "export executorch", 0.9)
    # as a user: the .pte is listed as not made, with the reason; the ONNX file still ships
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(48, 8)).astype(np.float32))
    profile = tmp_path / "p.toml"
    profile.write_text(LIGHT.replace('extends = "x86-edge"', 'extends = "x86-edge"\n[budget]\nmax_accuracy_drop = 1.0'))
    code, _, err = run("build", tmp_path / "scan.py:make", "--data", tmp_path / "d.npz", "--profile", profile,
                       "--prune-method", "none", "--formats", "onnx,executorch", "--out", tmp_path / "out")
    assert code == 1, err  # the formats gate: the asked-for .pte was not made
    manifest = json.loads(next((tmp_path / "out").iterdir()).joinpath("manifest.json").read_text())
    assert {f["format"] for f in manifest["files"]} == {"onnx"}
    failed = [f for f in manifest["failed"] if f["format"] == "executorch"]
    assert failed and "delegated to XNNPACK" in failed[0]["reason"] and "min_delegated_share" in failed[0]["reason"]


def test_prelu_off_nchw_is_lowered_whole_and_exact(tmp_path):
    """XNNPACK's channels-last pass refuses PReLU on a 2-D or 3-D tensor; edgekit writes it as clamps before lowering:
    the program is wholly delegated and matches torch, per-channel weights acting on dim 1 (not the last dim)."""
    import torch
    from torch import nn

    from edgekit.export.executorch import lower
    from edgekit.export.xnnpack_rewrites import xnnpack_rewrites
    from edgekit.core.iospec import IOSpec, TensorSpec
    from edgekit.runtimes import open_runner

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act1 = nn.Conv1d(4, 6, 3), nn.PReLU(6)  # [N, 6, L]: weight on dim 1
            self.fc, self.act2 = nn.Linear(6 * 8, 5), nn.PReLU(5)   # [N, 5]

        def forward(self, x):
            return self.act2(self.fc(self.act1(self.conv(x)).flatten(1)))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # distinct slopes per channel, so a weight on the wrong axis shows
        net.act1.weight.copy_(torch.linspace(-0.9, 0.9, 6))
        net.act2.weight.copy_(torch.linspace(0.1, 0.5, 5))
    args = (torch.randn(1, 4, 10),)
    program = torch.export.export(net, args)
    rewritten = xnnpack_rewrites(program)
    assert not any("prelu" in str(n.target) for n in rewritten.graph.nodes)
    convs = torch.export.export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4)).eval(), (torch.zeros(1, 3, 8, 8),))
    kept = xnnpack_rewrites(convs).graph.nodes  # a 4-D PReLU is XNNPACK's own op: left alone
    assert [str(n.target) for n in kept if "prelu" in str(n.target)] == ["aten.prelu.default"]
    spec = IOSpec((TensorSpec("x", (1, 4, 10), "float32"),), (TensorSpec("y", (1, 5), "float32"),))
    buffer, summary = lower(net, args, spec, "export executorch", 0.9)
    assert summary["delegated_share"] == 1.0 and summary["not_delegated"] == {}, summary
    (tmp_path / "net.pte").write_bytes(buffer)
    runner = open_runner(tmp_path / "net.pte", "executorch")
    for seed in range(3):
        x = torch.randn(1, 4, 10, generator=torch.Generator().manual_seed(seed)) * 3
        got = runner.run({"x": x.numpy()})["y"]
        np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_missing_extras(monkeypatch):
    import importlib.util

    import edgekit.pipeline.plan as plan
    from edgekit.examples import digits
    from edgekit.targets.profiles import load_profile

    real = importlib.util.find_spec
    monkeypatch.setattr(plan.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("openvino", "executorch") else real(name, *a))
    model = digits.load_model()
    for fmt in ("openvino", "executorch"):
        with pytest.raises(UsageError, match=rf"pip install 'edgekit\[{fmt}\]'"):
            plan.make_plan(model, load_profile("mobile"), ("onnx", fmt), explicit=True)
    made = plan.make_plan(model, load_profile("server"), ("onnx", "openvino"), explicit=False)
    assert [s.format.name for s in made.steps] == ["onnx"]
    assert any("pip install 'edgekit[openvino]'" in s for s in made.skipped)


def test_x86_edge_profile():
    from edgekit.targets.profiles import load_profile

    prof = load_profile("x86-edge")
    assert prof.target.formats == ("onnx", "openvino") and "openvino" in prof.target.runtimes
    assert prof.quantize.weight_bits == 8 and prof.target.min_delegated_share == 0.9
    assert load_profile("server").target.formats == ("onnx", "openvino")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    from edgekit.examples import families

    folder = tmp_path_factory.mktemp("ov-et-zoo")
    families.write_nets(folder, "tiny")
    for family in families.FAMILIES:
        if family != "keras":
            families.write_data(folder, family, "tiny")
    return folder


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean(np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)))


@pytest.mark.parametrize("family", ["encoder", "recommender", "kws", "gru", "regressor", "threehead", "fcn"])
def test_every_family_in_openvino_and_executorch(zoo, family, tmp_path):
    """The conformance suite's families at its tiny size, through the two exporters and NNCF's int8 pass: each file
    runs in its own runtime and matches the torch source within the format table's fp32 tolerance (int8: cosine),
    or, for ExecuTorch, is refused in one line (too little delegated, or a lowering failure)."""
    import io

    import edgekit
    from edgekit.core.errors import StageError
    from edgekit.examples import families
    from edgekit.export import ExportJob
    from edgekit.export.executorch import export_executorch
    from edgekit.export.onnx import export_onnx
    from edgekit.export.openvino import export_openvino, ov_call
    from edgekit.targets.formats import get_format
    from edgekit.runtimes import open_runner, reference_runner
    from edgekit.runtimes.base import run_batched
    from edgekit.files.precision import precision_map
    from edgekit.quantize.onnx_ort import has_attention
    from edgekit.quantize.passes import calibration_npz
    from edgekit.pipeline.stages import stage

    arrays = edgekit.read_arrays(zoo / f"{family}.npz")
    model = edgekit.load_model(families.source_for(zoo, family), sample_inputs=arrays)
    data = edgekit.prepare(arrays, model.iospec, source=family, val_samples=24, calib_samples=32)
    want = run_batched(reference_runner(model), data.validation.inputs)
    onnx = tmp_path / "nets.onnx"
    export_onnx(model, onnx)
    job = ExportJob(model, tmp_path, tmp_path, io.StringIO(), reference_onnx=onnx, calibration=data.calibration)

    def close(path, runtime, fmt):
        got = run_batched(open_runner(path, runtime), data.validation.inputs)
        tol = get_format(fmt).tolerance_for("fp32")
        for name, ref in want.items():
            assert got[name].shape == ref.shape, (fmt, name)
            assert np.all(np.abs(got[name] - ref) <= tol.atol + tol.rtol * np.abs(ref)), (fmt, name)
        return got

    (ir,) = export_openvino(job)
    close(ir.path, "openvino", "openvino")
    int8 = tmp_path / "nets_int8.xml"
    made = ov_call("quantize", "quantize openvino int8", src=str(ir.path), out=str(int8),
                   calibration=str(calibration_npz(data.calibration, ir.mapping, tmp_path / "c.npz")),
                   transformer=family == "encoder", hint="f32")
    assert made["fake_quantize"] > 0 and made["samples"] == len(data.calibration)
    # attention is Softmax over a MatMul of two activations: the threehead's and the fcn's softmax heads are not
    assert has_attention(onnx) == (family == "encoder")
    stored = precision_map(int8)  # every weighted op, embedding tables included, at the precision it is stored at
    assert set(stored.values()) <= {"int8", "fp32"} and "int8" in stored.values(), stored
    import openvino as ov

    gathers = {op.get_friendly_name() for op in ov.Core().read_model(str(int8)).get_ops() if op.get_type_name() == "Gather"}
    tables = [n for n in stored if n in gathers]  # the map's embedding tables, picked by op type
    assert (len(tables) > 0) == (family in ("encoder", "recommender")), stored
    assert all(stored[n] == "int8" for n in tables), stored
    got = run_batched(open_runner(int8, "openvino"), data.validation.inputs)
    assert all(_cosine(got[n], want[n]) > 0.9 for n in want), {n: _cosine(got[n], want[n]) for n in want}
    try:
        with stage("export executorch", io.StringIO()):  # what the build wraps every exporter in
            (pte,) = export_executorch(job)
    except StageError as exc:  # a refusal or a lowering failure: one line, naming the stage
        assert exc.stage == "export executorch" and "\n" not in str(exc) and len(str(exc)) < 600
        assert family == "recommender", str(exc)  # its two embedding lookups are 2 of its 9 ops: under 90% delegated
        return
    assert pte.info.delegation["delegated_share"] >= 0.9
    close(pte.path, "executorch", "executorch")
