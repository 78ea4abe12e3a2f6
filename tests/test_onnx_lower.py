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


class _MeanNegativeAxes(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x).mean(dim=(-1, -2), keepdim=True).flatten(1) + x.amax(dim=-1).sum(dim=-1)


@pytest.mark.parametrize("size", [1, 5])
def test_reduce_axes_made_positive_and_ordered(tmp_path, size):
    """A ReduceMean over [-1, -2] of a 1x1 map made onnx2tf reduce the batch too; counted from the front and
    sorted, the axes are the same reduction."""
    from edgekit.export.onnx_lower import positive_reduce_axes

    model, x = _MeanNegativeAxes(), torch.randn(3, 4, size, size)
    src = tmp_path / "mean.onnx"
    torch.onnx.export(model.eval(), (x,), src, dynamo=True, input_names=["x"], dynamic_shapes={"x": {0: "batch"}})
    out, count = positive_reduce_axes(src, tmp_path / "positive.onnx")
    assert count == 3  # the mean, the max and the sum
    graph = onnx.load(str(out)).graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type.startswith("Reduce"):
            axes = consts[node.input[1]] if len(node.input) > 1 else [a.ints for a in node.attribute if a.name == "axes"][0]
            assert list(axes) == sorted(axes) and min(axes) >= 0
    got = ort.InferenceSession(str(out)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-6, atol=1e-6)
    assert positive_reduce_axes(out, tmp_path / "again.onnx") == (out, 0)
