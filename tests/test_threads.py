"""Library calls leave the process as they found it, so two builds can run in two threads of one
process and give the bundles they give one after the other."""
import hashlib
import json
import os
import textwrap
import threading

import numpy as np
import pytest
import torch

import edgekit

pytestmark = pytest.mark.slow

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class SmallCNN(nn.Module):
        """32 channels on 8x8: room for structured pruning; dropout makes distillation draw random numbers."""
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                          nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
            self.drop = nn.Dropout(0.2)
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            return self.head(self.drop(self.features(x).mean(dim=(2, 3))))

        def example_inputs(self):
            return (torch.zeros(1, 1, 8, 8),)


    class Tabular(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, x):
            return self.net(x)


    def make_cnn():
        torch.manual_seed(0)
        return SmallCNN().eval()


    def make_tabular():
        torch.manual_seed(1)
        return Tabular().eval()
''')


# set by the libraries themselves when first imported or used, not by edgekit: joblib/threadpoolctl
# (scikit-learn's) set the KMP_* pair at import, torch's inductor its cache folder on first use
THIRD_PARTY_ENV = {"KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR"}
THIRD_PARTY_PATH = os.path.join("onnxruntime", "transformers")  # ORT's fp16 converter appends its folder at import


@pytest.fixture()
def two_builds(tmp_path):
    (tmp_path / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "cnn.npz", x=x[:160], y=rng.integers(0, 4, 160), x_train=x[160:])  # unlabeled train split
    xt = rng.standard_normal((200, 10)).astype(np.float32)
    np.savez(tmp_path / "tab.npz", x=xt, y=(xt[:, :3].sum(1) + 0.1 * rng.standard_normal(200)).astype(np.float32))
    (tmp_path / "small_iot.toml").write_text(
        'name = "small_iot"\nextends = "iot"\n[prune]\nmax_ratio = 0.5\nstep = 0.25\n'
        '[budget]\nmax_accuracy_drop = 0.05\n[recover]\nepochs = 1\nbatch_size = 32\n'
        '[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 1.0\nattempt_runs = 20\nattempt_max_seconds = 1.0\n')
    (tmp_path / "half.toml").write_text(
        'name = "half"\nextends = "mobile"\n[target]\nthreads = 1\n[prune]\nmethod = "none"\n[quantize]\nweight_bits = 16\n'
        '[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 1.0\n')
    return [dict(model=f"{tmp_path / 'models.py'}:make_cnn", data=tmp_path / "cnn.npz",
                 profile=tmp_path / "small_iot.toml"),
            dict(model=f"{tmp_path / 'models.py'}:make_tabular", data=tmp_path / "tab.npz",
                 profile=tmp_path / "half.toml", formats=("onnx", "tflite"))]


def summary(result) -> dict:
    """What must not depend on scheduling: the files, their bytes and the numbers measured from them
    (latency and the recommendation it decides are timing, and are left out)."""
    bundle = result.bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    files = {f["file"]: (f["sha256"], f["bytes"], f["metrics"], f["metric_drop"], f["precision_map"])
             for f in manifest["files"]}
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir()
               if p.name not in ("manifest.json", "report.json", "report.md", "report.png", "build.log")}
    comp = report.get("compression") or {}
    attempts = [(a["ratio"], a["drop"], a["verdict"]) for a in comp.get("attempts", [])]
    return {"files": files, "on_disk": on_disk, "attempts": attempts, "ratio": comp.get("ratio"),
            "reference": report["reference"], "gates": sorted((g["name"], g["file"], g["passed"]) for g in
                                                              report["gates"] if g["name"] in ("accuracy", "flash", "ram"))}


def test_two_builds_in_two_threads_match_the_same_builds_in_turn(two_builds, tmp_path):
    threads_before, state_before = torch.get_num_threads(), torch.random.get_rng_state()
    cwd, environ, path = os.getcwd(), dict(os.environ), list(__import__("sys").path)
    sequential = [summary(edgekit.build(**b, out=tmp_path / "seq")) for b in two_builds]
    results, errors = [None, None], []

    def run(i):
        try:
            results[i] = edgekit.build(**two_builds[i], out=tmp_path / "par")
        except Exception as exc:  # reported below, with the build it came from
            errors.append((i, exc))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    parallel = [summary(r) for r in results]
    for seq, par in zip(sequential, parallel):
        assert par == seq
    cnn = sequential[0]
    assert cnn["ratio"] and cnn["ratio"] > 0  # the pruning search (with distillation) really ran
    assert {"models.onnx", "models_int4.onnx", "models.tflite", "models_int8.tflite", "models_int4.tflite",
            "models_model_data.cc"} <= set(cnn["files"])
    assert {"models_fp16.onnx", "models_fp16.tflite"} <= set(sequential[1]["files"])
    # and the process is as it was: torch's threads and RNG, the working folder, the environment, sys.path
    assert torch.get_num_threads() == threads_before and torch.equal(torch.random.get_rng_state(), state_before)
    assert os.getcwd() == cwd
    def ours(paths):
        return [p for p in paths if not p.endswith(THIRD_PARTY_PATH)]
    assert ours(__import__("sys").path) == ours(path)
    changed = {k for k in set(os.environ) | set(environ) if os.environ.get(k) != environ.get(k)}
    assert changed <= THIRD_PARTY_ENV, changed - THIRD_PARTY_ENV
