"""build() for language models: load the causal LM, split the text, take the source's reference in torch, climb
the quantization ladder for each LM format, judge the shipped file (perplexity, greedy answers) in its own
runtime, time it (tokens/s, time to first token, peak memory at a context), gate it, recommend the fastest file
within every gate and write the bundle.

The bundle: ``<model>_<precision>_genai/`` (an ONNX Runtime GenAI folder an app loads as is),
``<model>_<type>_gguf/`` (model.gguf for llama.cpp), ``<model>_<precision>_openvino/`` (a stateful IR with its
tokenizer models, for openvino-genai), manifest.json (``kind: causal-lm``), report.md, report.png,
report.json and build.log.
"""
from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..core.errors import EdgekitError, StageError, UsageError
from ..core.lm_record import LmData, LmFile, LmRecord, LmSource
from ..core.model import Model
from ..core.record import Note
from ..core.results import FormatFailure, Gate
from ..core.versions import tool_versions
from ..files.bundle import check_target, check_writable, staging, write_json
from ..targets.profiles import DeviceProfile, Generate
from .options import BuildOptions
from .stages import stage

USED = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxruntime-genai", "gguf", "llama_cpp_python",
        "openvino", "openvino-genai", "openvino-tokenizers", "nncf", "executorch", "torchao", "pytorch-tokenizers")
GENAI, GGUF, OPENVINO, EXECUTORCH = "onnxruntime-genai", "gguf", "openvino", "executorch"


@dataclass(frozen=True)
class LmBuildResult:
    """What ``build()`` returns for a language model: the bundle's folder and the typed LmRecord."""
    bundle: Path
    record: LmRecord

    @property
    def passed(self) -> bool:
        return self.record.passed

    @property
    def failed_gates(self) -> list[Gate]:
        return self.record.failed_gates

    @property
    def report(self) -> dict[str, Any]:
        return self.record.to_report()


def is_lm_request(model, opts: BuildOptions) -> bool:
    """Whether ``model`` (a source string, a Model or None with ``opts.example``) is a language model."""
    from ..sources.lm import is_causal_lm_source

    if isinstance(model, Model):
        return model.kind == "causal-lm"
    if model is None:
        return opts.example == "tinylm"
    return isinstance(model, (str, os.PathLike)) and is_causal_lm_source(os.fspath(model))


def lm_settings(prof: DeviceProfile, opts: BuildOptions) -> Generate:
    """The profile's [generate] section with the options that apply to LMs; options that do not are refused."""
    gen = prof.generate
    if not gen.formats:
        raise UsageError(f"profile {prof.name} does not run language models (its generate.formats is empty: "
                         f"{prof.description}); build for mobile, rpi4, x86-edge or server")
    not_for_lms = [name for name, value in (("weights", opts.weights), ("task", opts.task),
                                            ("calib_samples", opts.calib_samples), ("calibration", opts.calibration),
                                            ("int8_io", opts.int8_io or None), ("fp16_io", opts.fp16_io or None),
                                            ("output_tasks", opts.output_tasks), ("dynamic", opts.dynamic),
                                            ("static_shape", opts.static_shape), ("labels", opts.labels),
                                            ("preprocessing", opts.preprocessing), ("device", opts.device)) if value]
    not_for_lms += list(opts.pruning)
    if not_for_lms:
        raise UsageError(f"{', '.join(not_for_lms)} do not apply to a language model build")
    if opts.bits is not None:
        if opts.bits == 16:
            raise UsageError("16-bit ONNX Runtime GenAI files are GPU files; for a CPU choose --bits 4, 8 or 32")
        gen = replace(gen, weight_bits=opts.bits)
    if opts.formats is not None:
        from ..targets.profiles import LM_FORMATS

        bad = [f for f in opts.formats if f not in LM_FORMATS]
        if bad:
            raise UsageError(f"format {', '.join(bad)} is not a language-model format; LM formats: "
                             f"{', '.join(LM_FORMATS)}")
        gen = replace(gen, formats=tuple(opts.formats))
    if opts.val_samples is not None:
        gen = replace(gen, validation_windows=opts.val_samples)
    return gen


