"""edgekit nas, its bookkeeping: storage, resume, the global budget, constraints, the front, the
hypervolume, promotion and --pick, with a deterministic scorer (real training, no converters)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from edgekit.archsearch.evaluate import Measured
from edgekit.archsearch.promote import Promoted, choose, spearman, spread, to_promote
from edgekit.archsearch.results import Point, front, hypervolume
from edgekit.archsearch.space import builtin_space, candidate, example_params
from edgekit.archsearch.study import CONSTRAINTS, constraint_values
from edgekit.core.errors import UsageError
from edgekit.targets.profiles import load_profile, with_overrides

from nas_helpers import SizeScorer, load, own_lock_dir, run, tiny_digits  # noqa: F401 (the fixture)

HERE = Path(__file__).parent




def test_default_storage_is_sqlite_and_the_same_command_resumes(tmp_path):
    first, _ = run(tmp_path, trials=3)
    assert first.storage.startswith("sqlite:///") and (first.folder / "study.db").is_file()
    before = {t.number: t.params for t in load(first).trials}
    second, scorer = run(tmp_path, trials=5)
    trials = load(second).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert {t.number: t.params for t in trials[:3]} == before  # the first three are kept, not re-run
    assert second.ran == [3, 4] and len(scorer.calls) == 4  # untrained + trained per new trial
    for name in ("trials.csv", "pareto.json", "pareto.png"):
        assert (second.folder / name).stat().st_size > 0
    rows = (second.folder / "trials.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("number,state,stage")


def test_every_figure_is_kept_in_user_attrs_and_feasible_trials_make_the_front(tmp_path):
    result, _ = run(tmp_path, trials=4)
    study = load(result)
    for t in study.trials:
        assert t.state.name == "COMPLETE"
        for key in ("p50_ms", "p90_ms", "p99_ms", "bytes", "arena_bytes", "metric", "metric_fp32", "seconds", "cpu",
                    "untrained_p90_ms", "train", "constraints", "resolution"):
            assert key in t.user_attrs, key
        assert t.values == [t.user_attrs["metric"], t.user_attrs["p90_ms"]]
        assert t.constraints == t.user_attrs["constraints"] and set(t.constraints) == set(CONSTRAINTS)  # what the sampler reads
    expected = front([Point(t.number, t.values[0], t.values[1], t.params, t.user_attrs) for t in study.trials])
    assert [p["trial"] for p in result.front] == [p.number for p in expected]
    assert 0 < result.hypervolume < 1


def test_the_hypervolume_region_steers_the_sampler_not_the_front(tmp_path):
    inside, _ = run(tmp_path / "in", trials=3, hv_reference=(0.0, 1e9))
    outside, _ = run(tmp_path / "out", trials=3, hv_reference=(2.0, 1e9))  # no metric reaches 2: none counts
    for result, sign in ((inside, -1), (outside, 1)):
        for t in load(result).trials:
            assert t.constraints["region"] * sign > 0 and "region" not in t.user_attrs["constraints"]
    assert [p["trial"] for p in outside.front] == [p["trial"] for p in inside.front] and outside.front
    assert outside.hypervolume == 0.0 < inside.hypervolume


def test_the_gp_sampler_models_the_trials_after_the_design_with_every_constraint_named(tmp_path):
    """The Gaussian-process sampler needs the same constraint names on every trial: a candidate the
    precheck rejects gets the region constraint too, and the trials after the seeds are the GP's."""
    from edgekit.archsearch.api import STARTUP_TRIALS

    prof = with_overrides(load_profile("iot"), {"budget.p90_latency_ms": 1.0})  # the example (1.0, 8) breaks it
    result, _ = run(tmp_path, profile=prof, trials=STARTUP_TRIALS + 2, grid="design", sampler="gp",
                    hv_reference=(0.5, 1.0))
    trials = load(result).trials
    assert len(trials) == STARTUP_TRIALS + 2 and all(t.state.name == "COMPLETE" for t in trials)
    assert any(t.user_attrs["stage"] == "precheck" for t in trials[:STARTUP_TRIALS])
    names = {tuple(sorted(t.constraints)) for t in trials}
    assert names == {tuple(sorted((*CONSTRAINTS, "region")))}
    modelled = [t.number for t in trials if "gp:relative_params:0" in t.system_attrs]
    assert modelled == [STARTUP_TRIALS, STARTUP_TRIALS + 1]
    assert isinstance(trials[-1].params["width"], float) and isinstance(trials[-1].params["depth"], int)
    assert "s0_scale" not in trials[-1].params  # 7 trials: the compound form, 6 parameters
    summary = json.loads((result.folder / "pareto.json").read_text())
    assert summary["sampler"] == "gp" and summary["space_form"] == "compound"
    with pytest.raises(UsageError, match="nas option sampler must be one of auto, tpe, gp, got 'bo'"):
        run(tmp_path / "bad", sampler="bo")


