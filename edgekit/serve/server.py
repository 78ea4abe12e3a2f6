"""``edgekit serve``: the App under uvicorn, with a drain on SIGTERM/SIGINT.

On the first signal readiness turns false and new requests get 503 with Retry-After, while every request
already admitted is answered; uvicorn's own shutdown starts only when the app is idle (or after
``drain_timeout_s``). A second SIGINT forces the exit.
"""
from __future__ import annotations

import signal
import time


def make_server(app, host: str = "127.0.0.1", port: int = 8000, drain_timeout_s: float = 30.0,
                log_level: str = "warning"):
    import uvicorn

    class DrainingServer(uvicorn.Server):
        drain_started: float | None = None

        def handle_exit(self, sig, frame):
            if self.drain_started is None and sig in (signal.SIGTERM, signal.SIGINT):
                self.drain_started = time.monotonic()
                app.drain()
                return
            self.should_exit = self.force_exit = True  # a second signal: out now, without re-raising it

        async def on_tick(self, counter: int) -> bool:
            if self.drain_started is not None and (
                    app.idle or time.monotonic() - self.drain_started > drain_timeout_s):
                self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=drain_timeout_s, lifespan="on")
    return DrainingServer(config)


def check_port(host: str, port: int) -> None:
    """A UsageError (exit 2) naming the address when it cannot be listened on, before uvicorn starts."""
    import socket

    from ..core.errors import UsageError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or "
                         "--host") from None


def serve(app, host: str = "127.0.0.1", port: int = 8000, drain_timeout_s: float = 30.0, on_ready=None,
          on_exit=None) -> None:
    check_port(host, port)
    server = make_server(app, host, port, drain_timeout_s)
    if on_ready is not None:
        _announce_when_started(server, on_ready)
    server.run()
    if on_exit is not None and app.draining:
        on_exit(app.drain_summary())


def _announce_when_started(server, on_ready) -> None:
    startup = server.startup

    async def started(*args, **kwargs):
        await startup(*args, **kwargs)
        if server.started:
            on_ready()
    server.startup = started
