"""apps/mcu: the C array's ops header (resolver list, arena, I/O quantization), `make check` compiling it
with g++ alone, and the same bytes running in the tflite-micro Python interpreter inside that very arena."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.export.tflm_resolver import TFLM_METHODS, resolver_methods, with_margin, write_ops_header
from edgekit.files.tflite_info import read_tflite

APP = Path(__file__).resolve().parents[1] / "apps" / "mcu"
# the digits CNN's ops, by hand from tensorflow/lite/micro/micro_mutable_op_resolver.h (not from TFLM_METHODS)
DIGITS_METHODS = {"QUANTIZE": "AddQuantize", "PAD": "AddPad", "CONV_2D": "AddConv2D", "ADD": "AddAdd",
                  "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "MEAN": "AddMean", "TRANSPOSE": "AddTranspose",
                  "RESHAPE": "AddReshape", "FULLY_CONNECTED": "AddFullyConnected", "DEQUANTIZE": "AddDequantize"}


@pytest.fixture(scope="module")
def mcu_build(int8_io_build):
    """The example built with int8 I/O (conftest), so the header's quantization constants are real ones:
    the BuildResult, the C array's Artifact and the .tflite it embeds."""
    c = next(a for a in int8_io_build.artifacts if a.format == "c_array")
    return int8_io_build, c, int8_io_build.bundle / c.export.embeds