def test_auto_takes_the_gp_for_a_short_builtin_search_and_tpe_otherwise():
    from edgekit.archsearch.api import sampler_for
    from edgekit.archsearch.space import Space

    space = builtin_space(1, 10, 32)  # resolutions 16/24/32: the grid has 15 members
    user = Space("nets.py:space", space.make, False)
    assert [sampler_for("auto", space, n) for n in (15, 29, 30, None)] == ["gp", "gp", "tpe", "tpe"]
    assert sampler_for("auto", user, 15) == "tpe" and sampler_for("tpe", space, 15) == "tpe"


def test_a_budget_an_untrained_candidate_breaks_is_recorded_without_training(tmp_path):
    prof = with_overrides(load_profile("iot"), {"budget.p90_latency_ms": 1.0})
    result, scorer = run(tmp_path, profile=prof, trials=4, grid="full")  # the example's width 1.0 is too slow
    trials = [t for t in load(result).trials if t.state.name != "WAITING"]  # one grid member is left unrun
    assert len(trials) == 4
    slow = [t for t in trials if t.user_attrs.get("stage") == "precheck"]
    assert slow, [t.values for t in trials]
    for t in slow:
        assert t.user_attrs["broke"] == ["p90_ms"] and "train" not in t.user_attrs and t.values[1] > 1.0
    assert len(slow) == 1 and all(p["p90_ms"] <= 1.0 for p in result.front)
    assert sum(1 for c in scorer.calls if not c.endswith("untrained")) == len(trials) - len(slow)


def test_the_builtin_space_holds_the_example_and_a_short_search_starts_from_a_design():
    from edgekit.archsearch.api import grid_seeds
    from edgekit.archsearch.space import architecture
    from edgekit.examples import digits

    space = builtin_space(1, 10, 32)
    module, resolution = candidate(space, example_params(1.0, 32), 0)
    shipped = digits.load_model().module  # width 1.0 at full resolution is the shipped example, layer for layer
    assert resolution == 32 and [p.shape for p in module.parameters()] == [p.shape for p in shipped.parameters()]
    narrow = architecture({**example_params(0.25, 32), "s3_scale": 2.0, "head_scale": 0.5})
    assert narrow == {"stem": 8, "channels": [8, 16, 16, 48], "head": 32,  # multiples of 8, per stage
                      "depths": [1, 2, 2, 2], "expand": [4] * 4, "kernels": [3] * 4}
    wider, _ = candidate(space, {**example_params(0.25, 32), "s3_scale": 2.0}, 0)
    assert sum(p.numel() for p in wider.parameters()) > sum(p.numel() for p in candidate(space, example_params(0.25, 32), 0)[0].parameters())
    short = grid_seeds("auto", (16, 24, 32), 32, 15)  # 15 trials: the example, the four corners, the centre
    assert [(p["width"], p["resolution"]) for p in short] == [(1.0, 32), (0.25, 32), (0.25, 16), (1.0, 16), (0.5, 24)]
    full = grid_seeds("auto", (16, 24, 32), 32, None)  # a time budget: the whole grid, the example first
    assert len(full) == 15 and full[0] == example_params(1.0, 32) and grid_seeds("auto", (16, 24, 32), 32, 30) == full
    assert {(p["width"], p["resolution"]) for p in full} == {(w, r) for w in (0.25, 0.35, 0.5, 0.75, 1.0)
                                                             for r in (16, 24, 32)}
    study = optuna.create_study(directions=["maximize", "minimize"])
    for params in short:
        study.enqueue_trial(params)
    for params in short:  # every seed is a point of the space the sampler searches
        trial = study.ask()
        space.make(trial)
        assert trial.params == params and trial.user_attrs["architecture"] == architecture(params)
        study.tell(trial, [0.5, 1.0])


