"""streamchat as a test bench for other projects: real ``streamchat serve`` processes with
faults, record and replay, official clients pointed at them, and what the server saw.

The pytest plugin (:mod:`streamchat.testing.plugin`) is registered by the ``pytest11`` entry
point; :func:`start_server` is the same thing as a context manager, for any test runner.
"""

from .bench import DEFAULT_MODEL, ServeOptions, StreamchatServer, start_server
from .process import HOST, Server, free_port, received, recording, serve, wait_healthy

__all__ = [
    "DEFAULT_MODEL",
    "HOST",
    "ServeOptions",
    "Server",
    "StreamchatServer",
    "free_port",
    "received",
    "recording",
    "serve",
    "start_server",
    "wait_healthy",
]
