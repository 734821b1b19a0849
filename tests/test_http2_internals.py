"""What ``serve``'s HTTP/2 (server/http2.py) leans on in hypercorn and uvicorn, asserted on the
installed releases: a release that moves one of these internals fails here by name, not as a
hung stream in production. Also: the pins match the tested ranges, ``serve`` refuses an untested
release in one line, and stock hypercorn is untouched by streamchat's server."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import priority
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h2 import BUFFER_LOW_WATER, H2Protocol, StreamBuffer
from uvicorn.config import Config
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.server import ServerState

from streamchat.server.listen import HTTP2_TESTED, check_versions

ROOT = Path(__file__).parent.parent


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def source(function: object) -> str:
    return " ".join(inspect.getsource(function).split())  # type: ignore[arg-type]


def test_hypercorn_h2_internals_the_subclasses_use() -> None:
    buffer = StreamBuffer(WorkerContext.event_class)
    assert isinstance(buffer.buffer, bytearray)
    assert {"_paused", "_is_empty"} <= set(vars(buffer))
    assert parameters(StreamBuffer.pop) == ["self", "max_length"]
    assert inspect.iscoroutinefunction(StreamBuffer.pop)
    assert 0 < BUFFER_LOW_WATER < 2**16

    arguments = ["app", "config", "context", "task_group", "connection_state", "ssl", "client"]
    assert parameters(H2Protocol.__init__) == ["self", *arguments, "server", "send"]
    protocol = H2Protocol(None, HypercornConfig(), WorkerContext(None), None, None, False,
                          None, None, None)  # fmt: skip
    assert isinstance(protocol.priority, priority.PriorityTree)
    assert protocol.stream_buffers == {} and protocol.streams == {}
    for name in ("handle", "stream_send", "_create_stream", "_handle_events"):
        assert inspect.iscoroutinefunction(getattr(H2Protocol, name)), name
    # _StreamBuffers swaps in the bounded buffer as hypercorn stores a stream's new one
    assert "self.stream_buffers[request.stream_id] = StreamBuffer(" in source(
        H2Protocol._create_stream
    )
    for method in ("insert_stream", "reprioritize", "block", "unblock", "remove_stream"):
        assert callable(getattr(priority.PriorityTree, method)), method  # _RoundRobin's methods
    for error in ("DuplicateStreamError", "MissingStreamError", "DeadlockError"):
        assert issubclass(getattr(priority, error), Exception), error


def test_hypercorn_connection_internals_the_subclasses_use() -> None:
    # _ProtocolWrapper and _HalfClosingTCPServer replace what these assignments make
    assert "self.protocol = ProtocolWrapper(" in source(TCPServer.run)
    assert "self.protocol = H2Protocol(" in source(ProtocolWrapper.__init__)
    assert source(ProtocolWrapper.handle).count("self.protocol = H2Protocol(") == 2
    wrapper_arguments = ["app", "config", "context", "task_group", "state", "ssl", "client"]
    assert parameters(ProtocolWrapper.__init__) == [
        "self", *wrapper_arguments, "server", "send", "alpn_protocol"
    ]  # fmt: skip
    server_arguments = ["app", "loop", "config", "context", "state", "reader", "writer"]
    assert parameters(TCPServer.__init__) == ["self", *server_arguments]
    assert inspect.iscoroutinefunction(TCPServer._read_data)
    assert "self.protocol.handle(RawData(" in source(TCPServer._read_data)
    assert MAX_RECV > 0
    assert isinstance(WorkerContext(None).terminated._event, asyncio.Event)


def test_uvicorn_internals_dual_protocol_uses() -> None:
    assert {"config", "server_state", "app_state", "_loop"} <= set(parameters(AutoHTTPProtocol))
    state = ServerState()
    assert isinstance(state.connections, set) and isinstance(state.tasks, set)
    config = Config(app=lambda scope, receive, send: None)
    assert config.loaded is False and callable(config.load)
    assert isinstance(config.timeout_keep_alive, int)
    assert "loaded_app" in inspect.getsource(Config.load)


def test_pyproject_pins_the_tested_releases() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = {}
    for requirement in project["optional-dependencies"]["server"]:
        name = requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        server[name.lower()] = set(requirement[len(name) :].replace(" ", "").split(","))
    for name, wanted in HTTP2_TESTED.items():
        assert server.get(name) == set(wanted.split(",")), (name, server.get(name), wanted)


def test_the_installed_releases_are_the_tested_ones() -> None:
    check_versions("dual")  # raises on any package outside HTTP2_TESTED


def test_serve_refuses_an_untested_hypercorn_in_one_line(tmp_path: Path) -> None:
    """A hypercorn 0.99 (its metadata first on the path) stops ``serve`` before it listens."""
    info = tmp_path / "hypercorn-0.99.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hypercorn\nVersion: 0.99.0\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "streamchat.cli.main", "serve", "--model", "scripted"]
    result = subprocess.run(
        [*command, "--port", "9"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("streamchat: error: --http-server dual is tested with hypercorn")
    assert "0.99.0" in line and HTTP2_TESTED["hypercorn"] in line


# Run in a fresh interpreter: hypercorn's classes as it defines them, then streamchat's server
# started and an HTTP/2 request made; hypercorn's modules must be as they were, and the
# connection must have been served by streamchat's own subclass.
STOCK_CHECK = textwrap.dedent(
    """
    import gc, threading, httpx, uvicorn
    import hypercorn.protocol, hypercorn.protocol.h2, hypercorn.asyncio.tcp_server
    from streamchat.testing.process import HOST, free_port, wait_healthy

    modules = (hypercorn.protocol, hypercorn.protocol.h2, hypercorn.asyncio.tcp_server)
    classes = (hypercorn.protocol.h2.H2Protocol, hypercorn.protocol.h2.StreamBuffer,
               hypercorn.protocol.ProtocolWrapper, hypercorn.asyncio.tcp_server.TCPServer)
    snapshot = lambda: ([dict(vars(m)) for m in modules], [dict(vars(c)) for c in classes])
    before = snapshot()

    from streamchat.server.app import create_app
    from streamchat.server.common import ServerConfig
    from streamchat.server.http2 import DualProtocol, _GracefulH2Protocol

    port = free_port()
    app = create_app(ServerConfig(default_model="scripted"))
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, http=DualProtocol,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    wait_healthy(url, thread.is_alive, 30)
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        body = {"model": "scripted", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}
        response = client.post(url + "/v1/messages", json=body)
        assert (response.status_code, response.http_version) == (200, "HTTP/2"), response
        gc.collect()  # what is left is what serves the connection still open
        served = [type(o) for o in gc.get_objects()
                  if isinstance(o, hypercorn.protocol.h2.H2Protocol)]
    server.should_exit = True
    thread.join(15)
    assert served and set(served) == {_GracefulH2Protocol}, served
    assert snapshot() == before, "streamchat changed hypercorn's modules"
    print("untouched")
    """
)


def test_stock_hypercorn_is_untouched_by_streamchats_http2_server() -> None:
    env = {**os.environ, "STREAMCHAT_MODEL": ""}
    result = subprocess.run(
        [sys.executable, "-c", STOCK_CHECK], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.stdout.strip() == "untouched", result.stdout + result.stderr
