"""A device over SSH (paramiko): key or agent auth only, the host key checked against known_hosts."""
from __future__ import annotations

import shlex
import socket
from pathlib import Path

from ..core.errors import UsageError
from .transport import GUARDIAN

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


def _paramiko():
    try:
        import paramiko
    except ImportError:
        raise UsageError("--device ssh://...: needs paramiko; install it with: pip install 'edgekit[device]'") from None
    return paramiko


class SshTransport:
    """``ssh://user@host[:port]``. ``identity``: a private key file (else the agent and ~/.ssh's keys);
    ``known_hosts``: the file host keys are checked against (default ~/.ssh/known_hosts); an unknown key is
    refused unless ``accept_host_key``, which records it there; a changed key is always refused."""

    def __init__(self, user: str, host: str, port: int = 22, *, python: str = "python3", identity: str | None = None,
                 known_hosts: str | None = None, accept_host_key: bool = False, connect_timeout: float = 10.0):
        paramiko = _paramiko()
        self.where = f"ssh://{user}@{host}:{port}"
        self.python = python
        self.host, self.port = host, port
        known = Path(known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
        client = paramiko.SSHClient()
        if known.is_file():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept_host_key else paramiko.RejectPolicy())
        if identity and not Path(identity).expanduser().is_file():
            raise UsageError(f"{self.where}: identity file {identity} not found; give the private key's path")
        try:
            client.connect(host, port=port, username=user, key_filename=str(Path(identity).expanduser()) if identity
                           else None, allow_agent=True, look_for_keys=identity is None, password=None,
                           timeout=connect_timeout, auth_timeout=connect_timeout, banner_timeout=connect_timeout)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise UsageError(f"{self.where}: the host key CHANGED ({exc.key.get_name()} "
                             f"{exc.key.fingerprint}; {known} has another); refused. If the device was "
                             f"reinstalled, remove the old key with: ssh-keygen -f {known} -R "
                             f"{self._known_name()}, then pass --accept-host-key") from None
        except paramiko.AuthenticationException:
            client.close()
            raise UsageError(f"{self.where}: authentication refused (key or agent auth only); add your public "
                             "key to the device's ~/.ssh/authorized_keys or pass ?identity=KEYFILE") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise UsageError(f"{self.where}: unknown host key (not in {known}); refused. Check it, then "
                                 "pass --accept-host-key to record it") from None
            raise UsageError(f"{self.where}: SSH failed ({str(exc)[:200]})") from None
        except (OSError, socket.timeout) as exc:
            client.close()
            raise UsageError(f"{self.where}: unreachable ({exc.strerror or exc}); check the host, the port "
                             "and that sshd runs there") from None
        if accept_host_key:
            known.parent.mkdir(parents=True, exist_ok=True)
            client.save_host_keys(str(known))
        self.client = client
        self._open_folder()

    def _known_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _open_folder(self) -> None:
        self._guard_in, out, _ = self.client.exec_command(GUARDIAN % "/tmp")
        self._guard = out.channel
        line = out.readline().strip()
        if not line.startswith("/"):
            self.close()
            raise UsageError(f"{self.where}: cannot make a temporary folder there (mktemp said {line!r})")
        self.folder = line
        self.sftp = self.client.open_sftp()

    def push(self, local: Path, name: str) -> str:
        remote = f"{self.folder}/{name}"
        self._io(lambda: self.sftp.put(str(local), remote), f"push {name}")
        return remote

    def pull(self, name: str, local: Path) -> None:
        self._io(lambda: self.sftp.get(f"{self.folder}/{name}", str(local)), f"pull {name}")

    def _io(self, action, what: str) -> None:
        try:
            action()
        except FileNotFoundError:
            raise UsageError(f"{self.where}: {what}: no such file there") from None
        except (OSError, EOFError, _paramiko().SSHException) as exc:
            self.close()
            raise UsageError(f"{self.where}: connection lost during {what} ({exc}); the device's temporary "
                             "folder goes with it") from None

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        command = f"cd {shlex.quote(self.folder)} && exec {shlex.join(argv)}"
        paramiko = _paramiko()
        try:
            stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            rc = stdout.channel.recv_exit_status()
            stdin.close()
        except (socket.timeout, TimeoutError):
            return 124, "", f"timed out after {timeout:.0f} s"
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            return -1, "", f"connection lost ({exc})"
        if rc == -1 or not self.client.get_transport() or not self.client.get_transport().is_active():
            self.close()
            return -1, out, err or "connection lost"
        return rc, out, err

    def cleanup(self) -> None:
        """Close the guardian's stdin: it removes the folder and exits; then the connection goes."""
        try:
            self.sftp.close()
            self._guard_in.channel.shutdown_write()
            self._guard.recv_exit_status()
        except Exception:
            pass
        self.close()

    def close(self) -> None:
        self.client.close()
