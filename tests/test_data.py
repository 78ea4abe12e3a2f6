import numpy as np
import pytest

from edgekit.core.data import detect_task, prepare, read_arrays
from edgekit.core.errors import UsageError
from edgekit.core.iospec import IOSpec, TensorSpec

IMG = IOSpec((TensorSpec("image", ("batch", 1, 8, 8), "float32", "NCHW"),), (TensorSpec("logits", ("batch", 3), "float32"),))
TWO = IOSpec((TensorSpec("features", ("batch", 4), "float32"), TensorSpec("tokens", ("batch", 5), "int64")),
             (TensorSpec("score", ("batch", 2), "float32"),))
REG = IOSpec((TensorSpec("x", ("batch", 6), "float32"),), (TensorSpec("y", ("batch", 1), "float32"),))


def _img(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 1, 8, 8)).astype(np.float32), "y": rng.integers(0, 3, n)}


def test_default_split_and_overrides():
    d = prepare(_img(100), IMG, source="t")
    assert (len(d.calibration), len(d.validation)) == (25, 75)
    assert d.task == "classification" and d.validation.labels.dtype == np.int64
    d = prepare(_img(100), IMG, source="t", calib_samples=10, val_samples=30)
    assert (len(d.calibration), len(d.validation)) == (10, 30)
    # splits are disjoint and deterministic
    again = prepare(_img(100), IMG, source="t", calib_samples=10, val_samples=30)
    np.testing.assert_array_equal(d.validation.inputs["image"], again.validation.inputs["image"])


def test_empty_split_is_refused():
    with pytest.raises(UsageError, match="need at least 1 sample each \\(got 0 and 100\\)"):
        prepare(_img(100), IMG, source="t", calib_samples=0)


def test_split_too_big():
    with pytest.raises(UsageError, match="100 samples cannot give 60 for calibration and 60"):
        prepare(_img(100), IMG, source="t", calib_samples=60, val_samples=60)


def test_small_data_notes_counts():
    d = prepare(_img(20), IMG, source="t")
    assert any("only 5 calibration samples" in n for n in d.notes)


def test_named_arrays_and_int64():
    rng = np.random.default_rng(0)
    arrays = {"features": rng.standard_normal((40, 4)), "tokens": rng.integers(0, 50, (40, 5)).astype(np.int32)}
    d = prepare(arrays, TWO, source="t")
    assert d.task == "generic"
    assert d.validation.inputs["features"].dtype == np.float32 and d.validation.inputs["tokens"].dtype == np.int64


def test_extra_arrays_are_named_in_a_note():
    arrays = _img(40)
    arrays["mask"] = np.zeros(40)
    assert "arrays not used by the model and ignored: mask" in prepare(arrays, IMG, source="t").notes


def test_float_tokens_rejected():
    arrays = {"features": np.zeros((4, 4)), "tokens": np.zeros((4, 5), np.float32)}
    with pytest.raises(UsageError, match="array 'tokens' is float32 but model input 'tokens' takes integers"):
        prepare(arrays, TWO, source="t")


def test_wrong_shape_names_array_and_input():
    arrays = {"x": np.zeros((10, 1, 7, 8), np.float32)}
    with pytest.raises(UsageError, match=r"array 'x' has samples of shape \(1, 7, 8\) but model input 'image' expects \(1, 8, 8\)"):
        prepare(arrays, IMG, source="bad.npz")


def test_nan_is_an_error():
    arrays = _img(10)
    arrays["x"][3, 0, 0, 0] = np.nan
    arrays["x"][4, 0, 0, 0] = np.inf
    with pytest.raises(UsageError, match="array 'x' has 2 NaN/Inf values"):
        prepare(arrays, IMG, source="t")


def test_missing_input_array():
    with pytest.raises(UsageError, match="no array for model input.*tokens"):
        prepare({"features": np.zeros((4, 4))}, TWO, source="t")


def test_label_count_mismatch():
    arrays = _img(10)
    arrays["y"] = arrays["y"][:7]
    with pytest.raises(UsageError, match="disagree on the number of samples: x=10, y=7"):
        prepare(arrays, IMG, source="t")


def test_task_detection_and_override():
    assert detect_task(np.array([0, 2, 1]), IMG) == "classification"
    assert detect_task(np.array([0.0, 2.0, 1.0]), IMG) == "classification"
    assert detect_task(np.array([0, 7, 1]), IMG) == "regression"  # 7 is no class of a 3-way output
    assert detect_task(np.array([0.5, 1.2]), REG) == "regression"
    assert detect_task(None, IMG) == "generic"
    d = prepare(_img(40), IMG, source="t", task="regression")
    assert d.task == "regression" and d.task_detected == "classification"
    with pytest.raises(UsageError, match="needs labels"):
        prepare({"x": _img(40)["x"]}, IMG, source="t", task="classification")


def test_train_split():
    arrays = _img(40)
    arrays.update(x_train=_img(30, 1)["x"], y_train=_img(30, 1)["y"])
    d = prepare(arrays, IMG, source="t")
    assert len(d.train) == 30 and d.train.labels is not None


def test_read_arrays_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        read_arrays(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="bad.npz is not a readable .npz/.npy of plain arrays"):
        read_arrays(tmp_path / "bad.npz")
    np.save(tmp_path / "one.npy", np.ones((3, 2)))
    assert read_arrays(tmp_path / "one.npy")["x"].shape == (3, 2)
