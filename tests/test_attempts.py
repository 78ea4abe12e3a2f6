"""The one Attempt type, the one attempt loop every search runs through, the ladder on top of it and the one
renderer: units with fake passes whose drops are given."""
import json
import time

import pytest

from edgekit.core.attempt import FAILED, OVER, WITHIN, Attempt, mark_chosen, run_attempts
from edgekit.core.errors import StageError, UsageError
from edgekit.core.results import ExportInfo
from edgekit.quantize.ladder import climb
from edgekit.quantize.qat import better
from edgekit.report.attempts import PRUNING, QUANTIZATION, attempts_table, file_attempts


def fake(drops: dict, snrs: dict | None = None, tried: list | None = None):
    """A pass whose drops are given per candidate; None: the attempt fails."""
    def try_one(name: str) -> Attempt:
        if tried is not None:
            tried.append(name)
        if drops[name] is None:
            return Attempt("fake", name, error=f"{name} did not load")
        return Attempt("fake", name, drop=drops[name], snr_db=(snrs or {}).get(name))
    return try_one


def test_the_loop_tries_in_order_and_stops_at_the_first_attempt_within_budget():
    tried = []
    chosen, made = run_attempts(["a", "b", "c", "d"], fake({"a": 0.05, "b": 0.03, "c": 0.01, "d": 0.0}, tried=tried),
                                budget=0.02)
    assert tried == ["a", "b", "c"] and [a.label for a in made] == ["a", "b", "c"]  # "d" never made
    assert chosen is made[2] and chosen.label == "c" and chosen.drop == 0.01
    assert [a.verdict for a in made] == [OVER, OVER, WITHIN] and chosen.passed and not made[0].passed


def test_the_loop_keeps_the_most_accurate_attempt_when_none_is_within_budget():
    chosen, made = run_attempts("abc", fake({"a": 0.05, "b": 0.03, "c": 0.04}), budget=0.02)
    assert [a.label for a in made] == ["a", "b", "c"] and chosen.label == "b" and not chosen.passed
    # the same drop: the higher output SNR; the same drop and SNR (or none): the earlier attempt
    chosen, _ = run_attempts("abc", fake({"a": 0.05, "b": 0.03, "c": 0.03}, {"b": 20.0, "c": 31.5}), budget=0.02)
    assert chosen.label == "c"
    chosen, _ = run_attempts("abc", fake({"a": 0.05, "b": 0.03, "c": 0.03}), budget=0.02)
    assert chosen.label == "b"
    chosen, _ = run_attempts("abc", fake({"a": 0.05, "b": 0.03, "c": 0.03}, {"b": 20.0, "c": 31.5}), budget=0.02,
                             tie_by_snr=False)
    assert chosen.label == "b"  # the ladder's rule: on the same drop, the earlier (fewer layers moved)
    # an attempt made before the loop counts: here it stays the most accurate
    seed = Attempt("fake", "first", drop=0.025).judged(0.02)
    chosen, made = run_attempts("ab", fake({"a": 0.05, "b": 0.03}), budget=0.02, best=seed)
    assert chosen is seed and len(made) == 2
    # without the stop, every candidate is tried and the most accurate is returned
    chosen, made = run_attempts("abc", fake({"a": 0.01, "b": 0.0, "c": 0.5}), budget=0.02, stop_within=False)
    assert len(made) == 3 and chosen.label == "b"


def test_failed_attempts_are_recorded_not_raised_until_every_attempt_fails():
    chosen, made = run_attempts("abc", fake({"a": None, "b": 0.04, "c": None}), budget=0.02)
    assert [a.verdict for a in made] == [FAILED, OVER, FAILED] and chosen.label == "b"
    assert made[0].failed and made[0].drop is None and made[0].error == "a did not load"
    with pytest.raises(StageError) as e:
        run_attempts("ab", fake({"a": None, "b": None}), budget=0.02, stage="quantize fake")
    assert e.value.stage == "quantize fake"
    assert e.value.reason == "every attempt failed (2); the first, a: a did not load"
    with pytest.raises(StageError, match="a did not load$"):
        run_attempts("a", fake({"a": None}), budget=0.02, why_failed=lambda failed: failed[0].error)
    seed = Attempt("fake", "first", drop=0.5).judged(0.02)  # a file already made: failed rungs never raise
    chosen, made = run_attempts("ab", fake({"a": None, "b": None}), budget=0.02, best=seed)
    assert chosen is seed and [a.verdict for a in made] == [FAILED, FAILED]


