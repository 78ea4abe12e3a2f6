"""Which layers of a torch module compression may touch: the output layer and ``keep`` names never."""
from __future__ import annotations

from ..core.errors import UsageError, did_you_mean


def weighted_layers(module) -> dict[str, object]:
    """Conv and Linear layers by their qualified module name."""
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {name: m for name, m in module.named_modules() if isinstance(m, kinds)}


def out_channels(layer) -> int:
    """What structured pruning removes: a Linear's output features or a conv's output channels."""
    return layer.out_features if hasattr(layer, "out_features") else layer.out_channels


def output_layers(module, example_args: tuple) -> list[str]:
    """The weighted layers whose outputs reach a model output without passing another weighted layer:
    every head of a multi-head net (and, through residual adds, every layer writing a residual stream).

    Found by walking autograd's graph back from each output, so heads defined anywhere in the code are found.
    """
    import torch

    from ..runtimes.torch_runner import flatten_outputs

    layers = weighted_layers(module)
    owner = {id(m.weight): name for name, m in layers.items()}
    with torch.enable_grad():
        outs = [t for t in flatten_outputs(module(*example_args)) if t.grad_fn is not None]
        heads: list[str] = []
        seen: set = set()
        stack = [t.grad_fn for t in outs]
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            hit = _weight_of(fn, owner)
            if hit is not None:
                if hit not in heads:
                    heads.append(hit)
                continue
            stack.extend(n for n, _ in fn.next_functions if n is not None)
    order = list(layers)
    return sorted(heads, key=order.index)


def _weight_of(fn, owner: dict) -> str | None:
    """The layer whose weight ``fn`` (a matmul/conv node) consumes directly, or through a transpose/view."""
    for nxt, _ in fn.next_functions:
        for node in (nxt, *(n for n, _ in (nxt.next_functions if nxt is not None else ()) if n is not None)):
            variable = getattr(node, "variable", None) if node is not None else None
            if variable is not None and id(variable) in owner:
                return owner[id(variable)]
    return None


def attention_layers(module) -> tuple[set[str], list[str]]:
    """(the weighted layers inside attention blocks, the blocks' names). Pruning leaves them whole: their
    outputs are split into heads by reshapes that a channel cut breaks."""
    from torch import nn

    blocks = [name for name, m in module.named_modules()
              if name and (isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith(("Attention", "SelfAttention")))]
    outermost = [b for b in blocks if not any(b.startswith(o + ".") for o in blocks if o != b)]
    inside = {name for name in weighted_layers(module) if any(name.startswith(b + ".") for b in outermost)}
    mha = {name for name, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)}
    return inside | mha, outermost


def resolve_keep(module, keep: tuple[str, ...]) -> set[str]:
    """The module names behind ``keep`` (a name keeps its whole subtree); unknown names are an error."""
    names = [n for n, _ in module.named_modules() if n]
    found: set[str] = set()
    for want in keep:
        hits = [n for n in names if n == want or n.startswith(want + ".")]
        if not hits:
            raise UsageError(f"--keep {want}: no such layer in the model{did_you_mean(want, names)}; "
                             f"layer names look like {', '.join(names[:4])}")
        found.update(hits)
    return found


def protected(module, example_args: tuple, keep: tuple[str, ...]) -> tuple[list[str], set[str]]:
    """(output layer names, every module name pruning must not touch: the heads and ``keep``)."""
    heads = output_layers(module, example_args)
    return heads, resolve_keep(module, keep) | set(heads)
