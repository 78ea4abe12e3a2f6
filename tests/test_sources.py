import sys

import numpy as np
import pytest
import torch

from edgekit.runtimes import reference_runner
from edgekit.core.errors import UsageError
from edgekit.sources.load import load_model


def _factory(user_models, name):
    return f"{user_models}:{name}"


def test_factory_with_weights_loads_state_dict(user_models, tmp_path):
    first = load_model(_factory(user_models, "make_tiny"))
    state = {k: torch.full_like(v, 0.5) for k, v in first.module.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    m = load_model(_factory(user_models, "make_tiny"), weights=tmp_path / "w.pt")
    assert torch.equal(m.module.stem.weight, torch.full_like(m.module.stem.weight, 0.5))
    assert m.name == "my_models" and m.loader == "factory"
    spec = m.iospec
    assert spec.inputs[0].shape == ("batch", 1, 8, 8) and spec.inputs[0].layout == "NCHW"
    assert spec.outputs[0].shape == ("batch", 3) and spec.outputs[0].dtype == "float32"


def test_weights_with_wrong_keys(user_models, tmp_path):
    torch.save({"nope.weight": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(UsageError, match="does not match the model: missing"):
        load_model(_factory(user_models, "make_tiny"), weights=tmp_path / "w.pt")


def test_pickled_weights_need_trust(user_models, tmp_path):
    # a full-model pickle (torch.save of a module object, not its state_dict); edgekit leaves no entry in
    # sys.modules for a user's file, so the pickled module is one whose class is importable
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1)), tmp_path / "full.pt")
    with pytest.raises(UsageError, match="--trust-pickle"):
        load_model(_factory(user_models, "make_tiny"), weights=tmp_path / "full.pt")



def test_two_inputs_from_sample_data(user_models):
    rng = np.random.default_rng(0)
    samples = {"features": rng.standard_normal((5, 4)).astype(np.float32),
               "tokens": rng.integers(0, 50, (5, 7)).astype(np.int64)}
    m = load_model(_factory(user_models, "make_two_inputs"), sample_inputs=samples)
    assert [(t.name, t.dtype, t.shape) for t in m.iospec.inputs] == [
        ("features", "float32", ("batch", 4)), ("tokens", "int64", ("batch", 7))]
    assert [(t.name, t.shape) for t in m.iospec.outputs] == [("score", ("batch", 2)), ("embedding", ("batch", 8))]


def test_package_module_factory(user_models, monkeypatch):
    monkeypatch.syspath_prepend(str(user_models.parent))
    m = load_model("my_models:make_regressor", sample_inputs={"x": np.zeros((2, 6), np.float32)})
    assert m.iospec.inputs[0].shape == ("batch", 6) and m.name == "my_models"


@pytest.mark.parametrize("dynamic", [True, False])
def test_torch_export_pt2(user_models, tmp_path, dynamic):
    module = load_model(_factory(user_models, "make_tiny")).module
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(module, (torch.randn(2 if dynamic else 1, 1, 8, 8),), dynamic_shapes=shapes)
    torch.export.save(program, tmp_path / "tiny.pt2")
    m = load_model(str(tmp_path / "tiny.pt2"))
    assert m.loader == "torch.export"
    assert m.iospec.inputs[0].shape == (("batch" if dynamic else 1), 1, 8, 8)
    assert m.iospec.batch_dynamic is dynamic
    x = np.random.default_rng(0).standard_normal((2 if dynamic else 1, 1, 8, 8)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    got = reference_runner(m).run({m.iospec.input_names[0]: x})[m.iospec.output_names[0]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_torchscript(user_models, tmp_path):
    module = load_model(_factory(user_models, "make_tiny")).module
    torch.jit.trace(module, torch.randn(1, 1, 8, 8)).save(str(tmp_path / "tiny.pt"))
    m = load_model(str(tmp_path / "tiny.pt"), sample_inputs={"x": np.zeros((4, 1, 8, 8), np.float32)})
    assert m.loader == "torchscript" and m.iospec.inputs[0].shape == ("batch", 1, 8, 8)


def test_full_pickle_needs_flag(user_models, tmp_path, monkeypatch):
    import importlib
    monkeypatch.syspath_prepend(str(user_models.parent))  # a pickle names its class: it must be importable
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    torch.save(importlib.import_module("my_models").make_tiny(), tmp_path / "full.pt")
    with pytest.raises(UsageError, match="full-model pickle.*--trust-pickle"):
        load_model(str(tmp_path / "full.pt"))
    m = load_model(str(tmp_path / "full.pt"), trust_pickle=True)
    assert m.loader == "pickle" and m.iospec.outputs[0].shape == ("batch", 3)


def test_onnx_source(user_models, tmp_path):
    module = load_model(_factory(user_models, "make_tiny")).module
    torch.onnx.export(module, (torch.randn(1, 1, 8, 8),), str(tmp_path / "tiny.onnx"), input_names=["img"],
                      output_names=["out"], dynamic_axes={"img": {0: "n"}, "out": {0: "n"}}, dynamo=False)
    m = load_model(str(tmp_path / "tiny.onnx"))
    assert m.kind == "onnx" and m.iospec.inputs[0].shape == ("n", 1, 8, 8) and m.iospec.outputs[0].name == "out"


def test_corrupt_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(UsageError, match="bad.onnx is not a valid ONNX model"):
        load_model(str(tmp_path / "bad.onnx"))


def test_factory_that_raises(user_models):
    with pytest.raises(UsageError, match="raised ValueError: checkpoint path not configured"):
        load_model(_factory(user_models, "make_broken"))


@pytest.mark.parametrize("source, needle", [
    ("missing.onnx", "not found"), ("nowhere.py:make", "not found"), ("no_such_pkg.mod:make", "cannot be imported"),
])
def test_missing_sources(source, needle):
    with pytest.raises(UsageError, match=needle):
        load_model(source)


def test_corrupt_weights_are_not_called_a_pickle(user_models, tmp_path):
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UsageError) as err:
        load_model(_factory(user_models, "make_tiny"), weights=tmp_path / "junk.pt")
    assert "cannot be read" in str(err.value) and "--trust-pickle" not in str(err.value)


def test_folder_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(UsageError, match="is a folder but not a SavedModel"):
        load_model(str(tmp_path / "models"))


def test_user_files_leave_no_modules_behind(tmp_path):
    """A factory file and the sibling it imports run, and neither stays in sys.modules or on sys.path."""
    (tmp_path / "blocks_for_edgekit_test.py").write_text(
        "import torch\nclass Block(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(4, 2)\n    def forward(self, x):\n        return self.lin(x)\n")
    (tmp_path / "net.py").write_text("from blocks_for_edgekit_test import Block\n\ndef make():\n    return Block()\n")
    before_modules, before_path = set(sys.modules), list(sys.path)
    m = load_model(f"{tmp_path / 'net.py'}:make", sample_inputs={"x": np.zeros((3, 4), np.float32)})
    assert m.iospec.outputs[0].shape == ("batch", 2)
    assert set(sys.modules) - before_modules == set() and sys.path == before_path
    out = reference_runner(m).run({"x": np.ones((2, 4), np.float32)})["output"]  # the loaded classes still work
    assert out.shape == (2, 2)