def test_the_compound_form_ties_the_stages_and_holds_the_same_grid():
    from edgekit.archsearch.api import grid_seeds
    from edgekit.archsearch.space import architecture, per_stage

    compound = builtin_space(1, 10, 32, "compound")
    per = builtin_space(1, 10, 32)
    for w in (0.25, 0.5, 1.0):  # the grid's nets are the same nets in either form
        assert per_stage(example_params(w, 24, "compound")) == example_params(w, 24)
        a, _ = candidate(compound, example_params(w, 24, "compound"), 0)
        b, _ = candidate(per, example_params(w, 24), 0)
        assert [t.shape for t in a.parameters()] == [t.shape for t in b.parameters()]
    shallow = {**example_params(1.0, 16, "compound"), "depth": 1, "expand": 6, "kernel": 5}
    assert architecture(shallow)["depths"] == [1, 1, 1, 1] and architecture(shallow)["kernels"] == [5] * 4
    assert architecture({**shallow, "depth": 3})["depths"] == [2, 3, 3, 3]
    module, _ = candidate(compound, shallow, 0)
    blocks = [m for m in module.features if type(m).__name__ == "InvertedResidual"]
    assert len(blocks) == 4 and blocks[0].block[3].kernel_size == (5, 5)  # one block per stage, depthwise 5x5
    short = grid_seeds("auto", (16, 24, 32), 32, 15, "compound")
    study = optuna.create_study(directions=["maximize", "minimize"])
    for params in short:
        study.enqueue_trial(params)
        trial = study.ask()
        compound.make(trial)
        assert trial.params == params and set(params) == {"resolution", "width", "depth", "expand", "kernel",
                                                          "head_scale"}
        study.tell(trial, [0.5, 1.0])


def test_a_study_keeps_the_form_it_was_started_with(tmp_path):
    short, _ = run(tmp_path, trials=2)  # tiny digits: one resolution, a 5-member grid; 2 trials is short
    assert json.loads((short.folder / "pareto.json").read_text())["space_form"] == "compound"
    again, _ = run(tmp_path, trials=None, time_budget_s=0.5)  # resumed with a time budget: still compound
    assert {tuple(sorted(t.params)) for t in load(again).trials} == {
        ("depth", "expand", "head_scale", "kernel", "resolution", "width")}
    with pytest.raises(UsageError, match="searches the compound form"):
        run(tmp_path, trials=4, form="per-stage")
    long, _ = run(tmp_path / "long", trials=None, time_budget_s=0.5, form="auto")  # a time budget: per stage
    assert "s3_kernel" in load(long).trials[0].params
    stages, _ = run(tmp_path / "stages", trials=1, form="per-stage")
    assert "s3_kernel" in load(stages).trials[0].params
    with pytest.raises(UsageError, match="nas option form must be one of auto, per-stage, compound, got 'sideways'"):
        run(tmp_path / "bad", form="sideways")
    with pytest.raises(UsageError, match="the built-in space has forms"):
        run(tmp_path / "bad", space="nets.py:space", form="compound")


