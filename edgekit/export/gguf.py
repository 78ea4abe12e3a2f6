"""GGUF files for llama.cpp: llama.cpp's own converter (``convert_hf_to_gguf.py``) turns the Hugging Face folder into
an F32/F16 GGUF, and llama.cpp's quantizer (``llama_model_quantize`` through llama-cpp-python, the same code as
``llama-quantize``) makes Q8_0, Q4_0, Q4_K_M, ... from it, with an importance matrix when one is given and with the
output and token-embedding tensors at a chosen type.

The converter ships in llama.cpp's source tree, not in any wheel. ``edgekit setup llama-cpp`` (once, at install)
takes it from the source distribution of the installed llama-cpp-python release on the package index, so the
converter and the runtime are the same llama.cpp; builds then run offline. ``EDGEKIT_LLAMA_CPP`` may name any
llama.cpp checkout instead.

Each shipped file sits in a folder of its own, ``model.gguf`` with ``edgekit_export.json`` (``GgufExport``): the
type asked, the converter and quantizer versions, and each tensor's type.
"""
from __future__ import annotations

import ctypes
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import Config
from ..core.errors import StageError, UsageError

FILE = "model.gguf"
RECORD = "edgekit_export.json"
CONVERTER = "convert_hf_to_gguf.py"
TREE_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
TYPES = ("F32", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M")
TENSOR_TYPES = ("f32", "f16", "q8_0", "q6_k", "q5_k", "q4_k")
SETUP = "edgekit setup llama-cpp"


@dataclass(frozen=True)
class GgufOptions(Config):
    """What to ask llama.cpp for: the file type (llama-quantize's name), whether the calibration text's importance
    matrix guides it, and the types of the output (LM head) and token-embedding tensors (None: the type's
    default)."""
    type: str = "Q4_K_M"
    imatrix: bool = False
    output_type: str | None = None
    embedding_type: str | None = None

    def check(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"GGUF type '{self.type}' is not one of {', '.join(TYPES)}")
        for name, value in (("output_type", self.output_type), ("embedding_type", self.embedding_type)):
            if value is not None and value not in TENSOR_TYPES:
                raise ValueError(f"{name} '{value}' is not one of {', '.join(TENSOR_TYPES)}")
        if self.type in ("F32", "F16") and (self.imatrix or self.output_type or self.embedding_type):
            raise ValueError(f"imatrix, output_type and embedding_type apply to quantized types, not {self.type}")

    @property
    def precision(self) -> str:
        """int4 | int5 | int6 | int8 | fp16 | fp32: the width of most of the file's weights."""
        if self.type in ("F32", "F16"):
            return "fp" + self.type[1:]
        return f"int{self.type[1]}"

    @property
    def label(self) -> str:
        parts = [self.type] + (["imatrix"] if self.imatrix else [])
        parts += [f"output {self.output_type}"] if self.output_type else []
        parts += [f"embeddings {self.embedding_type}"] if self.embedding_type else []
        return ", ".join(parts)


@dataclass(frozen=True)
class GgufExport:
    """A GGUF folder's ``edgekit_export.json``."""
    options: GgufOptions
    architecture: str
    converter: str  # "llama.cpp convert_hf_to_gguf.py (llama-cpp-python 0.3.36's source)"
    quantizer: str  # "llama-cpp-python 0.3.36"
    tensor_types: dict[str, str] = field(default_factory=dict)  # tensor name -> ggml type name

    def to_dict(self) -> dict:
        return {"format": "gguf", "options": self.options.to_dict(), "architecture": self.architecture,
                "converter": self.converter, "quantizer": self.quantizer, "tensor_types": self.tensor_types}

    @classmethod
    def read(cls, folder: str | Path) -> "GgufExport":
        import json

        path = Path(folder) / RECORD
        if not path.is_file():
            raise UsageError(f"{folder}: no {RECORD}; it was not exported by edgekit")
        data = json.loads(path.read_text())
        return cls(GgufOptions.from_dict(data["options"], str(path)), data["architecture"], data["converter"],
                   data["quantizer"], dict(data.get("tensor_types", {})))


# -- llama.cpp's converter ---------------------------------------------------------------------------------------
def tree_root() -> Path:
    from ..runtimes.llamacpp import require_llamacpp

    given = os.environ.get("EDGEKIT_LLAMA_CPP")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgekit" / f"llama.cpp-{require_llamacpp()}"


def converter_tree() -> Path:
    """The llama.cpp tree whose converter edgekit runs; missing, a UsageError that says how to set it up."""
    root = tree_root()
    if not (root / CONVERTER).is_file():
        source = "EDGEKIT_LLAMA_CPP names no llama.cpp tree with" if os.environ.get("EDGEKIT_LLAMA_CPP") else \
            "llama.cpp's converter is not set up: no"
        raise UsageError(f"{source} {root / CONVERTER}; run `{SETUP}` once (it takes the converter from "
                         "llama-cpp-python's source distribution on the package index)")
    return root


def setup_converter(sdist: str | Path | None = None, progress=print) -> Path:
    """Put llama.cpp's converter (``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py/``) where ``converter_tree``
    finds it, from ``sdist`` or from the installed llama-cpp-python release's source distribution (``pip
    download``: the package index, at install time). Returns the tree."""
    from ..runtimes.llamacpp import require_llamacpp

    version = require_llamacpp()
    root = tree_root()
    if (root / CONVERTER).is_file():
        progress(f"llama.cpp's converter is already set up: {root}")
        return root
    with tempfile.TemporaryDirectory(prefix="edgekit-llama-cpp-") as scratch:
        if sdist is None:
            progress(f"fetching llama-cpp-python {version}'s source distribution (pip download)")
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                   "--quiet", "-d", scratch, f"llama-cpp-python=={version}"],
                                  capture_output=True, text=True)
            found = sorted(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
            if proc.returncode != 0 or not found:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise UsageError(f"pip could not download llama-cpp-python {version}'s source: {last[:200]}")
            sdist = found[0]
        sdist = Path(sdist)
        if not sdist.is_file():
            raise UsageError(f"{sdist}: no such file")
        staged = Path(scratch) / "tree"
        with tarfile.open(sdist) as tar:
            prefix = next((m.name.split("/")[0] for m in tar.getmembers()), "") + "/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].split("/")[0] in TREE_PARTS and (m.isfile() or m.isdir())]
            if not any(m.name.endswith("/" + CONVERTER) for m in members):
                raise UsageError(f"{sdist}: no vendor/llama.cpp/{CONVERTER} inside; not a llama-cpp-python source")
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(staged, members=members, filter="data")
        (staged / "EDGEKIT_SOURCE").write_text(f"llama-cpp-python {version}: {sdist.name}\n")
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.move(str(staged), str(root))
    progress(f"llama.cpp's converter is set up: {root}")
    return root


def convert_hf(hf_dir: str | Path, out_file: str | Path, outtype: str = "f32", log: io.StringIO | None = None) -> Path:
    """llama.cpp's converter on the Hugging Face folder ``hf_dir`` (offline, a child process) into ``out_file``."""
    from .genai import check_hf_folder

    hf_dir, out_file = Path(hf_dir), Path(out_file)
    architecture = check_hf_folder(hf_dir)
    tree = converter_tree()
    with tempfile.TemporaryDirectory(prefix="edgekit-gguf-") as scratch:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HOME=str(Path(scratch) / "hf"), TQDM_DISABLE="1", PYTHONWARNINGS="ignore",
                   PYTHONPATH=os.pathsep.join([str(tree / "gguf-py"), str(tree)]))
        tmp = Path(scratch) / out_file.name
        command = [sys.executable, str(tree / CONVERTER), str(hf_dir.resolve()), "--outfile", str(tmp),
                   "--outtype", outtype]
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=scratch)
        if log is not None:
            log.write(f"$ {CONVERTER} {' '.join(command[2:])}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
        if proc.returncode != 0 or not tmp.is_file():
            raise StageError("export gguf", converter_failure(proc.stdout + "\n" + proc.stderr, architecture))
        out_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), str(out_file))
    return out_file


