"""Device profiles: TOML data in device_profiles/, loaded into frozen, strict configs."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError, did_you_mean
from ..core.resources import data_dir

KNOWN_RUNTIMES = ("onnxruntime", "litert", "tflm", "openvino", "executorch")
PRUNE_METHODS = ("structured", "unstructured", "none")
IMPORTANCES = ("auto", "l1", "l2", "taylor")
CALIBRATIONS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Target(Config):
    runtimes: tuple[str, ...] = ("onnxruntime",)
    formats: tuple[str, ...] = ("onnx",)
    threads: int = 1  # 0 means every core of the machine
    accelerator: str = "cpu"  # "cpu" or "gpu-if-present"
    device: str = ""  # validate and bench on this device: ssh://user@host[:port], adb:SERIAL ("" = this host)
    min_delegated_share: float = 0.9  # ExecuTorch: refuse a .pte with less of its ops on the XNNPACK delegate

    def check(self) -> None:
        for rt in self.runtimes:
            if rt not in KNOWN_RUNTIMES:
                raise ValueError(f"target.runtimes: unknown runtime {rt!r}{did_you_mean(rt, KNOWN_RUNTIMES)}")
        if self.threads < 0:
            raise ValueError(f"target.threads must be >= 0 (0 = all cores), got {self.threads!r}")
        if not 0.0 <= self.min_delegated_share <= 1.0:
            raise ValueError(f"target.min_delegated_share must be in [0, 1], got {self.min_delegated_share!r}")
        if self.accelerator not in ("cpu", "gpu-if-present"):
            raise ValueError(f"target.accelerator must be 'cpu' or 'gpu-if-present', got {self.accelerator!r}")

    @property
    def resolved_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


@dataclass(frozen=True)
class Prune(Config):
    method: str = "none"  # structured | unstructured | none
    max_ratio: float = 0.0  # a ceiling: the back-off search goes down from here
    importance: str = "auto"  # auto (taylor with labels, else l2) | l1 | l2 | taylor
    round_to: int = 8  # kept channel counts are multiples of this
    keep: tuple[str, ...] = ()  # module names never pruned, factorized or shared (the output layer is never pruned)
    lowrank: float = 0.0  # SVD energy to keep for Linear/1x1 conv factorization; 0 = off
    share_bits: int = 0  # k-means weight sharing into 2**share_bits values per layer; 0 = off
    step: float = 0.1  # grid of the back-off search
    accuracy_share: float = 0.5  # share of budget.max_accuracy_drop the search may spend (the rest is quantization's)
    time_box_s: float = 120.0  # the search stops starting attempts after this long

    def check(self) -> None:
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"prune.method must be one of {', '.join(PRUNE_METHODS)}, got {self.method!r}")
        if not 0.0 <= self.max_ratio < 1.0:
            raise ValueError(f"prune.max_ratio must be in [0, 1), got {self.max_ratio!r}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"prune.importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        if self.round_to < 1:
            raise ValueError(f"prune.round_to must be >= 1, got {self.round_to!r}")
        if self.lowrank != 0.0 and not 0.0 < self.lowrank < 1.0:
            raise ValueError(f"prune.lowrank is the SVD energy to keep, in (0, 1) (0 = off), got {self.lowrank!r}")
        if self.lowrank > 0 and self.method == "unstructured" and self.max_ratio > 0:
            raise ValueError("prune.lowrank cannot be combined with unstructured pruning: factorized layers are "
                             "dense, so the zeros would be lost; use structured pruning or drop lowrank")
        if self.share_bits != 0 and not 1 <= self.share_bits <= 8:
            raise ValueError(f"prune.share_bits must be 1..8 (0 = off), got {self.share_bits!r}")
        if not 0.0 < self.step < 1.0:
            raise ValueError(f"prune.step must be in (0, 1), got {self.step!r}")
        if not 0.0 < self.accuracy_share <= 1.0:
            raise ValueError(f"prune.accuracy_share must be in (0, 1], got {self.accuracy_share!r}")
        if self.time_box_s <= 0:
            raise ValueError(f"prune.time_box_s must be > 0, got {self.time_box_s!r}")

    @property
    def active(self) -> bool:
        """Whether any model compression is asked for."""
        return (self.method != "none" and self.max_ratio > 0) or self.lowrank > 0 or self.share_bits > 0


@dataclass(frozen=True)
class Quantize(Config):
    weight_bits: int = 32
    activation_bits: int = 32
    calibration: str = "minmax"
    repair_time_box_s: float = 180.0  # the accuracy repair of one quantized file (layer ranking included)

    def check(self) -> None:
        if self.repair_time_box_s <= 0:
            raise ValueError(f"quantize.repair_time_box_s must be > 0, got {self.repair_time_box_s!r}")
        if self.weight_bits not in (4, 8, 16, 32):
            raise ValueError(f"quantize.weight_bits must be 4, 8, 16 or 32, got {self.weight_bits!r}")
        if self.activation_bits not in (8, 16, 32):
            raise ValueError(f"quantize.activation_bits must be 8, 16 or 32, got {self.activation_bits!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"quantize.calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")


@dataclass(frozen=True)
class Budget(Config):
    max_accuracy_drop: float = 0.01
    p90_latency_ms: float | None = None
    flash_kb: float | None = None  # file size the device can store
    ram_kb: float | None = None  # working memory on a microcontroller: the TFLite-Micro arena
    rss_mb: float | None = None  # peak resident-memory growth of a Linux/phone runtime
    strict_gates: bool = False  # every file must meet every gate (default: every format ships a file that does)

    def check(self) -> None:
        if self.max_accuracy_drop < 0:
            raise ValueError(f"budget.max_accuracy_drop must be >= 0, got {self.max_accuracy_drop!r}")
        for name in ("p90_latency_ms", "flash_kb", "ram_kb", "rss_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"budget.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Recover(Config):
    epochs: int = 0  # distillation epochs on the training split (without one: BatchNorm recalibration only)
    distill_temperature: float = 4.0
    distill_alpha: float = 0.7  # weight of the teacher term; the rest goes to the labels when there are any
    lr: float = 1e-3
    batch_size: int = 64

    def check(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"recover.epochs must be >= 0, got {self.epochs!r}")
        if self.distill_temperature <= 0:
            raise ValueError(f"recover.distill_temperature must be > 0, got {self.distill_temperature!r}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"recover.distill_alpha must be in [0, 1], got {self.distill_alpha!r}")
        if self.lr <= 0:
            raise ValueError(f"recover.lr must be > 0, got {self.lr!r}")
        if self.batch_size < 1:
            raise ValueError(f"recover.batch_size must be >= 1, got {self.batch_size!r}")


QAT_MODES = ("on-miss", "always", "off")


@dataclass(frozen=True)
class Qat(Config):
    """Quantization-aware training, the repair ladder's rung after PTQ (quantize/qat_grid.py, quantize/qat.py)."""
    mode: str = "on-miss"  # on-miss: when the PTQ file misses the budget; always: every file at 4/8 bits; off
    epochs: int = 3
    lr: float = 5e-4
    time_s: float = 60.0  # the training of one file stops here (each format trains its own grid)
    batch_size: int = 64

    def check(self) -> None:
        if self.mode not in QAT_MODES:
            raise ValueError(f"qat.mode must be one of {', '.join(QAT_MODES)}, got {self.mode!r}")
        if self.epochs < 1:
            raise ValueError(f"qat.epochs must be >= 1, got {self.epochs!r}")
        for name in ("lr", "time_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"qat.{name} must be > 0, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError(f"qat.batch_size must be >= 2, got {self.batch_size!r}")


@dataclass(frozen=True)
class Bench(Config):
    warmup: int = 20
    runs: int = 200
    batch: int = 32
    max_seconds: float = 10.0  # time box of one file's timed runs
    attempt_runs: int = 300  # timed runs of each quantization attempt (the latency check), at batch 1
    attempt_max_seconds: float = 4.0  # time box of one attempt's timed runs
    min_seconds: float = 0.0  # every round runs at least this long (MLPerf Mobile: 60)
    repeat: int = 1  # rounds of timed runs, their samples pooled
    batches: tuple = ()  # request sizes timed for throughput by batch (server: 1, 8, 16, 32)

    def check(self) -> None:
        if not isinstance(self.batches, (list, tuple)) or any(
                isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batches):
            raise ValueError(f"bench.batches must be a list of batch sizes >= 1, got {self.batches!r}")
        if self.min_seconds < 0 or self.repeat < 1:
            raise ValueError(f"bench.min_seconds must be >= 0 and bench.repeat >= 1, got {self.min_seconds!r}, "
                             f"{self.repeat!r}")
        for name in ("warmup", "runs", "batch", "attempt_runs"):
            if getattr(self, name) < (0 if name == "warmup" else 1):
                raise ValueError(f"bench.{name} is too small: {getattr(self, name)!r}")
        for name in ("max_seconds", "attempt_max_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"bench.{name} must be > 0, got {getattr(self, name)!r}")


LM_FORMATS = ("onnxruntime-genai", "gguf", "openvino", "executorch")  # the formats a language model ships in today
LM_BITS = (4, 8, 32)


@dataclass(frozen=True)
class Generate(Config):
    """Language models (decoder-only, with a KV cache): what ships, how it is judged and its budgets.

    Quality is perplexity on held-out windows of ``context`` tokens against the source in torch fp32; speed is
    prefill and decode tokens/s and time to first token for a ``prompt_tokens`` prompt and ``new_tokens`` new ones;
    memory is the process's peak resident growth while a generation fills ``bench_context`` tokens."""
    formats: tuple[str, ...] = ("onnxruntime-genai",)
    weight_bits: int = 4  # 4: int4 weights (the ladder may raise layers or the file to int8), 8, or 32 (fp32)
    max_ppl_increase: float = 0.05  # perplexity / the source's - 1 on the validation windows
    min_decode_tokens_per_s: float | None = None
    max_ttft_ms: float | None = None  # time to first token for a prompt_tokens prompt
    max_rss_mb: float | None = None  # peak resident growth over the runtime's own, at bench_context tokens
    max_file_mb: float | None = None  # the model's folder as shipped
    context: int = 256  # tokens per validation window
    validation_windows: int = 8
    calibration_windows: int = 16  # the importance matrix's text (llama.cpp), never a validation window
    prompts: int = 4  # greedy answers compared with the source's, shown in the report
    greedy_tokens: int = 32
    prompt_tokens: int = 128
    new_tokens: int = 64
    bench_context: int = 1024
    bench_runs: int = 3
    time_box_s: float = 1800.0  # the quantization ladder starts no new attempt after this long

    def check(self) -> None:
        bad = [f for f in self.formats if f not in LM_FORMATS]
        if bad:  # empty: the device does not run language models (a microcontroller)
            raise ValueError(f"generate.formats must name formats among {', '.join(LM_FORMATS)}, got "
                             f"{list(self.formats)!r}")
        if self.weight_bits not in LM_BITS:
            raise ValueError(f"generate.weight_bits must be one of {', '.join(map(str, LM_BITS))}, got "
                             f"{self.weight_bits!r}")
        if not 0 <= self.max_ppl_increase < 10:
            raise ValueError(f"generate.max_ppl_increase must be in [0, 10), got {self.max_ppl_increase!r}")
        for name in ("min_decode_tokens_per_s", "max_ttft_ms", "max_rss_mb", "max_file_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"generate.{name} must be > 0, got {value!r}")
        for name, low in (("context", 8), ("validation_windows", 1), ("calibration_windows", 1), ("prompts", 0),
                          ("greedy_tokens", 1),
                          ("prompt_tokens", 1), ("new_tokens", 2), ("bench_context", 2), ("bench_runs", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"generate.{name} must be >= {low}, got {getattr(self, name)!r}")
        if self.time_box_s <= 0:
            raise ValueError(f"generate.time_box_s must be > 0, got {self.time_box_s!r}")


@dataclass(frozen=True)
class DeviceProfile(Config):
    name: str = ""
    description: str = ""
    extends: str = ""
    target: Target = field(default_factory=Target)
    prune: Prune = field(default_factory=Prune)
    quantize: Quantize = field(default_factory=Quantize)
    budget: Budget = field(default_factory=Budget)
    recover: Recover = field(default_factory=Recover)
    qat: Qat = field(default_factory=Qat)
    bench: Bench = field(default_factory=Bench)
    generate: Generate = field(default_factory=Generate)
    outputs: dict = field(default_factory=dict)  # output name -> its task: distribution | probability:T | regression
    source: str = ""  # the file it was loaded from

    def check(self) -> None:
        from ..core.metrics import parse_output_task

        if not self.name:
            raise ValueError("a profile needs a 'name'")
        if not isinstance(self.outputs, dict):
            raise ValueError(f"[outputs] must be a table of output name = task, got {self.outputs!r}")
        for name, task in self.outputs.items():
            try:
                parse_output_task(task)
            except ValueError as exc:
                raise ValueError(f"outputs.{name}: {exc}") from None


def builtin_dir() -> Path:
    return data_dir("device_profiles")


def list_profiles() -> list[DeviceProfile]:
    """Every built-in profile, resolved."""
    return [load_profile(p.stem) for p in sorted(builtin_dir().glob("*.toml"))]


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A built-in profile by name, or a TOML file by path; ``extends`` is resolved."""
    path = _locate(str(name_or_path), base=None)
    raw = _resolve(path, chain=())
    raw["source"] = str(path)
    return DeviceProfile.from_dict(raw, where=str(path))


def _locate(ref: str, base: Path | None) -> Path:
    looks_like_path = ref.endswith(".toml") or os.sep in ref or "/" in ref
    if looks_like_path:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise UsageError(f"profile file {ref} not found; give a path to a .toml file or a built-in name")
        return path
    path = builtin_dir() / f"{ref}.toml"
    if not path.is_file():
        names = sorted(p.stem for p in builtin_dir().glob("*.toml"))
        raise UsageError(
            f"unknown profile '{ref}'{did_you_mean(ref, names)}; built-in profiles: {', '.join(names)} "
            "(or pass a path to a .toml file)"
        )
    return path


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        raise UsageError(f"{path}: 'extends' loops back to itself: {' -> '.join(str(p) for p in chain + (path,))}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc}); fix the file") from None
    if "source" in raw:
        raise UsageError(f"{path}: unknown key 'source'")
    _check_keys(raw, DeviceProfile, path, "")
    parent = raw.get("extends", "")
    if not isinstance(parent, str):
        raise UsageError(f"{path}: 'extends' must be a profile name or path, got {parent!r}")
    if not parent:
        return raw
    try:
        located = _locate(parent, base=path.parent)
    except UsageError as exc:
        raise UsageError(f"{path}: extends = {parent!r}: {exc}") from None
    base = _resolve(located, chain + (path.resolve(),))
    return _merge(base, raw)


def _check_keys(raw: dict[str, Any], cls, path: Path, prefix: str) -> None:
    """Unknown keys are reported against the file that holds them, before any merging."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    for key, value in raw.items():
        if key not in names:
            raise UsageError(f"{path}: unknown key '{prefix}{key}'{did_you_mean(key, names)}; "
                             f"known keys: {', '.join(prefix + n for n in names)}")
        if isinstance(value, dict) and isinstance(hints.get(key), type) and issubclass(hints[key], Config):
            _check_keys(value, hints[key], path, f"{prefix}{key}.")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def with_overrides(profile: DeviceProfile, overrides: dict[str, Any]) -> DeviceProfile:
    """A new profile with dotted-key overrides applied, e.g. {'quantize.weight_bits': 8}."""
    raw = profile.to_dict()
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return DeviceProfile.from_dict(raw, where=f"{profile.source} with overrides")
