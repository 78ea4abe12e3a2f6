"""The build's handle on its converter worker (tf_worker.py): started on the first call (or early, by
``prestart``), one per build, closed with the build. Calls from several threads of one build are serialised."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..core.errors import StageError, UsageError
from ..files.tf_import import missing

WHAT = {"onnx2tf": "TFLite export (onnx2tf)", "keras_saved_model": "Keras export", "convert": "TFLite conversion",
        "int4": "4-bit TFLite (ai-edge-quantizer)", "tf2onnx": "ONNX export of Keras models (tf2onnx)"}


class TfWorker:
    def __init__(self, log: io.StringIO | None = None):
        self.log = log
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._logfile = None
        self._offset = 0  # how much of the worker's log has been copied to ``log``
        self._warming = False  # a prestart's answer is still to be read

    def __enter__(self) -> "TfWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, op: str, stage: str, **args) -> dict:
        """Run ``op`` in the worker. A missing package or an input it cannot convert is a UsageError (exit 2);
        a converter failure a StageError naming ``stage``."""
        with self._lock:
            self._settle()
            proc = self._start()
            proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            printed = self._drain()
        if not line:
            code = self._proc.wait() if self._proc is not None else None
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            found = [x for x in re.sub(r"\x1b\[[0-9;]*m", "", printed).splitlines()
                     if re.search(r"ERROR|Error|Check failed|Fatal|Segmentation", x)]
            raise StageError(stage, f"the TensorFlow converter process crashed during {op} ({how})"
                             + (f": {found[-1].strip()[:240]}" if found else ""))
        answer = json.loads(line)
        if answer.pop("ok"):
            return answer
        if answer["kind"] == "missing":
            raise missing(WHAT.get(op, op), answer["module"])
        if answer["kind"] == "usage":
            raise UsageError(answer["message"])
        if op == "onnx2tf":  # onnx2tf states its reason in its log: name the op, not the tensor it dumps
            raise StageError(stage, onnx2tf_reason(answer["message"], printed))
        raise StageError(stage, answer["message"])

    def prestart(self) -> None:
        """Start the worker now and let it import the converters while the build does its torch-side
        work. ``settle()`` waits for those imports; a build calls it before it times anything, so that no
        measurement shares the CPU with them. A failed import shows at the first real call."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            proc = self._start()
            proc.stdin.write(json.dumps({"op": "warm", "args": {}}) + "\n")
            proc.stdin.flush()
            self._warming = True

    def settle(self) -> None:
        """Block until a prestarted worker has finished its imports (at once otherwise)."""
        with self._lock:
            self._settle()

    def _settle(self) -> None:
        if self._warming and self._proc is not None:
            self._proc.stdout.readline()  # the warm answer; a crash restarts the worker at the next call
            self._drain()
        self._warming = False

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                if self._warming:  # never used: its imports are not waited for
                    self._proc.kill()
                self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc.stdout.close()
                self._proc = None
                self._warming = False
                self._drain()
            if self._logfile is not None:
                self._logfile.close()
                self._logfile = None

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._logfile is None:
            self._logfile = tempfile.NamedTemporaryFile(prefix="edgekit-tf-", suffix=".log")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self._proc = subprocess.Popen([sys.executable, "-m", "edgekit.export.tf_worker", self._logfile.name],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._offset = 0
        return self._proc

    def _drain(self) -> str:
        """What the worker printed since the last call; appended to the build log."""
        if self._logfile is None:
            return ""
        path = Path(self._logfile.name)
        with path.open("rb") as f:
            f.seek(self._offset)
            text = f.read().decode(errors="replace")
            self._offset = f.tell()
        if self.log is not None and text:
            self.log.write(text)
        return text


def _last_error(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return (errors[-1] if errors else (lines[-1] if lines else "no message"))[:300]


def onnx2tf_reason(message: str, printed: str) -> str:
    """One line: the ONNX op onnx2tf stopped at, and its error without array dumps."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", printed)
    ops = re.findall(r"onnx_op_name:\s*(\S+)", text)
    kinds = re.findall(r"onnx_op_type:\s*(\S+)", text)
    short = re.sub(r"\[\[?[-0-9.e ,\n]*(\]\]?)?.*", "[...]", " ".join(message.split()), flags=re.S)[:200]
    if ops:
        kind = f" ({kinds[-1]})" if kinds else ""
        return f"onnx2tf cannot convert the graph at op {ops[-1]}{kind}: {short}"
    return f"{short} ({_last_error(printed)})"
