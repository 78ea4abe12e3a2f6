"""Tiny deterministic models and data, written to disk the way a user would have them."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

USER_MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class TinyCNN(nn.Module):
        """8x8 single-channel classifier with a residual add."""
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.body = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            y = y + torch.relu(self.body(y))
            return self.head(y.mean(dim=(2, 3)))

        def example_inputs(self):
            return (torch.zeros(1, 1, 8, 8),)


    class TwoInputs(nn.Module):
        """Float features plus int64 token ids, two named outputs."""
        input_names = ["features", "tokens"]
        output_names = ["score", "embedding"]

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.proj = nn.Linear(4, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, features, tokens):
            e = self.embed(tokens).mean(dim=1) + self.proj(features)
            return self.out(torch.tanh(e)), e


    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x):
            return self.net(x)


    class Noisy(nn.Module):
        """Output depends on a random draw: no exported file can match it."""
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x) + torch.rand_like(self.lin(x))


    def make_tiny():
        torch.manual_seed(0)
        return TinyCNN().eval()


    def make_two_inputs():
        torch.manual_seed(0)
        return TwoInputs().eval()


    def make_regressor():
        torch.manual_seed(0)
        return Regressor().eval()


    def make_noisy():
        torch.manual_seed(0)
        return Noisy().eval()


    class Outlier(nn.Module):
        """fc1 reads one input feature 1000x larger than the rest (through a 1000x smaller weight):
        its input's quantization range swamps every other feature."""
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.fc1, self.fc2, self.head = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)
            with torch.no_grad():
                for layer in (self.fc1, self.fc2, self.head):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
                    layer.bias.zero_()
                self.fc1.weight[:, 0] *= 0.001

        def forward(self, x):
            return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


    def make_outlier():
        return Outlier().eval()


    class Spiky(Outlier):
        """fc1 has one weight per row 20x larger than the rest: int4 rounds the rest to zero, int8 does not."""
        def __init__(self):
            super().__init__()
            with torch.no_grad():
                self.fc1.weight[:, 0] = 6.0


    def make_spiky():
        return Spiky().eval()


    class Fragile(Outlier):
        """fc1's small weights on the 1000x feature carry most of the signal, and at 1/300 of the row's
        largest weight they round to zero at int8 as well as int4: only float keeps them."""
        def __init__(self):
            super().__init__()
            with torch.no_grad():
                self.fc1.weight[:, 0] *= 10.0


    def make_fragile():
        return Fragile().eval()


    class Recommender(nn.Module):
        """Two int64 id inputs through embeddings to a click probability."""
        input_names = ["user_id", "item_id"]
        output_names = ["click"]

        def __init__(self):
            super().__init__()
            self.users, self.items = nn.Embedding(100, 8), nn.Embedding(200, 8)
            self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, user_id, item_id):
            return torch.sigmoid(self.mlp(torch.cat([self.users(user_id), self.items(item_id)], dim=1)))


    def make_recommender():
        torch.manual_seed(0)
        return Recommender().eval()


    def make_broken():
        raise ValueError("checkpoint path not configured")
''')


@pytest.fixture()
def user_models(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(USER_MODELS)
    return path


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    """A labelled .npz for TinyCNN whose labels are the tiny model's own predictions."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture()
def two_input_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "two.npz"
    np.savez(path, features=rng.standard_normal((80, 4)).astype(np.float32),
             tokens=rng.integers(0, 50, (80, 5)).astype(np.int64))
    return path


@pytest.fixture()
def fast_profile(tmp_path: Path) -> Path:
    """iot with short benchmarks and no pruning, so unit-level builds stay quick (pruning has its own tests)."""
    path = tmp_path / "fast.toml"
    path.write_text('name = "fast"\nextends = "iot"\n[prune]\nmethod = "none"\n'
                    '[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 2.0\n')
    return path


@pytest.fixture(scope="session")
def served_bundle(tmp_path_factory) -> Path:
    """The built-in example for a light server profile, built once for every serving test."""
    from serving import build_bundle

    return build_bundle(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """Debian's OpenSSH sshd on a random loopback port (tests/sshd_fixture.py); .ci/run installs it."""
    from sshd_fixture import start_sshd

    try:
        proc, info = start_sshd(tmp_path_factory.mktemp("sshd"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield info
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tinylm_test(tmp_path_factory):
    """The example LM at its test size, trained once per session into the session's own cache (never the user's):
    (its Hugging Face folder, the cache root, the progress messages its training printed)."""
    import os

    from edgekit.examples.tinylm import tinylm_dir

    cache = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        messages: list[str] = []
        folder = tinylm_dir(messages.append, size="test")
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before
    return folder, cache, messages


@pytest.fixture(scope="session")
def mobile_unpruned(tmp_path_factory):
    """The built-in example for `mobile` at 1 thread, unpruned: fp32 and int8 ONNX and TFLite files (float
    I/O). One build shared by the quantization, TFLite and apps tests, which only read it."""
    import edgekit

    return edgekit.build(profile="mobile", out=tmp_path_factory.mktemp("mobile-unpruned"), threads=1,
                         prune_method="none")


@pytest.fixture(scope="session")
def apps_build(mobile_unpruned):
    """What the web and Python apps run: the fp32 and int8 ONNX and TFLite files of ``mobile_unpruned``."""
    return mobile_unpruned


@pytest.fixture(scope="session")
def int8_io_build(tmp_path_factory):
    """The example's TFLite files and C array with int8 inputs and outputs (--int8-io): the MCU harness and
    the apps' quantization path."""
    from apps_helpers import build_for_apps

    return build_for_apps(tmp_path_factory.mktemp("apps-int8-io"))


@pytest.fixture(scope="session")
def apps_bundle(apps_build) -> Path:
    return apps_build.bundle


def pytest_sessionfinish(session, exitstatus):
    """Every bundle any test built must match apps/manifest.schema.json (the apps' contract): a manifest.json
    under the session's temporary folders that fails it fails the run. Folders named invalid-* hold manifests
    that tests broke on purpose."""
    import json

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or exitstatus not in (0, 1):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    try:
        from apps_helpers import schema_problems
    except ImportError as exc:  # jsonschema comes with the dev extra
        if reporter is not None:
            reporter.write_sep("-", f"manifest schema: not checked ({exc}); pip install -e '.[dev]'")
        session.exitstatus = 1
        return
    checked, bad = 0, []
    for path in factory.getbasetemp().rglob("manifest.json"):
        if any(part.startswith("invalid-") or part.endswith(".partial") for part in path.parts):
            continue
        try:
            manifest = json.loads(path.read_text())
        except ValueError:
            continue  # a test that wrote a broken file on purpose checks it itself
        if not isinstance(manifest, dict) or "files" not in manifest:
            continue  # not a bundle manifest
        checked += 1
        bad += [f"{path}: {p}" for p in schema_problems(manifest)[:3]]
    if reporter is not None:
        reporter.write_sep("-", f"manifest schema: {checked} bundle manifest(s) checked, {len(bad)} problem(s)")
        for line in bad:
            reporter.write_line(f"  {line}")
    if bad:
        session.exitstatus = 1
