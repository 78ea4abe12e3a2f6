"""Each LM format's part of the build: its ladder, the shipped folder moved into the bundle, its greedy answers and
tokenizer checked in its runtime, its bench and its LmFile record. ONNX Runtime GenAI (``genai_file``), GGUF
(``gguf_file``), OpenVINO (``openvino_file``) and ExecuTorch (``executorch_file``); all but GenAI share the tail
(``shipped``)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

from ..core.artifact import folder_digest
from ..core.errors import UsageError
from ..core.lm_record import LmFile
from ..core.model import Model
from ..targets.profiles import Generate
from .stages import stage

GENAI, GGUF = "onnxruntime-genai", "gguf"


def genai_file(fmt: str, source: Model, hf_dir: Path, ref, gen: Generate, threads: int, folder: Path,
                scratch: Path, log: io.StringIO, progress, calibration=None) -> LmFile:
    from ..export.genai import GenaiExport
    from ..measure.lm_bench import bench_lm
    from ..measure.lm_validate import greedy_answers
    from ..quantize.genai import climb
    from ..runtimes.genai import RUNTIME

    if fmt != GENAI:  # the profile check allows only LM_FORMATS; a new one must get its own ladder here
        raise UsageError(f"no LM exporter for {fmt}")
    with stage(f"quantize {fmt}", log, progress):
        chosen, attempts, notes = climb(hf_dir, scratch / fmt, ref, gen.weight_bits, gen.max_ppl_increase, threads,
                                        gen.time_box_s, log, progress)
    made, quality = chosen.made
    precision = made.options.precision
    name = f"{source.name}_{precision}_genai"
    dest = folder / name
    shutil.move(str(made.folder), dest)
    with stage(f"validate {name}", log, progress):
        answers = greedy_answers(dest, ref, threads)
    with stage(f"bench {name}", log, progress):
        bench = bench_lm(dest, threads=threads, prompt_tokens=gen.prompt_tokens, new_tokens=gen.new_tokens,
                         context=min(gen.bench_context, context_of(dest)), runs=gen.bench_runs)
    export = GenaiExport.read(dest)
    counts: dict[str, int] = {}
    for value in export.precision_map.values():
        counts[value] = counts.get(value, 0) + 1
    sha, size = folder_digest(dest)
    return LmFile(folder=name, format=fmt, precision=precision, runtime=RUNTIME, bytes=size, sha256=sha,
                  export=export.to_dict(), precision_counts=counts, quality=quality, greedy=answers, bench=bench,
                  attempts=attempts, chosen=chosen.label, notes=tuple(notes))


def gguf_file(fmt: str, source: Model, hf_dir: Path, ref, gen: Generate, threads: int, folder: Path, scratch: Path,
          log: io.StringIO, progress, calibration=None) -> LmFile:
    """llama.cpp: the converter's F32 GGUF, the quantizer's ladder judged in llama.cpp, the shipped folder
    (model.gguf + edgekit_export.json) validated, its tokenizer compared with the source's, and timed."""
    from ..export.genai import check_hf_folder
    from ..export.gguf import convert_hf, write_folder
    from ..measure.lm_validate import quality
    from ..quantize.gguf import climb
    from ..runtimes.llamacpp import GgufFacts

    work = scratch / fmt
    with stage("export gguf", log, progress):
        base = convert_hf(hf_dir, work / "base-f32.gguf", "f32", log)
    with stage(f"quantize {fmt}", log, progress):
        chosen, attempts, notes = climb(source, base, calibration, work, lambda p: quality(p, ref, threads),
                                        gen.weight_bits, gen.max_ppl_increase, threads, gen.time_box_s, log,
                                        progress)
    made, figures = chosen.made
    name = f"{source.name}_{made.options.type.lower()}_gguf"
    dest = write_folder(made.path, folder / name, made.options, check_hf_folder(hf_dir))
    base.unlink(missing_ok=True)
    return shipped(fmt, name, dest, folder, source, ref, gen, threads, log, progress, made.options.precision,
                    figures, attempts, chosen.label, notes, GgufFacts.read(dest / "model.gguf").context_length)


def openvino_file(fmt: str, source: Model, hf_dir: Path, ref, gen: Generate, threads: int, folder: Path, scratch: Path,
              log: io.StringIO, progress, calibration=None) -> LmFile:
    """OpenVINO: optimum-intel's fp32 stateful IR, NNCF's ladder judged in the OpenVINO runtime, the shipped folder
    (IR, tokenizer models, edgekit_export.json) validated in openvino-genai, its tokenizer compared, and timed."""
    from ..export.openvino_lm import export_base, write_record
    from ..measure.lm_validate import quality
    from ..quantize.openvino_lm import climb
    from ..runtimes.openvino_lm import OvLmFacts, inference_precision

    work = scratch / fmt
    with stage("export openvino", log, progress):
        base = export_base(hf_dir, work / "base", log)
    with stage(f"quantize {fmt}", log, progress):
        chosen, attempts, notes = climb(base, calibration, work, lambda p: quality(p, ref, threads), gen.weight_bits,
                                        gen.max_ppl_increase, gen.time_box_s, log, progress)
    made, figures = chosen.made
    name = f"{source.name}_{made.options.precision}_openvino"
    dest = folder / name
    shutil.move(str(made.path), dest)
    write_record(dest, made.options)
    shutil.rmtree(work, ignore_errors=True)
    notes = notes + [f"OpenVINO's CPU plugin computes it in {inference_precision(dest)} on this CPU (its default "
                     "here, which an app gets too); it was judged and timed so"]
    return shipped(fmt, name, dest, folder, source, ref, gen, threads, log, progress, made.options.precision,
                    figures, attempts, chosen.label, notes, OvLmFacts.read(dest).context_length)


