"""Low-rank factorization of Linear and 1x1 conv layers by truncated SVD.

A layer W (out x in) becomes two layers, in -> r -> out, with r the smallest rank whose singular
values keep ``energy`` of the sum of squares (rounded up to ``round_to``). A layer is replaced
only where that cuts its parameters by at least MIN_SAVING: a split layer costs one more kernel
launch, so a marginal saving would make the model slower, not smaller.
"""
from __future__ import annotations

MIN_SAVING = 0.25


def rank_for(singular_values, energy: float, round_to: int) -> int:
    import numpy as np

    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    total = float(s2.sum())
    if total == 0.0:
        return 1
    rank = int(np.searchsorted(np.cumsum(s2) / total, energy) + 1)
    rank = -(-rank // round_to) * round_to if round_to > 1 else rank
    return min(rank, len(s2))


def factorize(module, energy: float, *, round_to: int, protect: set[str], example_args: tuple = ()) -> list[dict]:
    """Replace eligible layers of ``module`` in place; one entry per layer considered, with the decision.

    With ``example_args``, a swap after which the module no longer runs (a parent that reads the
    layer's ``.weight`` directly, as attention blocks do) is undone and reported."""
    import torch
    from torch import nn

    decisions = []
    for name, layer in list(module.named_modules()):
        if name in protect or not _eligible(layer):
            continue
        weight = layer.weight.detach()
        matrix = weight.reshape(weight.shape[0], -1).double()
        out_dim, in_dim = matrix.shape
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        rank = rank_for(s.numpy(), energy, round_to)
        old = out_dim * in_dim
        new = rank * (out_dim + in_dim)
        entry = {"layer": name, "shape": [out_dim, in_dim], "rank": rank, "params_before": old,
                 "params_after": new if new <= old * (1 - MIN_SAVING) else old}
        if new > old * (1 - MIN_SAVING):
            entry["replaced"] = False
            entry["why"] = f"rank {rank} of {min(out_dim, in_dim)} would keep {new / old:.0%} of the parameters"
            decisions.append(entry)
            continue
        root = torch.sqrt(s[:rank])
        first_w = (root[:, None] * vh[:rank]).float()
        second_w = (u[:, :rank] * root[None, :]).float()
        pair = _pair(layer, rank)
        with torch.no_grad():
            pair[0].weight.copy_(first_w.reshape(pair[0].weight.shape))
            pair[1].weight.copy_(second_w.reshape(pair[1].weight.shape))
            if layer.bias is not None:
                pair[1].bias.copy_(layer.bias)
        _set_child(module, name, nn.Sequential(*pair))
        entry["replaced"] = True
        if example_args:
            try:
                with torch.no_grad():
                    module(*example_args)
            except Exception as exc:  # the parent uses the layer's weight itself
                _set_child(module, name, layer)
                entry.update(replaced=False, params_after=old,
                             why=f"its parent reads the layer's weight directly ({type(exc).__name__})")
        decisions.append(entry)
    return decisions


def _eligible(layer) -> bool:
    from torch import nn

    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1
            and layer.padding in ((0, 0), "valid") and layer.dilation == (1, 1))


def _pair(layer, rank: int):
    from torch import nn

    if isinstance(layer, nn.Linear):
        return [nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=layer.bias is not None)]
    return [nn.Conv2d(layer.in_channels, rank, 1, stride=layer.stride, bias=False),
            nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)]


def _set_child(module, dotted: str, new) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)
