"""Unstructured magnitude pruning: the smallest weights across all prunable layers become zero.

The masks stay on during recovery (torch.nn.utils.prune), then ``make_permanent`` folds them into
the weights. Dense runtimes gain no speed from zeros; the gain is the compressed size of the file.
"""
from __future__ import annotations

from .layers import weighted_layers


def prune_unstructured(module, ratio: float, *, protect: set[str]) -> dict:
    """Zero the ``ratio`` smallest-magnitude weights (global L1 ranking) of ``module`` in place."""
    import torch
    from torch.nn.utils import prune

    targets = [(m, "weight") for n, m in weighted_layers(module).items() if n not in protect]
    if not targets:
        return {"layers": 0, "sparsity": 0.0}
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(ratio))
    zeros = sum(int(torch.sum(m.weight_mask == 0)) for m, _ in targets)
    total = sum(m.weight_mask.numel() for m, _ in targets)
    return {"layers": len(targets), "sparsity": zeros / total}


def layer_sparsity(module, protect: set[str] = frozenset()) -> dict[str, dict]:
    """Per prunable layer: its weights and the fraction that are exact zeros (for the pruning picture)."""
    import torch

    return {n: {"weights": m.weight.numel(), "sparsity": int(torch.sum(m.weight == 0)) / max(m.weight.numel(), 1)}
            for n, m in weighted_layers(module).items() if n not in protect}


def make_permanent(module) -> None:
    """Fold pruning masks into the weights and drop the re-parametrisation."""
    from torch.nn.utils import prune

    for m in module.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")


def sparsity(module, protect: set[str] = frozenset()) -> float:
    """Fraction of exact zeros among the weights of the prunable layers."""
    import torch

    layers = [m for n, m in weighted_layers(module).items() if n not in protect]
    total = sum(m.weight.numel() for m in layers)
    return sum(int(torch.sum(m.weight == 0)) for m in layers) / total if total else 0.0
