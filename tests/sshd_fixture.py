"""A real OpenSSH server on 127.0.0.1 for the device tests: its own config, a random port, a generated host
key and a generated client key. The "device" is this machine, reached through sshd."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class LoopbackSshd:
    port: int
    user: str
    identity: Path
    known_hosts: Path
    host_key: Path
    folder: Path

    def url(self, python: str = sys.executable, known_hosts: Path | None = None, identity: Path | None = None) -> str:
        return (f"ssh://{self.user}@127.0.0.1:{self.port}?python={python}"
                f"&identity={identity or self.identity}&known_hosts={known_hosts or self.known_hosts}")

    def known_line(self) -> str:
        pub = Path(str(self.host_key) + ".pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path) -> tuple[subprocess.Popen, LoopbackSshd]:
    if not Path(SSHD).exists():
        raise FileNotFoundError("sshd (Debian's openssh-server) is not installed: apt-get install openssh-server")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    keygen(host_key)
    keygen(client_key)
    auth = folder / "authorized_keys"
    auth.write_text(Path(str(client_key) + ".pub").read_text())
    os.chmod(auth, 0o600)
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"AuthorizedKeysFile {auth}",
        f"PidFile {folder / 'sshd.pid'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50", ""]))
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    known = folder / "known_hosts"
    info = LoopbackSshd(port, getpass.getuser(), client_key, known, host_key, folder)
    known.write_text(info.known_line())
    return proc, info
