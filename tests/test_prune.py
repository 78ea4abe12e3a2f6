"""Pruning, factorization, sharing and recovery: each stage alone, on small real models, measured."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.core.data import prepare
from edgekit.examples import digits
from edgekit.export.onnx import export_onnx
from edgekit.files.graph_stats import onnx_stats, zip_bytes
from edgekit.targets.profiles import load_profile, with_overrides
from edgekit.prune import grid
from edgekit.prune.search import compress
from edgekit.prune import lowrank, recover, sharing, structured, unstructured
from edgekit.prune.chain import evaluate
from edgekit.prune.layers import protected
from edgekit.runtimes.ort import OrtRunner
from edgekit.sources.load import torch_model
from edgekit.measure.validate import reference_outputs


class Blocks(nn.Module):
    """Residual add around a depthwise block, a two-branch concat, a linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32))
        self.branch_a = nn.Conv2d(32, 24, 1)
        self.branch_b = nn.Conv2d(32, 24, 3, padding=1)
        self.fuse = nn.Sequential(nn.Conv2d(48, 64, 1), nn.ReLU())
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.pw(self.dw(y))
        y = torch.cat([self.branch_a(y), self.branch_b(y)], dim=1)
        return self.head(self.fuse(y).mean(dim=(2, 3)))

    def example_inputs(self):
        return (torch.zeros(1, 3, 16, 16),)


def _model(module, name="blocks"):
    return torch_model(module.eval(), name=name, loader="factory", origin="test")


