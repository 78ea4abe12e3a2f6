"""build(): make the plan, run the stages in its order, back off, gate, and write the bundle.

No format or algorithm code lives here: formats come from the plan (plan.py, from the format table),
exporters and quantization passes from their registries; the record is assembled by finish.py.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..core.artifact import Artifact
from ..core.data import Data
from ..core.errors import EdgekitError, StageError
from ..core.model import Model
from ..core.record import BuildRecord
from ..core.results import FormatFailure, Gate
from ..device import open_device
from ..export import Exported, ExportJob, PassContext, exporter_for
from ..export.tf_client import TfWorker
from ..files.bundle import check_target, check_writable, staging, write_json
from ..measure.validate import Reference, reference_outputs
from ..prune.search import compress
from ..quantize.onnx_ort import check_calibration
from ..report.markdown import write_reports
from ..targets.profiles import DeviceProfile
from .finish import TRANSFER_SHARE, make_record
from .lm import LmBuildResult, build_lm, is_lm_request
from .options import BuildOptions
from .plan import QUANTIZERS, BuildPlan, make_plan
from .stages import check_compressible, load_data, load_source, measure, speed_verdicts, stage


@dataclass(frozen=True)
class BuildResult:
    """What ``build()`` returns: the bundle's folder and the typed record of the build."""
    bundle: Path
    record: BuildRecord

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self.record.artifacts)

    @property
    def gates(self) -> list[Gate]:
        return list(self.record.gates)

    @property
    def passed(self) -> bool:
        """The build's verdict (record.verdict): what ships meets the gates (or, strict, every file does)."""
        return self.record.passed

    @property
    def failed_gates(self) -> list[Gate]:
        return self.record.failed_gates

    @property
    def report(self) -> dict[str, Any]:
        """report.json's content."""
        return self.record.to_report()


def build(model=None, options: BuildOptions | None = None, *, progress: Callable[[str], None] | None = None,
          **kwargs: Any) -> BuildResult | LmBuildResult:
    """Build, validate, measure and gate a bundle for ``model`` with ``options`` (a BuildOptions).

    ``model`` is a source string (see ``load_model``), a ``Model``, or None for the built-in example
    (``example='tinylm'``: the example language model). A language model (a Hugging Face folder, a ``.gguf`` file,
    a causal-LM Model) is built by ``build_lm`` and gives an LmBuildResult.
    Keyword arguments (``profile='mobile', data='x.npz', ...``: BuildOptions' fields) are a convenience that
    constructs the options; an unknown one is a usage error. Returns a BuildResult; ``result.passed`` is the
    verdict (the CLI exits 1 when it is False) and ``result.record`` the typed BuildRecord.
    """
    if options is not None and kwargs:
        raise TypeError("build() takes either a BuildOptions or keyword options, not both")
    opts = options if options is not None else BuildOptions.of(**kwargs)
    if is_lm_request(model, opts):
        return build_lm(model, opts, progress)
    log = io.StringIO()
    prof = opts.resolved_profile()
    started = time.perf_counter()
    out = Path(opts.out)
    check_writable(out)
    with stage("load", log, progress):
        source, arrays, data_source = load_source(model, opts.weights, opts.data, opts.trust_pickle, opts.dynamic)
        source = with_app_meta(source, opts.labels, opts.preprocessing)
    factory = source.meta.get("factory")
    final = out / f"{source.name}-{factory + '-' if factory else ''}{prof.name}"
    check_target(final, opts.force)
    device_url = opts.device or prof.target.device
    with contextlib.ExitStack() as held:
        dev = held.enter_context(open_device(device_url, accept_host_key=opts.accept_host_key)) if device_url else None
        return _build(source, arrays, data_source, prof, opts, final, log, started, progress, dev)


def with_app_meta(source, labels, preprocessing):
    """The source with the user's labels and recipe, checked against its inputs and first output."""
    from ..core.recipe import check_labels, check_recipe, load_labels, load_recipe

    meta = dict(source.meta)
    if labels is not None:
        meta["labels"] = load_labels(labels) if isinstance(labels, (str, Path)) else [str(x) for x in labels]
        check_labels(meta["labels"], source.iospec, "--labels")
    if preprocessing is not None:
        meta["preprocessing"] = (load_recipe(preprocessing, source.iospec) if isinstance(preprocessing, (str, Path))
                                 else check_recipe(preprocessing, source.iospec, "preprocessing"))
    return replace(source, meta=meta) if meta != source.meta else source


