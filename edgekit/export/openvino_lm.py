"""Stateful OpenVINO IR folders for language models: optimum-intel's exporter (``optimum-cli export openvino``) turns
the Hugging Face folder into a stateful IR (the KV cache held as the model's state, ``beam_idx`` to reorder it) with
the tokenizer and detokenizer as OpenVINO models (openvino-tokenizers), the folder openvino-genai's ``LLMPipeline``
loads; NNCF's weight compression (``nncf.compress_weights``: int8, int4 sym/asym, group size, ratio, AWQ and scale
estimation on the calibration text) makes each quantized file from it.

optimum-intel pins transformers and huggingface-hub below the releases edgekit's other LM tools need, so its
exporter runs in an environment of its own (``exporter_env``, made by ``edgekit setup optimum-intel``); the
compression, validation and timing run here. ``EDGEKIT_OPTIMUM_INTEL`` may name another Python that has
optimum-intel.

Each shipped folder carries ``edgekit_export.json`` (``OvLmExport``): the compression asked, the tools' versions and
the count of weight matrices at each precision.
"""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import Config
from ..core.errors import StageError, UsageError
from .exporter_env import ExporterEnv, last_error_line, offline_env

MODEL_XML = "openvino_model.xml"
RECORD = "edgekit_export.json"
OPTIMUM_INTEL = "2.2.0"
# within optimum-intel 2.2.0's requirements (transformers<5.6, huggingface-hub<1.22); transformers 5.0, not 5.5: its
# Gemma exporters stop at 5.0. optimum lists torchvision, which the exporter never imports (PyPI's build needs CUDA
# torch): the exporter goes in without its dependencies
EXPORTER = ExporterEnv(name="optimum-intel", version=OPTIMUM_INTEL,
                       packages=(f"optimum-intel=={OPTIMUM_INTEL}", "optimum==2.3.0"),
                       deps=("transformers==5.0.0", "huggingface-hub==1.21.0"), transformers="5.0.0",
                       check="from optimum.intel import OVModelForCausalLM", env_var="EDGEKIT_OPTIMUM_INTEL",
                       purpose="the OpenVINO LM format")
MODES = ("int4_asym", "int4_sym", "int8_asym", "int8_sym", "fp16", "fp32")


@dataclass(frozen=True)
class OvLmOptions(Config):
    """What to ask NNCF for: the mode (``int4_asym`` ... ``fp32``), the int4 group size (-1: per channel), the share
    of weight matrices at int4 (the rest, the most sensitive by the calibration text's Hessian input activation,
    at int8), and the data-aware methods."""
    mode: str = "int4_asym"
    group_size: int = 128
    ratio: float = 1.0
    awq: bool = False
    scale_estimation: bool = False

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"OpenVINO weight mode '{self.mode}' is not one of {', '.join(MODES)}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.group_size != -1 and self.group_size < 8:
            raise ValueError(f"group_size must be -1 (per channel) or >= 8, got {self.group_size}")
        if not self.mode.startswith("int4") and (self.awq or self.scale_estimation or self.ratio < 1.0):
            raise ValueError(f"awq, scale_estimation and ratio apply to int4 modes, not {self.mode}")

    @property
    def precision(self) -> str:
        return self.mode.split("_")[0]

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation or self.ratio < 1.0

    @property
    def label(self) -> str:
        if not self.mode.startswith("int4"):
            return self.mode
        parts = [self.mode, "per channel" if self.group_size == -1 else f"group {self.group_size}"]
        parts += ["AWQ"] if self.awq else []
        parts += ["scale estimation"] if self.scale_estimation else []
        parts += [f"ratio {self.ratio:g} (the rest int8)"] if self.ratio < 1.0 else []
        return ", ".join(parts)


@dataclass(frozen=True)
class OvLmExport:
    """An OpenVINO LM folder's ``edgekit_export.json``."""
    options: OvLmOptions
    exporter: str  # "optimum-intel 2.2.0 (optimum-cli export openvino, text-generation-with-past)"
    compressor: str  # "nncf 3.4.0"
    openvino: str
    weight_types: dict[str, int] = field(default_factory=dict)  # precision -> weight matrices

    def to_dict(self) -> dict:
        return {"format": "openvino", "options": self.options.to_dict(), "exporter": self.exporter,
                "compressor": self.compressor, "openvino": self.openvino, "weight_types": self.weight_types}

    @classmethod
    def read(cls, folder: str | Path) -> "OvLmExport":
        import json

        path = Path(folder) / RECORD
        if not path.is_file():
            raise UsageError(f"{folder}: no {RECORD}; it was not exported by edgekit")
        data = json.loads(path.read_text())
        return cls(OvLmOptions.from_dict(data["options"], str(path)), data["exporter"], data["compressor"],
                   data["openvino"], dict(data.get("weight_types", {})))


