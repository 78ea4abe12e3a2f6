"""Which layers of a torch module compression may touch: the output layer and ``keep`` names never."""
from __future__ import annotations

from ..errors import UsageError, did_you_mean


def weighted_layers(module) -> dict[str, object]:
    """Conv and Linear layers by their qualified module name."""
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {name: m for name, m in module.named_modules() if isinstance(m, kinds)}


def out_channels(layer) -> int:
    """What structured pruning removes: a Linear's output features or a conv's output channels."""
    return layer.out_features if hasattr(layer, "out_features") else layer.out_channels


def output_layers(module, example_args: tuple) -> list[str]:
    """The weighted layer(s) that run last: the head whose outputs are the model's outputs.

    Found by running the module once with hooks, so heads defined anywhere in the code are found.
    """
    import torch

    layers = weighted_layers(module)
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            module(*example_args)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


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
