"""ONNX Runtime GenAI folders (``model.onnx`` + data, ``genai_config.json``, tokenizer) for decoder-only LMs.

Made with onnxruntime-genai's own model builder (``python -m onnxruntime_genai.models.builder``), run offline in a
child process: fp32, or int8/int4 weight-only MatMulNBits with its block size, accuracy level, RTN or k-quant, and
chosen MatMuls at int8. The folder is written beside ``out_dir`` and renamed into place, checked first: the files
genai needs are there and ONNX Runtime loads the model (the builder can exit 0 with a graph that does not load).
What was asked is recorded in the folder as ``edgekit_export.json`` (``GenaiExport``).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import Config
from ..core.errors import StageError, UsageError

PRECISIONS = ("fp32", "int8", "int4")  # the builder's CPU targets (fp16/bf16 are GPU precisions there)
BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = {1: "fp32", 2: "fp16", 3: "bf16", 4: "int8"}
BASE_ALGOS = ("default", "rtn", "k_quant")
COMPOUND_ALGOS = {"rtn_last": ("rtn", ("lm_head",)), "k_quant_last": ("k_quant", ("lm_head",)),
                  "k_quant_mixed": ("k_quant", ("lm_head", "mixed_layers"))}
PRESETS = {"lm_head": "last_matmul", "mixed_layers": "mixed_layers"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model")
RECORD = "edgekit_export.json"
BUILDER = "onnxruntime_genai.models.builder"


@dataclass(frozen=True)
class GenaiOptions(Config):
    """What to ask the builder for. ``int8_layers``: MatMuls kept at int8 in an int4 file: ``lm_head``,
    ``mixed_layers`` (the builder's llama.cpp-style sensitive set) or exact node names such as
    ``/model/layers.3/mlp/down_proj/MatMul`` (``quantized_nodes`` lists a built folder's). ``exclude_lm_head``:
    the LM head stays in full precision (not the builder's option of that name, which drops the head)."""
    precision: str = "int4"
    block_size: int | None = None
    accuracy_level: int | None = None
    algo: str | None = None
    int8_layers: tuple[str, ...] = ()
    exclude_lm_head: bool = False
    symmetric: bool = True  # False: asymmetric weights (a zero point per block, as llama.cpp's Q4_1)

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"ONNX Runtime GenAI precision '{self.precision}' is not one of {', '.join(PRECISIONS)} "
                             "(its builder makes fp16/bf16 files for GPUs only)")
        quantized = self.precision in ("int8", "int4")
        asked = [n for n, v in (("block_size", self.block_size), ("accuracy_level", self.accuracy_level),
                                ("algo", self.algo), ("int8_layers", self.int8_layers or None),
                                ("exclude_lm_head", self.exclude_lm_head or None),
                                ("symmetric", None if self.symmetric else False)) if v is not None]
        if asked and not quantized:
            raise ValueError(f"{', '.join(asked)} apply to int8/int4 files only, not to {self.precision}")
        if self.block_size is not None and self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size {self.block_size!r} is not one of {', '.join(map(str, BLOCK_SIZES))}")
        if self.accuracy_level is not None and self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"accuracy_level {self.accuracy_level!r} is not one of 1 (fp32), 2 (fp16), 3 (bf16), "
                             "4 (int8)")
        if self.algo is not None and self.algo not in BASE_ALGOS + tuple(COMPOUND_ALGOS):
            raise ValueError(f"algo '{self.algo}' is not one of {', '.join(BASE_ALGOS + tuple(COMPOUND_ALGOS))}")
        if self.int8_layers and self.precision != "int4":
            raise ValueError("int8_layers apply to int4 files only (an int8 file has every MatMul at int8)")
        for name in self.int8_layers:
            if name not in PRESETS and not name.startswith("/"):
                raise ValueError(f"int8 layer '{name}' is neither lm_head, mixed_layers nor a node name such as "
                                 "/model/layers.0/mlp/down_proj/MatMul")
        if self.exclude_lm_head and ("lm_head" in self.layers_at_int8()):
            raise ValueError("the LM head cannot be both excluded from quantization and at int8")

    def base_algo(self) -> str:
        return COMPOUND_ALGOS[self.algo][0] if self.algo in COMPOUND_ALGOS else (self.algo or "default")

    def layers_at_int8(self) -> tuple[str, ...]:
        """``int8_layers`` with the ones a compound algo (``k_quant_mixed``, ...) implies, in order, once each."""
        implied = COMPOUND_ALGOS[self.algo][1] if self.algo in COMPOUND_ALGOS else ()
        return tuple(dict.fromkeys((*implied, *self.int8_layers)))

    def builder_args(self) -> list[str]:
        """The builder's ``-p/--extra_options/--target_options`` for these options (offline: ``hf_token=false``).

        ``lm_head``/``mixed_layers`` go through ``matmul_mixed_precision``; exact node names need the builder's
        structured overrides, which replace that option (so the presets go there too) and with which the builder
        does not share a tied embedding with the LM head: it keeps the embedding at fp32 (SmolLM2-135M with
        k_quant_mixed: 117 MB, with one exact name added 230 MB)."""
        extra = ["hf_token=false"]
        if self.block_size is not None:
            extra.append(f"block_size={self.block_size}")
        if self.accuracy_level is not None:
            extra.append(f"accuracy_level={self.accuracy_level}")
        if self.algo is not None:
            extra.append(f"algo_config={self.base_algo()}")
        if self.exclude_lm_head:
            extra.append("nodes_to_exclude=/lm_head/MatMul")
        if not self.symmetric:
            extra.append("is_symmetric=false")
        layers = self.layers_at_int8()
        if layers and all(n in PRESETS for n in layers):
            extra.append("matmul_mixed_precision=" + ",".join(f"{PRESETS[n]}:int8" for n in layers))
        args = ["-p", self.precision, "-e", "cpu", "--extra_options", *extra]
        if layers and not all(n in PRESETS for n in layers):
            overrides = [{"match": {"preset": PRESETS[n]} if n in PRESETS else {"name": n}, "type": "int8"}
                         for n in layers]
            args += ["--target_options", json.dumps({"quant_config": {"weights": {"overrides": overrides}}})]
        return args


@dataclass(frozen=True)
class GenaiExport:
    """A folder's ``edgekit_export.json``: the options asked for, the builder and the precision of each weight."""
    options: GenaiOptions
    architecture: str
    builder: str  # "onnxruntime-genai 0.18.0"
    builder_args: tuple[str, ...]
    precision_map: dict[str, str] = field(default_factory=dict)  # node name -> int4 | int8 | fp32 | fp16

    def to_dict(self) -> dict:
        return {"format": "onnxruntime-genai", "options": self.options.to_dict(), "architecture": self.architecture,
                "builder": self.builder, "builder_args": list(self.builder_args), "precision_map": self.precision_map}

    @classmethod
    def read(cls, folder: str | Path) -> "GenaiExport":
        path = Path(folder) / RECORD
        if not path.is_file():
            raise UsageError(f"{folder}: no {RECORD}; it was not exported by edgekit")
        data = json.loads(path.read_text())
        return cls(GenaiOptions.from_dict(data["options"], str(path)), data["architecture"], data["builder"],
                   tuple(data["builder_args"]), dict(data.get("precision_map", {})))


def export_genai(hf_dir: str | Path, out_dir: str | Path, *, precision: str, block_size: int | None = None,
                 accuracy_level: int | None = None, algo: str | None = None, int8_layers: tuple[str, ...] = (),
                 exclude_lm_head: bool = False, log: io.StringIO | None = None) -> Path:
    """Build the ONNX Runtime GenAI folder ``out_dir`` from the Hugging Face folder ``hf_dir`` (offline)."""
    options = GenaiOptions(precision, block_size, accuracy_level, algo, tuple(int8_layers), exclude_lm_head)
    return export_genai_with(hf_dir, out_dir, options, log=log)


def export_genai_with(hf_dir: str | Path, out_dir: str | Path, options: GenaiOptions,
                      log: io.StringIO | None = None) -> Path:
    from ..files.bundle import staging, write_json
    from ..runtimes.genai import require_genai

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    architecture = check_hf_folder(hf_dir)
    version = require_genai()
    stage = f"export onnx {options.precision}"
    replace = out_dir.is_dir() and not any(out_dir.iterdir())  # an empty folder made for it is fine
    if out_dir.exists() and not replace:
        raise UsageError(f"{out_dir} already exists and is not empty; choose a new folder for the ONNX Runtime "
                         "GenAI model")
    args = options.builder_args()
    with staging(out_dir, force=replace) as tmp, tempfile.TemporaryDirectory(prefix="edgekit-genai-") as scratch:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HOME=str(Path(scratch) / "hf"), TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
        command = [sys.executable, "-m", BUILDER, "-i", str(hf_dir.resolve()), "-o", str(tmp.resolve()),
                   "-c", str(Path(scratch) / "cache"), *args]
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=scratch)
        if log is not None:
            log.write(f"$ {' '.join(command[1:])}\n{proc.stdout[-4000:]}{proc.stderr[-8000:]}")
        if proc.returncode != 0:
            raise StageError(stage, builder_failure(proc.stdout + "\n" + proc.stderr, architecture, version))
        copy_tokenizer(hf_dir, tmp)
        try:
            model = check_folder(tmp, stage)
        except StageError as exc:
            if "lm_head" in options.layers_at_int8() and options.base_algo() == "default":
                raise StageError(stage, f"{exc.reason} (the builder's default algo with the LM head at int8 breaks "
                                        "tied embeddings; algo='rtn' or 'k_quant' does not)") from None
            raise
        record = GenaiExport(options, architecture, f"onnxruntime-genai {version}", tuple(args),
                             precision_map(model))
        write_json(tmp / RECORD, record.to_dict())
    return out_dir