def converter_failure(output: str, architecture: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", line)]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    if "is not supported" in last and "Model" in last:
        return f"the GGUF format cannot hold {architecture}: llama.cpp's converter does not map that architecture"
    if "pre-tokenizer was not recognized" in last:
        return ("llama.cpp's converter does not know this tokenizer's pre-tokenizer (it recognizes published "
                "tokenizers by their output), so llama.cpp could not tokenize as the source does")
    return f"llama.cpp's converter failed: {last[:300]}"


# -- llama.cpp's quantizer ---------------------------------------------------------------------------------------
def quantize(base: str | Path, out_file: str | Path, options: GgufOptions, *, threads: int = 1,
             imatrix: dict[str, np.ndarray] | None = None, log: io.StringIO | None = None) -> Path:
    """``llama_model_quantize`` (llama-quantize's code) from the F32/F16 GGUF ``base`` into ``out_file``; what
    the quantizer prints (a tensor whose rows do not fit the type's blocks falls back to another type) goes to
    ``log``."""
    import llama_cpp as lc

    from ..runtimes.llamacpp import quiet

    quiet()
    options.check()
    if options.imatrix and not imatrix:
        raise StageError("quantize gguf", f"{options.label}: no importance matrix was given")
    params = lc.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype_of(options.type)
    if options.output_type:
        params.output_tensor_type = ggml_type(options.output_type)
    if options.embedding_type:
        params.token_embedding_type = ggml_type(options.embedding_type)
    keep = []  # the arrays the C side reads must live until it returns
    if options.imatrix and imatrix:
        entries = (lc.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            data = np.ascontiguousarray(values, dtype=np.float32)
            keep += [name.encode(), data]
            entries[i].name = keep[-2]
            entries[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = data.size
        entries[len(imatrix)].name = None
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(lc.llama_model_imatrix_data))
        keep.append(entries)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    from ..files.native_output import capture_fd2

    codes = []
    printed = capture_fd2(lambda: codes.append(lc.llama_model_quantize(str(base).encode(), str(out_file).encode(),
                                                                       ctypes.byref(params))), (1, 2))
    rc = codes[0] if codes else -1
    if log is not None:
        log.write(f"llama.cpp quantizer, {options.label}:\n" + "".join(
            line + "\n" for line in printed.splitlines() if "warning" in line or "error" in line.lower()))
    if rc != 0 or not out_file.is_file():
        out_file.unlink(missing_ok=True)
        raise StageError("quantize gguf", f"llama.cpp's quantizer failed on {options.label} (code {rc})")
    return out_file


def ftype_of(name: str) -> int:
    import llama_cpp as lc

    return int(lc.LLAMA_FTYPE_ALL_F32 if name == "F32" else getattr(lc, f"LLAMA_FTYPE_MOSTLY_{name}"))


def ggml_type(name: str) -> int:
    import llama_cpp as lc

    return int(getattr(lc, f"GGML_TYPE_{name.upper()}"))


def tensor_types(path: str | Path) -> dict[str, str]:
    """Each tensor of a GGUF file and its ggml type (``Q4_K``, ``Q8_0``, ``F32``, ...)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors}


def write_folder(made: Path, folder: Path, options: GgufOptions, architecture: str) -> Path:
    """Move the GGUF ``made`` into ``folder`` as model.gguf beside its edgekit_export.json."""
    from ..files.bundle import write_json
    from ..runtimes.llamacpp import require_llamacpp

    version = require_llamacpp()
    folder.mkdir(parents=True, exist_ok=False)
    shutil.move(str(made), str(folder / FILE))
    source = (tree_root() / "EDGEKIT_SOURCE")
    record = GgufExport(options, architecture,
                        f"llama.cpp {CONVERTER} ({source.read_text().strip() if source.is_file() else tree_root()})",
                        f"llama-cpp-python {version}", tensor_types(folder / FILE))
    write_json(folder / RECORD, record.to_dict())
    return folder
