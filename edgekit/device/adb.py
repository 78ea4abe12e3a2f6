"""A device over adb: the platform's own ``adb`` client (``adb -s SERIAL push/shell/pull``), exit codes through
shell v2. The folder lives in /data/local/tmp as long as a guardian shell holds its stdin open."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from ..core.errors import UsageError
from .transport import GUARDIAN


class AdbTransport:
    def __init__(self, serial: str, *, python: str = "python3", adb: str | None = None, timeout: float = 30.0):
        self.serial, self.python, self.where = serial, python, f"adb:{serial}"
        self.adb = adb or shutil.which("adb")
        if not self.adb:
            raise UsageError(f"{self.where}: no adb client here; install Android's platform tools (Debian: apt-get "
                             "install adb)")
        listed = self._devices(timeout)
        if listed.get(serial) != "device":
            state = f"it is '{listed[serial]}'" if serial in listed else \
                f"adb devices lists {', '.join(listed) or 'no device'}"
            raise UsageError(f"{self.where}: no such adb serial ready ({state}); check the cable, the authorization "
                             "prompt on the phone, or `adb devices`")
        self._guard = subprocess.Popen([self.adb, "-s", serial, "shell", GUARDIAN % "/data/local/tmp"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._guard.stdout.readline().strip()
        if not line.startswith("/"):
            self._guard.kill()
            raise UsageError(f"{self.where}: cannot make a temporary folder there ({line or self._guard.stderr.read()[:200]!r})")
        self.folder = line

    def _devices(self, timeout: float) -> dict[str, str]:
        try:
            proc = subprocess.run([self.adb, "devices"], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UsageError(f"{self.where}: the adb server does not answer (adb devices timed out)") from None
        if proc.returncode != 0:
            raise UsageError(f"{self.where}: adb devices failed ({proc.stderr.strip()[:200]})")
        rows = [line.split("\t") for line in proc.stdout.splitlines()[1:] if "\t" in line]
        return {r[0]: r[1].strip() for r in rows}

    def _adb(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout:.0f} s")

    def push(self, local: Path, name: str) -> str:
        remote = f"{self.folder}/{name}"
        proc = self._adb("push", str(local), remote)
        if proc.returncode != 0:
            raise UsageError(f"{self.where}: push {name} failed ({(proc.stderr or proc.stdout).strip()[-200:]})")
        return remote

    def pull(self, name: str, local: Path) -> None:
        proc = self._adb("pull", f"{self.folder}/{name}", str(local))
        if proc.returncode != 0:
            raise UsageError(f"{self.where}: pull {name} failed ({(proc.stderr or proc.stdout).strip()[-200:]})")

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        proc = self._adb("shell", f"cd {shlex.quote(self.folder)} && exec {shlex.join(argv)}", timeout=timeout)
        if proc.returncode == 255 and "error:" in proc.stderr and self._guard.poll() is not None:
            return -1, proc.stdout, proc.stderr  # adb's own failure: the device went away
        return proc.returncode, proc.stdout, proc.stderr

    def cleanup(self) -> None:
        """Close the guardian's stdin: it removes the folder on the device and exits."""
        try:
            self._guard.stdin.close()
            self._guard.wait(timeout=15)
        except Exception:
            self._guard.kill()