def require_runtimes(formats: tuple[str, ...]) -> None:
    """Each format's tools are installed (and llama.cpp's converter set up), before anything loads: else one line."""
    if GENAI in formats:
        from ..runtimes.genai import require_genai

        require_genai()
    if GGUF in formats:
        from ..export.gguf import converter_tree

        converter_tree()
    if OPENVINO in formats:
        from ..export.openvino_lm import EXPORTER
        from ..runtimes.openvino_lm import require_ov_genai

        require_ov_genai()
        EXPORTER.python()
    if EXECUTORCH in formats:
        from ..export.executorch_lm import EXPORTER as ET_EXPORTER
        from ..runtimes.executorch_lm import require_executorch_lm

        require_executorch_lm()
        ET_EXPORTER.python()


def check_fits(source: Model, gen: Generate, profile: str) -> None:
    """Refuse up front a model whose weights alone, at the profile's bits, exceed its file budget: a lower bound
    on every file the ladder could make (norms, scales and the tokenizer only add to it)."""
    params = int(source.meta.get("parameters") or 0)
    least_mb = params * gen.weight_bits / 8 / 1e6
    if gen.max_file_mb is not None and least_mb > gen.max_file_mb:
        raise UsageError(f"{source.name} has {params / 1e6:.2f}M parameters: at {gen.weight_bits} bits its weights "
                         f"alone take {least_mb:.2f} MB, over profile {profile}'s file budget of "
                         f"{gen.max_file_mb:g} MB (generate.max_file_mb); build for a larger device or raise it")


def load_lm(model, opts: BuildOptions, progress) -> Model:
    from ..sources.lm import load_causal_lm

    if isinstance(model, Model):
        return model
    if model is None:
        from ..examples.tinylm import load_tinylm

        return load_tinylm(progress)
    return load_causal_lm(model, trust_remote_code=opts.trust_remote_code)


def build_lm(model, opts: BuildOptions, progress: Callable[[str], None] | None = None) -> LmBuildResult:
    log = io.StringIO()
    started = time.perf_counter()
    prof = opts.resolved_profile()
    gen = lm_settings(prof, opts)
    require_runtimes(gen.formats)
    out = Path(opts.out)
    check_writable(out)
    from ..core.text import builtin_text, read_text

    text = read_text(opts.data) if opts.data is not None else builtin_text("heldout")  # bad text: before the model
    with stage("load", log, progress):
        source = load_lm(model, opts, progress)
    check_fits(source, gen, prof.name)
    final = out / f"{source.name}-{prof.name}"
    check_target(final, opts.force)
    try:
        return _build(source, text, prof, gen, opts, final, log, started, progress)
    except StageError:  # an internal failure: its log stays beside the bundle that was not made
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{final.name}.failed.log").write_text(log.getvalue())
        raise


def _build(source: Model, text, prof: DeviceProfile, gen: Generate, opts: BuildOptions, final: Path,
           log: io.StringIO, started: float, progress) -> LmBuildResult:
    from ..core.text import split_text
    from ..measure.bench import cpu_info
    from .lm_formats import executorch_file, genai_file, gguf_file, openvino_file
    from ..measure.lm_validate import make_reference
    from ..sources.lm import hf_folder

    threads = prof.target.resolved_threads
    tokenizer = source.meta["tokenizer"]
    context = min(gen.context, (source.meta.get("context_length") or gen.context))
    with stage("data", log, progress):
        data = split_text(text, tokenizer, context=context, calibration=gen.calibration_windows,
                          validation=gen.validation_windows,
                          prompts=gen.prompts)
    with stage("reference", log, progress):
        ref = make_reference(source, data.validation, data.prompts, gen.greedy_tokens)
    files: list[LmFile] = []
    failures: list[FormatFailure] = []
    with staging(final, opts.force) as folder, tempfile.TemporaryDirectory(prefix="edgekit-lm-") as scratch_name:
        scratch = Path(scratch_name)
        with stage("source folder", log, progress):
            hf_dir = hf_folder(source, scratch)
        for fmt in gen.formats:
            try:
                one = {GGUF: gguf_file, OPENVINO: openvino_file, EXECUTORCH: executorch_file}.get(fmt, genai_file)
                files.append(one(fmt, source, hf_dir, ref, gen, threads, folder, scratch, log, progress,
                                 calibration=data.calibration))
            except EdgekitError as exc:
                if isinstance(exc, UsageError):
                    raise
                failures.append(FormatFailure(fmt, f"int{gen.weight_bits}" if gen.weight_bits < 32 else "fp32",
                                              getattr(exc, "stage", fmt), getattr(exc, "reason", str(exc))))
                log.write(f"format {fmt} failed and is left out: {exc}\n")
        if not files:
            raise StageError(failures[0].stage, failures[0].reason)
        gates = tuple(g for f in files for g in lm_gates(f, gen))
        reasons = tuple([g.describe() for g in gates if g.passed is False]
                        + [f"{f.format}: no file ({f.stage}: {f.reason})" for f in failures])
        recommended, why = recommend(files, gates)
        record = LmRecord(
            source=source_info(source), profile=prof.name, profile_source=prof.source,
            data=LmData(data.source, data.context, data.tokens, len(data.validation), len(data.prompts), data.seed,
                        tuple(data.notes)),
            reference_perplexity=ref.perplexity, files=tuple(files), gates=gates, passed=not reasons,
            reasons=reasons, failures=tuple(failures), notes=lm_notes(source, data), threads=threads,
            cpu=cpu_info(), versions=tool_versions(USED) | {"edgekit": __version__},
            seconds=round(time.perf_counter() - started, 2), recommended=recommended, recommended_why=why)
        with stage("bundle", log, progress):
            from ..report.lm_markdown import write_lm_report
            from ..report.lm_plot import write_lm_plot

            write_lm_plot(folder / "report.png", record, gen)
            write_json(folder / "manifest.json", record.to_manifest())
            write_json(folder / "report.json", record.to_report())
            write_lm_report(folder / "report.md", record)
            (folder / "build.log").write_text(log.getvalue())
    (Path(opts.out) / f"{final.name}.failed.log").unlink(missing_ok=True)
    return LmBuildResult(final, record)


