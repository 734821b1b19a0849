"""Run the app on an ASGI server: HTTP/1.1 and HTTP/2 on one port, TLS when given a certificate.

``dual`` (the default) is uvicorn with :class:`~streamchat.server.http2.DualProtocol`: uvicorn's
own HTTP/1.1 for HTTP/1.1 clients and hypercorn's h2 core for HTTP/2 ones. The others serve
the same app whole on one server, so that benchmarks can compare them side by side:
``uvicorn`` (HTTP/1.1 only, as before HTTP/2), ``hypercorn`` and ``granian`` (both versions).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.types import ASGIApp

from ..errors import StreamchatError

SERVERS = ("dual", "uvicorn", "hypercorn", "granian")
MAX_CONCURRENT_STREAMS = 1000  # per HTTP/2 connection (dual and hypercorn); hypercorn's is 100
# The releases whose internals ``dual`` (server/http2.py) was written against and tested with:
# hypercorn's h2 core and connection loop, uvicorn's protocol arguments and server state.
# pyproject.toml requires the same ranges; `serve` refuses others in one line (check_versions).
HTTP2_TESTED: dict[str, str] = {
    "hypercorn": ">=0.18,<0.19",
    "uvicorn": ">=0.30,<0.56",
    "h2": ">=4.1,<5",
    "priority": ">=2,<3",
}


class UnsupportedVersionError(StreamchatError):
    """A dependency of ``dual`` is installed in a release it was not tested with."""


def check_versions(server: str) -> None:
    """Refuse, in one line, to serve ``dual`` with a dependency outside :data:`HTTP2_TESTED`:
    its subclasses lean on internals a new release may move without a failing line. Checked
    before anything of theirs is imported; the other servers run stock releases."""
    if server != "dual":
        return
    for name, wanted in HTTP2_TESTED.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "none"
        if installed == "none" or not _within(installed, wanted):
            raise UnsupportedVersionError(
                f"--http-server dual is tested with {name}{wanted}, and {installed} is installed: "
                f"pip install '{name}{wanted}', or serve with --http-server uvicorn"
            )


def _within(installed: str, wanted: str) -> bool:
    """Whether ``installed`` meets ``wanted``, ``>=A,<B`` on numeric releases (all that
    :data:`HTTP2_TESTED` uses; ``0.18.2rc1`` counts as ``0.18.2``)."""
    have = _release(installed)
    for clause in wanted.split(","):
        bound = _release(clause.lstrip("<>="))
        if (clause.startswith(">=") and have < bound) or (
            clause.startswith("<") and not have < bound
        ):
            return False
    return True


def _release(text: str) -> tuple[int, ...]:
    found = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(n) for n in found.group().split(".")) if found else ()


@dataclass(slots=True)
class Listener:
    host: str = "127.0.0.1"
    port: int = 8080
    backlog: int = 2048
    log_level: str = "info"
    graceful_seconds: float = 5
    tls_cert: str | None = None
    tls_key: str | None = None
    on_stop: Callable[[], None] | None = None  # told first when SIGINT/SIGTERM arrives (drain)
    reuse_port: bool = False  # SO_REUSEPORT: one of several workers on the port (dual, uvicorn)


def _first(listener: Listener, then: Callable[..., Any]) -> Callable[..., Any]:
    """``then`` (a server's own stop), with ``listener.on_stop`` called before it."""
    if listener.on_stop is None:
        return then

    def stop(*args: Any) -> Any:
        listener.on_stop()
        return then(*args)

    return stop


def run(app: ASGIApp, listener: Listener, server: str = "dual") -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    if server in ("dual", "uvicorn"):
        _uvicorn(app, listener, http2=server == "dual")
    elif server == "hypercorn":
        _hypercorn(app, listener)
    elif server == "granian":
        _granian(app, listener)
    else:
        raise ValueError(f"unknown ASGI server {server!r}; one of {', '.join(SERVERS)}")


def _uvicorn(app: ASGIApp, listener: Listener, *, http2: bool) -> None:
    import uvicorn

    from .http2 import DualProtocol

    config = uvicorn.Config(
        app,
        host=listener.host,
        port=listener.port,
        log_level=listener.log_level,
        timeout_graceful_shutdown=int(listener.graceful_seconds),
        backlog=listener.backlog,
        http=DualProtocol if http2 else "auto",
        ssl_certfile=listener.tls_cert,
        ssl_keyfile=listener.tls_key,
    )
    server = uvicorn.Server(config)
    server.handle_exit = _first(listener, server.handle_exit)  # type: ignore[method-assign]
    sockets = [_reuse_port_socket(listener)] if listener.reuse_port else None
    with contextlib.suppress(KeyboardInterrupt):  # what uvicorn.run does around Server.run
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


def _reuse_port_socket(listener: Listener) -> socket.socket:
    """A listening socket that other processes may bind too (the kernel spreads connections)."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listener.host, listener.port))
    sock.listen(listener.backlog)
    sock.set_inheritable(True)
    return sock


def _hypercorn(app: ASGIApp, listener: Listener) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    config.bind = [f"{host}:{listener.port}"]
    config.backlog = listener.backlog
    config.graceful_timeout = listener.graceful_seconds
    config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
    config.loglevel = listener.log_level.upper()
    config.accesslog = None
    if listener.tls_cert:
        config.certfile, config.keyfile = listener.tls_cert, listener.tls_key

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _first(listener, stop.set))
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(main())


def _granian(app: ASGIApp, listener: Listener) -> None:
    from pathlib import Path

    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=listener.host,
        port=listener.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.auto,
        backlog=listener.backlog,
        log_level=LogLevels(listener.log_level),
        ssl_cert=Path(listener.tls_cert) if listener.tls_cert else None,
        ssl_key=Path(listener.tls_key) if listener.tls_key else None,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _first(listener, server.stop))
        await server.serve()

    asyncio.run(main())
