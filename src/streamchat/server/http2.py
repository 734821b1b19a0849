"""HTTP/2 and HTTP/1.1 on one port: uvicorn keeps HTTP/1.1, hypercorn's h2 core takes HTTP/2.

uvicorn accepts an ``asyncio.Protocol`` class as its ``http`` protocol; :class:`DualProtocol`
looks at how each connection opens and hands it over for good:

- over TLS, by ALPN: ``h2`` -> HTTP/2, anything else -> HTTP/1.1;
- in cleartext, the HTTP/2 prior-knowledge preface (``PRI * HTTP/2.0``, what the AWS SDK for
  JavaScript sends to ``http://``) -> HTTP/2;
- a first request asking ``Upgrade: h2c`` -> hypercorn, which answers 101 and carries on in
  HTTP/2 (the upgraded request is stream 1);
- everything else -> uvicorn's own HTTP/1.1 protocol, untouched.

Measured (benchmarks/load.py, 1,000 streams, server CPU per token): uvicorn's HTTP/1.1 39 µs,
hypercorn's 46; hypercorn's HTTP/2 52-73. granian (Rust) costs less on both (34-35 µs) but has
no h2c upgrade and, embedded, does not let HTTP/2 streams finish on SIGTERM, so it is an option
(``serve --http-server granian``), not the default. See benchmarks/RESULTS.md.

An HTTP/2 connection is a hypercorn ``TCPServer`` task on this uvicorn's event loop, registered
with uvicorn's server state: graceful shutdown asks it to finish (GOAWAY once its streams end)
and cancels it past the grace period like any other request. hypercorn sends a ``RST_STREAM``'s
``http.disconnect`` to that one request, whose response then stops generation; the other
streams of the connection carry on. Flow control is HTTP/2's own: a stream whose reader stalls
waits for window updates with at most one window (64 KB by default) in memory.

What streamchat changes in hypercorn's HTTP/2 (bounded send buffers, round-robin sending, a
client's graceful GOAWAY, half-closed connections, request bodies that arrive after their
response) lives in subclasses used by these
connections alone: hypercorn's own modules are left as they are, so ``--http-server hypercorn``
runs stock hypercorn. The subclasses lean on hypercorn's and uvicorn's internals, so the
releases they were tested with are pinned (``listen.HTTP2_TESTED``, checked at start-up) and
tests/test_http2_internals.py fails when an internal they use moves.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, ClassVar

import h2.events
import priority
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h2 import BUFFER_LOW_WATER, H2Protocol, StreamBuffer
from hypercorn.protocol.h11 import H11Protocol
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.server import ServerState

from .listen import MAX_CONCURRENT_STREAMS

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9  # length (3 bytes), type, flags, stream id (4)
GOAWAY = 0x7
MAX_HEAD_BYTES = 64 * 1024  # a first request head longer than this is HTTP/1.1's to refuse


class _BoundedStreamBuffer(StreamBuffer):
    """hypercorn's per-stream send buffer, paused by what it still holds.

    hypercorn (0.18) resumes the app whenever a pop returns less than the low-water mark, and a
    stream with no flow-control window pops ``b""`` on every app send: a reader that stops
    reading would let the app buffer the whole reply. Resuming on what is left keeps at most
    about two frames per stream in memory.
    """

    async def pop(self, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < BUFFER_LOW_WATER:
            await self._paused.set()
        if not self.buffer:
            await self._is_empty.set()
        return data


class _StreamBuffers(dict[int, StreamBuffer]):
    """One connection's send buffers, each a :class:`_BoundedStreamBuffer`: hypercorn stores a
    new plain ``StreamBuffer`` here as it opens a stream, and the bounded one takes its place
    before anything is pushed (hypercorn's own module is left as it is)."""

    def __init__(self, event_class: type[Any]) -> None:
        super().__init__()
        self.event_class = event_class

    def __setitem__(self, stream_id: int, buffer: StreamBuffer) -> None:
        if not isinstance(buffer, _BoundedStreamBuffer):
            buffer = _BoundedStreamBuffer(self.event_class)
        super().__setitem__(stream_id, buffer)


class _RoundRobin:
    """The order in which a connection's streams send: the unblocked ones in turn.

    Stands in for hypercorn's ``priority.PriorityTree`` (same methods and errors). RFC 9113
    deprecated HTTP/2's priority tree and clients no longer send it, but walking it was about a
    quarter of the server's CPU with a hundred streams on one connection (py-spy).
    """

    def __init__(self) -> None:
        self._known: set[int] = set()
        self._ready: dict[int, None] = {}  # insertion-ordered: the next to send is the first

    def insert_stream(self, stream_id: int, *args: Any, **kwargs: Any) -> None:
        if stream_id in self._known:
            raise priority.DuplicateStreamError(stream_id)
        self._known.add(stream_id)
        self._ready[stream_id] = None

    def reprioritize(self, stream_id: int, *args: Any, **kwargs: Any) -> None:
        if stream_id not in self._known:
            raise priority.MissingStreamError(stream_id)

    def block(self, stream_id: int) -> None:
        if stream_id not in self._known:
            raise priority.MissingStreamError(stream_id)
        self._ready.pop(stream_id, None)

    def unblock(self, stream_id: int) -> None:
        if stream_id not in self._known:
            raise priority.MissingStreamError(stream_id)
        self._ready[stream_id] = None

    def remove_stream(self, stream_id: int) -> None:
        if stream_id not in self._known:
            raise priority.MissingStreamError(stream_id)
        self._known.discard(stream_id)
        self._ready.pop(stream_id, None)

    def __iter__(self) -> _RoundRobin:
        return self

    def __next__(self) -> int:
        if not self._ready:
            raise priority.DeadlockError("no stream has data to send")
        stream_id = next(iter(self._ready))
        del self._ready[stream_id]
        self._ready[stream_id] = None  # to the back of the queue
        return stream_id


class _GracefulH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 connection, letting a client's graceful GOAWAY end it gracefully.

    A GOAWAY with NO_ERROR means "no new streams", not "drop the ones running": the AWS SDK for
    JavaScript sends one right after its request when it will not reuse the session, and
    hypercorn (0.18) closed the connection at once, cutting the reply after its first frames.
    Here the connection closes when its last stream has ended. Streams send in turn
    (:class:`_RoundRobin`), not by the deprecated priority tree.
    """

    _peer_done = False
    _idle: asyncio.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.priority = _RoundRobin()  # type: ignore[assignment]
        self.stream_buffers = _StreamBuffers(self.context.event_class)

    _preface_left = len(PREFACE)
    _pending = b""

    async def streams_done(self) -> None:
        """Returns once no stream is open (for a client that half-closed its side)."""
        while self.streams:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()
            self._idle.clear()

    async def handle(self, event: Any) -> None:
        if isinstance(event, RawData):
            data = self._without_graceful_goaway(event.data)
            if not data:
                return
            event = RawData(data)
        await super().handle(event)
        if self._peer_done and not self.streams:
            await self.send(Closed())

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        """Request body for a stream whose response has already ended (a 401 sent on the
        request's head) is acknowledged and dropped: hypercorn 0.18 looks the stream up
        unguarded, and the ``KeyError`` ended the whole connection."""
        kept, opening = [], set()
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                opening.add(event.stream_id)
            elif (
                isinstance(event, h2.events.DataReceived)
                and event.stream_id not in self.streams
                and event.stream_id not in opening
            ):
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                continue
            kept.append(event)
        await super()._handle_events(kept)

    def _without_graceful_goaway(self, data: bytes) -> bytes:
        """The bytes for h2, less GOAWAY frames with NO_ERROR, which h2 would take as the end
        of every stream; whole frames only (h2 buffers partial ones the same way)."""
        buffer = self._pending + data
        kept = bytearray()
        if self._preface_left:
            taken = buffer[: self._preface_left]
            kept += taken
            buffer = buffer[len(taken) :]
            self._preface_left -= len(taken)
        while len(buffer) >= FRAME_HEADER:
            end = FRAME_HEADER + int.from_bytes(buffer[:3], "big")
            if len(buffer) < end:
                break
            frame, buffer = buffer[:end], buffer[end:]
            if frame[3] == GOAWAY and int.from_bytes(frame[13:17], "big") == 0:
                self._peer_done = True
            else:
                kept += frame
        self._pending = bytes(buffer)
        return bytes(kept)

    async def stream_send(self, event: Any) -> None:
        await super().stream_send(event)
        if isinstance(event, StreamClosed) and not self.streams:
            if self._idle is not None:
                self._idle.set()
            if self._peer_done:
                await self.send(Closed())


class _ProtocolWrapper(ProtocolWrapper):
    """hypercorn's switch from HTTP/1.1 to HTTP/2 (ALPN, the preface, an h2c upgrade), to
    :class:`_GracefulH2Protocol`: the ``H2Protocol`` hypercorn makes is replaced, before its
    first use, by ours made with the same arguments."""

    @property  # type: ignore[override]
    def protocol(self) -> H11Protocol | H2Protocol:
        return self._protocol

    @protocol.setter
    def protocol(self, protocol: H11Protocol | H2Protocol) -> None:
        if type(protocol) is H2Protocol:
            protocol = _GracefulH2Protocol(
                self.app,
                self.config,
                self.context,
                self.task_group,
                self.state,
                self.ssl,
                self.client,
                self.server,
                self.send,
            )
        self._protocol = protocol


class _HalfClosingTCPServer(TCPServer):
    """hypercorn's connection loop, with streamchat's HTTP/2 protocol (:class:`_ProtocolWrapper`
    replaces the wrapper ``run`` makes, with the same arguments).

    A client that half-closes (ends its side after a request, as node's HTTP/2 session does on
    ``close()``) still gets its replies: end of input waits for the open HTTP/2 streams before
    the connection closes. A reset connection or a failed write still closes it at once (and
    so cancels its streams)."""

    @property  # type: ignore[override]
    def protocol(self) -> ProtocolWrapper:
        return self._wrapper

    @protocol.setter
    def protocol(self, wrapper: ProtocolWrapper) -> None:
        if type(wrapper) is ProtocolWrapper:
            alpn = "h2" if isinstance(wrapper.protocol, H2Protocol) else "http/1.1"
            wrapper = _ProtocolWrapper(
                wrapper.app,
                wrapper.config,
                wrapper.context,
                wrapper.task_group,
                wrapper.state,
                wrapper.ssl,
                wrapper.client,
                wrapper.server,
                wrapper.send,
                alpn,
            )
        self._wrapper = wrapper

    async def _read_data(self) -> None:
        while not self.reader.at_eof():
            try:
                data = await asyncio.wait_for(self.reader.read(MAX_RECV), self.config.read_timeout)
            except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
                break
            await self.protocol.handle(RawData(data))
        else:
            inner = self.protocol.protocol
            if isinstance(inner, _GracefulH2Protocol):
                await inner.streams_done()
        await self.protocol.handle(Closed())


class _HeadersAsHTTP1:
    """ASGI middleware for HTTP/2 requests: the ``:authority`` pseudo-header becomes ``host``
    (the browser guard and URL building read it) and pseudo-headers leave ``scope["headers"]``,
    so the app sees the same headers over either version."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if not k.startswith(b":")]
            if not any(k == b"host" for k, _ in headers):
                authority = next((v for k, v in scope["headers"] if k == b":authority"), None)
                if authority is not None:
                    headers.insert(0, (b"host", authority))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


class _HTTP2Side:
    """What every HTTP/2 connection of one uvicorn server shares (made on first use)."""

    def __init__(self, config: Config, app_state: dict[str, Any]) -> None:
        self.config = HypercornConfig()
        self.config.keep_alive_timeout = config.timeout_keep_alive
        self.config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
        self.config.include_server_header = False
        self.config.accesslog = None
        self.config.errorlog = None
        self.app = ASGIWrapper(_HeadersAsHTTP1(config.loaded_app))
        self.context = WorkerContext(None)
        self.state = app_state


class _HTTP2Connection:
    """One HTTP/2 connection as uvicorn's shutdown sees it: ``shutdown()`` asks it to finish."""

    def __init__(self, side: _HTTP2Side, task: asyncio.Task[None]) -> None:
        self.side = side
        self.task = task

    def shutdown(self) -> None:
        self.side.context.terminated._event.set()  # type: ignore[attr-defined]


class DualProtocol(asyncio.Protocol):
    """uvicorn's ``http=`` protocol: HTTP/1.1 through uvicorn, HTTP/2 through hypercorn."""

    alpn_protocols: ClassVar[list[str]] = ["h2", "http/1.1"]  # uvicorn sets them on TLS

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timeout: asyncio.TimerHandle | None = None

    # -- before the choice ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            if ssl_object.selected_alpn_protocol() == "h2":
                self._to_http2()
            else:
                self._to_http1()
            return
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.timeout = self.loop.call_later(self.config.timeout_keep_alive, transport.close)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < len(PREFACE) and PREFACE.startswith(self.buffer):
            return  # could still be the preface
        if self.buffer.startswith(PREFACE):
            self._chosen()
            self._to_http2()
            return
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 and len(self.buffer) < MAX_HEAD_BYTES:
            return  # the first request's head is not complete yet
        self._chosen()
        if head_end >= 0 and _asks_h2c(self.buffer[:head_end]):
            self._to_http2()
        else:
            self._to_http1()

    def connection_lost(self, exc: Exception | None) -> None:
        self._chosen()

    def eof_received(self) -> bool | None:
        return None

    def shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _chosen(self) -> None:
        self.server_state.connections.discard(self)  # type: ignore[arg-type]
        if self.timeout is not None:
            self.timeout.cancel()
            self.timeout = None

    # -- after it ------------------------------------------------------------------------------
    def _to_http1(self) -> None:
        assert self.transport is not None
        protocol = AutoHTTPProtocol(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if self.buffer:
            protocol.data_received(self.buffer)

    def _to_http2(self) -> None:
        assert self.transport is not None
        side = self._side()
        reader = asyncio.StreamReader(limit=2**16, loop=self.loop)
        stream_protocol = asyncio.StreamReaderProtocol(reader, loop=self.loop)
        self.transport.set_protocol(stream_protocol)
        stream_protocol.connection_made(self.transport)
        if self.buffer:
            reader.feed_data(self.buffer)
        writer = asyncio.StreamWriter(self.transport, stream_protocol, reader, self.loop)
        server = _HalfClosingTCPServer(
            side.app, self.loop, side.config, side.context, side.state, reader, writer
        )
        task = self.loop.create_task(server.run())
        connection = _HTTP2Connection(side, task)
        self.server_state.connections.add(connection)  # type: ignore[arg-type]
        self.server_state.tasks.add(task)

        def finished(_: asyncio.Task[None]) -> None:
            self.server_state.connections.discard(connection)  # type: ignore[arg-type]
            self.server_state.tasks.discard(task)

        task.add_done_callback(finished)

    def _side(self) -> _HTTP2Side:
        """One per uvicorn server: kept on its config, which every connection shares."""
        side = getattr(self.config, "_streamchat_http2", None)
        if side is None:
            side = _HTTP2Side(self.config, self.app_state)
            self.config._streamchat_http2 = side  # type: ignore[attr-defined]
        return side


def _asks_h2c(head: bytes) -> bool:
    """True when a request head carries ``Upgrade: h2c`` (RFC 7540 3.2) with its settings."""
    upgrade = settings = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"upgrade":
            upgrade = b"h2c" in [v.strip().lower() for v in value.split(b",")]
        elif name == b"http2-settings":
            settings = True
    return upgrade and settings
