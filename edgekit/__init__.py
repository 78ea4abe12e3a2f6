"""edgekit: take a trained model and make it fit a device.

The public API; everything else is internal. ``tests/test_api_surface.py`` pins these names.

Layers. An import goes down this list, never up, and no modules import each other in a circle
(``tests/test_layers.py`` walks every import, lazy ones included, and fails on either). One package per layer:

  0 core/       errors config iospec model data results artifact recipe metrics versions resources:
                domain types; import nothing internal but each other
  1 targets/    device profiles and the format table (TOML data)
    files/      reading and writing files: ONNX and TFLite readers, graph size and cost, precision maps,
                the one TensorFlow import, native output capture, atomic bundle folders
  2 runtimes/   one Runner per runtime (ORT, LiteRT, TFLM, torch, Keras, OpenVINO, ExecuTorch) behind
                runtimes.base.Runner; device_runner.py, the single file copied to a device as it is
  3 sources/    loading user models into a Model;  examples/: the built-in models;  export/: one exporter
                per format
  4 measure/    validate, bench (+ its worker process), interleaved speed verdicts, gates, recommend, inspect
    report/     report.md/json/png, the pruning plot, the compression summary
  5 device/     --device: the transports (local, ssh through paramiko, adb), the pushed runner's session,
                bench and validation on the device
  6 prune/      pruning methods, recovery by distillation, and the pruning back-off search
    quantize/   every quantization pass with its repair: ORT, TFLite, OpenVINO, ExecuTorch, QAT, the ladder
  7 pipeline/   the plan, the stages, build() (the order of stages and the back-off loop), validate_against;
                lm.py: the language-model build (ladder, validation in the runtime, tokens/s, gates)
  8 archsearch/ edgekit nas: the Optuna search over architectures, scored through the pipeline's own
                run_plan, promotion and the chosen member's bundle through build()
  9 serve/      the KServe v2 app (batcher, cache, metrics), uvicorn, Ray Serve, Triton repositories;
                never torch or TensorFlow: a server loads a bundle, not a model
 10 cli/        the command line: parse, call the public API, render
"""
__version__ = "0.1.0"

from .archsearch import NasOptions, NasResult, nas
from .measure.bench import bench_file
from .core.data import Data, Split, prepare, read_arrays
from .device import bench_on_device, open_device
from .core.errors import EdgekitError, GateFailed, StageError, UsageError, ValidationFailed
from .core.iospec import IOSpec, TensorSpec
from .core.model import Model
from .core.lm_record import LmRecord
from .core.record import BuildRecord
from .pipeline.build import BuildResult, build
from .pipeline.lm import LmBuildResult
from .pipeline.options import BuildOptions
from .targets.profiles import DeviceProfile, list_profiles, load_profile
from .core.results import BenchResult
from .sources.load import load_model

__all__ = [
    "BenchResult", "BuildOptions", "BuildRecord", "BuildResult", "NasOptions", "NasResult", "Data", "DeviceProfile",
    "EdgekitError", "GateFailed", "IOSpec", "LmBuildResult", "LmRecord", "Model",
    "Split", "StageError", "TensorSpec", "UsageError", "ValidationFailed", "bench_file", "build",
    "bench_on_device", "list_profiles", "load_model", "load_profile", "nas", "open_device", "prepare", "read_arrays", "__version__",
]
