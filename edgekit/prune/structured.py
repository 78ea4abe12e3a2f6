"""Structured channel pruning with torch-pruning's dependency graph: coupled layers (residual adds,
concats, depthwise convs, BatchNorm, the head's inputs) lose the same channels together, so the
exported graph really gets smaller."""
from __future__ import annotations

from typing import Callable

from .layers import out_channels, weighted_layers


def importance_for(name: str):
    import torch_pruning as tp

    table = {"l1": lambda: tp.importance.MagnitudeImportance(p=1), "l2": lambda: tp.importance.MagnitudeImportance(p=2),
             "taylor": lambda: tp.importance.TaylorImportance()}
    return table[name]()


def capped_ratios(module, ratio: float, round_to: int, protect: set[str]) -> dict:
    """Per-layer ratios that leave at least ``round_to`` channels, so rounding never empties a layer
    (torch-pruning rounds the kept count down and would skip such a layer entirely)."""
    caps = {}
    for name, layer in weighted_layers(module).items():
        if name in protect:
            continue
        channels = out_channels(layer)
        cap = (channels - round_to) / channels if channels > round_to else 0.0
        if ratio > cap:
            caps[layer] = max(cap, 0.0)
    return caps


def prune_structured(module, example_args: tuple, ratio: float, *, importance: str, round_to: int,
                     protect: set[str], loss_batches: Callable | None = None) -> dict:
    """Remove ``ratio`` of the output channels of every prunable layer of ``module`` in place.

    ``importance`` is l1, l2 or taylor; taylor needs ``loss_batches``: a callable yielding scalar
    losses whose gradients score the channels. Returns what was done, per layer.
    """
    import torch
    import torch_pruning as tp

    before = {n: tuple(m.weight.shape) for n, m in weighted_layers(module).items()}
    ignored = [m for n, m in module.named_modules() if n in protect]
    imp = importance_for(importance)
    if importance == "taylor":
        module.zero_grad()
        module.eval()
        for loss in loss_batches():
            loss.backward()
    pruner = tp.pruner.MetaPruner(module, example_args, importance=imp, pruning_ratio=ratio,
                                  pruning_ratio_dict=capped_ratios(module, ratio, round_to, protect),
                                  ignored_layers=ignored, round_to=round_to)
    pruner.step()
    module.zero_grad(set_to_none=True)
    for p in module.parameters():
        p.requires_grad_(True)
    after = {n: tuple(m.weight.shape) for n, m in weighted_layers(module).items()}
    changed = {n: {"before": list(before[n]), "after": list(after[n])} for n in after if before.get(n) != after[n]}
    with torch.no_grad():
        module(*example_args)  # the pruned graph still runs
    return {"layers_changed": len(changed), "layers": changed}
