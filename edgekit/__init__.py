"""edgekit: take a trained model and make it fit a device.

The public API; everything else is internal. ``tests/test_api_surface.py`` pins these names.
"""
__version__ = "0.1.0"

from .bench import BenchResult, bench_file
from .data import Data, Split, prepare, read_arrays
from .errors import EdgekitError, GateFailed, StageError, UsageError, ValidationFailed
from .iospec import IOSpec, TensorSpec
from .model import Model
from .pipeline import BuildResult, build
from .profiles import DeviceProfile, list_profiles, load_profile
from .sources import load_model

__all__ = [
    "BenchResult", "BuildResult", "Data", "DeviceProfile", "EdgekitError", "GateFailed", "IOSpec", "Model",
    "Split", "StageError", "TensorSpec", "UsageError", "ValidationFailed", "bench_file", "build",
    "list_profiles", "load_model", "load_profile", "prepare", "read_arrays", "__version__",
]