def executorch_file(fmt: str, source: Model, hf_dir: Path, ref, gen: Generate, threads: int, folder: Path,
                    scratch: Path, log: io.StringIO, progress, calibration=None) -> LmFile:
    """ExecuTorch: optimum-executorch's program at each rung of torchao's ladder, judged in ExecuTorch's runtime, the
    shipped folder (model.pte, the tokenizer, edgekit_export.json) validated, its tokenizer compared, and timed. The
    static KV cache holds the longest of the validation window, the bench's context and a prompt with its answer
    (within the model's own context)."""
    from ..measure.lm_validate import quality
    from ..quantize.executorch_lm import climb

    work = scratch / fmt
    own = int(source.meta.get("context_length") or 2048)
    longest = max((len(a.prompt_tokens) for a in ref.answers), default=0) + ref.greedy_tokens
    # what the build itself runs must fit (a window, a prompt and its answer: one past the model's own context at
    # most); the bench's context only where the model holds it
    max_seq_len = max(min(own, max(gen.bench_context, gen.prompt_tokens + gen.new_tokens)),
                      int(ref.windows.shape[1]) + 1, longest + 1)
    with stage(f"quantize {fmt}", log, progress):
        chosen, attempts, notes = climb(hf_dir, max_seq_len, work, lambda p: quality(p, ref, threads),
                                        gen.weight_bits, gen.max_ppl_increase, gen.time_box_s, log, progress,
                                        calibration=calibration)
    made, figures = chosen.made
    name = f"{source.name}_{made.options.precision}_executorch"
    dest = folder / name
    shutil.move(str(made.path), dest)
    shutil.rmtree(work, ignore_errors=True)
    notes = notes + [f"the program's static KV cache holds {max_seq_len} tokens, allocated when it loads"]
    return shipped(fmt, name, dest, folder, source, ref, gen, threads, log, progress, made.options.precision,
                   figures, attempts, chosen.label, notes, max_seq_len)


def shipped(fmt: str, name: str, dest: Path, folder: Path, source: Model, ref, gen: Generate, threads: int,
             log: io.StringIO, progress, precision: str, figures, attempts, chosen: str, notes: list[str],
             context: int) -> LmFile:
    """A GGUF, OpenVINO or ExecuTorch folder in the bundle: its greedy answers and tokenizer in its runtime, its bench, its
    record."""
    from ..measure.lm_bench import bench_lm
    from ..measure.lm_validate import greedy_answers, runtime_of

    try:
        with stage(f"validate {name}", log, progress):
            answers = greedy_answers(dest, ref, threads)
            notes = notes + tokenizer_notes(dest, source, ref)
        with stage(f"bench {name}", log, progress):
            bench = bench_lm(dest, threads=threads, prompt_tokens=gen.prompt_tokens, new_tokens=gen.new_tokens,
                             context=min(gen.bench_context, context), runs=gen.bench_runs)
    except BaseException:  # the format fails: no folder of it stays in the bundle unlisted
        shutil.rmtree(dest, ignore_errors=True)
        raise
    export, counts = export_record(fmt, dest)
    sha, size = folder_digest(dest)
    return LmFile(folder=name, format=fmt, precision=precision, runtime=runtime_of(dest), bytes=size, sha256=sha,
                  export=export, precision_counts=counts, quality=figures, greedy=answers, bench=bench,
                  attempts=attempts, chosen=chosen, notes=tuple(notes))


def export_record(fmt: str, dest: Path) -> tuple[dict, dict[str, int]]:
    """The folder's edgekit_export.json and its weights counted by precision."""
    if fmt == GGUF:
        from ..export.gguf import GgufExport

        export = GgufExport.read(dest).to_dict()
        counts: dict[str, int] = {}
        for value in export["tensor_types"].values():
            counts[value] = counts.get(value, 0) + 1
        return export, counts
    if fmt == "executorch":
        from ..export.executorch_lm import EtLmExport

        export = EtLmExport.read(dest).to_dict()
    else:
        from ..export.openvino_lm import OvLmExport

        export = OvLmExport.read(dest).to_dict()
    return export, dict(export["weight_types"])


def tokenizer_notes(dest: Path, source: Model, ref) -> list[str]:
    """Whether the runtime's own tokenizer (llama.cpp's, openvino-genai's, pytorch-tokenizers' for ExecuTorch: what
    an app calling it gets) splits the
    prompts as the source's does."""
    from ..core.text import encode
    from ..measure.lm_validate import runner_for, runtime_of

    tokenizer = source.meta["tokenizer"]
    texts = [a.prompt for a in ref.answers]
    if not texts:
        return []
    runner = runner_for(dest, 1, context=64)
    try:
        differ = sum(1 for t in texts if runner.tokenize(t) != encode(tokenizer, t))
    finally:
        runner.close()
    who = runtime_of(dest)
    if differ:
        return [f"{who}'s tokenizer splits {differ} of {len(texts)} prompts differently from the source's "
                "(the figures above fed both the source's token ids)"]
    return [f"{who}'s tokenizer splits all {len(texts)} prompts as the source's does"]


def context_of(folder: Path) -> int:
    from ..runtimes.genai import GenaiConfig

    return GenaiConfig.read(folder).context_length
