"""Capturing what native libraries (TF, LiteRT, TFLM) print straight to file descriptors."""
from __future__ import annotations

import os
import sys
import tempfile


def capture_fd2(fn, fds: tuple[int, ...] = (2,)) -> str:
    """Run ``fn`` and return what native code wrote to file descriptor 2 (and any other ``fds``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as tmp:
        for fd in fds:
            os.dup2(tmp.fileno(), fd)
        try:
            fn()
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")