def recommend(files: list[LmFile], gates: tuple[Gate, ...]) -> tuple[str | None, str]:
    """The folder to ship and why: of the files that meet every gate, the one that decodes fastest."""
    ok = [f for f in files if all(g.passed is not False for g in gates if g.file == f.folder)]
    if not ok:
        return None, "no file meets every gate"

    def speed(f: LmFile) -> float:
        return f.bench.decode_tokens_per_s if f.bench is not None else 0.0

    best = max(ok, key=speed)
    others = [f"{f.folder} {speed(f):.1f}" for f in ok if f is not best]
    why = (f"it meets every gate and decodes fastest: {speed(best):.1f} tokens/s"
           + (f" (also within every gate: {', '.join(others)} tokens/s)" if others else ""))
    failing = [f.folder for f in files if f not in ok]
    if failing:
        why += f"; {', '.join(failing)} miss a gate"
    return best.folder, why


def lm_gates(f: LmFile, gen: Generate) -> list[Gate]:
    """Perplexity, decode speed, time to first token, peak memory growth and the folder's size, each against the
    profile's [generate] budget (a budget left out is not applied)."""
    gates = [Gate("perplexity", f.folder, f.quality.ppl_increase, gen.max_ppl_increase, "relative increase",
                  f.quality.ppl_increase <= gen.max_ppl_increase, measured_on="host")]
    b = f.bench
    measured = [] if b is None else [
        ("decode_speed", b.decode_tokens_per_s, gen.min_decode_tokens_per_s, "tokens/s", True),
        ("ttft", b.ttft_ms, gen.max_ttft_ms, "ms", False),
        ("rss", b.peak_rss_mb - b.base_rss_mb, gen.max_rss_mb, "MB", False)]
    for name, value, limit, unit, at_least in measured:
        if limit is not None:
            gates.append(Gate(name, f.folder, value, limit, unit, value >= limit if at_least else value <= limit,
                              measured_on="host"))
    if gen.max_file_mb is not None:
        gates.append(Gate("file_size", f.folder, f.bytes / 1e6, gen.max_file_mb, "MB", f.bytes / 1e6 <= gen.max_file_mb))
    return gates


def source_info(source: Model) -> LmSource:
    m = source.meta
    return LmSource(name=source.name, origin=source.origin, loader=source.loader,
                    architecture=str(m.get("architecture")), model_type=m.get("model_type"),
                    parameters=int(m.get("parameters") or 0), vocab_size=int(m.get("vocab_size") or 0),
                    context_length=m.get("context_length"), eos_token_ids=tuple(m.get("eos_token_ids") or ()),
                    chat_template=bool(m.get("chat_template")))


def lm_notes(source: Model, data) -> tuple[Note, ...]:
    notes = [Note("data", n) for n in data.notes] + [Note("source", str(n)) for n in source.meta.get("notes") or ()]
    return tuple(notes)
