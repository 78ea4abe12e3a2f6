"""Graph rewrites before XNNPACK lowering: ops its partitioner refuses or cannot lower, written as the same math
in ops it takes. Each rewrite is exact up to float rounding, applies only where it is needed, and leaves every
other op as torch.export wrote it.

- PReLU on a tensor that is not 4-D: XNNPACK's channels-last pass refuses it ("Attempting to convert non-NHWC
  compatible node to NHWC"); it becomes ``clamp(x, min=0) + w * clamp(x, max=0)``, the weight on dim 1.
- LayerNorm over the last dim: XNNPACK has no layer norm, so each one ran on portable kernels and split the
  graph; it becomes a global average pool over a [rows, 1, C, 1] view, sub, mul, rsqrt.
- matmul of two tensors with the same batch dims (attention's Q·Kᵀ and P·V): torch decomposes it into
  ``expand`` copies XNNPACK does not take around its ``bmm``; it becomes reshape, bmm, reshape.

Then, in a float program, constant folding (ExecuTorch's ``constant_prop_pass``): a BERT's position and
token-type ids and most of its mask arithmetic depend on no input, and would otherwise run on portable kernels
at every call. A quantized program is not folded: its weights' dequantize nodes must stay for XNNPACK.

On the MiniLM-size encoder these take the delegated share from 74% (27 delegated pieces) to 97% (2), with one
embedding lookup and the mask's remaining integer ops left on portable kernels.

``lift_integer_scalars`` works around executorch#22062 (fixed after 1.5): XNNPACKQuantizer lifts every scalar
operand of add/mul into a float32 buffer, so an int64 chain such as Hugging Face's position ids
(``arange(n) + 0``) turns float and PT2E calibration fails with "tensors used as indices must be long".
"""
from __future__ import annotations


def _prelu(x, weight):
    import torch

    if x.dim() == 4:
        return NotImplemented  # XNNPACK's own PReLU
    if x.dim() >= 2 and weight.numel() > 1:
        weight = weight.reshape([1, -1] + [1] * (x.dim() - 2))
    return torch.clamp(x, min=0) + weight * torch.clamp(x, max=0)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    import torch

    if len(normalized_shape) != 1 or x.dim() < 2:
        return NotImplemented
    rows = x.reshape(-1, 1, x.shape[-1], 1)  # XNNPACK's mean is a global pool over the two inner dims of a 4-D x
    centred = rows - rows.mean((2, 3), keepdim=True)
    var = (centred * centred).mean((2, 3), keepdim=True)
    y = (centred * torch.rsqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def _matmul(a, b):
    import torch

    if a.dim() < 3 or a.dim() != b.dim() or a.shape[:-2] != b.shape[:-2]:
        return NotImplemented
    out = torch.bmm(a.reshape(-1, a.shape[-2], a.shape[-1]), b.reshape(-1, b.shape[-2], b.shape[-1]))
    return out.reshape(*a.shape[:-2], a.shape[-2], b.shape[-1])


def _needed(node, aten) -> bool:
    val = node.args[0].meta.get("val") if node.args and hasattr(node.args[0], "meta") else None
    if val is None:
        return False
    if node.target is aten.prelu.default:
        return val.dim() != 4
    if node.target is aten.layer_norm.default:
        return len(node.args[1]) == 1 and val.dim() >= 2
    other = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
    return other is not None and val.dim() >= 3 and val.dim() == other.dim() and val.shape[:-2] == other.shape[:-2]


def xnnpack_rewrites(program):
    """The ExportedProgram with the ops above rewritten where they occur and, unless it is quantized, its
    constants folded."""
    import torch

    aten = torch.ops.aten
    table = {aten.prelu.default: _prelu, aten.layer_norm.default: _layer_norm, aten.matmul.default: _matmul}
    found = {n.target for n in program.graph.nodes
             if n.op == "call_function" and n.target in table and _needed(n, aten)}
    if found:
        program = program.run_decompositions({op: table[op] for op in found})
    if any("quantize" in str(n.target) for n in program.graph.nodes if n.op == "call_function"):
        return program
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return constant_prop_pass(program)


def lift_integer_scalars(graph_module):
    """Python-scalar operands of integer add/mul as buffers of the node's own dtype, before XNNPACKQuantizer's
    transform would make them float32 (executorch#22062). Returns the count lifted; the module is changed in place
    (it is the throwaway ``torch.export(...).module()`` PT2E prepares)."""
    import torch

    aten = torch.ops.aten
    lifted = 0
    for node in list(graph_module.graph.nodes):
        val = node.meta.get("val")
        if node.op != "call_function" or node.target not in (aten.add.Tensor, aten.mul.Tensor) or val is None \
                or val.dtype.is_floating_point:
            continue
        args = list(node.args)
        for i, arg in enumerate(args):
            if isinstance(arg, (bool, int)):
                name = f"_edgekit_int_scalar_{lifted}"
                graph_module.register_buffer(name, torch.tensor(arg, dtype=val.dtype))
                with graph_module.graph.inserting_before(node):
                    args[i] = graph_module.graph.get_attr(name)
                args[i].meta["val"] = torch.tensor(arg, dtype=val.dtype)
                lifted += 1
        node.args = tuple(args)
    if lifted:
        graph_module.recompile()
    return lifted


def edge_views(graph_module):
    """An edge-dialect transform pass (``to_edge_transform_and_lower(transform_passes=...)``): ``split_with_sizes``
    as one ``slice_copy`` per piece and ``squeeze_copy`` as ``view_copy``, both ops XNNPACK takes. An unrolled
    GRU or LSTM splits its gates and squeezes its steps at every time step (61 of the 309 ops of a 20-step GRU)."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import PassResult

    edge = exir_ops.edge.aten
    graph, changed = graph_module.graph, False
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        pieces = all(getattr(u.target, "__name__", "") == "getitem" for u in node.users)
        if node.target == edge.split_with_sizes_copy.default and pieces:
            x, sizes = node.args[0], node.args[1]
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            for user in list(node.users):
                i = user.args[1]
                with graph.inserting_before(user):
                    piece = graph.call_function(edge.slice_copy.Tensor, (x, dim, starts[i], starts[i] + sizes[i], 1))
                piece.meta = dict(user.meta)
                user.replace_all_uses_with(piece)
                graph.erase_node(user)
            graph.erase_node(node)
            changed = True
        elif node.target == edge.squeeze_copy.dims and "val" in node.meta:
            with graph.inserting_before(node):
                view = graph.call_function(edge.view_copy.default, (node.args[0], list(node.meta["val"].shape)))
            view.meta = dict(node.meta)
            node.replace_all_uses_with(view)
            graph.erase_node(node)
            changed = True
    if changed:
        graph.lint()
        graph_module.recompile()
    return PassResult(graph_module, changed)
