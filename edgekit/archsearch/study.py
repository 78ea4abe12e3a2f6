"""The search loop: ask Optuna for a candidate, measure it untrained, train it briefly, measure it again,
tell the study. Several processes (on one host or several) may run this loop on one shared study.

- **Budget.** ``trials`` is a global count: a worker counts the study's trials (every state but waiting)
  and asks for the next one inside the host's short lock, so workers on one host never overshoot it.
  (Optuna's ``MaxTrialsCallback`` counts after a trial ends, which lets every other worker start one
  more; the rule here is the same count taken before asking.) Workers on other hosts take the same
  count without a shared lock and may each add one trial past it. ``time_budget_s`` stops this worker
  from starting trials after that long.
- **Early stop.** Optuna's pruners are single-objective, so the rule is edgekit's own: after the first
  epoch, a candidate whose held-out metric is ``margin`` below the median first-epoch metric of at least
  two finished trials of similar latency (p90 within 1.5x of its untrained p90) is pruned. The first epoch
  of a short one-cycle recipe is still warming up, so the margin is wide (0.20): in six 15-trial studies of
  the digits example, trials up to 0.09 below that median still finished on their study's front. The rule
  holds when the worker has a time budget, where the time a stopped trial saves buys more trials. Under a
  trial count alone it would buy none, and a stopped trial has no values for the sampler to learn from (the
  GP proposed stopped candidates again), so every trial runs to the end.
- **Region.** With ``region`` (the hypervolume's reference point: a metric floor and a p90 ceiling), a
  trained trial outside it is infeasible to the sampler (constraint ``region``): it adds nothing to the
  hypervolume, so TPE models the candidates that do. The front and ``trials.csv`` judge the budgets only.
- **Resume.** A trial left running by a worker that died on this host is marked failed when the next
  worker starts, so the same command resumes a stopped search.
"""
from __future__ import annotations

import os
import socket
import statistics
import time
from dataclasses import dataclass
from typing import Callable

from ..core.errors import StageError, UsageError, one_line
from .evaluate import Evaluator, Measured
from .hostlock import HostLock
from .space import Space, candidate
from .trainer import Recipe, TrainingFailed, fit, resized

CONSTRAINTS = ("flash_kb", "p90_ms", "arena_kb", "drop")
PRECHECK = ("flash_kb", "p90_ms", "arena_kb")  # what an untrained candidate can already break


@dataclass(frozen=True)
class Loop:
    """What one worker needs besides the study."""
    space: Space
    arrays: dict
    input_names: list
    task: str
    evaluator: Evaluator
    recipe: Recipe
    seed: int
    train_threads: int
    lock: HostLock
    trials: int | None
    time_budget_s: float | None
    margin: float = 0.20
    progress: Callable[[dict], None] | None = None
    region: tuple[float, float] | None = None


def constraint_values(m: Measured, profile) -> dict[str, float]:
    """Each budget as Optuna reads a constraint: <= 0 holds. A budget the profile does not set is -1."""
    b = profile.budget
    tflm = "tflm" in profile.target.runtimes and m.tflm_loads is not None
    arena = None
    if tflm and b.ram_kb is not None:
        arena = 1e9 if m.arena_bytes is None else m.arena_bytes / 1024 - b.ram_kb
    return {"flash_kb": -1.0 if b.flash_kb is None else m.bytes / 1024 - b.flash_kb,
            "p90_ms": -1.0 if b.p90_latency_ms is None else m.p90_ms - b.p90_latency_ms,
            "arena_kb": -1.0 if arena is None else arena,
            "drop": m.drop - b.max_accuracy_drop}


def set_constraints(trial, values: dict[str, float]) -> None:
    """The budget margins, for the sampler (Optuna's constraints: <= 0 holds) and in ``user_attrs``."""
    values = {k: float(values.get(k, -1.0)) for k in CONSTRAINTS}
    for key, value in values.items():
        trial.set_constraint(key, value)
    trial.set_user_attr("constraints", values)


def set_region(trial, region: tuple[float, float] | None, m: Measured) -> None:
    """For the sampler only: outside the region (a metric floor, a p90 ceiling) a trial adds no
    hypervolume. Every measured trial gets the constraint, as a GP sampler needs the same names on all."""
    if region is not None:
        floor, ceiling = region
        trial.set_constraint("region", max(floor - m.metric, m.p90_ms - ceiling))


def seed_study(study, grid: list[dict], lock: HostLock) -> int:
    """Enqueue the baseline grid once per study (the first worker does it)."""
    with lock.short():
        if study.user_attrs.get("seeded"):
            return 0
        for params in grid:
            study.enqueue_trial(params, user_attrs={"seed": "grid"}, skip_if_exists=True)
        study.set_user_attr("seeded", True)
    return len(grid)


