"""Capturing what native libraries (LiteRT, TFLM, TF) print straight to file descriptors.

File descriptors belong to the whole process, so captures are serialised by one lock and kept
short (loading an interpreter, reading TFLM's allocation report). Long native jobs (onnx2tf, the
TFLite converter) run in the converter worker process instead (export/tf_client.py).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading

_LOCK = threading.RLock()


def capture_fd2(fn, fds: tuple[int, ...] = (2,)) -> str:
    """Run ``fn`` and return what native code wrote to file descriptor 2 (and any other ``fds``), and what
    bindings wrote through Python's ``sys.stderr`` (ExecuTorch's pybind logging does) meanwhile."""
    import contextlib
    import io

    with _LOCK:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in fds}
        python_side = io.StringIO()
        with tempfile.TemporaryFile() as tmp:
            for fd in fds:
                os.dup2(tmp.fileno(), fd)
            try:
                with contextlib.redirect_stderr(python_side):
                    fn()
            finally:
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
                    os.close(copy)
            tmp.seek(0)
            return tmp.read().decode(errors="replace") + python_side.getvalue()