def export_base(hf_dir: Path, dest: Path, log: io.StringIO, timeout_s: float = 3600) -> Path:
    """optimum-cli export openvino, fp32 weights, task text-generation-with-past: a stateful IR folder with
    openvino_tokenizer/detokenizer. Offline; code from the folder never runs."""
    python = EXPORTER.python()
    cmd = [str(python), "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(hf_dir),
           "--task", "text-generation-with-past", "--weight-format", "fp32", str(dest)]
    env = offline_env()
    log.write("$ " + " ".join(cmd) + "\n")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise StageError("export openvino", f"optimum-intel's exporter ran past {timeout_s:.0f} s") from None
    log.write(proc.stdout[-4000:] + proc.stderr[-8000:])
    if proc.returncode != 0 or not (dest / MODEL_XML).is_file():
        raise StageError("export openvino", f"optimum-intel's exporter failed (exit {proc.returncode}): "
                         f"{last_error_line(proc.stderr)}")
    if not (dest / "openvino_tokenizer.xml").is_file():
        raise StageError("export openvino", "optimum-intel made no openvino_tokenizer.xml (openvino-tokenizers "
                         "cannot convert this tokenizer); openvino-genai cannot run the folder without it")
    return dest


# -- NNCF's weight compression ------------------------------------------------------------------------------------
def compress(base: Path, dest: Path, options: OvLmOptions, calibration: np.ndarray | None, log: io.StringIO) -> Path:
    """A copy of the folder ``base`` whose IR has the weights ``options`` asks for; data-aware options take the
    calibration windows (token ids) as NNCF's dataset."""
    import contextlib
    import logging

    import nncf
    import openvino as ov

    from ..runtimes.openvino_lm import window_inputs

    dest.mkdir(parents=True)
    for item in base.iterdir():
        if item.name not in (MODEL_XML, "openvino_model.bin"):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest / item.name)
    model = ov.Core().read_model(base / MODEL_XML)
    if options.mode == "fp32":
        ov.save_model(model, dest / MODEL_XML, compress_to_fp16=False)
        return dest
    if options.mode == "fp16":
        ov.save_model(model, dest / MODEL_XML, compress_to_fp16=True)
        return dest
    kwargs: dict = {"mode": getattr(nncf.CompressWeightsMode, options.mode.upper())}
    if options.mode.startswith("int4"):
        kwargs.update(group_size=options.group_size, ratio=options.ratio, awq=options.awq,
                      scale_estimation=options.scale_estimation,
                      # a matrix whose width the group does not divide gets the largest group that does
                      advanced_parameters=nncf.AdvancedCompressionParameters(
                          group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST))
        if options.data_aware:
            if calibration is None or not len(calibration):
                raise StageError("quantize openvino", f"{options.label} needs calibration windows")
            kwargs.update(dataset=nncf.Dataset([window_inputs(w) for w in calibration]),
                          subset_size=len(calibration),
                          sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION)
    out = io.StringIO()
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            compressed = nncf.compress_weights(model, **kwargs)
    except Exception as exc:  # noqa: BLE001 - NNCF's own errors: this rung failed, the ladder goes on
        raise StageError("quantize openvino", f"NNCF could not compress to {options.label}: "
                         f"{str(exc).splitlines()[0][:240]}") from None
    finally:
        logger.setLevel(level)
    log.write(f"nncf.compress_weights({options.label})\n")
    ov.save_model(compressed, dest / MODEL_XML, compress_to_fp16=False)
    drop_float_kv_option(dest / MODEL_XML)
    return dest


def drop_float_kv_option(xml: Path) -> None:
    """optimum-intel writes ``runtime_options/KV_CACHE_PRECISION = f16`` into an IR it did not quantize (the fp32
    base) and leaves it out of one it did, so the CPU plugin picks its own default (u8 here) for a compressed model;
    a compressed rung must run as optimum-intel's own compressed export does. OpenVINO's Python API cannot delete
    an rt_info entry, so the saved XML loses that one element."""
    import re

    text = xml.read_text()
    kept = re.sub(r"\n\s*<KV_CACHE_PRECISION value=\"[^\"]*\"\s*/>", "", text, count=1)
    if kept != text:
        xml.write_text(kept)


def weight_types(xml: Path) -> dict[str, int]:
    """Weight matrices by element type in an IR: constants of two or more dimensions whose last is a run of
    weights (group-wise scales and zero points end in 1), of at least 1024 elements."""
    import openvino as ov

    names = {"u4": "int4", "i4": "int4", "nf4": "int4", "u8": "int8", "i8": "int8", "f16": "fp16", "bf16": "bf16",
             "f32": "fp32"}
    counts: dict[str, int] = {}
    for op in ov.Core().read_model(xml).get_ops():
        if op.get_type_name() != "Constant":
            continue
        shape = list(op.get_output_shape(0))
        if len(shape) < 2 or shape[-1] < 8 or int(np.prod(shape)) < 1024:
            continue
        kind = names.get(op.get_element_type().get_type_name())
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def write_record(folder: Path, options: OvLmOptions) -> OvLmExport:
    from importlib import metadata

    import openvino as ov

    version = metadata.version("nncf")
    record = OvLmExport(options, f"optimum-intel {OPTIMUM_INTEL} (optimum-cli export openvino, "
                        "text-generation-with-past)", f"nncf {version}", ov.get_version().split("-")[0],
                        weight_types(folder / MODEL_XML))
    import json

    (folder / RECORD).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return record
