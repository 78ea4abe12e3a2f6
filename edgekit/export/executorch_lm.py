"""ExecuTorch LM folders: ``model.pte`` with a static KV cache, the tokenizer ExecuTorch's runner loads, the model's
config, and ``edgekit_export.json``.

optimum-executorch (``optimum-cli export executorch``'s library: ``load_causal_lm_model`` and its XNNPACK recipe)
makes the program, with ExecuTorch's custom SDPA and KV-cache update ops and dynamic prefill lengths up to the
static cache's ``max_seq_len`` - 1 tokens a call (a sliding-window model: its window - 1); torchao quantizes the weights with the configs its ``--qlinear`` and ``--qembedding``
use (8da4w: int8 dynamic activations and int4 grouped weights; 8da8w; int8 weight-only embeddings), chosen per module
so the ladder can keep the LM head at 8 bits. optimum-executorch pins transformers 5.0.0rc1, so the export runs in
an environment of its own (``exporter_env``; ``edgekit setup optimum-executorch``), as a script of edgekit's
(``et_lm_worker.py``) that imports only the tools. ``EDGEKIT_OPTIMUM_EXECUTORCH`` may name another Python that has
optimum-executorch.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import Config
from ..core.errors import StageError, UsageError
from .exporter_env import ExporterEnv, last_error_line, offline_env

PTE = "model.pte"
RECORD = "edgekit_export.json"
OPTIMUM_EXECUTORCH = "1.1.0"
# optimum-executorch 1.1.0 requires optimum~=2.0.0 and transformers==5.0.0rc1. That transformers breaks at import
# beside the kernels 0.19 of edgekit's environment (LayerRepository wants a revision): kernels 0.11, from its
# time, goes in with it. The exporter's other requirements (executorch, torchao, pytorch-tokenizers, accelerate) are
# edgekit's own
EXPORTER = ExporterEnv(name="optimum-executorch", version=OPTIMUM_EXECUTORCH,
                       packages=(f"optimum-executorch=={OPTIMUM_EXECUTORCH}", "optimum==2.0.0"),
                       deps=("transformers==5.0.0rc1", "kernels==0.11.7"), transformers="5.0.0rc1",
                       check="import optimum.exporters.executorch.convert; "
                             "from optimum.exporters.executorch.tasks.causal_lm import load_causal_lm_model; "
                             "from optimum.exporters.executorch.recipes.xnnpack import "
                             "export_to_executorch_with_xnnpack",
                       env_var="EDGEKIT_OPTIMUM_EXECUTORCH", purpose="the ExecuTorch LM format")
LINEAR = ("8da4w", "8da8w", "fp32", "fp16")
EMBEDDING = ("8w", "4w", "none")
HEAD = ("same", "8da8w", "fp32")
QPARAMS = ("hqq_scale_only", "affine")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json", "config.json")


@dataclass(frozen=True)
class EtLmOptions(Config):
    """What to ask torchao for: the decoder's linear layers (``8da4w``: int8 dynamic activations, int4 weights in
    groups of ``group_size``; ``8da8w``: int8 per channel; or ``fp32``/``fp16``), the LM head (``same`` as the
    linears, or held at ``8da8w``/``fp32``), the embeddings (int8 or int4 weight-only per row, or ``none``) and the
    scale search (``hqq_scale_only``, optimum-executorch's default, or plain ``affine`` min/max)."""
    linear: str = "8da4w"
    group_size: int = 128
    head: str = "same"
    embedding: str = "8w"
    qparams: str = "hqq_scale_only"

    def check(self) -> None:
        for name, value, allowed in (("linear", self.linear, LINEAR), ("head", self.head, HEAD),
                                     ("embedding", self.embedding, EMBEDDING), ("qparams", self.qparams, QPARAMS)):
            if value not in allowed:
                raise ValueError(f"ExecuTorch {name} '{value}' is not one of {', '.join(allowed)}")
        if self.group_size not in (0, 16, 32, 64, 128, 256):
            raise ValueError(f"group_size must be 0 (per channel) or 16-256, a power of two, got {self.group_size}")
        if self.linear in ("fp32", "fp16") and (self.head != "same" or self.embedding != "none"):
            raise ValueError(f"a {self.linear} program quantizes nothing: head 'same' and embedding 'none'")

    @property
    def precision(self) -> str:
        return {"8da4w": "int4", "8da8w": "int8"}.get(self.linear, self.linear)

    @property
    def label(self) -> str:
        if self.linear in ("fp32", "fp16"):
            return self.linear
        parts = [self.linear + (f" group {self.group_size}" if self.linear == "8da4w" and self.group_size
                                else " per channel")]
        parts += [f"lm_head {self.head}"] if self.head != "same" else []
        parts += [f"embeddings {self.embedding}"] if self.embedding != "none" else []
        parts += ["affine scales"] if self.qparams == "affine" else []
        return ", ".join(parts)

    def worker_options(self) -> dict:
        return {"linear": self.linear, "group_size": self.group_size, "head": self.head,
                "embedding": self.embedding, "qparams": self.qparams}


@dataclass(frozen=True)
class EtLmExport:
    """An ExecuTorch LM folder's ``edgekit_export.json``."""
    options: EtLmOptions
    max_seq_len: int
    tokenizer: str  # the file ExecuTorch's runner loads: tokenizer.json, else tokenizer.model
    exporter: str
    executorch: str
    torchao: str
    weight_types: dict[str, int] = field(default_factory=dict)  # "linear 8da4w g64" -> modules
    metadata: dict = field(default_factory=dict)  # the program's constant methods

    def to_dict(self) -> dict:
        return {"format": "executorch", "options": self.options.to_dict(), "max_seq_len": self.max_seq_len,
                "tokenizer": self.tokenizer, "exporter": self.exporter, "executorch": self.executorch,
                "torchao": self.torchao, "weight_types": self.weight_types, "metadata": self.metadata}

    @classmethod
    def read(cls, folder: str | Path) -> "EtLmExport":
        path = Path(folder) / RECORD
        if not path.is_file():
            raise UsageError(f"{folder}: no {RECORD}; it was not exported by edgekit")
        try:
            data = json.loads(path.read_text())
            return cls(EtLmOptions.from_dict(data["options"], str(path)), int(data["max_seq_len"]),
                       str(data["tokenizer"]), data["exporter"], data["executorch"], data["torchao"],
                       dict(data.get("weight_types", {})), dict(data.get("metadata", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not an ExecuTorch LM record ({exc})") from None


def runner_tokenizer(hf_dir: Path) -> str:
    """The tokenizer file ExecuTorch's runner (pytorch-tokenizers) can load: the Hugging Face ``tokenizer.json``
    where its C++ loader takes it, else the SentencePiece ``tokenizer.model``. Neither: a StageError."""
    from ..files.native_output import capture_fd2
    from ..runtimes.executorch_lm import load_runner_tokenizer

    tried = []
    for name, kind in (("tokenizer.json", "CppHFTokenizer"), ("tokenizer.model", "CppSPTokenizer")):
        if not (hf_dir / name).is_file():
            continue
        try:  # its C++ side logs to fd 2 when it is made and when it loads
            capture_fd2(lambda: load_runner_tokenizer(kind, hf_dir / name))
            return name
        except Exception as exc:  # noqa: BLE001 - the binding raises its own Error type
            tried.append(f"{name}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}")
    raise StageError("export executorch", "ExecuTorch's tokenizer library (pytorch-tokenizers) loads none of the "
                     f"model's tokenizer files ({'; '.join(tried) or 'no tokenizer.json or tokenizer.model'})")


def export(hf_dir: Path, dest: Path, options: EtLmOptions, max_seq_len: int, log: io.StringIO,
           timeout_s: float = 3600) -> tuple[Path, dict]:
    """The folder ``dest``: model.pte made by optimum-executorch (in its environment, offline; code from the model
    folder never runs) with ``options`` and a static KV cache of ``max_seq_len`` tokens, and the tokenizer files.
    Returns it and what the worker reported (the weights' precisions, the program's metadata)."""
    dest.mkdir(parents=True)
    tokenizer = runner_tokenizer(hf_dir)
    args = {"hf_dir": str(hf_dir), "pte": str(dest / PTE), "max_seq_len": int(max_seq_len),
            "options": options.worker_options()}
    report = run_worker(args, f"{options.label}, max_seq_len {max_seq_len}", "export executorch",
                        f"optimum-executorch could not export it with {options.label}", log, timeout_s)
    if not (dest / PTE).is_file():
        raise StageError("export executorch", f"optimum-executorch wrote no {PTE} for {options.label}")
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, dest / name)
    report["tokenizer"] = tokenizer
    return dest, report


def run_worker(args: dict, what: str, stage: str, failure: str, log: io.StringIO, timeout_s: float) -> dict:
    """``et_lm_worker.py`` with ``args`` in optimum-executorch's environment, offline; its JSON line. A failure or a
    timeout is a StageError of ``stage`` (``failure``, the exit code and the worker's last error line)."""
    python = EXPORTER.python()
    # -I: the script's folder (edgekit/export, whose onnx.py would shadow the onnx package) stays off sys.path
    cmd = [str(python), "-I", str(Path(__file__).with_name("et_lm_worker.py")), json.dumps(args)]
    log.write(f"$ {python} -I et_lm_worker.py ({what})\n")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=offline_env(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise StageError(stage, f"{failure}: the worker ran past {timeout_s:.0f} s") from None
    log.write(proc.stderr[-6000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise StageError(stage, f"{failure} (exit {proc.returncode}): {last_error_line(proc.stderr)}")
    return json.loads(lines[-1])


def screen(hf_dir: Path, options: list[EtLmOptions], windows, log: io.StringIO, timeout_s: float = 3600) -> list[float]:
    """The perplexity increase torch gets on ``windows`` from the model quantized as each of ``options`` asks
    (torchao's quantized tensors in eager mode, the same configs the export uses, in optimum-executorch's
    environment): the ladder's forecast of which rungs are worth an export. A StageError when it cannot run."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="edgekit-et-screen-") as tmp:
        path = Path(tmp) / "windows.npy"
        np.save(path, np.asarray(windows, dtype=np.int64))
        args = {"hf_dir": str(hf_dir), "windows": str(path), "screen": [o.worker_options() for o in options]}
        found = run_worker(args, f"screen of {len(options)} rungs on {len(windows)} windows", "quantize executorch",
                           "the torch screen failed", log, timeout_s)
    log.write(f"torch screen: reference perplexity {found['reference']:.4f}, rungs "
              + ", ".join(f"{p:.4f}" for p in found["perplexities"]) + f" ({found['seconds']:.0f} s)\n")
    return [p / found["reference"] - 1 for p in found["perplexities"]]


def write_record(folder: Path, options: EtLmOptions, max_seq_len: int, report: dict) -> EtLmExport:
    from importlib import metadata

    record = EtLmExport(options=options, max_seq_len=max_seq_len, tokenizer=report["tokenizer"],
                        exporter=f"optimum-executorch {OPTIMUM_EXECUTORCH} (load_causal_lm_model, custom SDPA and "
                                 "KV cache, XNNPACK recipe)",
                        executorch=metadata.version("executorch"), torchao=metadata.version("torchao"),
                        weight_types=dict(report.get("weights", {})), metadata=dict(report.get("metadata", {})))
    (folder / RECORD).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return record