def _build(source: Model, arrays, data_source: str, prof: DeviceProfile, opts: BuildOptions, final: Path,
           log: io.StringIO, started: float, progress, device) -> BuildResult:
    out = Path(opts.out)
    skipped_compression = check_compressible(source, prof, explicit=bool(opts.pruning))
    wanted = opts.formats or prof.target.formats
    plan = make_plan(source, prof, wanted, explicit=bool(opts.formats))
    with stage("data", log, progress):
        distils = prof.prune.active and skipped_compression is None and prof.recover.epochs > 0
        dataset = load_data(source, arrays, data_source, opts.task, opts.calib_samples, opts.val_samples,
                            transfer=TRANSFER_SHARE if distils else 0.0, static=opts.static_shape)
    if any(s.precisions for s in plan.steps):
        check_calibration(dataset.calibration)  # its small-sample warning is already among the data's notes
    with stage("reference", log, progress):
        reference = reference_outputs(source, dataset, prof.target.resolved_threads,
                                      {**prof.outputs, **dict(opts.output_tasks or {})})
    compression = None
    try:
        with staging(final, opts.force) as folder, tempfile.TemporaryDirectory(prefix="edgekit-") as scratch, \
                TfWorker(log) as tf:
            if needs_converter(plan, source):
                tf.prestart()  # its TensorFlow imports overlap pruning and the ONNX export
            teacher = source.module
            if prof.prune.active and skipped_compression is None:
                with stage("compress", log, progress):
                    compression = compress(source, dataset, reference, prof, Path(scratch), log=log, progress=progress)
                source, reference = compression.model, compression.reference
            artifacts, failures = run_plan(plan, source, reference, dataset, prof, folder, Path(scratch), tf, log,
                                           progress, {"int8_io": opts.int8_io, "fp16_io": opts.fp16_io}, device,
                                           teacher)
            with stage("compare speed", log, progress):
                speed = speed_verdicts(artifacts, folder, dataset, prof)
            record = make_record(source, prof, opts, plan, dataset, reference, artifacts, failures, speed, compression,
                                 skipped_compression, device, final, folder, started)
            with stage("bundle", log, progress):
                write_json(folder / "manifest.json", record.to_manifest())
                write_reports(folder, record)
                (folder / "build.log").write_text(log.getvalue())
        (out / f"{final.name}.failed.log").unlink(missing_ok=True)  # an earlier failure's log is stale now
    except EdgekitError:
        failed_log = out / f"{final.name}.failed.log"
        out.mkdir(parents=True, exist_ok=True)
        failed_log.write_text(log.getvalue())
        raise
    return BuildResult(final, record)


def run_plan(plan: BuildPlan, source: Model, reference: Reference, data: Data, prof: DeviceProfile, folder: Path,
             scratch: Path, tf: TfWorker, log: io.StringIO, progress, options: dict, device=None, teacher=None
             ) -> tuple[list[Artifact], list[FormatFailure]]:
    """Each step: export the format's fp32 file, then its quantization passes (and a pass's fallback
    when its file fails or misses the accuracy budget); every file is validated and measured as it is
    made. A file that fails (its stage, or its validation) is removed and listed: the others still ship."""
    produced: list[Exported] = []
    artifacts: list[Artifact] = []
    failures: list[FormatFailure] = []
    missed_budget: set[str] = set()
    budget = prof.budget.max_accuracy_drop

    def attempt(name: str, precision: str, title: str, make: Callable[[], list[Exported]]) -> list[Artifact] | None:
        before = set(folder.iterdir())
        try:
            with stage(title, log, progress):
                if tf is not None and not title.startswith("export "):
                    tf.settle()  # quantization passes time their candidates: not beside the worker's imports
                made = make()
            if tf is not None:
                tf.settle()  # nothing is validated or timed while the converter worker is still importing
            measured = []
            for entry in made:
                with stage(f"validate+bench {entry.path.name}", log, progress):
                    measured.append((entry, measure(entry, reference, data, prof, source, device)))
        except StageError as exc:
            for path in set(folder.iterdir()) - before:  # nothing half-made stays in the bundle
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            failures.append(FormatFailure(name, precision, exc.stage, exc.reason))
            log.write(f"format {name} {precision} failed and is left out: {exc}\n")
            return None
        for entry, artifact in measured:
            produced.append(entry)
            artifacts.append(artifact)
        return [a for _, a in measured]

    for step in plan.steps:
        name = step.format.name
        needs = step.format.embeds or (step.format.converted_from if source.kind != "keras" else "")
        source_file = next((e.path for e in produced if e.format == step.format.converted_from
                            and e.precision == "fp32"), None)
        if needs and not any(e.format == needs for e in produced):
            failures.append(FormatFailure(name, "fp32", f"export {name}", f"not made: it is made from the {needs} "
                                          f"files, and none was made"))
            continue
        job = ExportJob(source, folder, scratch, log, tf, reference_onnx=source_file, calibration=data.calibration,
                        produced=tuple(produced), missed_budget=frozenset(missed_budget),
                        min_delegated_share=prof.target.min_delegated_share)
        exporter = exporter_for(name, source.kind)
        if exporter is None:  # make_plan refuses such a format up front; a registry change must not pass silently
            raise StageError(f"export {name}", f"no exporter is registered for {name} from a {source.kind} model")
        measured = attempt(name, "fp32", f"export {name}", lambda: exporter(job))
        if measured is None:
            continue
        base = next(e for e in produced if e.path.name == measured[0].file)  # the fp32 file the passes start from
        twin = measured[0]
        for precision in step.precisions:
            ctx = PassContext(folder, scratch, source.name, source.iospec, log, tf, data, reference, prof,
                              twin.bench.p50_ms if twin.bench else None, options, model=source,
                              teacher=teacher if teacher is not None else source.module)
            made = attempt(name, precision, f"quantize {name} {precision}",
                           lambda: [QUANTIZERS[(name, precision)](base, ctx)])
            fallback = step.fallback.get(precision)
            if not fallback:
                continue
            if made is None:
                why = f"{precision} failed ({failures[-1].reason[:160]})"
            elif made[0].drop is not None and made[0].drop > budget:
                why = f"{made[0].file} missed the accuracy budget (drop {made[0].drop:.4f})"
                missed_budget.add(made[0].file)  # a container (the C array) embeds the fallback instead
            else:
                continue
            attempt(name, fallback, f"quantize {name} {fallback}",
                    lambda: [_with_why(QUANTIZERS[(name, fallback)](base, ctx), why)])
    if not artifacts and failures:
        first = failures[0]
        raise StageError(first.stage, first.reason)
    return artifacts, failures


def needs_converter(plan: BuildPlan, source: Model) -> bool:
    """Whether the build calls the TensorFlow worker: a Keras source, or a format that needs TensorFlow."""
    return source.kind == "keras" or any("tensorflow" in s.format.requires for s in plan.steps)


def _with_why(entry: Exported, why: str) -> Exported:
    return replace(entry, info=entry.info.with_details(why=why))
