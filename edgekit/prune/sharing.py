"""Weight sharing: each layer's weights are clustered by k-means (scikit-learn) into 2**bits values.

Applied after recovery, so fine-tuning does not undo it. The file keeps one float per weight,
but only 2**bits distinct values per layer, which is what its compressed size shows.
"""
from __future__ import annotations

from .layers import weighted_layers

FIT_SAMPLES = 20000  # weights sampled per layer to fit the centroids; every weight is then assigned


def share_weights(module, bits: int, *, protect: set[str], seed: int = 0) -> list[dict]:
    """Replace every prunable layer's weights by their nearest of 2**bits k-means centroids, in place."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    clusters = 2 ** bits
    done = []
    rng = np.random.default_rng(seed)
    for name, layer in weighted_layers(module).items():
        if name in protect:
            continue
        w = layer.weight.detach().cpu().numpy().astype(np.float64).reshape(-1, 1)
        distinct = np.unique(w).size
        if distinct <= clusters:
            done.append({"layer": name, "weights": int(w.size), "values": distinct, "shared": False})
            continue
        zero = w[:, 0] == 0  # pruned weights stay exactly zero: zero is one of the 2**bits values
        live = w[~zero]
        k = clusters - 1 if zero.any() else clusters
        fit = live[rng.choice(len(live), FIT_SAMPLES, replace=False)] if len(live) > FIT_SAMPLES else live
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(fit)
        centers = km.cluster_centers_.reshape(-1)
        flat = np.zeros(len(w))
        flat[~zero] = centers[km.predict(live)]
        shared = flat.reshape(layer.weight.shape)
        error = float(np.sqrt(np.mean((shared.reshape(-1, 1) - w) ** 2)))
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(shared).to(layer.weight.dtype))
        done.append({"layer": name, "weights": int(w.size), "values": int(np.unique(flat).size), "shared": True,
                     "rms_error": error})
    return done
