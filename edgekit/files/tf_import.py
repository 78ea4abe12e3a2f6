"""The one place TensorFlow is imported from (a leaf module: it imports nothing internal but errors).

The converter worker (export/tf_worker.py) sets TF's log level in its own environment; library code
never edits ``os.environ``.
"""
from __future__ import annotations

from ..core.errors import UsageError

TFLITE_EXTRA = "pip install 'edgekit[tflite]'"


def missing(what: str, module: str | None = None, extra: str = "tflite") -> UsageError:
    """The exit-2 error for a missing optional dependency, with the line that installs it."""
    name = f" ({module} is not installed)" if module else ""
    line = TFLITE_EXTRA if extra == "tflite" else f"pip install 'edgekit[{extra}]'"
    return UsageError(f"{what} needs the {'TFLite' if extra == 'tflite' else extra} extra{name}: {line}")


def import_tf(what: str = "loading a Keras or SavedModel source"):
    """``tensorflow``, or a UsageError naming ``what`` needs it and the install line. Its start-up
    chatter on fd 2 is captured."""
    import sys

    if "tensorflow" not in sys.modules:
        from .native_output import capture_fd2
        try:
            capture_fd2(lambda: __import__("tensorflow"))
        except ImportError as exc:
            raise missing(what, exc.name) from None
    import tensorflow as tf
    return tf
