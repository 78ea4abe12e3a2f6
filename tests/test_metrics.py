import numpy as np
import pytest

from edgekit.core.metrics import agreement, metric_drop, task_metrics


def test_classification_numbers():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    ref = logits.copy()
    ref[3] = [0.0, 4.0, 0.0]
    m = task_metrics("classification", logits, np.array([0, 1, 2, 1]), ref)
    assert m["top1"] == pytest.approx(0.75)
    assert m["top1_agreement"] == pytest.approx(0.75)
    assert metric_drop("classification", {"top1": 1.0}, m) == pytest.approx(0.25)


def test_regression_numbers():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([[1.5], [2.0], [2.5], [4.0]])
    m = task_metrics("regression", pred, labels, pred)
    assert m["mae"] == pytest.approx(0.25)
    assert m["r2"] == pytest.approx(1 - 0.5 / 5.0)


def test_generic_agreement():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    out = np.array([[1.0, 0.1], [0.0, 2.0]])
    a = agreement(out, ref)
    assert a["max_abs_diff"] == pytest.approx(0.1)
    assert a["snr_db"] == pytest.approx(10 * np.log10(5.0 / 0.01))
    assert a["cosine"] == pytest.approx((1 / np.sqrt(1.01) + 1) / 2)
    assert metric_drop("generic", {}, a) == pytest.approx(1 - a["cosine"])
    assert agreement(ref, ref)["snr_db"] == float("inf")
