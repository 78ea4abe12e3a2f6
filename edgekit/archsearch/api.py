"""``edgekit.nas()``: search, write the study's outputs, promote, pick, build the bundle."""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..core.errors import UsageError
from .hostlock import HostLock
from .options import NasOptions, with_settings
from .promote import build_bundle, choose, promote, spearman, to_promote
from .results import front, hypervolume, plot, points, trials_summary, write_pareto_json, write_trials_csv
from .space import WIDTHS, design_params, example_params, space_for
from .storage import open_storage, open_study
from .study import CONSTRAINTS, Loop, run_worker, seed_study
from .trainer import Recipe, image_info, search_arrays

if TYPE_CHECKING:
    from ..measure.gates import Gate

STARTUP_TRIALS = 5  # random trials (seeded ones count) before the sampler models the rest; Optuna's default is 10


@dataclass(frozen=True)
class NasResult:
    """A search's outcome. Its verdict is here, never raised: ``passed`` is False when no trial held every
    budget or no promoted member held them after full training (``missed`` says why), or when the chosen
    member's bundle missed a gate (``bundle_passed`` False, ``failed_gates`` the gates it missed)."""
    study: str
    folder: Path
    storage: str
    counts: dict[str, int]
    front: list[dict]
    hypervolume: float
    reference_point: tuple[float, float]
    promoted: list[dict] = field(default_factory=list)
    spearman: float | None = None
    chosen: int | None = None
    bundle: Path | None = None
    bundle_passed: bool | None = None
    ran: list[int] = field(default_factory=list)
    missed: str | None = None
    failed_gates: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.missed is None and self.bundle_passed is not False


