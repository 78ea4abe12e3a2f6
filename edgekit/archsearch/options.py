"""``NasOptions``: what ``edgekit.nas()`` is asked to do, as one frozen object that validates itself."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError, did_you_mean
from ..targets.profiles import DeviceProfile, load_profile, with_overrides
from .promote import PICKS
from .space import FORMS

GRIDS = ("auto", "full", "design", "baseline", "none")
SAMPLERS = ("auto", "tpe", "gp")
BITS = (4, 8, 16, 32)
DEFAULT_BUDGET_S = 600.0  # with neither a trial count nor a time budget: ten minutes


class OptionError(UsageError):
    """One option's bad value; ``option`` names the field, so that the CLI can name its flag instead."""

    def __init__(self, option: str, value: Any, why: str):
        self.option, self.value, self.why = option, value, why
        super().__init__(f"nas option {option} {why}, got {value!r}")


@dataclass(frozen=True)
class NasOptions(Config):
    """Every setting of a search. ``NasOptions.from_dict`` reads them from a dict (unknown keys are an error
    that names the key); a bad value is an ``OptionError`` naming the option and quoting the value.

    ``profile`` is a built-in name, a .toml path or a ``DeviceProfile`` (a dict in ``from_dict``); ``data``
    an .npz path or a dict of arrays (None: the built-in digits). ``trials`` is the study's global budget
    (every worker counts it), ``time_budget_s`` this worker's (with neither: ten minutes). ``promote_k`` = 0
    skips promotion and the bundle (extra workers of a shared study).
    """
    data: Path | str | dict | None = None
    profile: Path | str | DeviceProfile = "iot"
    trials: int | None = None
    time_budget_s: float | None = None
    storage: str | None = None  # an Optuna storage URL (default: sqlite in OUT/STUDY/study.db), or journal:PATH
    study: str | None = None  # default: SPACE-PROFILE
    out: Path | str = "nas"  # the parent folder of OUT/STUDY/
    seed: int = 0
    proxy_epochs: int = 3  # training per trial
    final_epochs: int = 30  # the full recipe that trains promoted members
    promote_k: int = 3
    pick: str = "best"  # best, fastest, smallest, or a trial number
    grid: str = "auto"
    sampler: str = "auto"
    form: str = "auto"  # the built-in space's form: auto, per-stage or compound
    bits: int | None = None  # overrides the profile's quantize.weight_bits
    threads: int | None = None  # overrides the profile's target.threads (0: every core)
    train_threads: int | None = None  # default: every core
    hv_reference: tuple[float, ...] | None = None  # the hypervolume's (metric, p90 ms) reference point

    def __post_init__(self) -> None:
        if isinstance(self.profile, dict):
            object.__setattr__(self, "profile", DeviceProfile.from_dict(self.profile, "nas options", "profile."))
        if isinstance(self.hv_reference, list):
            object.__setattr__(self, "hv_reference", tuple(self.hv_reference))
        if isinstance(self.pick, int) and not isinstance(self.pick, bool):
            object.__setattr__(self, "pick", str(self.pick))
        super().__post_init__()

    def check(self) -> None:
        if not (self.data is None or isinstance(self.data, (str, os.PathLike, dict))):
            raise OptionError("data", self.data, "must be an .npz path or a dict of arrays")
        if not isinstance(self.profile, (str, os.PathLike, DeviceProfile)):
            raise OptionError("profile", self.profile, "must be a profile name, a .toml path or a DeviceProfile")
        for name, low in (("trials", 1), ("seed", 0), ("proxy_epochs", 1), ("final_epochs", 1), ("promote_k", 0),
                          ("threads", 0), ("train_threads", 1)):
            value = getattr(self, name)
            if value is None and name in ("trials", "threads", "train_threads"):
                continue
            if not _int_at_least(value, low):
                raise OptionError(name, value, f"must be an integer >= {low}")
        if self.time_budget_s is not None and not (_number(self.time_budget_s) and self.time_budget_s > 0):
            raise OptionError("time_budget_s", self.time_budget_s, "must be a number of seconds > 0")
        for name in ("storage", "study"):
            if getattr(self, name) is not None and not (isinstance(getattr(self, name), str) and getattr(self, name)):
                raise OptionError(name, getattr(self, name), "must be a non-empty string")
        if not isinstance(self.out, (str, os.PathLike)):
            raise OptionError("out", self.out, "must be a folder path")
        if not isinstance(self.pick, str) or (self.pick not in PICKS and not self.pick.isdigit()):
            raise OptionError("pick", self.pick, f"must be one of {', '.join(PICKS)} or a trial number")
        for name, choices in (("grid", GRIDS), ("sampler", SAMPLERS), ("form", ("auto",) + FORMS)):
            value = getattr(self, name)
            if value not in choices:
                raise OptionError(name, value, f"must be one of {', '.join(choices)}{did_you_mean(value, choices)}")
        if self.bits is not None and (isinstance(self.bits, bool) or self.bits not in BITS):
            raise OptionError("bits", self.bits, f"must be one of {', '.join(map(str, BITS))}")
        ref = self.hv_reference
        if ref is not None and not (isinstance(ref, tuple) and len(ref) == 2 and all(map(_number, ref)) and ref[1] > 0):
            raise OptionError("hv_reference", ref, "must be (metric, p90 ms) with a p90 > 0")

    @property
    def budget_s(self) -> float | None:
        """This worker's time budget: ``time_budget_s``, else ten minutes when no trial count is given."""
        return DEFAULT_BUDGET_S if self.trials is None and self.time_budget_s is None else self.time_budget_s

    def device_profile(self) -> DeviceProfile:
        """The profile the search is scored against, with ``bits`` and ``threads`` applied."""
        prof = self.profile if isinstance(self.profile, DeviceProfile) else load_profile(self.profile)
        overrides = {k: v for k, v in (("quantize.weight_bits", self.bits), ("target.threads", self.threads))
                     if v is not None}
        return with_overrides(prof, overrides) if overrides else prof

    def to_dict(self) -> dict[str, Any]:
        return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in super().to_dict().items()}


def with_settings(options: NasOptions | None, settings: dict[str, Any]) -> NasOptions:
    """``options`` (default: the defaults) with keyword ``settings`` replacing its fields; an unknown
    setting is an error that names it."""
    names = [f.name for f in dataclasses.fields(NasOptions)]
    for key in settings:
        if key not in names:
            raise UsageError(f"nas: unknown option '{key}'{did_you_mean(key, names)}; "
                             f"known options: {', '.join(names)}")
    if options is not None and not isinstance(options, NasOptions):
        raise UsageError(f"nas: options must be a NasOptions, got {type(options).__name__}")
    return dataclasses.replace(options or NasOptions(), **settings) if settings else options or NasOptions()


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
