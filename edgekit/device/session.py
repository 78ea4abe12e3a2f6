"""One device for the length of a command: the transport, the pushed runner, and its preflight."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..core.errors import UsageError

RUNNER = Path(__file__).resolve().parent.parent / "runtimes" / "device_runner.py"
RUNNER_VERSION = 1
TAG = "edgekit_device_runner"
QUERY_KEYS = {"python", "identity", "known_hosts"}


@dataclass(frozen=True)
class DeviceURL:
    kind: str  # local | ssh | adb
    user: str = ""
    host: str = ""
    port: int = 22
    serial: str = ""
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)


def parse_device(url: str) -> DeviceURL:
    """``local``, ``ssh://user@host[:port][?python=...&identity=...&known_hosts=...]``, ``adb:SERIAL[?python=...]``."""
    text = (url or "").strip()
    query = ""
    if "?" in text:
        text, query = text.split("?", 1)
    raw = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(raw) - QUERY_KEYS)
    if unknown:
        raise UsageError(f"--device {url}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(QUERY_KEYS))}")
    options = tuple((k, v[-1]) for k, v in sorted(raw.items()))
    if text == "local":
        return DeviceURL("local", options=options)
    if text.startswith("adb:"):
        serial = text[4:]
        if not re.fullmatch(r"[\w.:\-]+", serial):
            raise UsageError(f"--device {url}: give the serial that `adb devices` lists, as adb:SERIAL")
        return DeviceURL("adb", serial=serial, options=options)
    if text.startswith("ssh://"):
        parts = urlsplit(text)
        try:
            port = parts.port or 22
        except ValueError:
            raise UsageError(f"--device {url}: the port is not a number") from None
        if not parts.hostname or not parts.username:
            raise UsageError(f"--device {url}: give ssh://USER@HOST[:PORT]")
        if parts.password is not None:
            raise UsageError(f"--device {url}: no passwords in the URL; use a key or the SSH agent")
        return DeviceURL("ssh", user=parts.username, host=parts.hostname, port=port, options=options)
    raise UsageError(f"--device {url}: expected ssh://USER@HOST[:PORT], adb:SERIAL or local")


def open_device(url: str, *, accept_host_key: bool = False, runner: bool = True) -> "Device":
    """Connect, make the device's temporary folder, push the runner and check Python and numpy there
    (``runner=False``: a device without Python, for the user's own benchmark binary; only its fingerprint)."""
    spec = parse_device(url)
    if spec.kind == "ssh":
        from .ssh import SshTransport
        transport = SshTransport(spec.user, spec.host, spec.port, python=spec.option("python", "python3"),
                                 identity=spec.option("identity"), known_hosts=spec.option("known_hosts"),
                                 accept_host_key=accept_host_key)
    elif spec.kind == "adb":
        from .adb import AdbTransport
        transport = AdbTransport(spec.serial, python=spec.option("python", "python3"))
    else:
        from .transport import LocalTransport
        transport = LocalTransport(spec.option("python"))
    device = Device(transport)
    try:
        device.start() if runner else device.fingerprint()
    except BaseException:
        transport.cleanup()
        raise
    return device


class Device:
    """``call(mode, args)`` runs the pushed runner and returns its one JSON line, every failure a
    UsageError naming the device. Use as a context manager: the folder on the device goes on exit."""

    def __init__(self, transport):
        self.transport = transport
        self.where = transport.where
        self.info: dict = {}
        self._pushed: dict[str, str] = {}
        self._count = 0

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.transport.cleanup()

    def start(self) -> None:
        self.transport.push(RUNNER, "device_runner.py")
        self.info = self.call("preflight", {})

    def fingerprint(self) -> None:
        """``uname -m`` and the CPU model from /proc/cpuinfo, through the shell (no Python needed)."""
        _, machine, _ = self.transport.run(["uname", "-m"], 30)
        _, cpuinfo, _ = self.transport.run(["cat", "/proc/cpuinfo"], 30)
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                      if line.split(":")[0].strip() in ("model name", "Hardware", "Model")), "")
        cores = sum(1 for line in cpuinfo.splitlines() if line.split(":")[0].strip() == "processor")
        self.info = {"uname_m": machine.strip(), "cpu": {"model": model, "cores": cores}, "runtimes": {}}

    def can_run(self, runtime: str) -> bool:
        return bool(self.info.get("runtimes", {}).get(runtime))

    def push(self, local: Path, fresh: bool = False) -> str:
        """``local`` into the device folder, once per resolved path unless ``fresh``; the name there."""
        key = str(Path(local).resolve())
        if fresh or key not in self._pushed:
            self._count += 1
            name = f"f{self._count}-{Path(local).name}"
            self.transport.push(Path(local), name)
            self._pushed[key] = name
        return self._pushed[key]

    def pull(self, name: str, local: Path) -> None:
        self.transport.pull(name, local)

    def call(self, mode: str, args: dict, timeout: float = 600.0) -> dict:
        payload = json.dumps({"mode": mode, "watch_stdin": self.where.startswith("ssh"), **args})
        rc, out, err = self.transport.run([self.transport.python, "device_runner.py", payload], timeout)
        tail = " | ".join(line.strip() for line in err.strip().splitlines()[-3:])[:400]
        if rc == 2:
            raise UsageError(f"{self.where}: {tail or 'the runner refused the file'}")
        if rc == 127:
            raise UsageError(f"{self.where}: no {self.transport.python} there; install Python 3 on the device or "
                             "name its interpreter with ?python=/path/to/python3")
        if rc == -1:
            raise UsageError(f"{self.where}: connection lost during {mode} ({tail}); the device's temporary folder "
                             "goes with it")
        if rc != 0:
            raise UsageError(f"{self.where}: the device runner crashed (exit {rc}) during {mode}: {tail or 'no stderr'}")
        return parse_line(out, self.where)


def parse_line(out: str, where: str) -> dict:
    """The runner's one tagged JSON line; anything else is malformed output."""
    for line in reversed(out.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and TAG in data:
            if data[TAG] != RUNNER_VERSION:
                raise UsageError(f"{where}: the runner there speaks version {data[TAG]}, this edgekit {RUNNER_VERSION}; "
                                 "use the same edgekit on both ends")
            return data
    shown = out.strip()[:160] or "nothing"
    raise UsageError(f"{where}: malformed runner output (no {TAG} line; it printed {shown!r})")
