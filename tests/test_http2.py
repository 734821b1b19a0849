"""HTTP/2 and HTTP/1.1 on one port: real HTTP/2 clients (httpx + h2, curl's nghttp2) against
``streamchat serve``: prior knowledge, the h2c upgrade, TLS with ALPN, many streams on one
connection, and an ``RST_STREAM`` that cancels one stream and leaves the others running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import uvicorn

from protocols import PROTOCOLS, Protocol
from serving import HOST, Server, free_port, serve, wait_healthy
from streamchat.providers import ScriptedProvider
from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig
from streamchat.server.http2 import DualProtocol
from waiting import wait_until

TEXT = "one two three four five six seven eight"
EXPECTED = "[turn 1] You said: " + TEXT  # the scripted echo when no text is scripted


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("--model", "scripted?delay=0.01") as running:
        yield running


def stream_over(client: httpx.Client, url: str, protocol: Protocol) -> tuple[str, str, bool]:
    """``(http version, text, ended properly)`` of one streamed reply."""
    reader = protocol.reader()
    body = protocol.body(TEXT, 100)
    with client.stream("POST", url + protocol.stream_path, json=body) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_bytes():
            reader.feed(chunk)
        version = response.http_version
    assert reader.error is None
    return version, reader.text, reader.done


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_each_protocol_streams_over_http2_with_prior_knowledge(server: Server, name: str) -> None:
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        version, text, done = stream_over(client, server.url, PROTOCOLS[name])
    assert (version, text, done) == ("HTTP/2", EXPECTED, True)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_http1_clients_are_unchanged_on_the_same_port(server: Server, name: str) -> None:
    with httpx.Client(timeout=30) as client:
        version, text, done = stream_over(client, server.url, PROTOCOLS[name])
    assert (version, text, done) == ("HTTP/1.1", EXPECTED, True)


def test_non_streaming_requests_over_http2(server: Server) -> None:
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        for protocol in PROTOCOLS.values():
            body = protocol.body(TEXT, 100, stream=False)
            response = client.post(server.url + protocol.plain_path, json=body)
            assert response.http_version == "HTTP/2"
            assert protocol.plain_text(response.json()) == EXPECTED
        models = client.get(server.url + "/v1/models")
        assert models.status_code == 200 and models.http_version == "HTTP/2"


def test_errors_keep_their_protocol_shape_over_http2(server: Server) -> None:
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        response = client.post(server.url + "/v1/messages", json={"model": "m"})
        assert response.status_code == 400 and response.http_version == "HTTP/2"
        assert response.json()["error"]["message"].startswith("max_tokens")
        response = client.post(server.url + "/model/m/converse", json={"messages": "x"})
        assert response.status_code == 400
        assert response.headers["x-amzn-errortype"] == "ValidationException"


def test_browser_guard_reads_the_http2_authority(server: Server) -> None:
    """``:authority`` stands for ``Host``: a foreign one is refused like a foreign Host."""
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        ok = client.get(server.url + "/healthz")
        assert ok.status_code == 200
        refused = client.get(server.url + "/v1/models", headers={"host": "evil.example"})
        assert refused.status_code == 403
        cross = client.get(server.url + "/v1/models", headers={"origin": "https://evil.example"})
        assert cross.status_code == 403


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_h2c_upgrade_switches_to_http2(server: Server) -> None:
    """curl ``--http2`` on ``http://`` asks ``Upgrade: h2c``; the reply comes over HTTP/2."""
    result = subprocess.run(
        ["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{response_code}",
         f"{server.url}/v1/models"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout == "2 200"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_streams_with_prior_knowledge(server: Server) -> None:
    body = PROTOCOLS["anthropic"].body(TEXT, 100)
    result = subprocess.run(
        ["curl", "-sS", "-N", "--http2-prior-knowledge", "-H", "content-type: application/json",
         "-d", __import__("json").dumps(body), f"{server.url}/v1/messages"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    reader = PROTOCOLS["anthropic"].reader()
    reader.feed(result.stdout)
    assert (reader.text, reader.done) == (EXPECTED, True)


@pytest.mark.anyio
async def test_many_concurrent_streams_share_one_connection(server: Server) -> None:
    """Fifty streams multiplexed on one connection by a real HTTP/2 client, each whole (that
    they are under way at once: ``test_fifty_streams_on_one_connection_are_under_way_at_once``)."""
    protocol = PROTOCOLS["anthropic"]

    async def one(client: httpx.AsyncClient, index: int) -> str:
        reader = protocol.reader()
        body = protocol.body(f"s{index} {TEXT}", 100)
        async with client.stream("POST", server.url + protocol.stream_path, json=body) as reply:
            assert reply.http_version == "HTTP/2"
            async for chunk in reply.aiter_bytes():
                reader.feed(chunk)
        assert reader.done
        return reader.text

    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, timeout=60, limits=limits) as client:
        texts = await asyncio.gather(*(one(client, i) for i in range(50)))
        connections = client._transport._pool.connections  # type: ignore[attr-defined]
        assert len(connections) == 1
    assert texts == [f"[turn 1] You said: s{i} {TEXT}" for i in range(50)]


# -- raw HTTP/2 (the h2 library) against an in-process server whose provider we can see -------
@contextlib.contextmanager
def in_process(spec: str, **options: object) -> Iterator[tuple[str, int, ScriptedProvider]]:
    """The app under uvicorn + :class:`DualProtocol` in a thread; yields its provider too."""
    config = ServerConfig(default_model=spec, loopback_only=True)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host=HOST, port=port, log_level="warning", http=DualProtocol,
            **options,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, name="test-h2", daemon=True)
    thread.start()
    try:
        wait_healthy(f"http://{HOST}:{port}", thread.is_alive, 30)
        from streamchat.providers import get_provider

        provider = get_provider(spec)
        assert isinstance(provider, ScriptedProvider)
        yield HOST, port, provider
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class RawH2:
    """A blocking HTTP/2 client connection on a socket: just enough to send, read and reset."""

    def __init__(self, host: str, port: int, window: int | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.acknowledge = True

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def post(self, path: str, body: bytes, *, send_body: bool = True) -> int:
        """Send a request; with ``send_body=False`` only its head (see :meth:`send_body`)."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":path", path), (":scheme", "http"),
                   (":authority", f"{HOST}"), ("content-type", "application/json"),
                   ("content-length", str(len(body)))]  # fmt: skip
        self.conn.send_headers(stream_id, headers)
        self.data[stream_id] = bytearray()
        if send_body:
            self.send_body(stream_id, body)
        else:
            self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes) -> None:
        self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()

    def pump(self) -> None:
        """Read one batch of frames from the server."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] += event.data
                if self.acknowledge:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
        self.flush()

    def grant(self, *streams: int) -> None:
        """Open the connection's and ``streams``' windows wide and acknowledge from now on."""
        self.acknowledge = True
        self.conn.increment_flow_control_window(10_000_000)
        for stream_id in streams:
            self.conn.increment_flow_control_window(10_000_000, stream_id)
        self.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close_connection()
            self.flush()
        self.sock.close()


def anthropic_body(prompt: str, max_tokens: int) -> bytes:
    return json.dumps(PROTOCOLS["anthropic"].body(prompt, max_tokens)).encode()


def test_fifty_streams_on_one_connection_are_under_way_at_once(server: Server) -> None:
    """Each stream may send 1 KB before the client reads on (HTTP/2 flow control), less than a
    reply: all fifty have begun while none can have ended, which a server handling a
    connection's streams one after the other never gets to. Then every one finishes whole."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    client = RawH2(host, int(port), window=1024)
    client.acknowledge = False
    try:
        streams = [
            client.post("/v1/messages", anthropic_body(f"s{i} {TEXT}", 100)) for i in range(50)
        ]
        while not all(b"content_block_delta" in client.data[s] for s in streams):
            client.pump()
        assert not client.ended and not client.reset  # all under way, none could end
        client.grant(*streams)
        while not client.ended.issuperset(streams):
            client.pump()
    finally:
        client.close()
    for i, stream_id in enumerate(streams):
        reader = PROTOCOLS["anthropic"].reader()
        reader.feed(bytes(client.data[stream_id]))
        assert (reader.text, reader.done) == (f"[turn 1] You said: s{i} {TEXT}", True)


def test_a_client_that_half_closes_after_its_request_still_gets_the_reply(server: Server) -> None:
    """node's HTTP/2 session ends its side once the request is sent; the reply must still come."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    client = RawH2(host, int(port))
    body = json.dumps(
        {
            "model": "m",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": TEXT}],
        }
    ).encode()
    stream_id = client.post("/v1/messages", body)
    client.sock.shutdown(socket.SHUT_WR)
    while stream_id not in client.ended:
        chunk = client.sock.recv(65536)
        assert chunk, "the server closed the connection before the reply ended"
        for event in client.conn.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                client.data[event.stream_id] += event.data
            elif isinstance(event, h2.events.StreamEnded):
                client.ended.add(event.stream_id)
    client.sock.close()
    reply = bytes(client.data[stream_id])
    assert reply.count(b"event: content_block_delta") == len(EXPECTED.split())
    assert b"event: message_stop" in reply


def test_rst_stream_cancels_that_stream_and_the_connection_goes_on() -> None:
    """Both streams are held by flow control (4 KB each, not read on), so neither can finish
    before the first is reset and the second is let go."""
    words = " ".join(f"w{i}" for i in range(2000))  # ~200 KB of SSE frames
    spec = "scripted?" + urlencode({"text": words})
    with in_process(spec) as (host, port, provider):
        client = RawH2(host, port, window=4096)
        client.acknowledge = False
        try:
            encoded = anthropic_body("go", 10_000)
            first, second = (
                client.post("/v1/messages", encoded),
                client.post("/v1/messages", encoded),
            )
            while not all(b"content_block_delta" in client.data[s] for s in (first, second)):
                client.pump()
            client.conn.reset_stream(first)
            client.flush()
            wait_until(
                lambda: provider.cancelled == 1, what="generation of the reset stream to stop"
            )
            assert provider.active == 1 and provider.completed == 0  # the other one still waits
            client.grant(second)
            while second not in client.ended:
                client.pump()
        finally:
            client.close()
        reader = PROTOCOLS["anthropic"].reader()
        reader.feed(bytes(client.data[second]))
        assert (reader.text, reader.done) == (words, True)
        wait_until(lambda: provider.completed == 1, what="the second stream to complete")
        assert provider.cancelled == 1


def test_a_stalled_http2_reader_pauses_generation() -> None:
    """HTTP/2 flow control: a reader that grants no window holds the stream (and its memory)
    at one window's worth; granting it lets the stream finish."""
    words = " ".join(f"word{i}" for i in range(3000))  # ~ 200 KB of SSE frames
    spec = "scripted?" + urlencode({"text": words})
    with in_process(spec) as (host, port, provider):
        client = RawH2(host, port, window=16_384)
        client.acknowledge = False
        try:
            stream = client.post("/v1/messages", anthropic_body("go", 10_000))
            while len(client.data[stream]) < 16_384:  # the stream's window, filled
                client.pump()
            time.sleep(1.0)  # the stall under test: a reader that grants no window for a while
            assert len(client.data[stream]) == 16_384 and stream not in client.ended
            assert provider.active == 1 and provider.completed == 0  # waiting, not finished
            client.grant(stream)
            while stream not in client.ended:
                client.pump()
        finally:
            client.close()
        reader = PROTOCOLS["anthropic"].reader()
        reader.feed(bytes(client.data[stream]))
        assert (reader.text, reader.done) == (words, True)


# -- TLS: HTTP/2 by ALPN, HTTP/1.1 otherwise ----------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS test")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_negotiates_http2_by_alpn_and_http1_without_it(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    port = free_port()
    command = ["streamchat", "serve", "--model", "scripted?delay=0.01", "--port", str(port),
               "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "streamchat.cli.main", *command[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"https://{HOST}:{port}"
    context = ssl.create_default_context(cafile=str(cert))

    def up() -> bool:
        assert process.poll() is None, "serve --tls-cert exited"
        try:
            return httpx.get(url + "/healthz", verify=context, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, what="the TLS server to come up")
        with httpx.Client(http2=True, verify=context, timeout=30) as client:
            version, text, done = stream_over(client, url, PROTOCOLS["bedrock"])
        assert (version, text, done) == ("HTTP/2", EXPECTED, True)
        with httpx.Client(verify=context, timeout=30) as client:  # offers only http/1.1
            version, text, done = stream_over(client, url, PROTOCOLS["openai"])
        assert (version, text, done) == ("HTTP/1.1", EXPECTED, True)
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_web_page_metrics_and_models_over_http2(server: Server) -> None:
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        page = client.get(server.url + "/")
        assert page.status_code == 200 and page.http_version == "HTTP/2"
        assert "<html" in page.text.lower()
        client.post(server.url + "/v1/messages", json=PROTOCOLS["anthropic"].body("hi", 10))
        metrics = client.get(server.url + "/metrics")
        assert metrics.status_code == 200 and "streamchat" in metrics.text


def test_api_key_is_required_over_http2() -> None:
    with serve("--model", "scripted", "--api-key", "sekrit") as locked:
        with httpx.Client(http1=False, http2=True, timeout=30) as client:
            body = PROTOCOLS["anthropic"].body("hi", 10, stream=False)
            refused = client.post(locked.url + "/v1/messages", json=body)
            assert refused.status_code == 401 and refused.http_version == "HTTP/2"
            allowed = client.post(
                locked.url + "/v1/messages", json=body, headers={"x-api-key": "sekrit"}
            )
            assert allowed.status_code == 200


def test_a_body_that_arrives_after_its_response_leaves_the_connection_usable() -> None:
    """A 401 is sent on the request's head; the body the client sends after it is dropped, and
    the next request on the same connection is served (hypercorn 0.18 took such late data as
    a KeyError that ended the connection: CI saw 'Server disconnected')."""
    with serve("--model", "scripted", "--api-key", "sekrit") as locked:
        host, port = locked.url.removeprefix("http://").rsplit(":", 1)
        client = RawH2(host, int(port))
        try:
            body = anthropic_body("hi", 10)
            refused = client.post("/v1/messages", body, send_body=False)
            while refused not in client.ended:
                client.pump()
            assert b"authentication_error" in client.data[refused]
            client.send_body(refused, body)
            again = client.post("/v1/messages", body)
            while again not in client.ended:
                client.pump()
            assert b"authentication_error" in client.data[again]
        finally:
            client.close()


def test_sigterm_lets_an_http2_stream_finish_then_exits() -> None:
    """Graceful shutdown: a stream in flight on an HTTP/2 connection ends normally (within the
    grace period), then the process exits cleanly."""
    import signal

    spec = "scripted?" + urlencode({"text": " ".join(f"w{i}" for i in range(20)), "delay": 0.1})
    with serve("--model", spec) as running:
        reader = PROTOCOLS["anthropic"].reader()
        with httpx.Client(http1=False, http2=True, timeout=30) as client:
            body = PROTOCOLS["anthropic"].body("go", 100)
            with client.stream("POST", running.url + "/v1/messages", json=body) as reply:
                chunks = reply.iter_bytes()
                while not reader.texts:
                    reader.feed(next(chunks))
                running.process.send_signal(signal.SIGTERM)
                for chunk in chunks:
                    reader.feed(chunk)
        assert reader.done and reader.error is None
        assert len(reader.texts) == 20
        assert running.process.wait(timeout=30) == 0
