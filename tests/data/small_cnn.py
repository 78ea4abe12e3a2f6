"""A small digits CNN (8x8 grayscale, 10 classes)."""
import torch
from torch import nn


class SmallCNN(nn.Module):
    input_names, output_names = ["x"], ["logits"]

    def __init__(self):
        super().__init__()
        def cbr(cin, cout, s):
            return [nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*cbr(1, 8, 1), *cbr(8, 12, 2), *cbr(12, 16, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))

    def example_inputs(self):
        return (torch.zeros(1, 1, 8, 8),)


def make_model():
    return SmallCNN()


def write_user_folder(folder, epochs: int = 40):
    """A user's folder as the QAT tests and benchmarks/quantization.py use it: model.py (this file), the
    weights trained on 8x8 digits (one thread, seeded: the same weights every run) and digits.npz (held-out
    x/y, and x_train/y_train)."""
    import shutil
    from pathlib import Path

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from edgekit.runtimes.torch_runner import torch_threads

    folder = Path(folder)
    shutil.copyfile(__file__, folder / "model.py")
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target.astype(np.int64), test_size=0.3, random_state=0,
                                              stratify=d.target)
    with torch_threads(1, seed=0):
        torch.manual_seed(0)
        model = make_model()
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(xt))
            for i in range(0, len(xt), 64):
                idx = order[i:i + 64]
                loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            top1 = float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    torch.save(model.state_dict(), folder / "model.pt")
    np.savez(folder / "digits.npz", x=x_te, y=y_te, x_train=x_tr, y_train=y_tr)
    return top1
