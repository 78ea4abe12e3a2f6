"""The typed build record: to_manifest() gives the manifest of before the record, byte for byte (golden), and a
schema-valid one; to_report() the same report.json; the verdict answers "can this model ship?"."""
import json
import types
from pathlib import Path

import pytest

from apps_helpers import schema_problems
from edgekit.core.record import BuildRecord, Comparison, FileSpeed, Note, ReferenceSummary
from edgekit.core.results import Gate
from edgekit.measure.gates import evaluate, verdict
from edgekit.measure.recommend import fastest_for_target, recommend
from edgekit.pipeline import finish
from edgekit.targets.profiles import load_profile
from record_fixture import SPEED, artifacts, failures

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_record.json").read_text())
PLANNED = {"onnx": {"fp32": None, "int8": None}, "tflite": {"int8": None, "int4": "int8"}, "c_array": {"fp32": None},
           "openvino": {"fp32": None}, "executorch": {"int8": None}}
ALL = ("onnx", "tflite", "c_array", "openvino", "executorch")


def _speed() -> dict[str, FileSpeed]:
    def cmp(d):
        return Comparison(d["speedup"], d["verdict"], twin=d.get("twin")) if d else None
    return {f: FileSpeed(tuple(s["p50_by_round"]), cmp(s.get("vs_fp32_twin")), cmp(s.get("vs_onnx_fp32")))
            for f, s in SPEED.items()}


def _record(monkeypatch, arts=None, formats=ALL, strict=False, prof=None) -> BuildRecord:
    monkeypatch.setattr(finish.os, "cpu_count", lambda: 2)  # the golden was made on 2 cores (the oversubscribed note)
    prof = prof or load_profile("mobile")
    arts = arts if arts is not None else artifacts()
    gates = evaluate(prof, arts, failures=failures(), planned={k: v for k, v in PLANNED.items() if k in formats})
    bad = {g.file for g in gates if g.passed is False}
    recommended = recommend(arts, prof.budget.max_accuracy_drop, _speed(), bad)
    dataset = types.SimpleNamespace(notes=("a data note",), summary=lambda: {
        "source": "d.npz", "task": "classification", "task_detected": "classification", "calibration": 64,
        "validation": 200, "train": 0, "train_kind": None, "labels": True, "notes": ["a data note"]})
    source = types.SimpleNamespace(name="m", origin="m.py:make", loader="factory", kind="torch",
                                   iospec=types.SimpleNamespace(to_dict=lambda: arts[0].iospec),
                                   meta={"labels": [str(i) for i in range(10)],
                                         "preprocessing": {"input": "x", "steps": [], "layout": "NCHW"}})
    return BuildRecord(
        bundle=Path("out/m-mobile"), source=finish.source_summary(source), profile=prof,
        data=finish.data_summary(dataset), reference=ReferenceSummary({"top1": 0.97}, "classification"),
        artifacts=tuple(arts), gates=tuple(gates),
        verdict=verdict(gates, arts, formats, recommended, prof.target.runtimes, strict),
        formats_requested=("onnx", "tflite"), overrides={"target.threads": 1}, failures=tuple(failures()),
        speed=_speed(), recommended=recommended, fastest=fastest_for_target(arts, gates, prof.target.runtimes, _speed()),
        pending=("format 'x': skipped",), notes=finish.notes(prof, dataset, arts, None, None, None),
        build_seconds=12.5, versions={}, edgekit="0.1.0")


