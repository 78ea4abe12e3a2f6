"""BuildOptions: everything a build is asked for besides the model, as one frozen, validated object.

``edgekit.build(model, options)`` and the CLI construct it once; the stages read it. Keyword arguments on
``build()`` are a thin convenience that constructs it. Unknown keys and bad values are errors that name
the option, as profile keys are.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError, did_you_mean
from ..targets.profiles import CALIBRATIONS, DeviceProfile, load_profile, with_overrides

TASKS = ("classification", "regression", "generic")
BITS = (4, 8, 16, 32)
PRUNE_METHODS = ("structured", "unstructured", "none")
EXAMPLES = ("digits", "tinylm")


@dataclass(frozen=True)
class BuildOptions(Config):
    profile: str | Path | DeviceProfile = "iot"  # a built-in name, a .toml path, or a loaded profile
    weights: str | Path | None = None  # state_dict for a FILE.py:FACTORY model (loaded weights_only)
    data: str | Path | None = None  # .npz/.npy samples
    out: str | Path = "out"  # the bundle's parent folder
    force: bool = False  # replace an existing bundle
    task: str | None = None  # classification | regression | generic (default: detected)
    formats: tuple[str, ...] | None = None  # default: the profile's
    trust_pickle: bool = False  # allow full-model pickles (runs code from the file)
    calib_samples: int | None = None
    val_samples: int | None = None
    threads: int | None = None  # overrides target.threads (0 = all cores)
    bits: int | None = None  # overrides quantize.weight_bits
    calibration: str | None = None  # overrides quantize.calibration
    int8_io: bool = False  # integer TFLite files take and return int8
    fp16_io: bool = False  # fp16 ONNX files take and return fp16
    prune_ratio: float | None = None  # overrides prune.max_ratio
    prune_method: str | None = None  # overrides prune.method
    lowrank: float | None = None  # overrides prune.lowrank
    share_bits: int | None = None  # overrides prune.share_bits
    keep: tuple[str, ...] | None = None  # overrides prune.keep: layers never pruned
    output_tasks: dict[str, str] | None = None  # output name -> distribution | probability[:T] | regression
    dynamic: dict[str, dict[int, str]] | None = None  # input -> {axis: name} axes that stay dynamic in ONNX
    static_shape: dict[str, int] | None = None  # axis name -> the size TFLite and the C array are fixed to
    device: str | None = None  # ssh://user@host[:port] or adb:SERIAL (default: the profile's target.device)
    accept_host_key: bool = False
    labels: Any = None  # a list of class names, or a file (JSON list or one per line)
    preprocessing: Any = None  # a recipe dict or a JSON file (apps/README.md)
    strict_gates: bool | None = None  # every file must meet every gate (default: the profile's budget.strict_gates)
    trust_remote_code: bool = False  # a language model whose config names code in its folder may run that code
    example: str | None = None  # with no model: the built-in example to build (digits, or tinylm: a language model)

    def check(self) -> None:
        def choice(name: str, allowed: tuple) -> None:
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"build option '{name}' must be one of {', '.join(map(str, allowed))}, got {value!r}")

        def at_least(name: str, low: int) -> None:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"build option '{name}' must be an integer >= {low}, got {value!r}")

        def fraction(name: str) -> None:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value < 1.0):
                raise ValueError(f"build option '{name}' must be in [0, 1), got {value!r}")

        choice("task", TASKS)
        choice("bits", BITS)
        choice("calibration", CALIBRATIONS)
        choice("prune_method", PRUNE_METHODS)
        choice("example", EXAMPLES)
        for name in ("calib_samples", "val_samples"):
            at_least(name, 1)
        at_least("threads", 0)
        at_least("share_bits", 0)
        if self.share_bits is not None and self.share_bits > 8:
            raise ValueError(f"build option 'share_bits' must be at most 8, got {self.share_bits!r}")
        fraction("prune_ratio")
        fraction("lowrank")
        if self.formats is not None and (not self.formats or not all(isinstance(f, str) and f for f in self.formats)):
            raise ValueError(f"build option 'formats' must name at least one format, got {self.formats!r}")
        self._check_maps()

    def _check_maps(self) -> None:
        from ..core.metrics import parse_output_task

        for name, task in (self.output_tasks or {}).items():
            try:
                parse_output_task(task)
            except ValueError as exc:
                raise ValueError(f"build option 'output_tasks' {name}: {exc}") from None
        for axis, size in (self.static_shape or {}).items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"build option 'static_shape' {axis}: the size must be a positive integer, "
                                 f"got {size!r}")
        for name, axes in (self.dynamic or {}).items():
            if not isinstance(axes, dict) or not all(isinstance(a, int) for a in axes):
                raise ValueError(f"build option 'dynamic' {name}: write {{axis number: name}}, got {axes!r}")

    @classmethod
    def of(cls, **kwargs: Any) -> BuildOptions:
        """The options from keyword arguments; an unknown one is a usage error that names it."""
        names = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in names:
                raise UsageError(f"unknown build option '{key}'{did_you_mean(key, names)}; known options: "
                                 f"{', '.join(names)}")
        if kwargs.get("formats") is not None:
            kwargs["formats"] = tuple(kwargs["formats"])
        if kwargs.get("keep") is not None:
            kwargs["keep"] = tuple(kwargs["keep"]) or None
        return cls(**kwargs)

    @property
    def pruning(self) -> dict[str, Any]:
        """The pruning settings asked for here (they make pruning explicit: refused up front when impossible)."""
        return {key: value for key, value in (("prune.max_ratio", self.prune_ratio), ("prune.method", self.prune_method),
                                               ("prune.lowrank", self.lowrank), ("prune.share_bits", self.share_bits),
                                               ("prune.keep", self.keep)) if value is not None}

    @property
    def overrides(self) -> dict[str, Any]:
        """Profile keys these options override, as the report lists them."""
        return {key: value for key, value in (("target.threads", self.threads), ("quantize.weight_bits", self.bits),
                                              ("quantize.calibration", self.calibration)) if value is not None} \
            | self.pruning

    def resolved_profile(self) -> DeviceProfile:
        prof = self.profile if isinstance(self.profile, DeviceProfile) else load_profile(self.profile)
        return with_overrides(prof, self.overrides) if self.overrides else prof

    def strict(self, profile: DeviceProfile) -> bool:
        return profile.budget.strict_gates if self.strict_gates is None else self.strict_gates
