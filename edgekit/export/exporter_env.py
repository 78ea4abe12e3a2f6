"""Exporters that pin an older transformers than edgekit's other LM tools, each in an environment of its own.

optimum-intel (the OpenVINO LM format) and optimum-executorch (the ExecuTorch LM format) each pin a transformers
and huggingface-hub release below the ones onnxruntime-genai's builder and llama.cpp's converter run on here;
installed beside them, they fail at import. ``edgekit setup optimum-intel`` / ``optimum-executorch`` (once, at
install) makes a small virtual environment in edgekit's cache that holds only the exporter and the releases it
supports, and reaches every other package (torch, openvino, nncf, executorch, torchao) through a ``.pth`` line to the
installing environment. One such environment is made per installing environment (a hash of its package folders), so
the exporter always runs on that environment's torch. The export is a subprocess there, offline.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UsageError

READY = "edgekit-ready"


@dataclass(frozen=True)
class ExporterEnv:
    """One exporter's environment: what pip installs without dependencies (the exporter itself: its other listed
    requirements are already in the installing environment, or never imported), what it installs with them (the
    pinned transformers), the import that proves it works, and the variable that may name another Python."""
    name: str  # "optimum-intel": the `edgekit setup` target
    version: str
    packages: tuple[str, ...]  # pip install --no-deps
    deps: tuple[str, ...]  # pip install
    transformers: str
    check: str  # python -c
    env_var: str
    purpose: str  # "the OpenVINO LM format"

    @property
    def setup_command(self) -> str:
        return f"edgekit setup {self.name}"

    def root(self) -> Path:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = hashlib.sha256("\n".join(installing_paths()).encode()).hexdigest()[:10]
        return cache / "edgekit" / f"{self.name}-{self.version}-transformers-{self.transformers}-{key}"

    def python(self) -> Path:
        """The Python that runs the exporter; not set up, a UsageError that says how."""
        given = os.environ.get(self.env_var)
        if given:
            if not Path(given).is_file():
                raise UsageError(f"{self.env_var} names no Python: {given}")
            return Path(given)
        root = self.root()
        python = root / "bin" / "python"
        if not (root / READY).is_file() or not python.exists():
            raise UsageError(f"{self.name}'s exporter is not set up for this environment (no {root}); run "
                             f"`{self.setup_command}` once (it installs {self.name} {self.version} and the "
                             "transformers release it supports into an environment of its own)")
        return python

    def setup(self, progress=print) -> Path:
        """Make the environment (the package index, at install time). Returns its folder."""
        root = self.root()
        if (root / READY).is_file():
            progress(f"{self.name}'s exporter is already set up: {root}")
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
        try:
            progress(f"making {self.name}'s environment in {root}")
            run([sys.executable, "-m", "venv", str(staged)], "python -m venv")
            python = staged / "bin" / "python"
            site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True).stdout.strip()
            if not site:
                raise UsageError(f"the new environment's Python does not run: {python}")
            # after the environment's own site-packages: its pinned transformers wins, the rest comes from here
            Path(site, "edgekit-installing-env.pth").write_text("\n".join(installing_paths()) + "\n")
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            progress(f"installing {', '.join(self.packages + self.deps)} there (pip)")
            run(pip + ["--no-deps", *self.packages], f"pip install {self.name}")
            run(pip + list(self.deps), "pip install transformers")
            run([str(python), "-c", self.check], f"import {self.name}")
            (staged / READY).write_text(f"{self.name} {self.version} for {sys.prefix}\n")
            if root.exists():  # a setup that stopped half-way (no ready mark), or one that ran beside this one
                shutil.rmtree(root, ignore_errors=True)
            try:
                staged.rename(root)  # python -m runs from any folder: nothing in it names its path
            except OSError as exc:
                raise UsageError(f"cannot put {self.name}'s environment at {root}: {exc}") from None
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        progress(f"{self.name}'s exporter is set up: {root}")
        return root


def installing_paths() -> list[str]:
    """This environment's package folders, which an exporter's environment reaches through a .pth file."""
    import sysconfig

    return sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})


def offline_env() -> dict[str, str]:
    """The exporter subprocess's environment: no network, no telemetry."""
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                TOKENIZERS_PARALLELISM="false")


def run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        raise UsageError(f"{what} failed (exit {proc.returncode}): {last[0][:240]}")


def last_error_line(stderr: str) -> str:
    """The last unindented line of a failed exporter's stderr (the exception, not the traceback's frames)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith((" ", "\t"))]
    return (lines[-1:] or ["no output"])[0][:300]