def check_hf_folder(hf_dir: Path) -> str:
    """The folder's architecture; bad input (no config, weights or tokenizer) is a UsageError."""
    if not (hf_dir / "config.json").is_file():
        raise UsageError(f"{hf_dir}: no config.json; give a Hugging Face model folder")
    try:
        config = json.loads((hf_dir / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{hf_dir}/config.json is not valid JSON ({exc})") from None
    architectures = config.get("architectures") or []
    if not architectures:
        raise UsageError(f"{hf_dir}/config.json names no architecture ('architectures' is empty)")
    if not any(hf_dir.glob("*.safetensors")) and not any(hf_dir.glob("pytorch_model*.bin")):
        raise UsageError(f"{hf_dir}: no weights (*.safetensors or pytorch_model*.bin)")
    if not (hf_dir / "tokenizer.json").is_file() and not (hf_dir / "tokenizer.model").is_file():
        raise UsageError(f"{hf_dir}: no tokenizer (tokenizer.json or tokenizer.model); save the tokenizer beside "
                         "the model (tokenizer.save_pretrained)")
    return str(architectures[0])


def builder_failure(output: str, architecture: str, version: str) -> str:
    """One line from the builder's output: the architecture it does not map, else its last error line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Exit)\b.*:", line)]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    quantized = re.search(r"The (\S+) quantized model is not currently supported", last)
    if quantized:
        return (f"onnxruntime-genai {version}'s builder cannot read weights quantized as '{quantized.group(1)}' "
                "(config.json's quantization_config); give it the float weights, without that entry")
    if "model is not currently supported" in last:
        return (f"the ONNX Runtime GenAI format cannot hold {architecture}: onnxruntime-genai {version}'s builder "
                "does not map that architecture")
    return f"onnxruntime-genai's builder failed: {last[:300]}"


def copy_tokenizer(hf_dir: Path, folder: Path) -> None:
    """The tokenizer files the builder did not write, from the source folder (genai reads them from its folder)."""
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file() and not (folder / name).exists():
            shutil.copy2(hf_dir / name, folder / name)


def check_folder(folder: Path, stage: str) -> Path:
    """The model file named by genai_config.json, its external data and tokenizer are there, and ONNX Runtime
    loads it; returns the model's path."""
    config_path = folder / "genai_config.json"
    if not config_path.is_file():
        raise StageError(stage, "the builder wrote no genai_config.json")
    decoder = json.loads(config_path.read_text())["model"]["decoder"]
    model = folder / decoder.get("filename", "model.onnx")
    if not model.is_file():
        raise StageError(stage, f"the builder wrote no {model.name}")
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    for init in graph.initializer:
        location = next((e.value for e in init.external_data if e.key == "location"), None)
        if location is not None and not (folder / location).is_file():
            raise StageError(stage, f"{model.name} refers to external data {location}, which is missing")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        raise StageError(stage, "the folder has no tokenizer (tokenizer.json) and the source had none to copy")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    try:
        ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(stage, f"the builder wrote a model ONNX Runtime cannot load: {reason[:300]}") from None
    return model


def precision_map(model: Path) -> dict[str, str]:
    """Each weight-bearing node (MatMul, Gather of the embeddings) and its precision, by the builder's node name
    less the quantizer's suffix (``/model/layers.0/mlp/down_proj/MatMul``)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    floats = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    weights = {init.name: init.data_type for init in graph.initializer}
    out = {}
    for node in graph.node:
        bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
        name = re.sub(r"_Q\d+$", "", node.name)
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            out[name.replace("/GatherBlockQuantized", "/Gather")] = f"int{bits}"
        elif node.op_type in ("MatMul", "Gather") and len(node.input) > 1:
            weight = node.input[1] if node.op_type == "MatMul" else node.input[0]
            if weight in weights:
                out[name] = floats.get(weights[weight], str(weights[weight]))
    return out


def quantized_nodes(folder: str | Path) -> tuple[str, ...]:
    """The MatMul node names of a built folder that ``int8_layers`` can name."""
    return tuple(n for n in GenaiExport.read(folder).precision_map if n.endswith("/MatMul"))