def test_image_shifts_scale_with_the_resolution(monkeypatch):
    """The recipe's shift is a share of the height: at most 2 px at 32 px, 1 px at 16 px, none at 8 px."""
    import torch

    from edgekit.archsearch.trainer import Recipe, fit

    seen, roll = [], torch.roll

    def recording_roll(t, shifts, dims):
        seen.extend(abs(s) for s in shifts)
        return roll(t, shifts, dims)

    monkeypatch.setattr(torch, "roll", recording_roll)
    largest = {}
    for size in (32, 16, 8):
        seen.clear()
        arrays = tiny_digits(size)
        module, _ = candidate(builtin_space(1, 10, size), example_params(0.25, size), 0)
        fit(module, arrays, ["x"], "classification", Recipe(1), seed=0, threads=1)
        largest[size] = max(seen, default=0)
    assert largest == {32: 2, 16: 1, 8: 0}  # 1/16 of the height: 2 and 1 px are both drawn over 40 batches


def test_constraint_values_and_their_order():
    prof = load_profile("stm32h743")
    m = Measured("f", "tflite", "int8", "litert", 0.95, 0.97, 0.02, 1, 2, 3, 1536 * 1024 + 1024, 400 * 1024, True,
                 10, 1.0, "cpu")
    values = constraint_values(m, prof)
    assert values["flash_kb"] == pytest.approx(1.0) and values["arena_kb"] == pytest.approx(16.0)
    assert values["p90_ms"] == pytest.approx(2 - 20.0) and values["drop"] == pytest.approx(0.0, abs=1e-12)
    no_tflm = Measured(*m.__dict__.values())
    assert constraint_values(no_tflm, load_profile("mobile"))["arena_kb"] == -1.0  # mobile sets no arena budget
    unloadable = Measured(**{**m.__dict__, "arena_bytes": None, "tflm_loads": False})
    assert constraint_values(unloadable, prof)["arena_kb"] > 1e8

    assert list(values) == list(CONSTRAINTS)


def test_front_and_hypervolume_by_hand():
    pts = [Point(0, 0.90, 0.5, {}, {}), Point(1, 0.95, 1.0, {}, {}), Point(2, 0.85, 0.8, {}, {}),
           Point(3, 0.95, 1.5, {}, {})]
    assert [p.number for p in front(pts)] == [0, 1]
    # box from (metric 1, p90 0) to (0, 2 ms): point 0 covers 0.9 x 0.75, point 1 adds 0.05 x 0.5
    assert hypervolume(front(pts), (0.0, 2.0)) == pytest.approx(0.9 * 0.75 + 0.05 * 0.5)
    assert hypervolume(front(pts), (0.5, 2.0)) == pytest.approx((0.4 * 0.75 + 0.05 * 0.5) / 0.5)
    assert hypervolume([Point(4, 0.4, 3.0, {}, {})], (0.5, 2.0)) == 0.0


def promoted(trial, metric, p90, size, ok=True, proxy=None):
    return Promoted(trial, {}, proxy if proxy is not None else metric, p90,
                    {"metric": metric, "p90_ms": p90, "bytes": size},
                    {k: (-1.0 if ok else 1.0) for k in CONSTRAINTS})


def test_promotion_spreads_along_the_front():
    pts = [Point(i, 0.8 + i * 0.02, 0.01 * (i + 1), {}, {}) for i in range(8)]  # faster is less accurate
    assert [p.number for p in spread(pts, 1)] == [7]
    assert [p.number for p in spread(pts, 3)] == [7, 4, 0]
    assert [p.number for p in spread(pts, 5)] == [7, 5, 4, 2, 0]
    assert [p.number for p in spread(pts, 20)] == list(range(7, -1, -1)) and spread(pts, 0) == []
    assert [p.number for p in to_promote(pts, 3)] == [7, 4, 0]  # a front of 8 holds 3
    # a front of 2 (10, 11) and a second layer behind it (0-7, each dominated by 10 or 11): 5 come from both
    short = pts + [Point(10, 0.99, 0.005, {}, {}), Point(11, 0.999, 0.05, {}, {})]
    picked = [p.number for p in to_promote(short, 5)]
    assert picked[:2] == [11, 10] and sorted(picked[2:]) == [0, 4, 7] and len(set(picked)) == 5
    assert [p.number for p in to_promote(short, 20)] == [11, 10, 7, 6, 5, 4, 3, 2, 1, 0]