def nas(space: str = "builtin", options: NasOptions | None = None, *, evaluator=None,
        progress: Callable[[dict], None] | None = None, **settings) -> NasResult:
    """Search ``space`` ('builtin' or FILE.py:FUNC) as ``options`` (a ``NasOptions``) say; see the README
    ("edgekit nas"). Keyword settings are a convenience: ``nas(space, trials=20)`` is
    ``nas(space, NasOptions(trials=20))``, and with ``options`` they replace its fields.

    ``evaluator`` replaces the pipeline scorer (an object with ``profile`` and ``measure(module, arrays, name,
    *, val_samples=None)`` returning ``evaluate.Measured``): tests use a deterministic one. ``progress``
    receives an event per trial, promotion and build stage.
    """
    opts = with_settings(options, settings)
    try:
        import optuna
    except ImportError:
        raise UsageError("edgekit nas needs Optuna, which is not installed: pip install 'edgekit[nas]'") from None
    if opts.form != "auto" and space != "builtin":
        raise UsageError(f"--space-form {opts.form}: the built-in space has forms; {space} is searched as it is "
                         "written")
    prof = opts.device_profile()
    arrays, meta, data_name = _arrays(opts.data, opts.seed)
    channels, size, classes = image_info(arrays)
    the_space = space_for(space, channels, classes, size)
    name = opts.study or f"{Path(space.rpartition(':')[2] or space).name}-{prof.name}"
    folder = Path(opts.out) / name
    store, url = open_storage(opts.storage, folder)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = sampler_for(opts.sampler, the_space, opts.trials)
    the_study = open_study(store, url, name, make_sampler(sampler, opts.seed))
    folder.mkdir(parents=True, exist_ok=True)
    lock = HostLock()
    if the_space.builtin:
        the_space = space_for(space, channels, classes, size, study_form(the_study, opts.form, opts.trials, the_space,
                                                                         lock))
    if the_space.builtin and opts.grid != "none":
        seed_study(the_study, grid_seeds(opts.grid, the_space.resolutions, size, opts.trials, the_space.form), lock)
    log = io.StringIO()
    input_names = [k for k in arrays if k not in ("y", "y_train") and not k.endswith("_train")]
    task = "classification" if arrays["y"].dtype.kind in "iu" else "regression"
    with tempfile.TemporaryDirectory(prefix="edgekit-nas-") as scratch, _tf_worker(log, evaluator) as tf:
        if evaluator is None:
            from .evaluate import Evaluator

            evaluator = Evaluator(prof, Path(scratch), tf, log, meta)
        loop = Loop(the_space, arrays, input_names, task, evaluator, Recipe(opts.proxy_epochs), opts.seed,
                    opts.train_threads or max(1, os.cpu_count() or 1), lock, opts.trials, opts.budget_s,
                    progress=progress, region=opts.hv_reference)
        try:
            ran = run_worker(the_study, loop)
        finally:
            (folder / "nas.log").write_text(log.getvalue())
        all_trials = the_study.get_trials(deepcopy=False)
        pts = points(all_trials)
        members = front(pts)
        ref = opts.hv_reference or _reference(all_trials, prof)
        hv = hypervolume(members, ref)
        summary = {"study": name, "storage": url, "profile": prof.name, "space": space, "sampler": sampler,
                   "space_form": the_space.form if the_space.builtin else None,
                   "data": data_name,
                   "scored": {"format": evaluator.format, "precision": evaluator.precision} if hasattr(evaluator, "format") else {},
                   "counts": trials_summary(all_trials), "hypervolume": round(hv, 6), "reference_point": list(ref),
                   "proxy_recipe": Recipe(opts.proxy_epochs).to_dict(),
                   "final_recipe": Recipe(opts.final_epochs).to_dict()}
        write_trials_csv(folder / "trials.csv", all_trials)
        title = f"edgekit nas {name}: {len(pts)} feasible of {len(all_trials)} trials, hypervolume {hv:.4f}"
        plot(folder / "pareto.png", all_trials, members, prof, title)
        write_pareto_json(folder / "pareto.json", members, summary)
        result = NasResult(name, folder, url, summary["counts"], [p.to_dict() for p in members], hv, ref, ran=ran)
        if not members:
            return replace(result, missed=_why_none(all_trials, prof),
                           bundle_passed=False if opts.promote_k > 0 else None)
        if opts.promote_k <= 0:
            return result
        top = to_promote(pts, opts.promote_k)
        if opts.pick.isdigit() and int(opts.pick) not in {p.number for p in top}:
            extra = next((p for p in pts if p.number == int(opts.pick)), None)
            if extra is None:
                raise UsageError(f"--pick {opts.pick}: trial {opts.pick} is not a feasible measured trial of study "
                                 f"{name}")
            top.append(extra)
        promoted = promote(loop, top, Recipe(opts.final_epochs), progress=progress)
        rho = spearman(promoted)
        said = {**summary, "promoted": [p.to_dict() for p in promoted], "spearman_proxy_final": rho}
        write_pareto_json(folder / "pareto.json", members, said)
        plot(folder / "pareto.png", all_trials, members, prof, title, [p.to_dict() for p in promoted])
        result = replace(result, promoted=[p.to_dict() for p in promoted], spearman=rho)
        chosen = choose(promoted, opts.pick)
        if chosen is None:
            return replace(result, bundle_passed=False, missed=f"no promoted member holds every budget after full "
                           f"training ({_broken(promoted)}); see {folder / 'pareto.json'}")
        built = build_bundle(chosen, loop, folder, name, meta, progress=progress)
    write_pareto_json(folder / "pareto.json", members, {**said, "chosen": chosen.trial, "bundle": str(built.bundle),
                                                        "bundle_passed": built.passed})
    return replace(result, chosen=chosen.trial, bundle=built.bundle, bundle_passed=built.passed,
                   failed_gates=list(built.failed_gates))


def make_sampler(kind: str, seed: int):
    """Multivariate TPE, or Gaussian-process Bayesian optimisation (log constrained expected hypervolume
    improvement). Both read the budgets from ``Trial.set_constraint``."""
    import optuna

    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)


def sampler_for(sampler: str, space, trials: int | None) -> str:
    """``auto``: the GP for the built-in space with a short trial budget (it needs a fixed-length space,
    and earns its cost where trials are few: ``benchmarks/nas.py``'s grid part), else TPE."""
    if sampler != "auto":
        return sampler
    return "gp" if space.builtin and short_budget(trials, space.resolutions) else "tpe"


