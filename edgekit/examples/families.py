"""Model families edgekit is checked against (the conformance suite and ``benchmarks/families.py``).

Each family is a factory a user would write (``nets.py:make_encoder``), plus deterministic, offline
samples for it. ``size="tiny"`` is what CI builds; ``size="real"`` is what the compatibility table in the
README is measured on (a MiniLM-sized encoder: 6 layers, 384 hidden, sequence 32).

    python -m edgekit.examples.families FOLDER [--size tiny|real]

writes ``FOLDER/nets.py`` (the factories) and one ``FOLDER/<family>.npz`` per family.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FAMILIES = ("encoder", "recommender", "kws", "gru", "regressor", "threehead", "fcn", "keras")
SIZES = {
    "tiny": {"hidden": 32, "layers": 2, "heads": 2, "seq": 16, "vocab": 300, "samples": 240},
    "real": {"hidden": 384, "layers": 6, "heads": 12, "seq": 32, "vocab": 8000, "samples": 600},
}

NETS = '''"""Factories of the edgekit model families (written by edgekit.examples.families)."""
import torch
from torch import nn

SIZE = {size!r}


class Encoder(nn.Module):
    """A BERT-style sentence encoder: transformers' BertModel from a config (no download), mean-pooled."""
    input_names = ["input_ids", "attention_mask"]
    output_names = ["embedding"]  # the name torch.export gives one of its own nodes

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(vocab_size=SIZE["vocab"], hidden_size=SIZE["hidden"], num_hidden_layers=SIZE["layers"],
                         num_attention_heads=SIZE["heads"], intermediate_size=SIZE["hidden"] * 4,
                         max_position_embeddings=128, attn_implementation="eager")
        self.bert = BertModel(cfg, add_pooling_layer=False)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    def example_inputs(self):
        return (torch.ones(1, SIZE["seq"], dtype=torch.int64), torch.ones(1, SIZE["seq"], dtype=torch.int64))


class Recommender(nn.Module):
    """Two int64 id inputs into embedding tables, then an MLP: a click probability."""
    input_names = ["user_id", "item_id"]
    output_names = ["click"]

    def __init__(self):
        super().__init__()
        dim = 16 if SIZE["hidden"] < 100 else 64
        self.users, self.items = nn.Embedding(500, dim), nn.Embedding(2000, dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, 2 * dim), nn.ReLU(),
                                 nn.Linear(2 * dim, 1))

    def forward(self, user_id, item_id):
        return torch.sigmoid(self.mlp(torch.cat([self.users(user_id), self.items(item_id)], dim=1)))


class KWS(nn.Module):
    """Keyword spotting: 1-D convs over [batch, mfcc, time], the time axis dynamic."""
    dynamic_axes = {{"x": {{2: "time"}}}}

    def __init__(self):
        super().__init__()
        c = 32 if SIZE["hidden"] < 100 else 64
        self.net = nn.Sequential(nn.Conv1d(10, c, 5, padding=2), nn.BatchNorm1d(c), nn.ReLU(),
                                 nn.Conv1d(c, c, 5, padding=2, groups=1), nn.BatchNorm1d(c), nn.ReLU(),
                                 nn.Conv1d(c, c, 5, padding=2), nn.BatchNorm1d(c), nn.ReLU())
        self.head = nn.Linear(c, 6)

    def forward(self, x):
        return self.head(self.net(x).mean(dim=2))

    def example_inputs(self):
        return (torch.zeros(1, 10, 49),)


class GRUNet(nn.Module):
    """A recurrent sequence model over [batch, time, features], the time axis dynamic."""
    dynamic_axes = {{"x": {{1: "time"}}}}

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(8, 32 if SIZE["hidden"] < 100 else 96, batch_first=True)
        self.head = nn.Linear(self.gru.hidden_size, 4)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])

    def example_inputs(self):
        return (torch.zeros(1, 20, 8),)


class Regressor(nn.Module):
    """A tabular regressor (scikit-learn's diabetes data: 10 features, one target)."""
    def __init__(self):
        super().__init__()
        w = 64 if SIZE["hidden"] < 100 else 256
        self.net = nn.Sequential(nn.Linear(10, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 1))

    def forward(self, x):
        return self.net(x)

    def example_inputs(self):
        return (torch.zeros(1, 10),)


