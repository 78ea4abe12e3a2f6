"""A small adb *server* on a loopback port for the real `adb` client (ADB_SERVER_SOCKET=tcp:127.0.0.1:PORT).

It implements what edgekit's adb path uses of the host protocol: host:version, host:devices, the features
query, host:transport / host:tport, shell v2 (stdin, stdout, stderr, exit, close-stdin packets) and sync
STAT/SEND/RECV/DATA/DONE/QUIT. The "device" is this machine: shell commands run under sh with TMPDIR set to a
temporary folder (so /data/local/tmp's stand-in is that folder), and sync reads and writes real paths.
"""
from __future__ import annotations

import os
import socket
import socketserver
import stat
import struct
import subprocess
import threading

VERSION = 41  # adb 1.0.41 (Debian's adb 29.0.6): the client restarts a server of another version


class Handler(socketserver.BaseRequestHandler):
    def recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def reply(self, payload: str | bytes | None = None, ok: bool = True) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        msg = b"OKAY" if ok else b"FAIL"
        if body is not None:
            msg += f"{len(body):04x}".encode() + body
        self.request.sendall(msg)

    def handle(self) -> None:
        try:
            while True:
                length = int(self.recv_exact(4), 16)
                service = self.recv_exact(length).decode()
                server = self.server
                server.log.append(service)
                if service == "host:version":
                    return self.reply(f"{VERSION:04x}")
                if service in ("host:devices", "host:devices-l"):
                    return self.reply("".join(f"{s}\tdevice\n" for s in server.serials))
                if service.endswith(":features") or service == "host:host-features":
                    return self.reply("shell_v2,cmd")
                if service.startswith(("host:tport:", "host:transport")):
                    serial = service.split(":")[-1]
                    if service.startswith("host:transport-any") or service.startswith("host:tport:any"):
                        serial = server.serials[0] if server.serials else ""
                    if serial not in server.serials:
                        return self.reply(f"device '{serial}' not found", ok=False)
                    self.request.sendall(b"OKAY" + (struct.pack("<q", 1) if service.startswith("host:tport:") else b""))
                    continue  # the next request on this socket goes to the device
                if service.startswith("shell"):
                    return self.shell(service.split(":", 1)[1])
                if service == "sync:":
                    self.request.sendall(b"OKAY")
                    return self.sync()
                return self.reply(f"unsupported service {service}", ok=False)
        except (ConnectionError, OSError):
            return

    def packet(self, kind: int, data: bytes) -> None:
        self.request.sendall(struct.pack("<BI", kind, len(data)) + data)

    def shell(self, command: str) -> None:
        self.request.sendall(b"OKAY")
        env = dict(os.environ, TMPDIR=self.server.tmp)
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
        lock = threading.Lock()

        def pump(stream, kind):
            for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
                with lock:
                    self.packet(kind, chunk)

        pumps = [threading.Thread(target=pump, args=(proc.stdout, 1)), threading.Thread(target=pump, args=(proc.stderr, 2))]
        for t in pumps:
            t.start()

        def feed():  # the client's stdin packets; its socket closing is a hang-up, as adbd does
            try:
                while True:
                    kind, size = struct.unpack("<BI", self.recv_exact(5))
                    data = self.recv_exact(size)
                    if kind == 0:
                        proc.stdin.write(data)
                        proc.stdin.flush()
                    elif kind == 4:
                        proc.stdin.close()
            except (ConnectionError, OSError, ValueError):
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                if proc.poll() is None:
                    os.killpg(proc.pid, 1)
        threading.Thread(target=feed, daemon=True).start()
        rc = proc.wait()
        for t in pumps:
            t.join()
        with lock:
            try:
                self.packet(3, bytes([rc & 0xFF]))
            except OSError:
                pass

    def sync(self) -> None:
        while True:
            cmd, size = struct.unpack("<4sI", self.recv_exact(8))
            if cmd == b"QUIT":
                return
            arg = self.recv_exact(size).decode()
            if cmd == b"STAT":
                try:
                    st = os.stat(arg)
                    self.request.sendall(b"STAT" + struct.pack("<III", st.st_mode, st.st_size, int(st.st_mtime)))
                except OSError:
                    self.request.sendall(b"STAT" + struct.pack("<III", 0, 0, 0))
            elif cmd == b"SEND":
                path, _, mode = arg.rpartition(",")
                data = b""
                while True:
                    kind, n = struct.unpack("<4sI", self.recv_exact(8))
                    if kind == b"DATA":
                        data += self.recv_exact(n)
                    elif kind == b"DONE":
                        break
                    else:
                        raise ConnectionError(f"unexpected {kind!r} in SEND")
                try:
                    with open(path, "wb") as fh:
                        fh.write(data)
                    os.chmod(path, stat.S_IMODE(int(mode)))
                    self.request.sendall(b"OKAY" + struct.pack("<I", 0))
                except OSError as exc:
                    msg = f"couldn't create file: {exc.strerror}".encode()
                    self.request.sendall(b"FAIL" + struct.pack("<I", len(msg)) + msg)
            elif cmd == b"RECV":
                try:
                    with open(arg, "rb") as fh:
                        data = fh.read()
                except OSError as exc:
                    msg = f"remote object '{arg}' does not exist ({exc.strerror})".encode()
                    self.request.sendall(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                    continue
                for start in range(0, len(data), 65536):
                    chunk = data[start:start + 65536]
                    self.request.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                self.request.sendall(b"DONE" + struct.pack("<I", 0))
            else:
                msg = f"unsupported sync command {cmd!r}".encode()
                self.request.sendall(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                return


class FakeAdbServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, serials: list[str], tmp: str):
        super().__init__(("127.0.0.1", 0), Handler)
        self.serials, self.tmp, self.log = serials, tmp, []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def socket_spec(self) -> str:
        return f"tcp:127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
