"""The built-in example: scikit-learn's bundled digits at 32x32 and a small MobileNetV2-style CNN.

The 8x8 digits (values 0..16) are scaled to [0, 1], upsampled bilinearly to 32x32 and
standardised. 70% train the network; the other 30% are the held-out samples the build
calibrates and validates on. Trained weights ship beside this file (``digits_cnn.pt``);
``python -m edgekit.examples.digits`` re-trains them deterministically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("digits_cnn.pt")
CARD = Path(__file__).with_name("digits_cnn.json")
MEAN, STD = 0.2, 0.3
LABELS = [str(i) for i in range(10)]
PREPROCESSING = {  # the manifest's machine-readable recipe (apps/README.md, "preprocessing"): apps apply it as is
    "input": "image",
    "description": "sklearn.datasets.load_digits: 8x8 grey digits, ink 16 on paper 0",
    "raw": {"height": 8, "width": 8, "channels": 1, "range": [0.0, 16.0], "ink": "high", "fit": "ink-box"},
    "steps": [{"op": "scale", "factor": 1.0 / 16.0},
              {"op": "resize", "height": 32, "width": 32, "method": "bilinear", "align_corners": False,
               "antialias": False},
              {"op": "normalize", "mean": [MEAN], "std": [STD]}],
    "layout": "NCHW",
}


def make_model():
    """A MobileNetV2-style CNN for 1x32x32 inputs: a stride-2 stem, inverted residuals with depthwise
    convs and residual adds, a linear head. Sized so its fp32 TFLite-Micro arena stays under 512 KB."""
    from torch import nn

    def conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6(inplace=True)] if act else [])

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand=4):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.block = nn.Sequential(*conv_bn(cin, hidden, 1), *conv_bn(hidden, hidden, 3, stride, hidden),
                                       *conv_bn(hidden, cout, 1, act=False))

        def forward(self, x):
            y = self.block(x)
            return x + y if self.use_res else y

    class DigitsCNN(nn.Module):
        input_names = ["image"]
        output_names = ["logits"]

        def __init__(self):
            super().__init__()
            cfg = [(32, 32, 1), (32, 48, 2), (48, 48, 1), (48, 64, 2), (64, 64, 1), (64, 96, 2), (96, 96, 1)]
            self.features = nn.Sequential(*conv_bn(1, 32, 3, stride=2), *[InvertedResidual(a, b, s) for a, b, s in cfg],
                                          *conv_bn(96, 256, 1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(256, 10)

        def forward(self, image):
            return self.classifier(self.pool(self.features(image)).flatten(1))

        def example_inputs(self):
            import torch
            return (torch.zeros(1, 1, 32, 32),)

    return DigitsCNN().eval()


def load_arrays() -> dict[str, np.ndarray]:
    """Preprocessed digits: ``x``/``y`` are the held-out 30%, ``x_train``/``y_train`` the rest."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    x = ((images - MEAN) / STD).numpy().astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return {"x": x_te, "y": y_te, "x_train": x_tr, "y_train": y_tr}


def train(epochs: int = 12, seed: int = 0, threads: int = 2):
    """Train from scratch, deterministically; returns (module, held-out top-1)."""
    from ..runtimes.torch_runner import torch_threads

    with torch_threads(threads, seed=seed):
        return _train(epochs, seed)


def _train(epochs: int, seed: int):
    import torch

    arrays = load_arrays()
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    model = make_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x) + 63) // 64))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            xb = x[idx]
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(arrays["x"])).argmax(1).numpy() == arrays["y"]).mean()
    return model, float(acc)


def load_model():
    """The example Model with the shipped weights and its labels/preprocessing in ``meta``."""
    import torch

    from ..sources.load import torch_model

    from ..runtimes.torch_runner import caller_rng_kept

    with caller_rng_kept():  # building the layers draws initial weights: not from the caller's RNG
        module = make_model()
    module.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return torch_model(module.eval(), name="digits_cnn", loader="example", origin="built-in example (digits_cnn)",
                       meta={"labels": LABELS, "preprocessing": PREPROCESSING})


def main() -> None:  # pragma: no cover - a maintenance entry point
    import hashlib
    import time

    import torch

    start = time.perf_counter()
    model, acc = train()
    torch.save(model.state_dict(), WEIGHTS)
    card = {"heldout_top1": round(acc, 4), "train_seconds": round(time.perf_counter() - start, 1),
            "sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(), "epochs": 12, "seed": 0}
    CARD.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card))


if __name__ == "__main__":
    main()
