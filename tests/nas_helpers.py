"""A deterministic scorer for the search's unit tests: figures follow from the candidate's size, so the
study's bookkeeping (storage, budget, constraints, front, promotion) is tested without the converters."""
from __future__ import annotations

import time

import numpy as np
import optuna
import pytest

import edgekit

from edgekit.archsearch.evaluate import Measured
from edgekit.core.errors import StageError
from edgekit.targets.profiles import load_profile


class SizeScorer:
    """metric = params / (params + 2000) (bigger is more accurate), p90 = params / 1e5 ms; a candidate
    with ``fail_params`` parameters fails its export; each measurement holds for ``hold_s``."""
    format, precision = "tflite", "int8"

    def __init__(self, profile, hold_s: float = 0.0, fail_params: int | None = None):
        self.profile, self.hold_s, self.fail_params = profile, hold_s, fail_params
        self.calls: list[str] = []

    def measure(self, module, arrays, name, *, val_samples=None) -> Measured:
        self.calls.append(name)
        params = sum(p.numel() for p in module.parameters())
        if self.fail_params is not None and params == self.fail_params:
            raise StageError("export tflite", f"{name}: converter refused it")
        time.sleep(self.hold_s)
        metric = round(params / (params + 2000), 6)
        res = next(v.shape[2] for k, v in arrays.items() if v.ndim == 4)
        p90 = params / 1e5 + res * 1e-3
        return Measured(f"{name}_int8.tflite", "tflite", "int8", "litert", metric, metric + 0.001, 0.001,
                        p90 * 0.9, p90, p90 * 1.2, params, params // 2, True, params, 0.01, "test cpu")


def tiny_digits(size: int = 8) -> dict[str, np.ndarray]:
    """scikit-learn's digits at 8x8 (or resized), standardised, split 70/30."""
    from sklearn.datasets import load_digits

    from edgekit.archsearch.trainer import resized, search_arrays

    d = load_digits()
    x = ((d.images / 16.0 - 0.2) / 0.3).astype(np.float32)[:, None]
    arrays = search_arrays({"x": x, "y": d.target.astype(np.int64)}, "digits")
    return resized(arrays, size) if size != 8 else arrays


@pytest.fixture(autouse=True)
def own_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOST_LOCK_DIR", str(tmp_path / "locks"))


def run(tmp_path, profile="iot", **kw):
    prof = load_profile(profile) if isinstance(profile, str) else profile
    kw.setdefault("trials", 3)
    kw.setdefault("grid", "none")
    kw.setdefault("promote_k", 0)
    kw.setdefault("proxy_epochs", 1)
    scorer = kw.pop("scorer", None) or SizeScorer(prof)
    return edgekit.nas(data=tiny_digits(), profile=prof, out=tmp_path / "out", evaluator=scorer,
                       train_threads=1, **kw), scorer


def load(result):
    from edgekit.archsearch.storage import open_storage

    return optuna.load_study(study_name=result.study, storage=open_storage(result.storage, result.folder)[0])