def test_pick_and_rank_correlation():
    members = [promoted(3, 0.99, 0.05, 3000), promoted(5, 0.97, 0.02, 2000), promoted(8, 0.995, 0.01, 1000, ok=False),
               promoted(9, 0.98, 0.03, 1500)]
    assert choose(members, "best").trial == 3
    assert choose(members, "fastest").trial == 5
    assert choose(members, "smallest").trial == 9
    assert choose(members, "8").trial == 8  # asked for by number: given, budgets or not
    with pytest.raises(UsageError, match="trial 4 was not promoted"):
        choose(members, "4")
    assert choose([promoted(1, 0.9, 1, 1, ok=False)], "best") is None
    assert spearman([promoted(1, 0.9, 1, 1, proxy=0.5), promoted(2, 0.95, 1, 1, proxy=0.6),
                     promoted(3, 0.97, 1, 1, proxy=0.7)]) == 1.0
    assert spearman(members[:2]) is None


@pytest.mark.slow
def test_promotion_trains_the_best_members_and_builds_the_pick(tmp_path):
    prof = with_overrides(load_profile("iot"), {"prune.method": "none", "quantize.weight_bits": 8})
    result, scorer = run(tmp_path, profile=prof, trials=4, promote_k=2, final_epochs=1, pick="fastest")
    finals = [c for c in scorer.calls if c.endswith("-final")]
    assert len(finals) == 2 and len(result.promoted) == 2
    by_p90 = sorted(result.front, key=lambda p: p["p90_ms"])
    ends = {by_p90[0]["trial"], by_p90[-1]["trial"]}  # two promoted: the most accurate and the fastest
    assert {p["trial"] for p in result.promoted} == ends and len(result.front) >= 2
    assert result.chosen == min(result.promoted, key=lambda p: p["final_p90_ms"])["trial"]
    manifest = __import__("json").loads((result.bundle / "manifest.json").read_text())
    assert {f["format"] for f in manifest["files"]} >= {"onnx", "tflite", "c_array"}
    assert manifest["passed"] == result.bundle_passed
    summary = __import__("json").loads((result.folder / "pareto.json").read_text())
    assert summary["chosen"] == result.chosen and summary["bundle"] == str(result.bundle)
    assert (result.folder / "data-8.npz").is_file()


def test_the_global_budget_counts_every_worker_and_stale_trials_are_reaped(tmp_path):
    result, _ = run(tmp_path, trials=2)
    study = load(result)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = study.ask()
    left.set_user_attr("host", __import__("socket").gethostname())
    left.set_user_attr("pid", dead.pid)
    again, _ = run(tmp_path, trials=4)
    trials = load(again).trials
    assert len(trials) == 4 and trials[2].state.name == "FAIL"
    assert "stopped" in trials[2].user_attrs["failed_reason"] and again.ran == [3]


def test_a_failing_candidate_is_recorded_and_the_search_goes_on(tmp_path):
    prof = load_profile("iot")
    space = builtin_space(1, 10, 8)
    first = example_params(1.0, 8)
    module, _ = candidate(space, first, 0)
    scorer = SizeScorer(prof, fail_params=sum(p.numel() for p in module.parameters()))
    result, _ = run(tmp_path, trials=3, grid="baseline", scorer=scorer)
    trials = load(result).trials
    assert trials[0].state.name == "FAIL" and "converter refused it" in trials[0].user_attrs["failed_reason"]
    assert [t.state.name for t in trials[1:]] == ["COMPLETE", "COMPLETE"]