def reap_stale(study) -> int:
    """Mark failed the trials a dead worker on this host left running."""
    import optuna

    host, reaped = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or _alive(pid):
            continue
        optuna.trial.Trial(study, t._trial_id).set_user_attr("failed_reason", f"its worker (pid {pid}) stopped")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        reaped += 1
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_worker(study, loop: Loop) -> list[int]:
    """Run trials until the global budget or this worker's time is spent; the trial numbers it ran."""
    import optuna

    started, ran = time.time(), []
    waiting = optuna.trial.TrialState.WAITING
    while True:
        if loop.time_budget_s is not None and time.time() - started >= loop.time_budget_s:
            break
        with loop.lock.short():
            reap_stale(study)
            counted = [t for t in study.get_trials(deepcopy=False) if t.state != waiting]
            if loop.trials is not None and len(counted) >= loop.trials:
                break
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
        ran.append(trial.number)
        first = len(loop.lock.spans)
        try:
            state, values = run_trial(study, trial, loop)
        finally:
            if study.get_trials(deepcopy=False)[trial.number].state.name == "RUNNING":
                trial.set_user_attr("lock_spans", [list(s) for s in loop.lock.spans[first:]])
        study.tell(trial, values, state=state)
        if loop.progress is not None:
            loop.progress({"trial": trial.number, "state": state.name, "values": values, "started": started,
                           "budget_s": loop.time_budget_s, "trials": loop.trials, "study": study})
    return ran


def run_trial(study, trial, loop: Loop):
    """(state, values) of one trial; every figure goes to ``trial.user_attrs``."""
    import optuna

    states = optuna.trial.TrialState
    t0 = time.perf_counter()
    ev, prof = loop.evaluator, loop.evaluator.profile
    try:
        module, resolution = candidate(loop.space, trial, loop.seed)
        trial.set_user_attr("resolution", resolution)
        arrays = resized(loop.arrays, resolution)
        n_held = len(arrays["y"])
        check_val = max(1, min(64, n_held - min(256, max(1, n_held // 4))))
        with loop.lock.bench():
            pre = ev.measure(module, arrays, f"t{trial.number}-untrained", val_samples=check_val)
        _store(trial, "untrained", pre)
        trial.set_user_attr("untrained_p90_ms", pre.p90_ms)
        broken = {k: v for k, v in constraint_values(pre, prof).items() if k in PRECHECK and v > 0}
        if broken:
            trial.set_user_attr("stage", "precheck")
            set_constraints(trial, broken)
            set_region(trial, loop.region, pre)
            trial.set_user_attr("broke", sorted(broken))
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
            return states.COMPLETE, [pre.metric, pre.p90_ms]

        def after_epoch(epoch: int, score: float) -> bool:
            trial.set_user_attr(f"epoch{epoch + 1}_metric", round(score, 5))
            if epoch != 0 or loop.recipe.epochs < 2 or loop.time_budget_s is None:
                return True
            peers = [t.user_attrs["epoch1_metric"] for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,))
                     if t.user_attrs.get("stage") == "trained" and "epoch1_metric" in t.user_attrs
                     and pre.p90_ms / 1.5 <= t.user_attrs.get("untrained_p90_ms", -1) <= pre.p90_ms * 1.5]
            if len(peers) >= 2 and score < statistics.median(peers) - loop.margin:
                trial.set_user_attr("pruned_reason", f"epoch-1 metric {score:.3f} is more than {loop.margin:g} below "
                                    f"the median {statistics.median(peers):.3f} of {len(peers)} trials of similar latency")
                return False
            return True

        training = fit(module, arrays, loop.input_names, loop.task, loop.recipe, seed=loop.seed,
                       threads=loop.train_threads, guard=loop.lock.train, after_epoch=after_epoch)
        trial.set_user_attr("train", training)
        if "pruned_reason" in trial.user_attrs:
            trial.set_user_attr("stage", "pruned")
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
            return states.PRUNED, None
        with loop.lock.bench():
            m = ev.measure(module, arrays, f"t{trial.number}")
        _store(trial, "", m)
        trial.set_user_attr("stage", "trained")
        limits = constraint_values(m, prof)
        set_constraints(trial, limits)
        set_region(trial, loop.region, m)
        trial.set_user_attr("broke", sorted(k for k, v in limits.items() if v > 0))
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        return states.COMPLETE, [m.metric, m.p90_ms]
    except UsageError as exc:
        trial.set_user_attr("failed_reason", str(exc))
        study.tell(trial, state=states.FAIL)
        raise
    except (StageError, TrainingFailed) as exc:
        reason = str(exc)
    except KeyboardInterrupt:
        trial.set_user_attr("failed_reason", "interrupted")
        study.tell(trial, state=states.FAIL)
        raise
    except Exception as exc:  # a candidate the pipeline cannot handle: recorded, the search goes on
        reason = one_line(exc)
    trial.set_user_attr("failed_reason", reason[:500])
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
    return states.FAIL, None


def _store(trial, prefix: str, m: Measured) -> None:
    for key, value in m.attrs().items():
        trial.set_user_attr(f"{prefix}_{key}" if prefix else key, value)