def study_form(study, form: str, trials: int | None, space, lock: HostLock) -> str:
    """The built-in space's form: the one the study was started with (a resumed or shared study keeps it),
    else ``form``; ``auto`` is compound with a short trial budget, else per stage."""
    with lock.short():
        stored = study.user_attrs.get("space_form")
        if stored is not None and form not in ("auto", stored):
            raise UsageError(f"study {study.study_name} searches the {stored} form of the built-in space; "
                             f"resume it without --space-form {form}, or start another --study")
        if stored is None:
            stored = form if form != "auto" else "compound" if short_budget(trials, space.resolutions) else "per-stage"
            study.set_user_attr("space_form", stored)
    return stored


def short_budget(trials: int | None, resolutions: tuple[int, ...]) -> bool:
    """A trial budget under twice the width x resolution grid (a time budget is never short)."""
    return trials is not None and trials < 2 * len(WIDTHS) * len(resolutions)


def grid_seeds(grid: str, resolutions: tuple[int, ...], size: int, trials: int | None,
               form: str = "per-stage") -> list[dict]:
    """The parameter sets a built-in study starts with. ``auto``: the full width x resolution grid when
    the search has time for it and as many trials again (a time budget, or ``trials`` >= twice the grid),
    else ``design``: the example, the grid's corners and its centre, so that most of a short budget is
    left to the sampler."""
    full = [example_params(1.0, size, form)] + [example_params(w, r, form) for w in WIDTHS for r in resolutions
                                                if (w, r) != (1.0, size)]
    if grid == "auto":
        grid = "design" if short_budget(trials, resolutions) else "full"
    return {"full": full, "design": design_params(resolutions, form), "baseline": full[:1]}[grid]


def _reference(trials, prof) -> tuple[float, float]:
    """Metric 0 and twice the p90 of the hand-designed baseline (trial 0 when the study was seeded with it),
    else the profile's p90 budget (else 1.1x the slowest trial): fixed for a study once trial 0 is measured."""
    first = trials[0] if trials else None
    if first is not None and first.user_attrs.get("seed") == "grid" and first.values:
        return 0.0, round(2 * first.values[1], 6)
    slowest = max((t.values[1] for t in trials if t.values), default=1.0)
    return 0.0, prof.budget.p90_latency_ms or 1.1 * slowest


def _arrays(data, seed: int) -> tuple[dict, dict, str]:
    from ..core.data import read_arrays

    if data is None:
        from ..examples import digits

        return (search_arrays(digits.load_arrays(), "built-in digits", seed),
                {"labels": digits.LABELS, "preprocessing": digits.PREPROCESSING}, "built-in digits (70% train, 30% held out)")
    arrays = read_arrays(data) if not isinstance(data, dict) else dict(data)
    return search_arrays(arrays, str(data), seed), {}, str(data)


class _NoWorker:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _tf_worker(log, evaluator):
    if evaluator is not None:
        return _NoWorker()
    from ..export.tf_client import TfWorker

    return TfWorker(log)


def _why_none(trials, prof) -> str:
    measured = [t for t in trials if t.state.name == "COMPLETE"]
    failed = [t for t in trials if t.state.name == "FAIL"]
    if not measured:
        reasons = sorted({t.user_attrs.get("failed_reason", "?")[:160] for t in failed})
        return (f"no trial was measured ({len(failed)} failed: {'; '.join(reasons[:3]) or 'none ran'}); "
                "nothing to put on a front")
    counts = {k: sum(1 for t in measured if k in t.user_attrs.get("broke", [])) for k in CONSTRAINTS}
    every = [k for k, n in counts.items() if n == len(measured)]
    limit = {"flash_kb": f"flash_kb {prof.budget.flash_kb}", "p90_ms": f"p90_latency_ms {prof.budget.p90_latency_ms}",
             "arena_kb": f"ram_kb {prof.budget.ram_kb}", "drop": f"max_accuracy_drop {prof.budget.max_accuracy_drop}"}
    said = ", ".join(f"{limit[k]} broken by {n}" for k, n in counts.items() if n)
    return (f"no feasible trial: of {len(measured)} measured, {said}"
            + (f"; every trial broke {', '.join(limit[k] for k in every)}" if every else "")
            + ": loosen the profile's budget or widen the search space")


def _broken(promoted) -> str:
    return "; ".join(f"trial {p.trial}: {', '.join(k for k, v in p.constraints.items() if v > 0)}" for p in promoted)