def test_early_stop_prunes_a_candidate_far_below_its_latency_peers(tmp_path):
    result, _ = run(tmp_path, trials=1, grid="baseline")
    study = load(result)
    p90 = study.trials[0].user_attrs["untrained_p90_ms"]
    for n in range(2):  # two finished peers of the same latency whose first epoch reached 0.999
        study.add_trial(optuna.trial.create_trial(
            params=study.trials[0].params, distributions=study.trials[0].distributions, values=[0.999, p90],
            user_attrs={"stage": "trained", "epoch1_metric": 0.999, "untrained_p90_ms": p90,
                        "constraints": {k: -1.0 for k in CONSTRAINTS}}))
    study.enqueue_trial(study.trials[0].params)
    again, _ = run(tmp_path, trials=4, time_budget_s=600, proxy_epochs=2, grid="baseline")
    pruned = load(again).trials[3]
    assert pruned.state.name == "PRUNED" and "below the median 0.999" in pruned.user_attrs["pruned_reason"]
    assert pruned.user_attrs["train"]["epochs_run"] == 1
    study.enqueue_trial(study.trials[0].params)
    again, _ = run(tmp_path, trials=5, proxy_epochs=2, grid="baseline")  # a trial count alone: no early stop
    full = load(again).trials[4]
    assert full.state.name == "COMPLETE" and full.user_attrs["train"]["epochs_run"] == 2
    assert full.user_attrs["epoch1_metric"] == pruned.user_attrs["epoch1_metric"]  # the same first epoch


def test_journal_storage_and_bad_storage(tmp_path):
    result, _ = run(tmp_path, trials=2, storage=f"journal:{tmp_path / 'study.log'}")
    assert (tmp_path / "study.log").stat().st_size > 0 and len(load(result).trials) == 2
    with pytest.raises(UsageError, match="cannot be opened"):
        run(tmp_path, storage="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(UsageError, match="does not exist"):
        run(tmp_path, storage=f"journal:{tmp_path / 'missing' / 'study.log'}")


OPEN_NEW_STUDY = """
import sys, optuna
from pathlib import Path
from edgekit.archsearch.storage import open_storage, open_study
storage, url = open_storage(None, Path(sys.argv[1]))
open_study(storage, url, "s", optuna.samplers.RandomSampler())
"""


def test_workers_starting_together_create_one_sqlite_study(tmp_path):
    """Workers started at the same moment on a new SQLite file race on its schema (Alembic's version table);
    without the creation lock about one in four of them fails here."""
    for round_ in range(3):
        folder = tmp_path / f"r{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_NEW_STUDY, str(folder)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errs
        assert len(optuna.get_all_study_summaries(f"sqlite:///{folder / 'study.db'}")) == 1


def test_two_workers_share_one_study(tmp_path):
    """Two processes on one SQLite study: unique trial numbers, the global budget held, and no benchmark
    overlapping another benchmark or a training (the spans each worker held the host lock for)."""
    env = {**os.environ, "EDGEKIT_HOST_LOCK_DIR": str(tmp_path / "locks"),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    script = (HERE / "nas_worker.py").as_posix()
    procs = [subprocess.Popen([sys.executable, script, str(tmp_path / "out"), "8"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = [set(map(int, o[0].split())) for o in outs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both worked, never on the same trial
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'out' / 'shared' / 'study.db'}")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(8)) and ran[0] | ran[1] == set(numbers)
    spans = [(t.user_attrs["pid"], kind, a, b) for t in study.trials for kind, a, b in t.user_attrs["lock_spans"]]
    assert {s[0] for s in spans} == {p.pid for p in procs}
    benches = [s for s in spans if s[1] == "bench"]
    expected = sum(1 if t.user_attrs["stage"] == "precheck" else 2 for t in study.trials)  # untrained, trained
    assert len(benches) == expected >= 9 and any(s[1] == "train" for s in spans)
    for pid, _, a, b in benches:
        for other in spans:
            if other[0] != pid:
                assert b <= other[2] or other[3] <= a, f"bench {a:.3f}-{b:.3f} overlaps {other}"