class ThreeHead(nn.Module):
    """A face-detector-like net: PReLU, ceil-mode pooling; box [N,4], landmarks [N,10], prob [N,2] (softmax)."""
    output_names = ["box", "landmarks", "prob"]

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3), nn.PReLU(16), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.Conv2d(16, 24, 3), nn.PReLU(24), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.Conv2d(24, 32, 3), nn.PReLU(32))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.PReLU(64))
        self.box, self.landmarks, self.cls = nn.Linear(64, 4), nn.Linear(64, 10), nn.Linear(64, 2)

    def forward(self, image):
        f = self.fc(self.body(image))
        return self.box(f), self.landmarks(f), torch.softmax(self.cls(f), dim=1)

    def example_inputs(self):
        return (torch.zeros(1, 3, 24, 24),)


class FCN(nn.Module):
    """A fully convolutional proposal net: dynamic H and W, a probability map and a box map."""
    output_names = ["prob_map", "box_map"]
    dynamic_axes = {{"image": {{2: "height", 3: "width"}}}}

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  nn.Conv2d(10, 16, 3), nn.PReLU(16), nn.Conv2d(16, 32, 3), nn.PReLU(32))
        self.prob, self.box = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, image):
        f = self.body(image)
        return torch.softmax(self.prob(f), dim=1), self.box(f)

    def example_inputs(self):
        return (torch.zeros(1, 3, 48, 64),)


def _seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def make_encoder(): return _seeded(Encoder)
def make_recommender(): return _seeded(Recommender)
def make_kws(): return _seeded(KWS)
def make_gru(): return _seeded(GRUNet)
def make_regressor(): return _seeded(Regressor)
def make_threehead(): return _seeded(ThreeHead)
def make_fcn(): return _seeded(FCN)
'''


def write_nets(folder: str | Path, size: str = "tiny") -> Path:
    """``folder/nets.py``: the torch factories, as a user would write them."""
    path = Path(folder) / "nets.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(NETS.format(size=SIZES[size]))
    return path


def write_data(folder: str | Path, family: str, size: str = "tiny", seed: int = 0) -> Path:
    """``folder/<family>.npz``: deterministic samples (input samples only, except the regressor's labels)."""
    s = SIZES[size]
    n, rng = s["samples"], np.random.default_rng(seed)
    path = Path(folder) / f"{family}.npz"
    if family == "encoder":
        mask = (np.arange(s["seq"])[None, :] < rng.integers(4, s["seq"] + 1, (n, 1))).astype(np.int64)
        np.savez(path, input_ids=rng.integers(1, s["vocab"], (n, s["seq"])) * mask, attention_mask=mask)
    elif family == "recommender":
        np.savez(path, user_id=rng.integers(0, 500, n), item_id=rng.integers(0, 2000, n))
    elif family == "kws":
        t = np.linspace(0, 1, 49)[None, None, :]
        freq = rng.integers(1, 7, (n, 10, 1))
        np.savez(path, x=(np.sin(2 * np.pi * freq * t) + 0.3 * rng.standard_normal((n, 10, 49))).astype(np.float32))
    elif family == "gru":
        np.savez(path, x=rng.standard_normal((n, 20, 8)).astype(np.float32))
    elif family == "regressor":
        from sklearn.datasets import load_diabetes
        x, y = load_diabetes(return_X_y=True)
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
        np.savez(path, x=x, y=(y - y.mean()).astype(np.float32) / y.std())
    elif family == "threehead":
        np.savez(path, x=rng.standard_normal((n, 3, 24, 24)).astype(np.float32))
    elif family == "fcn":
        np.savez(path, x=rng.standard_normal((n, 3, 48, 64)).astype(np.float32))
    elif family == "keras":
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
        np.savez(path, x=(x / 16.0).astype(np.float32), y=y.astype(np.int64))
    else:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    return path


def write_keras(folder: str | Path, seed: int = 0) -> Path:
    """``folder/digits_mlp.keras``: a small Keras classifier trained on scikit-learn's digits."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(seed)
    x, y = load_digits(return_X_y=True)
    inp = keras.Input((64,), name="x")
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Dense(128, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x / 16.0, y, epochs=15, batch_size=64, verbose=0)
    path = Path(folder) / "digits_mlp.keras"
    model.save(path)
    return path


def source_for(folder: str | Path, family: str) -> str:
    """What ``edgekit build`` is given for ``family`` in ``folder``."""
    if family == "keras":
        return str(Path(folder) / "digits_mlp.keras")
    return f"{Path(folder) / 'nets.py'}:make_{family}"


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("families")
    size = argv[argv.index("--size") + 1] if "--size" in argv else "tiny"
    write_nets(folder, size)
    for family in FAMILIES:
        write_data(folder, family, size)
    write_keras(folder)
    print(f"wrote {folder}/nets.py, {folder}/digits_mlp.keras and one .npz per family ({size})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