def _conv_channels(module):
    return {n: m.out_channels for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def test_structured_pruning_shrinks_channels_and_the_exported_graph(tmp_path):
    src = Blocks().eval()
    pruned = copy.deepcopy(src)
    args = (torch.zeros(1, 3, 16, 16),)
    heads, protect = protected(pruned, args, ())
    assert heads == ["head"]
    info = structured.prune_structured(pruned, args, 0.5, importance="l2", round_to=8, protect=protect)
    before, after = _conv_channels(src), _conv_channels(pruned)
    assert info["layers_changed"] >= 6
    for name in ("stem.0", "pw.0", "branch_a", "branch_b", "fuse.0"):
        assert after[name] < before[name] and after[name] % 8 == 0, name
    # the residual add keeps stem, depthwise and pointwise channels coupled; depthwise stays depthwise
    assert after["stem.0"] == after["dw.0"] == after["pw.0"] == pruned.dw[0].groups
    assert pruned.fuse[0].in_channels == after["branch_a"] + after["branch_b"]  # concat follows its branches
    assert pruned.head.out_features == 5 and pruned.head.in_features == after["fuse.0"]
    # measured on the exported graphs
    export_onnx(_model(src), tmp_path / "a.onnx")
    export_onnx(_model(pruned), tmp_path / "b.onnx")
    a, b = onnx_stats(tmp_path / "a.onnx"), onnx_stats(tmp_path / "b.onnx")
    assert b["params"] < 0.4 * a["params"] and b["macs"] < 0.4 * a["macs"] and b["bytes"] < 0.5 * a["bytes"]
    assert a["macs_unknown_nodes"] == [] and a["macs"] > 1_000_000
    # the pruned graph's outputs stay valid: ONNX Runtime agrees with the pruned torch module
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    got = OrtRunner(tmp_path / "b.onnx").run({"x": x})
    want = pruned(torch.from_numpy(x)).detach().numpy()
    (out,) = got.values()
    assert out.shape == (8, 5) and np.allclose(out, want, atol=1e-4)


def test_keep_protects_a_layer_and_unknown_names_are_refused():
    src = Blocks().eval()
    args = (torch.zeros(1, 3, 16, 16),)
    _, protect = protected(src, args, ("fuse",))
    assert {"fuse", "fuse.0", "head"} <= protect
    pruned = copy.deepcopy(src)
    structured.prune_structured(pruned, args, 0.5, importance="l1", round_to=8, protect=protect)
    assert pruned.fuse[0].out_channels == 64 and pruned.branch_a.out_channels < 24
    with pytest.raises(edgekit.UsageError, match="--keep fusee: no such layer.*did you mean 'fuse'"):
        protected(src, args, ("fusee",))


def test_unstructured_pruning_is_permanent_and_only_the_zip_shrinks(tmp_path):
    src = Blocks().eval()
    pruned = copy.deepcopy(src)
    info = unstructured.prune_unstructured(pruned, 0.7, protect={"head"})
    unstructured.make_permanent(pruned)
    assert not any(hasattr(m, "weight_orig") for m in pruned.modules())
    assert info["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert unstructured.sparsity(pruned, {"head"}) == pytest.approx(0.7, abs=0.01)
    assert _conv_channels(pruned) == _conv_channels(src)
    export_onnx(_model(src), tmp_path / "a.onnx")
    export_onnx(_model(pruned), tmp_path / "b.onnx")
    a, b = onnx_stats(tmp_path / "a.onnx"), onnx_stats(tmp_path / "b.onnx")
    assert a["params"] == b["params"] and a["macs"] == b["macs"]
    assert abs(a["bytes"] - b["bytes"]) < 0.02 * a["bytes"]  # same dense tensors
    assert b["zip_bytes"] < 0.6 * a["zip_bytes"]  # zeros compress
    import zlib
    assert abs(zip_bytes(tmp_path / "b.onnx") - len(zlib.compress((tmp_path / "b.onnx").read_bytes(), 9))) < 512


class Factorable(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.big = nn.Linear(256, 256)
        self.small = nn.Linear(256, 16)
        self.conv1x1 = nn.Conv2d(64, 128, 1)
        self.conv3x3 = nn.Conv2d(128, 64, 3, padding=1)
        with torch.no_grad():  # rank-6 weights: a saving; full-rank 16x256: none
            self.big.weight.copy_(torch.randn(256, 6, generator=g) @ torch.randn(6, 256, generator=g) / 16)
            self.conv1x1.weight.copy_((torch.randn(128, 5, generator=g) @ torch.randn(5, 64, generator=g))[..., None, None])
            self.small.weight.copy_(torch.randn(16, 256, generator=g))

    def forward(self, x, z):
        return self.small(torch.relu(self.big(x))), self.conv3x3(self.conv1x1(z))


def test_lowrank_replaces_only_layers_where_it_cuts_parameters():
    src = Factorable().eval()
    fact = copy.deepcopy(src)
    decisions = {d["layer"]: d for d in lowrank.factorize(fact, 0.999, round_to=8, protect=set())}
    assert set(decisions) == {"big", "small", "conv1x1"}  # 3x3 convs are not candidates
    assert decisions["big"]["replaced"] and decisions["big"]["rank"] == 8  # rank 6, rounded up to 8
    assert decisions["big"]["params_after"] == 8 * 512
    assert decisions["conv1x1"]["replaced"] and decisions["conv1x1"]["rank"] == 8
    assert not decisions["small"]["replaced"] and "would keep" in decisions["small"]["why"]
    assert isinstance(fact.big, nn.Sequential) and isinstance(fact.small, nn.Linear)
    before = sum(p.numel() for p in src.parameters())
    after = sum(p.numel() for p in fact.parameters())
    assert before - after == (65536 - 4096) + (8192 - 8 * 192)
    x, z = torch.randn(4, 256), torch.randn(4, 64, 5, 5)
    with torch.no_grad():
        for want, got in zip(src(x, z), fact(x, z)):
            assert torch.allclose(want, got, atol=1e-4)


def test_weight_sharing_leaves_2_to_the_k_values_per_layer():
    src = Blocks().eval()
    shared = copy.deepcopy(src)
    done = {d["layer"]: d for d in sharing.share_weights(shared, 3, protect={"head"})}
    assert "head" not in done and all(d["shared"] for d in done.values())
    for name, m in shared.named_modules():
        if isinstance(m, nn.Conv2d):
            assert torch.unique(m.weight).numel() <= 8, name
    assert torch.unique(shared.head.weight).numel() == src.head.weight.numel()
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        a, b = src(x), shared(x)
    assert float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)) > 0.9


def test_sharing_keeps_pruned_zeros():
    m = Blocks().eval()
    unstructured.prune_unstructured(m, 0.5, protect=set())
    unstructured.make_permanent(m)
    zeros = int(torch.sum(m.fuse[0].weight == 0))
    sharing.share_weights(m, 2, protect=set())
    assert int(torch.sum(m.fuse[0].weight == 0)) == zeros > 0
    assert torch.unique(m.fuse[0].weight).numel() <= 4


def test_lowrank_undoes_a_swap_the_parent_cannot_run():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
            with torch.no_grad():  # a low-rank projection: factorizing it would save parameters
                self.attn.out_proj.weight.copy_(torch.randn(64, 2) @ torch.randn(2, 64))

        def forward(self, x):
            return self.attn(x, x, x)[0]

    m = Attn().eval()
    x = torch.randn(2, 5, 64)
    decisions = lowrank.factorize(m, 0.99, round_to=8, protect=set(), example_args=(x,))
    (d,) = decisions
    assert d["layer"] == "attn.out_proj" and not d["replaced"] and "reads the layer's weight" in d["why"]
    assert isinstance(m.attn.out_proj, nn.Linear) and m(x).shape == (2, 5, 64)


def test_every_head_is_found_and_kept_whole():
    """Both heads of a two-head net are found (walked back from each output through autograd), so pruning
    keeps both output shapes; a head hidden behind a later layer would still be caught by _check_outputs."""
    from edgekit.prune.chain import _check_outputs

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Linear(16, 64)
            self.embed = nn.Linear(64, 32)
            self.cls = nn.Linear(64, 4)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return self.embed(h), self.cls(h)

    src = TwoHeads().eval()
    model = torch_model(src, name="two", loader="factory", origin="test", sample_inputs={"x": np.zeros((1, 16), np.float32)})
    args = (torch.zeros(1, 16),)
    heads, protect = protected(src, args, ())
    assert heads == ["embed", "cls"]
    pruned = copy.deepcopy(src)
    structured.prune_structured(pruned, args, 0.5, importance="l2", round_to=8, protect=protect)
    _check_outputs(pruned, args, model)
    assert pruned.body.out_features == 32 and (pruned.embed.out_features, pruned.cls.out_features) == (32, 4)
    unprotected = copy.deepcopy(src)  # what a head left out of the protected set would do
    structured.prune_structured(unprotected, args, 0.5, importance="l2", round_to=8, protect={"cls"})
    with pytest.raises(edgekit.UsageError, match="pruning changed output .* pass --keep"):
        _check_outputs(unprotected, args, model)


@pytest.fixture(scope="module")
def example():
    model = digits.load_model()
    data = prepare(digits.load_arrays(), model.iospec, source="digits")
    return model, data


@pytest.mark.slow
def test_distillation_recovers_more_than_no_recovery(example):
    model, data = example
    ref = reference_outputs(model, data)
    origin = ref.outputs["logits"]
    args = (torch.zeros(1, 1, 32, 32),)
    _, protect = protected(model.module, args, ())
    pruned = copy.deepcopy(model.module)
    structured.prune_structured(pruned, args, 0.6, importance="l2", round_to=8, protect=protect)
    none = evaluate(pruned, model, data, origin, 2)["top1"]
    recal = copy.deepcopy(pruned)
    recover.recalibrate_bn(recal, data.calibration, ["image"])
    bn = evaluate(recal, model, data, origin, 2)["top1"]
    cfg = load_profile("iot").recover
    info = recover.distill(pruned, model.module, data.train, ["image"], data.task, cfg)
    distilled = evaluate(pruned, model, data, origin, 2)["top1"]
    assert ref.metrics["top1"] > 0.98
    # measured: none 0.106, BN recalibration 0.210, distillation 0.968 (ratio 0.6, l2, 3 epochs)
    assert none < 0.5 and bn > none + 0.05 and distilled > bn + 0.5 and distilled > 0.95, (none, bn, distilled)
    assert info["epochs"] == 3 and info["labels_used"] and info["losses"][-1] < info["losses"][0]
    # unlabeled inputs are enough: the teacher alone
    from edgekit.core.data import Split
    unlabeled = copy.deepcopy(model.module)
    structured.prune_structured(unlabeled, args, 0.6, importance="l2", round_to=8, protect=protect)
    info = recover.distill(unlabeled, model.module, Split(data.train.inputs), ["image"], data.task, cfg)
    assert not info["labels_used"] and evaluate(unlabeled, model, data, origin, 2)["top1"] > 0.9


def test_grid_goes_down_from_the_ceiling_to_zero():
    assert grid(0.8, 0.2) == [0.8, 0.6, 0.4, 0.2, 0.0]
    assert grid(0.5, 0.1) == [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]


@pytest.mark.slow
def test_backoff_picks_a_lower_ratio_when_the_budget_is_tight(example, tmp_path):
    model, data = example
    ref = reference_outputs(model, data)
    base = with_overrides(load_profile("iot"), {"prune.max_ratio": 0.5, "prune.step": 0.2, "prune.accuracy_share": 1.0,
                                                "recover.epochs": 2, "bench.runs": 20, "bench.warmup": 2})
    loose = compress(model, data, ref, with_overrides(base, {"budget.max_accuracy_drop": 0.3}), tmp_path / "a")
    tight = compress(model, data, ref, with_overrides(base, {"budget.max_accuracy_drop": 0.004}), tmp_path / "b")
    assert loose.applied and loose.ratio == 0.5 and len(loose.attempts) == 1
    assert tight.applied and 0 < tight.ratio < loose.ratio and len(tight.attempts) >= 2, tight.attempts
    assert [a.ratio for a in tight.attempts][0] == 0.5 and not tight.attempts[0].passed
    chosen = next(a for a in tight.attempts if a.passed and a.ratio == tight.ratio)
    assert chosen.measured_in.startswith("onnxruntime") and chosen.drop <= 0.004
    assert chosen.chosen and [a.chosen for a in tight.attempts].count(True) == 1  # the one applied is marked
    assert chosen.figures["params"] > loose.attempts[0].figures["params"]
    assert loose.before["params"] == 250890 and loose.attempts[0].figures["params"] < 0.3 * loose.before["params"]
    # the compressed twin's reference keeps the source's metrics and measures the twin's outputs
    assert loose.reference.metrics == ref.metrics and loose.reference.origin_outputs is ref.outputs
    assert not np.allclose(loose.reference.outputs["logits"], ref.outputs["logits"])


def test_time_box_stops_the_search_after_one_attempt(user_models, tmp_path):
    from edgekit.sources.load import load_model
    x = np.random.default_rng(0).standard_normal((200, 6)).astype(np.float32)
    model = load_model(f"{user_models}:make_regressor", sample_inputs={"x": x})
    y = model.module(torch.from_numpy(x)).detach().numpy()
    data = prepare({"x": x, "y": y}, model.iospec, source="reg")
    prof = with_overrides(load_profile("iot"), {"prune.max_ratio": 0.5, "prune.time_box_s": 1e-6,
                                                "budget.max_accuracy_drop": 1e-9, "bench.runs": 10, "bench.warmup": 1})
    c = compress(model, data, reference_outputs(model, data), prof, tmp_path)
    assert len(c.attempts) == 1 and not c.applied and c.model is model
    assert any("time box" in n for n in c.notes) and any("exported uncompressed" in n for n in c.notes)
    assert c.attempts[0].figures["recovery"] == "none"  # no BatchNorm and no training split: nothing to recover with


@pytest.mark.slow
def test_cli_overrides_on_a_user_model_are_reported(user_models, tmp_path):
    from click.testing import CliRunner
    from edgekit.cli.main import main
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=(x[:, :1] * 2 - x[:, 1:2]).astype(np.float32))
    prof = tmp_path / "p.toml"
    prof.write_text('name = "p"\nextends = "iot"\n[budget]\nmax_accuracy_drop = 1.0\n[bench]\nwarmup = 2\nruns = 20\n')
    r = CliRunner().invoke(main, ["build", f"{user_models}:make_regressor", "--data", str(tmp_path / "reg.npz"),
                                  "--profile", str(prof), "--out", str(tmp_path), "--formats", "onnx", "--bits", "32",
                                  "--prune-method", "unstructured", "--prune-ratio", "0.6", "--share-bits", "2"])
    assert r.exit_code == 0, r.output + r.stderr
    bundle = tmp_path / "my_models-make_regressor-p"
    report = json.loads((bundle / "report.json").read_text())
    assert report["overrides"] == {"quantize.weight_bits": 32, "prune.max_ratio": 0.6,
                                   "prune.method": "unstructured", "prune.share_bits": 2}
    comp = report["compression"]
    assert comp["applied"] and comp["ratio"] == 0.6 and comp["settings"]["method"] == "unstructured"
    assert any("no speedup" in n for n in comp["notes"])
    assert comp["after"]["zip_bytes"] < comp["before"]["zip_bytes"]
    assert comp["details"]["sharing"][0]["values"] <= 4
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["compression"]["ratio"] == 0.6 and manifest["compression"]["method"] == "unstructured"
    assert "## Compression" in (bundle / "report.md").read_text()


def test_pruning_an_onnx_source_is_refused_up_front_or_skipped(user_models, tiny_data, tmp_path):
    from click.testing import CliRunner
    from edgekit.cli.main import main
    from edgekit.sources.load import load_model
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(load_model(f"{user_models}:make_tiny"), onnx_path)
    r = CliRunner().invoke(main, ["build", str(onnx_path), "--data", str(tiny_data), "--out", str(tmp_path / "o"),
                                  "--prune-ratio", "0.5"])
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "ONNX graph: pruning" in r.stderr and "--prune-method none" in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    # asked for by the profile only: said in the report, and the graph is still exported
    prof = tmp_path / "p.toml"
    prof.write_text('name = "p"\nextends = "iot"\n[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 2.0\n')
    result = edgekit.build(str(onnx_path), data=tiny_data, profile=prof, out=tmp_path / "o2", formats=("onnx",), bits=32)
    assert "compression" not in result.report
    assert any(n.startswith("compression skipped: ") and "ONNX graph" in n for n in result.report["notes"])