def _make_check(bundle: Path, build: Path) -> dict:
    assert shutil.which("make") and shutil.which("g++"), "apps/mcu's check needs make and g++"
    run = subprocess.run(["make", "-s", "-C", str(APP), "check", f"BUNDLE={bundle}", f"BUILD={build}"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def _litert(data: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    return interp


@pytest.mark.slow
def test_make_check_prints_the_resolver_list_arena_and_quantization(mcu_build, tmp_path):
    result, c, embedded = mcu_build
    details = c.export.mcu.to_dict()
    bundle = result.bundle
    assert details["ops_header"] == "digits_cnn_model_ops.h" and (bundle / details["ops_header"]).is_file()
    ops = list(dict.fromkeys(read_tflite(embedded).ops))
    assert details["ops"] == ops and details["resolver_methods"] == [DIGITS_METHODS[op] for op in ops]
    got = _make_check(bundle, tmp_path)
    assert got["model"] == "digits_cnn" and got["ops"] == ops
    assert got["methods"] == [DIGITS_METHODS[op] for op in ops]  # what the template really called, in order
    assert got["calls"] == got["op_count"] == len(ops) and got["failed"] == 0 and got["failed_when_refused"] == len(ops)
    measured = details["arena_bytes"]
    assert got["arena_measured_bytes"] == measured == c.export.tflm.arena_bytes  # the measure stage agrees
    assert got["arena_bytes"] == details["arena_bytes_with_margin"] == with_margin(measured)
    assert measured * 1.1 + 1024 <= got["arena_bytes"] < measured * 1.1 + 2048 and got["arena_bytes"] % 1024 == 0
    mcu = next(f for f in json.loads((bundle / "manifest.json").read_text())["files"] if f["file"] == c.file)["mcu"]
    assert mcu["arena_bytes_with_margin"] == got["arena_bytes"] and mcu["resolver_methods"] == got["methods"]
    assert got["data_len"] == embedded.stat().st_size and got["data_aligned16"] is True
    interp = _litert(embedded.read_bytes())
    for side, want in (("inputs", interp.get_input_details()), ("outputs", interp.get_output_details())):
        assert len(got[side]) == len(want)
        for g, w in zip(got[side], want):
            scale, zero = w["quantization"]
            assert g["dtype"] == np.dtype(w["dtype"]).name == "int8" and g["tflite_type"] == 9
            assert np.float32(g["scale"]) == np.float32(scale) and scale > 0 and g["zero_point"] == zero
            assert g["shape"] == list(w["shape"]) and g["elements"] == int(np.prod(w["shape"]))


@pytest.mark.slow
def test_the_array_runs_in_tflite_micro_inside_the_headers_arena(mcu_build):
    from edgekit.examples import digits
    from edgekit.runtimes.tflm import import_tflm

    result, c, embedded = mcu_build
    text = (result.bundle / c.file).read_text()
    data = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", text[text.index("[] = {"):]))
    assert data == embedded.read_bytes()
    runtime = import_tflm()
    measured, arena = c.export.mcu.arena_bytes, c.export.mcu.arena_bytes_with_margin
    with pytest.raises(RuntimeError):  # the measured figure is tight: 1 KiB less does not allocate
        runtime.Interpreter.from_bytes(data, arena_size=measured - 1024)
    tflm = runtime.Interpreter.from_bytes(data, arena_size=arena)  # exactly the header's constant
    ref = _litert(data)
    (inp,), (out,) = ref.get_input_details(), ref.get_output_details()
    scale, zero = inp["quantization"]
    x = digits.load_arrays()["x"][:150].transpose(0, 2, 3, 1)  # held-out digits, in the file's NHWC
    q = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    micro, lite = [], []
    for sample in q:
        tflm.set_input(sample[None], 0)
        tflm.invoke()
        micro.append(int(np.argmax(tflm.get_output(0))))
        ref.set_tensor(inp["index"], sample[None])
        ref.invoke()
        lite.append(int(np.argmax(ref.get_tensor(out["index"]))))
    assert micro == lite
    assert np.mean(np.array(lite) == digits.load_arrays()["y"][:150]) > 0.9  # and they are digits, not noise


@pytest.mark.slow
def test_float_io_files_get_scale_zero_constants(mcu_build, tmp_path):
    result, _, _ = mcu_build
    fp32 = result.bundle / "digits_cnn.tflite"
    details = write_ops_header(tmp_path, "digits_cnn", fp32, "fp32", "g_digits_cnn_model_data",
                               "digits_cnn_model_data.h")
    text = (tmp_path / "digits_cnn_model_ops.h").read_text()
    assert "constexpr float kDigitsCnnInputScale[] = {0.0f};" in text
    assert 'constexpr const char* kDigitsCnnInputDtype[] = {"float32"};' in text
    assert "QUANTIZE" not in details["ops"] and details["arena_bytes"] > 0


def test_an_op_the_name_table_lacks_is_left_unregistered_by_name():
    assert resolver_methods(["CONV_2D", "FULLY_CONNECTED"]) == (["AddConv2D", "AddFullyConnected"], [])
    assert resolver_methods(["CONV_2D", "GELU", "CUSTOM:MyOp", "GELU"]) == (["AddConv2D"], ["GELU", "CUSTOM:MyOp"])


def test_the_name_table_uses_real_builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    assert {op for op in TFLM_METHODS if not op.startswith("CUSTOM:")} <= builtins
    assert all(re.fullmatch(r"Add[A-Z][A-Za-z0-9]*", m) for m in TFLM_METHODS.values())
    assert len(set(TFLM_METHODS.values())) == len(TFLM_METHODS)
    assert with_margin(74768) == 83968 and with_margin(1024) == 3072  # +10 %, up to a KiB, +1 KiB


@pytest.mark.slow
def test_the_header_names_an_op_it_cannot_register(mcu_build, tmp_path, monkeypatch):
    """No method name is guessed: with MEAN taken out of the name table, the op is listed as unregistered in
    the header and the details (the manifest carries them), and the resolver is sized for it so the firmware
    can add its kernel by hand."""
    _, _, embedded = mcu_build
    monkeypatch.delitem(TFLM_METHODS, "MEAN")
    details = write_ops_header(tmp_path, "odd", embedded, "int8", "g_odd_model_data", "odd_model_data.h")
    text = (tmp_path / "odd_model_ops.h").read_text()
    assert details["unregistered_ops"] == ["MEAN"] and "AddMean" not in details["resolver_methods"]
    assert "// UNREGISTERED: MEAN has no MicroMutableOpResolver method" in text and "r.AddMean()" not in text
    assert f"constexpr int kOddOpCount = {len(details['ops'])};" in text and "kOddUnregisteredOps = 1;" in text
    assert len(details["resolver_methods"]) == len(details["ops"]) - 1


@pytest.mark.slow
def test_a_header_of_another_version_stops_the_build_with_a_clear_message(mcu_build, tmp_path):
    result, c, _ = mcu_build
    bundle = tmp_path / "invalid-bundle"
    bundle.mkdir()
    for name in (c.file, c.export.mcu.header, c.export.mcu.ops_header):
        shutil.copy(result.bundle / name, bundle / name)
    header = bundle / c.export.mcu.ops_header
    header.write_text(header.read_text().replace("#define EDGEKIT_OPS_HEADER_VERSION 1", "#define EDGEKIT_OPS_HEADER_VERSION 2"))
    run = subprocess.run(["make", "-s", "-C", str(APP), "check", f"BUNDLE={bundle}", f"BUILD={tmp_path / 'build'}"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "this harness reads edgekit's ops header version 1" in run.stderr, run.stderr
