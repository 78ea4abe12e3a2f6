"""Fixed products of a build (no model, no runtime): six files of five formats with their validation,
bench, export facts, gates and failures, for the golden manifest test (tests/test_record.py)."""
from __future__ import annotations

from edgekit.core.artifact import Artifact
from edgekit.core.attempt import WITHIN, Attempt
from edgekit.core.results import BenchResult, ExportInfo, FormatFailure, McuFacts, TflmCheck, ValidationResult

CPU = {"model": "Test CPU", "flags": ["avx2", "avx512_vnni"], "cores": 2}
IOSPEC = {"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32", "layout": "NCHW"}],
          "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32", "layout": None}]}
OUTPUTS = {"logits": {"task": "distribution (labels)", "drop": 0.0, "cosine": 0.9991, "snr_db": 31.2,
                      "top1_agreement": 0.99, "shape": [1, 10], "within_tolerance": True, "max_abs_diff": 0.01}}


def _validation(file: str, runtime: str, top1: float, drop: float) -> ValidationResult:
    outputs = {"logits": {**OUTPUTS["logits"], "drop": drop}}
    return ValidationResult(file, runtime, {"top1": top1, "cosine": 0.999}, drop, outputs, (), "logits", "host")


def _bench(file: str, runtime: str, p50: float, size: int, rss: float = 3.5) -> BenchResult:
    return BenchResult(file, runtime, 1, 200, 20, p50, p50 * 1.2, p50 * 1.5, p50 * 1.05, p50 * 0.1, 1000 / p50, 32,
                       32000 / p50, 120.0, rss, size, CPU, (), 5.0, p50 * 3, "host", {}, ())


def artifacts() -> list[Artifact]:
    pm = {"conv1": "fp32", "fc": "fp32"}
    q = {"conv1": "int8", "fc": "int8"}
    return [
        Artifact("m.onnx", "onnx", "fp32", "onnxruntime", "a" * 64, 40000, IOSPEC, pm,
                 ExportInfo("torch.onnx.export (dynamo)"), _validation("m.onnx", "onnxruntime", 0.97, 0.0),
                 _bench("m.onnx", "onnxruntime", 0.50, 40000), 36000),
        Artifact("m.int8.onnx", "onnx", "int8", "onnxruntime", "b" * 64, 14000, IOSPEC, q,
                 ExportInfo("onnxruntime.quantization", made_from="m.onnx", chosen="QDQ per-channel", attempts=(
                     Attempt("onnx int8", "QDQ per-channel", weights="ptq", plan="QDQ", drop=0.004, decided_by="logits",
                             snr_db=28.0, measured_in="onnxruntime", p50_ms=0.31, bytes=14000, verdict=WITHIN,
                             chosen=True),)),
                 _validation("m.int8.onnx", "onnxruntime", 0.966, 0.004), _bench("m.int8.onnx", "onnxruntime", 0.31, 14000),
                 9000),
        Artifact("m.int8.tflite", "tflite", "int8", "litert", "c" * 64, 12000, IOSPEC, q,
                 ExportInfo("onnx2tf + TFLiteConverter", made_from="m.onnx"),
                 _validation("m.int8.tflite", "litert", 0.968, 0.002), _bench("m.int8.tflite", "litert", 0.22, 12000),
                 8000),
        Artifact("m_int8.cc", "c_array", "int8", "tflm", "d" * 64, 70000, IOSPEC, q,
                 ExportInfo("c_array", made_from="m.int8.tflite", embeds="m.int8.tflite", flash_bytes=12000,
                            tflm=TflmCheck(True, 20480, note="arena measured"),
                            mcu=McuFacts("g_model", "m_int8.h", "m_int8_ops.h", ("CONV_2D", "FULLY_CONNECTED"),
                                         ("AddConv2D",), (), 20480, 24576)),
                 _validation("m_int8.cc", "tflm", 0.968, 0.002), None, 0),
        Artifact("m.xml", "openvino", "fp32", "openvino", "e" * 64, 41000, IOSPEC, pm,
                 ExportInfo("openvino.convert_model", made_from="m.onnx",
                            runtime_options={"INFERENCE_PRECISION_HINT": "f32"}),
                 _validation("m.xml", "openvino", 0.97, 0.0), _bench("m.xml", "openvino", 0.45, 41000), 0),
        Artifact("m.int8.pte", "executorch", "int8", "executorch", "f" * 64, 15000, IOSPEC, q,
                 ExportInfo("executorch (XNNPACK)", delegation={"delegate": "XnnpackBackend", "delegated_share": 0.97,
                                                                "nodes": 30}),
                 _validation("m.int8.pte", "executorch", 0.90, 0.07), _bench("m.int8.pte", "executorch", 0.60, 15000,
                                                                                rss=9.0), 0),
    ]


def failures() -> list[FormatFailure]:
    return [FormatFailure("tflite", "int4", "quantize tflite int4", "ai-edge-quantizer refused the model")]


SPEED = {"m.int8.onnx": {"p50_by_round": [0.31, 0.30, 0.32],
                         "vs_fp32_twin": {"twin": "m.onnx", "verdict": "faster", "speedup": 1.6},
                         "vs_onnx_fp32": {"verdict": "faster", "speedup": 1.6}},
         "m.onnx": {"p50_by_round": [0.5, 0.5, 0.51], "vs_onnx_fp32": {"verdict": "tied", "speedup": 1.0}}}
