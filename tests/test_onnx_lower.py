"""The MaxPool rewrite given to onnx2tf keeps the graph's numbers bit for bit."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekit.export.onnx_lower import lower_padded_pools


@pytest.mark.parametrize("kernel,stride,pad,ceil", [(2, 2, 0, True), (3, 2, 0, True), (3, 2, 1, False),
                                                     (3, 2, 1, True), (2, 1, 1, True), (3, 3, 0, True),
                                                     (2, 2, 0, False)])
@pytest.mark.parametrize("height,width", [(7, 9), (8, 12), (13, 13)])
def test_pool_rewrite_is_exact(tmp_path, kernel, stride, pad, ceil, height, width):
    pool = torch.nn.MaxPool2d(kernel, stride, padding=pad, ceil_mode=ceil)
    x = torch.randn(2, 3, height, width) - 3  # negative values: a zero fill would show
    src = tmp_path / "pool.onnx"
    torch.onnx.export(pool, (x,), src, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    out, count = lower_padded_pools(src, tmp_path / "lowered.onnx")
    padded = pad > 0 or torch.nn.MaxPool2d(kernel, stride)(x).shape != pool(x).shape
    assert count == (1 if padded else 0)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    if padded:
        assert "Pad" not in ops and "Concat" in ops
    got = ort.InferenceSession(str(out)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_array_equal(got, pool(x).numpy())


def test_dynamic_spatial_size_is_left_alone(tmp_path):
    src = tmp_path / "pool.onnx"
    torch.onnx.export(torch.nn.MaxPool2d(3, 2, ceil_mode=True), (torch.randn(1, 3, 9, 9),), src, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    assert lower_padded_pools(src, tmp_path / "lowered.onnx") == (src, 0)
