"""edgekit: take a trained model and make it fit a device.

The public API; everything else is internal. ``tests/test_api_surface.py`` pins these names.

Layers. An import goes down this list, never up, and no modules import each other in a circle
(``tests/test_layers.py`` walks every import, lazy ones included, and fails on either):

  0 domain      errors config iospec model data results artifact recipe: import nothing internal but each other
  1 support     resources versions native_output tf_import metrics formats profiles onnx_io tflite_info
                graph_stats precision bundle: domain only
  2 runtimes/   one Runner per runtime (ORT, LiteRT, TFLM, torch, Keras) behind runtimes.base.Runner
  3 stages      sources sources_keras examples/ export/ quantize/ prune/: make products
  4 measure     validate bench bench_worker compare gates recommend report report_plot report_pruning inspect_file
  5 device/     --device: the transports (local, ssh through paramiko, adb), the pushed runner's session,
                bench and validation on the device (device_runner.py, the runner itself, is support: it
                imports nothing internal and is copied to the device as it is)
  6 search/     the pruning back-off, the int8 arrangement choice and the repair ladder
  7 pipeline    plan stages pipeline validation_api
  8 archsearch/ edgekit nas: the Optuna search over architectures, scored through the pipeline's own
                run_plan, promotion and the chosen member's bundle through build()
  9 serve/      the KServe v2 app (batcher, cache, metrics), uvicorn, Ray Serve, Triton repositories;
                never torch or TensorFlow: a server loads a bundle, not a model
 10 cli         cli cli_serve cli_nas cli_tables
"""
__version__ = "0.1.0"

from .archsearch import NasResult, nas
from .bench import bench_file
from .data import Data, Split, prepare, read_arrays
from .device import bench_on_device, open_device
from .errors import EdgekitError, GateFailed, StageError, UsageError, ValidationFailed
from .iospec import IOSpec, TensorSpec
from .model import Model
from .pipeline import BuildResult, build
from .profiles import DeviceProfile, list_profiles, load_profile
from .results import BenchResult
from .sources import load_model

__all__ = [
    "BenchResult", "BuildResult", "NasResult", "Data", "DeviceProfile", "EdgekitError", "GateFailed", "IOSpec", "Model",
    "Split", "StageError", "TensorSpec", "UsageError", "ValidationFailed", "bench_file", "build",
    "bench_on_device", "list_profiles", "load_model", "load_profile", "nas", "open_device", "prepare", "read_arrays", "__version__",
]