def test_an_attempt_round_trips_through_its_dict_and_json():
    a = Attempt("onnx int4", "repair: fc1 -> int8 (QAT weights)", float_layers=("fc2",), int8_layers=("fc1", "fc0"),
                group_size=32, weights="qat", plan="4-bit weights, qdq-u8s8", drop=0.0125, decided_by="logits",
                snr_db=24.5, measured_in="onnxruntime", measured_on="ssh://pi@board:22", p50_ms=0.42, bytes=12345,
                seconds=1.5, figures={"macs": 1000}, verdict=OVER, chosen=True, made=object())
    d = a.to_dict()
    assert "made" not in d and d["float_layers"] == ["fc2"] and d["int8_layers"] == ["fc1", "fc0"]
    assert Attempt.from_dict(json.loads(json.dumps(d))) == a  # ``made`` is never compared
    back = Attempt.from_dict(d)
    assert back.int8_layers == ("fc1", "fc0") and back.made is None
    pruned = Attempt("prune", "ratio 0.40", ratio=0.4, error="RuntimeError: shapes", verdict=FAILED)
    assert Attempt.from_dict(pruned.to_dict()) == pruned and pruned.to_dict()["drop"] is None
    with pytest.raises(UsageError, match="unknown attempt key 'nmae'"):
        Attempt.from_dict({"search": "x", "label": "y", "nmae": "z"})
    with pytest.raises(UsageError, match="'passed' is not one of"):
        Attempt("x", "y", verdict="passed")


def test_judging_and_marking_the_chosen_attempt():
    a = Attempt("fake", "a", drop=0.01)
    assert a.judged(0.01).verdict == WITHIN and a.judged(0.005).verdict == OVER
    judged = a.judged(0.01)
    assert judged.judged(0.01) is judged  # judging again keeps the very object (searches compare by identity)
    assert Attempt("fake", "b", drop=float("nan")).judged(1.0).verdict == OVER
    assert Attempt("fake", "c", error="boom").judged(1.0).verdict == FAILED
    twins = [Attempt("fake", "x", drop=0.0), Attempt("fake", "x", drop=0.0)]
    marked = mark_chosen(twins, twins[1])  # equal attempts: only the very object is marked
    assert [m.chosen for m in marked] == [False, True]


def test_the_qat_rung_keeps_ptq_unless_qat_lost_less():
    ptq = Attempt("onnx int8", "qdq-u8s8", drop=0.03, weights="ptq")
    assert better(ptq, Attempt("onnx int8", "qat", drop=0.01, weights="qat")).label == "qat"
    assert better(ptq, Attempt("onnx int8", "qat", drop=0.03, weights="qat")) is ptq  # a tie: PTQ ships
    assert better(ptq, Attempt("onnx int8", "qat", error="export failed")) is ptq
    assert better(ptq, None) is ptq


def _ladder(drops: dict, *, best_drop: float = 0.2, budget: float = 0.02, box: float = 60.0, started=None):
    """The ladder over three layers ranked worst first, on a fake pass whose drops are given per plan."""
    best = Attempt("fake", "defaults", drop=best_drop).judged(budget)
    calls = []

    def attempt(plan: tuple, label: str) -> Attempt:
        calls.append((plan, label))
        drop = drops.get(plan, 0.5)
        if drop is None:
            return Attempt("fake", label, float_layers=plan, error="did not convert")
        return Attempt("fake", label, float_layers=plan, drop=drop)

    result = climb((), ["fc1", "fc2", "fc3"], ["float"], lambda plan, layer, level: plan + (layer,), attempt, budget,
                   best=best, started=time.perf_counter() if started is None else started, time_box_s=box,
                   name=str.upper)
    return best, calls, result


def test_climb_moves_layers_up_one_at_a_time_until_an_attempt_is_within_budget():
    best, calls, (chosen, made, notes) = _ladder({("fc1",): 0.1, ("fc1", "fc2"): 0.01, ("fc1", "fc2", "fc3"): 0.0})
    assert [label for _, label in calls] == ["repair: FC1 -> float", "repair: FC2 -> float"]
    assert [a.float_layers for a in made] == [("fc1",), ("fc1", "fc2")] and chosen is made[1]
    assert chosen.passed and notes == ["repaired: FC2 moved to float; drop 0.0100"]