def _without_new_profile_key(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    assert doc["profile"]["budget"].pop("strict_gates") is False  # the one key the record's profile gained
    return _here(doc)


def _here(doc: dict) -> dict:
    """The profile's source path names the checkout it was read from: compare its file name."""
    doc["profile"]["source"] = Path(doc["profile"]["source"]).name
    return doc


def test_manifest_is_the_golden_byte_for_byte_and_schema_valid(monkeypatch):
    record = _record(monkeypatch)
    manifest = _without_new_profile_key(record.to_manifest())
    assert json.dumps(manifest, indent=2) == json.dumps(_here(GOLDEN["manifest"]), indent=2)
    assert schema_problems(record.to_manifest()) == []


def test_report_is_the_golden_plus_the_verdict(monkeypatch):
    report = _without_new_profile_key(_record(monkeypatch).to_report())
    assert report.pop("verdict") == {"passed": False, "rule": "what ships", "shipped_despite": [],
                                     "reasons": ["format executorch: no file meets every gate (accuracy gate MISSED "
                                                 "on m.int8.pte: 0.07 drop vs limit 0.01 drop (measured on host))"]}
    assert report == _here(json.loads(json.dumps(GOLDEN["report"])))


def test_notes_are_typed_and_a_device_drops_the_oversubscribed_one(monkeypatch):
    record = _record(monkeypatch)
    assert [n.kind for n in record.notes][:2] == ["data", "oversubscribed"]
    arts = [a for a in artifacts() if a.bench is None]  # nothing timed on the host: every timed file ran there
    device = types.SimpleNamespace(where="ssh://pi@board", info={"uname_m": "aarch64", "cpu": {"model": "A72"}})
    kinds = [n.kind for n in finish.notes(load_profile("mobile"), types.SimpleNamespace(notes=()), arts, device,
                                          "compression skipped: x", {"time": 64})]
    assert kinds == ["device", "compression", "shape"]
    with pytest.raises(ValueError, match="note kind must be one of"):
        Note("gossip", "x")


def _slow_fp32(arts):
    """The fp32 ONNX file misses p90 (as the held-out CNN at 4 threads on 2 cores does); the rest meet every gate."""
    from dataclasses import replace
    fp32 = arts[0]
    slow = replace(fp32, bench=replace(fp32.bench, p90_ms=17.6, p50_ms=15.0))
    return [slow] + [a for a in arts[1:3]]


def test_verdict_ships_when_every_format_has_a_file_within_every_gate(monkeypatch):
    record = _record(monkeypatch, arts=_slow_fp32(artifacts()), formats=("onnx", "tflite"))
    missed = [(g.name, g.file) for g in record.failed_gates]
    assert ("p90_latency", "m.onnx") in missed
    assert record.passed and record.verdict.shipped_despite == ("m.onnx",)
    assert record.recommended_for("onnxruntime").file == "m.int8.onnx"  # the slow file is never recommended
    strict = _record(monkeypatch, arts=_slow_fp32(artifacts()), formats=("onnx", "tflite"), strict=True)
    assert not strict.passed and any("p90_latency gate MISSED on m.onnx" in r for r in strict.verdict.reasons)


def test_verdict_fails_naming_a_format_none_of_whose_files_meets_the_gates(monkeypatch):
    arts = _slow_fp32(artifacts())
    only_slow_onnx = [arts[0], arts[2]]  # no int8 ONNX file: the one ONNX file misses p90
    record = _record(monkeypatch, arts=only_slow_onnx, formats=("onnx", "tflite"))
    assert not record.passed
    assert record.verdict.reasons[0].startswith("format onnx: no file meets every gate (")


def test_strict_gates_comes_from_the_profile_too():
    from edgekit.pipeline.options import BuildOptions
    from edgekit.targets.profiles import with_overrides

    prof = with_overrides(load_profile("mobile"), {"budget.strict_gates": True})
    assert BuildOptions().strict(prof) is True
    assert BuildOptions(strict_gates=False).strict(prof) is False
    assert BuildOptions().strict(load_profile("mobile")) is False


def test_gate_type_lives_in_core():
    g = Gate("p90_latency", "m.onnx", 17.6, 15.0, "ms", False, measured_on="host")
    assert "p90_latency gate MISSED on m.onnx: 17.6 ms vs limit 15 ms" in g.describe()
