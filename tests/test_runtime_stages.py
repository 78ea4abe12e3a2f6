"""Export, validation, bench and gates on a tiny model, each stage alone, in the real runtimes."""
import io

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.files.precision import onnx_precision_map
from edgekit.measure.bench import bench_file, noise_notes
from edgekit.core.data import prepare
from edgekit.core.errors import UsageError, ValidationFailed
from edgekit.export.onnx import export_onnx
from edgekit.targets.formats import Tolerance, format_table, get_format, parse_formats
from edgekit.sources.load import load_model
from edgekit.measure.validate import reference_outputs, validate_file


@pytest.fixture()
def tiny(user_models, tiny_data, tmp_path):
    model = load_model(f"{user_models}:make_tiny")
    with np.load(tiny_data) as z:
        data = prepare(dict(z), model.iospec, source=str(tiny_data))
    path = tmp_path / "tiny.onnx"
    info = export_onnx(model, path, io.StringIO())
    return model, data, path, info


def test_export_has_named_io_and_dynamic_batch(tiny):
    model, _, path, info = tiny
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["output"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert info["dynamic_batch"] is True and "torch.export" in info["exporter"]
    assert onnx_precision_map(path) == {"stem": "fp32", "body": "fp32", "head": "fp32"}


def test_validation_in_onnxruntime(tiny):
    model, data, path, _ = tiny
    ref = reference_outputs(model, data)
    v = validate_file(path, ref, data, Tolerance(1e-4, 1e-3))
    assert v.runtime == "onnxruntime" and not v.failures
    assert v.metrics["top1_agreement"] == 1.0 and v.drop == pytest.approx(0.0, abs=1e-9)
    assert v.outputs["output"]["max_abs_diff"] < 1e-4 and v.outputs["output"]["shape"] == [90, 3]


def test_validation_collects_every_failure(tiny, tmp_path):
    model, data, path, _ = tiny
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:  # corrupt the head: outputs drift far beyond tolerance
        if init.name == "head.weight":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 3.0, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    ref = reference_outputs(model, data)
    with pytest.raises(ValidationFailed) as err:
        validate_file(bad, ref, data, Tolerance(1e-4, 1e-3))
    assert err.value.exit_code == 3 and "output 'output'" in str(err.value) and "values off by up to" in str(err.value)
    v = validate_file(bad, ref, data, Tolerance(1e-4, 1e-3), raise_on_failure=False)
    assert v.metrics["top1_agreement"] < 1.0 and len(v.failures) == 1


def test_bench_in_a_fresh_process(tiny):
    _, data, path, _ = tiny
    r = bench_file(path, threads=1, warmup=3, runs=30, batch=8, max_seconds=5,
                   inputs={k: v[:1] for k, v in data.validation.inputs.items()})
    assert r.runs == 30 and r.runtime == "onnxruntime" and r.threads == 1
    assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
    assert r.batch == 8 and r.throughput_batch > 0 and r.throughput_b1 == pytest.approx(1000 / r.mean_ms)
    assert 0 < r.rss_growth_mb < r.peak_rss_mb < 2000
    assert r.file_bytes == path.stat().st_size and r.cpu["cores"] >= 1


def test_noise_note():
    quiet = {"std_ms": 0.1, "mean_ms": 1.0, "p50_ms": 1.0, "p99_ms": 1.3, "runs": 200}
    noisy = {"std_ms": 0.6, "mean_ms": 1.0, "p50_ms": 1.0, "p99_ms": 3.5, "runs": 200}
    assert noise_notes(quiet) == []
    assert "noisy machine" in noise_notes(noisy)[0] and "3.5x p50" in noise_notes(noisy)[0]
    assert "only 40 of 200 timed runs fit" in noise_notes(dict(quiet, runs=40), requested_runs=200)[0]
    assert "40 timed runs: p99 is rough" in noise_notes(dict(quiet, runs=40))[0]


def test_bench_corrupt_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    with pytest.raises(UsageError, match="ONNX Runtime cannot load it"):
        bench_file(tmp_path / "bad.onnx")


def test_format_table_matches_exporters():
    from edgekit.export import EXPORTERS

    table = format_table()
    assert {fmt for fmt, _ in EXPORTERS} <= set(table)
    assert get_format("onnx").runtime == "onnxruntime" and get_format("onnx").suffix == ".onnx"
    assert parse_formats("onnx") == ("onnx",) and parse_formats("ONNX, tflite") == ("onnx", "tflite")
    with pytest.raises(UsageError, match="names no format"):
        parse_formats(" , ")
    with pytest.raises(UsageError, match="unknown format 'onxx'.*did you mean 'onnx'"):
        parse_formats("onxx")


def test_a_profiles_min_seconds_and_repeat_hold_for_host_benches(user_models, tiny_data, tmp_path):
    import edgekit

    prof = tmp_path / "long.toml"
    prof.write_text('name = "long"\nextends = "iot"\n[target]\nformats = ["onnx"]\n[prune]\nmethod = "none"\n'
                    '[quantize]\nweight_bits = 8\n[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmin_seconds = 0.3\nrepeat = 2\n')
    result = edgekit.build(f"{user_models}:make_tiny", data=tiny_data, profile=prof, out=tmp_path / "out")
    fp32 = next(a for a in result.artifacts if a.precision == "fp32")
    # two rounds of at least 0.3 s of wall time each: a tiny MLP runs far more than the 2 x 20 runs asked for.
    # The summed run times are that wall time less the loop's own cost (two clock reads and an append per
    # 0.05 ms run, ~5% here): 20 runs alone would sum to ~1 ms, far below the bound.
    assert fp32.bench.runs > 10 * 2 * 20 and fp32.bench.runs * fp32.bench.mean_ms >= 2 * 300 * 0.8
    assert any("p50 of each of the 2 rounds" in n for n in fp32.bench.notes)