def test_climb_keeps_the_most_accurate_attempt_and_says_the_gap_when_no_rung_is_within_budget():
    best, calls, (chosen, made, notes) = _ladder({("fc1",): 0.1, ("fc1", "fc2"): None, ("fc1", "fc2", "fc3"): 0.1})
    assert len(made) == 3 and made[1].verdict == FAILED
    assert chosen is made[0]  # 0.1 twice: the earlier rung, fewer layers moved
    assert notes == ["repair could not meet the budget: best drop 0.1000 (gap 0.0800)"]
    best, _, (chosen, made, notes) = _ladder({}, best_drop=0.3)  # every rung loses 0.5: the file before stays
    assert chosen is best and len(made) == 3 and "best drop 0.3000" in notes[0]


def test_climb_stops_at_its_time_box():
    best, calls, (chosen, made, notes) = _ladder({("fc1",): 0.0}, box=1.0, started=time.perf_counter() - 5)
    assert calls == [] and made == [] and chosen is best
    assert notes[0] == "repair stopped at its 1 s time box" and "gap 0.1800" in notes[1]


def test_export_info_carries_typed_attempts_and_serialises_them_in_one_shape():
    made = (Attempt("onnx int8", "qdq-u8s8", drop=0.004, snr_db=28.0, p50_ms=0.31, bytes=14000, verdict=WITHIN,
                    chosen=True),
            Attempt("onnx int8", "qoperator-u8s8", error="ORT cannot load it", verdict=FAILED))
    info = ExportInfo("onnxruntime.quantization", made_from="m.onnx", details={"plan": "x"}, attempts=made,
                      chosen="qdq-u8s8")
    d = info.to_dict()
    assert d["chosen"] == "qdq-u8s8" and d["attempts"] == [a.to_dict() for a in made] and d["plan"] == "x"
    assert "attempts" not in ExportInfo("torch.onnx.export").to_dict()
    assert info.with_details(measured_on="host").attempts == made
    lines = file_attempts(info.attempts, info.chosen)
    assert lines[0] == "- quantization attempts (chosen: qdq-u8s8):"
    assert lines[4] == "  | qdq-u8s8 | +0.0040 | 28.0 | 0.310 | 14000 | - | - |"
    assert lines[5] == "  | qoperator-u8s8 | failed: ORT cannot load it | - | - | - | - | - |"
    assert file_attempts((), None) == []
    assert [Attempt.from_dict(t) for t in d["attempts"]] == list(made)  # report.json reads back


def test_the_renderer_draws_the_pruning_attempts():
    rows = [Attempt("prune", "ratio 0.50", ratio=0.5, drop=0.031, decided_by="logits", measured_in="torch (...)",
                    seconds=2.5, figures={"ratio_reached": 0.52, "params_torch": 1200}, verdict=OVER),
            Attempt("prune", "ratio 0.25", ratio=0.25, drop=0.001, decided_by="logits", measured_in="onnxruntime",
                    bytes=9000, seconds=3.0, figures={"ratio_reached": 0.27, "params_torch": 1900, "params": 1900,
                                                      "macs": 5000, "zip_bytes": 8000}, verdict=WITHIN, chosen=True),
            Attempt("prune", "ratio 0.12", ratio=0.125, error="RuntimeError: view", measured_in="failed: it broke",
                    seconds=0.5, verdict=FAILED)]
    lines = attempts_table(rows, PRUNING)
    assert lines[0] == "| ratio | params cut | drop | decided by | measured in | params | MACs | zip bytes | passed | seconds |"
    assert lines[2] == "| 0.50 | 52% | +0.0310 | logits | torch (...) | 1200 | - | - | no | 2.5 |"
    assert lines[3] == "| 0.25 | 27% | +0.0010 | logits | onnxruntime | 1900 | 5000 | 8000 | yes | 3.0 |"
    assert lines[4] == "| 0.12 | - | - | - | failed: it broke: RuntimeError: view | - | - | - | no | 0.5 |"
    assert attempts_table(rows[:1], QUANTIZATION, indent="  ")[1] == "  |---|---|---|---|---|---|---|"
