"""The one small interface every way of reaching a device implements, and the local one."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Protocol

# The folder on the device lives exactly as long as this shell: it makes the folder, prints it, and removes
# it when its stdin closes (the host's cleanup, or a dropped connection) or when it is hung up on.
GUARDIAN = ('d=$(mktemp -d "${TMPDIR:-%s}/edgekit-XXXXXX") || exit 1; trap \'rm -rf "$d"\' EXIT; '
            'trap \'exit 129\' HUP TERM INT; echo "$d"; cat >/dev/null')


class Transport(Protocol):
    """``where`` names the device in every message and in the report (``ssh://pi@rpi4.local:22``)."""
    where: str
    python: str  # the interpreter on the device that runs the runner

    def push(self, local: Path, name: str) -> str: ...  # into the device's temporary folder; its path there

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]: ...  # in that folder

    def pull(self, name: str, local: Path) -> None: ...

    def cleanup(self) -> None: ...  # the folder and everything in it is gone afterwards


class LocalTransport:
    """This machine, through a subprocess: the same protocol as a device, without a connection."""

    def __init__(self, python: str | None = None):
        self.where = "local"
        self.python = python or sys.executable
        self.folder = Path(tempfile.mkdtemp(prefix="edgekit-device-"))

    def push(self, local: Path, name: str) -> str:
        shutil.copyfile(local, self.folder / name)
        return str(self.folder / name)

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            return 127, "", f"{argv[0]}: {exc.strerror}"
        except subprocess.TimeoutExpired:
            return 124, "", f"timed out after {timeout:.0f} s"
        return proc.returncode, proc.stdout, proc.stderr

    def pull(self, name: str, local: Path) -> None:
        shutil.copyfile(self.folder / name, local)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
