"""Faults the server survives: clients that leave or stop reading, providers that fail mid-stream,
SIGTERM with streams in flight, and an embedded model asked for more than it admits.

Every protocol is driven the same way (``protocols.PROTOCOLS``) over plain httpx, and every
answer is read with streamchat's own decoders. (Injected faults, ``serve --faults``, are tested
in ``test_faults_injection.py``; this file is about real ones.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import streamchat
import streamchat.providers
from protocols import PROTOCOLS, Protocol, StreamReader, error_type_of
from serving import HOST, Server, free_port, serve, wait_healthy
from streamchat.cli.main import main
from streamchat.errors import OverloadedError
from streamchat.events import StreamEvent
from streamchat.history import HistoryStore
from streamchat.providers import ScriptedProvider, get_provider, local
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.providers.local import DEFAULT_LOCAL_MODEL, LocalProvider, LocalSettings
from streamchat.request import MessageRequest
from streamchat.server import listen
from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig
from waiting import wait_until

ScriptedFactory = Callable[..., tuple[str, ScriptedProvider]]
LONG = " ".join(f"w{i}" for i in range(300))  # 300 tokens x 20 ms: 6 s unless cancelled
IDS = list(PROTOCOLS)


@contextlib.contextmanager
def app_in_thread(config: ServerConfig) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """The app under uvicorn on an event loop of the test's own, so its tasks can be counted."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host=HOST, port=port, log_level="warning", lifespan="off"
        )
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(),), name="test-uvicorn", daemon=True
    )
    thread.start()
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, thread.is_alive, 30)
        yield url, loop
    finally:
        server.should_exit = True
        thread.join(15)
        loop.close()


def tasks_on(loop: asyncio.AbstractEventLoop) -> int:
    """Tasks alive on the server's loop (besides the one counting)."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return asyncio.run_coroutine_threadsafe(count(), loop).result(5)


def read_then_leave(http: httpx.Client, protocol: Protocol, body: dict, texts: int) -> StreamReader:
    """Stream a reply, stop after ``texts`` text deltas and close the connection."""
    reader = protocol.reader()
    with http.stream("POST", protocol.stream_path, json=body) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_raw():
            reader.feed(chunk)
            if len(reader.texts) >= texts:
                break
    assert len(reader.texts) >= texts and not reader.done
    return reader


# -- clients that leave ---------------------------------------------------------------------------
def test_a_hundred_disconnects_cancel_every_generation_and_leak_no_task_or_thread(
    scripted: ScriptedFactory,
) -> None:
    spec, provider = scripted(text=LONG, delay=0.02)
    protocols = list(PROTOCOLS.values())
    with (
        app_in_thread(ServerConfig(default_model=spec, models=[])) as (url, loop),
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        for protocol in protocols:  # warm-up: whatever is created lazily exists from here on
            read_then_leave(http, protocol, protocol.body("hi", 1000), texts=2)
        wait_until(lambda: provider.active == 0, what="the warm-up generations to end")
        threads, tasks = threading.active_count(), tasks_on(loop)

        for i in range(100):
            protocol = protocols[i % len(protocols)]
            read_then_leave(http, protocol, protocol.body(f"leave {i}", 1000), texts=2)

        wait_until(lambda: provider.active == 0, what="every generation to end")
        assert (provider.cancelled, provider.completed) == (104, 0)
        wait_until(lambda: tasks_on(loop) == tasks, what=f"the server's {tasks} tasks")
        wait_until(lambda: threading.active_count() == threads, what=f"{threads} threads")


@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_a_client_that_gives_up_on_a_whole_reply_stops_its_generation(
    scripted: ScriptedFactory, protocol: Protocol
) -> None:
    spec, provider = scripted(text=LONG, delay=0.02)
    body = json.dumps(protocol.body("x", 1000, stream=False)).encode()
    request = (
        f"POST {protocol.plain_path} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with app_in_thread(ServerConfig(default_model=spec, models=[])) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection((HOST, port)) as sock:
            sock.sendall(request)
            wait_until(lambda: provider.active == 1, what="generation")  # the whole reply...
        # ...for a client that has gone
        wait_until(lambda: provider.active == 0, what="the generation to stop")
    assert (provider.cancelled, provider.completed) == (1, 0)


class CountingGenerate:
    """Counts the tokens the embedded model's engine samples (its ``observe`` hook)."""

    def __init__(self) -> None:
        self.tokens = 0

    def __call__(self, run: Any, token: int | None) -> None:
        if token is not None:
            self.tokens += 1


def workers() -> list[threading.Thread]:
    """Per-stream worker threads (blocking providers other than llama.cpp)."""
    return [t for t in threading.enumerate() if t.name == "streamchat-worker"]


@pytest.mark.model
def test_disconnects_end_the_embedded_models_worker_threads(
    local_model: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_model.load()
    counter = CountingGenerate()
    monkeypatch.setattr(local_model.engine, "observe", counter)
    essay = "Write me a long essay about the history of bread."
    config = ServerConfig(default_model=DEFAULT_LOCAL_MODEL)
    with app_in_thread(config) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        for protocol in PROTOCOLS.values():
            body = protocol.body(essay, 1000)
            config_of = (
                body.setdefault("inferenceConfig", {}) if protocol.name == "bedrock" else body
            )
            config_of["temperature"] = 0  # the same long essay every time, no early end
            read_then_leave(http, protocol, body, texts=3)
            at_close = counter.tokens
            idle = lambda: not local_model.worker.busy and local_model.admission.count == 0  # noqa: E731
            wait_until(idle, what="the model to be idle")
            assert counter.tokens - at_close <= 16, "generation went on after the client left"
        assert counter.tokens > 0  # the hook saw the generations


# -- a client that stops reading ------------------------------------------------------------------
def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1]) / 1024


@dataclass
class Firehose:
    """Streams ``max_tokens`` tokens of 1 kB as fast as they are taken, counting them."""

    name: str = "firehose"
    produced: int = 0

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        yield message_start(request.model, 1)
        yield text_block_start()
        for _ in range(request.max_tokens):
            self.produced += 1
            yield text_delta("x" * 1023 + " ")
        for event in message_end("max_tokens", request.max_tokens):
            yield event


def test_a_reader_that_stalls_pauses_its_stream_instead_of_filling_server_memory(
    fresh_providers: None,
) -> None:
    """Flow control, not buffering: a stalled client's stream waits in the provider (at most
    ``max_tokens`` events) and the sockets, never in a growing server-side queue."""
    tokens = 20_000  # 20 MB if the server queued it all
    firehose = Firehose()
    streamchat.providers._cache[("scripted?tag=firehose", LocalSettings())] = firehose  # type: ignore[assignment]
    protocol = PROTOCOLS["anthropic"]
    small_window = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)]  # no receive autotuning
    transport = httpx.HTTPTransport(socket_options=small_window)
    config = ServerConfig(default_model="scripted?tag=firehose", models=[])
    with app_in_thread(config) as (url, _), httpx.Client(transport=transport, timeout=60) as http:
        reader = protocol.reader()
        body = protocol.body("read me slowly", tokens)
        with http.stream("POST", url + protocol.stream_path, json=body) as response:
            chunks = response.iter_raw()
            reader.feed(next(chunks))
            before = rss_mb()
            time.sleep(2.0)  # read nothing: unbuffered, the whole reply would be queued by now
            grown, produced = rss_mb() - before, firehose.produced
            for chunk in chunks:
                reader.feed(chunk)
    assert produced < tokens // 2, f"{produced} of {tokens} tokens produced for a stalled reader"
    assert grown < 8, f"the server buffered {grown:.0f} MB for a client that was not reading"
    assert len(reader.texts) == tokens and reader.done  # all of it, once it was read
    assert reader.text == ("x" * 1023 + " ") * tokens


# -- providers that fail mid-stream ---------------------------------------------------------------
@dataclass
class FailingProvider:
    """Streams a few tokens, then raises, like an engine or a remote API failing mid-reply."""

    kind: str  # a key of FAILURES
    error: Exception
    tokens: int = 3
    name: str = "failing"
    requests: list[MessageRequest] = field(default_factory=list)

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        yield message_start(request.model, 1)
        yield text_block_start()
        for i in range(self.tokens):
            yield text_delta(f" t{i}")
        raise self.error


FAILURES = {  # exception -> error type seen by (Anthropic and OpenAI, Bedrock streams)
    "bug": (RuntimeError("engine exploded"), "api_error", "internalServerException"),
    "overload": (OverloadedError("engine busy"), "overloaded_error", "throttlingException"),
}


@pytest.fixture
def failing(fresh_providers: None, request: pytest.FixtureRequest) -> FailingProvider:
    """A provider that fails after three tokens, served as the default model."""
    provider = FailingProvider(request.param, FAILURES[request.param][0])
    streamchat.providers._cache[("scripted?tag=failing", LocalSettings())] = provider  # type: ignore[assignment]
    return provider


@pytest.mark.parametrize("failing", list(FAILURES), indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_a_provider_failing_mid_stream_ends_it_with_the_protocols_error_and_keeps_the_partial(
    failing: FailingProvider,
    protocol: Protocol,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = tmp_path / "history.db"
    config = ServerConfig(default_model="scripted?tag=failing", models=[], history_path=str(db))
    expected = FAILURES[failing.kind][2 if protocol.family == "bedrock" else 1]
    with app_in_thread(config) as (url, _):
        response = httpx.post(url + protocol.stream_path, json=protocol.body("fail", 50))
        assert response.status_code == 200  # the failure came after the status line
        reader = protocol.reader()
        reader.feed(response.content)

        def stored() -> dict[str, Any] | None:
            """The logged reply, once its final write (interrupted) is done."""
            with HistoryStore(db, readonly=True) as store:
                conversations = store.conversations()
                if len(conversations) != 1:
                    return None
                reply = store.conversation(conversations[0]["id"])["messages"][-1]
            return reply if reply["role"] == "assistant" and reply["interrupted"] else None

        reply = wait_until(stored, what="the interrupted reply in the history")
    assert reader.texts == [" t0", " t1", " t2"]
    assert (reader.error, reader.done) == (expected, False)
    assert reply is not None and reply["text"] == " t0 t1 t2"
    unexpected = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert bool(unexpected) is (failing.kind == "bug")  # a bug is logged; an overload is not


@pytest.mark.parametrize("failing", ["overload"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_a_provider_failing_before_a_whole_reply_is_an_error_status(
    failing: FailingProvider, protocol: Protocol
) -> None:
    config = ServerConfig(default_model="scripted?tag=failing", models=[])
    with app_in_thread(config) as (url, _):
        response = httpx.post(url + protocol.plain_path, json=protocol.body("x", 9, stream=False))
    assert response.status_code == (529 if protocol.name == "anthropic" else 429)
    kind = error_type_of(protocol.family, response.status_code, response.headers, response.content)
    assert kind in ("overloaded_error", "ThrottlingException")


# -- SIGTERM ---------------------------------------------------------------------------------------
@dataclass
class StreamingClient:
    """A streaming request in a thread of its own; ``started`` once two deltas arrived."""

    protocol: Protocol
    prompt: str
    reader: StreamReader = field(init=False)
    started: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def run(self, url: str) -> None:
        self.reader = self.protocol.reader()
        try:
            body = self.protocol.body(self.prompt, 1000)
            with httpx.stream("POST", url + self.protocol.stream_path, json=body, timeout=60) as r:
                for chunk in r.iter_raw():
                    self.reader.feed(chunk)
                    if len(self.reader.texts) >= 2:
                        self.started.set()
        except BaseException as error:  # a cut connection lands here
            self.failure = error
        finally:
            self.started.set()


def test_sigterm_finishes_short_streams_ends_long_ones_cleanly_and_exits_zero(
    tmp_path: Path,
) -> None:
    db = tmp_path / "history.db"
    short = " ".join(f"s{i}" for i in range(16))  # 20 tokens x 50 ms: done within the grace
    long = " ".join(f"l{i}" for i in range(400))  # 20 s: still streaming when it runs out
    clients = [StreamingClient(p, text) for p in PROTOCOLS.values() for text in (short, long)]
    with serve("--model", "scripted?delay=0.05", "--history", "--db", str(db)) as server:
        threads = [threading.Thread(target=c.run, args=(server.url,)) for c in clients]
        for thread in threads:
            thread.start()
        assert all(c.started.wait(30) for c in clients)
        os.kill(server.process.pid, signal.SIGTERM)
        code = server.process.wait(timeout=30)  # the grace period is 5 s
        for thread in threads:
            thread.join(30)
        output = server.output()
    assert code == 0, output
    for client in clients:
        reader, name = client.reader, client.protocol.name
        assert client.failure is None, f"{name}: {client.failure!r}"  # every body was complete
        if client.prompt == short:
            assert reader.done and reader.text == f"[turn 1] You said: {short}", name
        else:
            overload = "throttlingException" if client.protocol.family == "bedrock" else None
            assert (reader.error, reader.done) == (overload or "overloaded_error", False), name
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with HistoryStore(db, readonly=True) as store:
        replies = {
            c["id"]: store.conversation(c["id"])["messages"] for c in store.conversations(20)
        }
    assert len(replies) == len(clients)
    for user, assistant in replies.values():
        full = f"[turn 1] You said: {user['text']}"
        cut = user["text"] == long
        assert assistant["interrupted"] is cut  # the partial reply is kept, marked as such
        assert full.startswith(assistant["text"]) and (cut or assistant["text"] == full)


# -- the embedded model, busy ---------------------------------------------------------------------
def test_max_waiting_and_parallel_set_the_admission_limit_of_the_servers_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[Any] = []
    monkeypatch.setattr(listen, "run", lambda app, listener, server="dual": served.append(app))
    monkeypatch.delenv("STREAMCHAT_API_KEY", raising=False)
    monkeypatch.delenv("STREAMCHAT_PARALLEL", raising=False)
    slots = local.DEFAULT_PARALLEL  # the requests in flight, one per slot, come first
    for options, limit in (
        (["--max-waiting", "0"], slots),
        (["--max-waiting", "3"], slots + 3),
        (["--parallel", "2", "--max-waiting", "3"], 2 + 3),
        ([], slots + local.MAX_WAITING),
    ):
        assert main(["serve", "--model", "scripted", *options]) == 0
        config = served[-1].state.config
        provider = get_provider(DEFAULT_LOCAL_MODEL, config.local)
        assert provider.admission.limit == limit, options


def test_two_servers_in_one_process_share_an_engine_only_with_equal_settings() -> None:
    """Settings live in each app's ServerConfig, not in module globals: the pytest plugin
    runs apps with different settings side by side."""
    one = create_app(ServerConfig(local=LocalSettings(parallel=1, max_waiting=0)))
    two = create_app(ServerConfig(local=LocalSettings(parallel=3, max_waiting=5)))
    same = create_app(ServerConfig(local=LocalSettings(parallel=1, max_waiting=0)))
    providers = [get_provider(DEFAULT_LOCAL_MODEL, app.state.config.local)
                 for app in (one, two, same)]  # fmt: skip
    assert [p.admission.limit for p in providers] == [1, 8, 1]
    assert [p.parallel for p in providers] == [1, 3, 1]
    assert providers[0] is providers[2] and providers[0] is not providers[1]
    library = streamchat.Client(local=LocalSettings(parallel=3, max_waiting=5))
    assert (
        streamchat.providers.resolve(None, library.default_model, library._async.local)[0]
        is (providers[1])
    )  # a library client with the same settings gets the same engine


@pytest.fixture(scope="module")
def busy_model() -> Iterator[Server]:
    """The real model behind ``serve --max-waiting 1``: one generating, one waiting."""
    with serve("--model", DEFAULT_LOCAL_MODEL, "--parallel", "1", "--max-waiting", "1") as server:
        protocol = PROTOCOLS["anthropic"]  # load the model before the tests count anything
        httpx.post(server.url + protocol.plain_path, json=protocol.body("hi", 2, stream=False),
                   timeout=120).raise_for_status()  # fmt: skip
        yield server


OVERLOAD = {
    "anthropic": (529, "overloaded_error"),
    "openai": (429, "overloaded_error"),
    "bedrock": (429, "ThrottlingException"),
    "invoke": (429, "ThrottlingException"),
}


@pytest.mark.model
@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_requests_beyond_the_models_admission_get_the_protocols_overload_error(
    busy_model: Server, protocol: Protocol
) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, bytes, httpx.Headers]:
        body = protocol.body(f"Count from one to fifty, request {i}.", 48)
        response = await client.post(protocol.stream_path, json=body)
        return response.status_code, response.content, response.headers

    async def all_at_once() -> list[tuple[int, bytes, httpx.Headers]]:
        limits = httpx.Limits(max_connections=6)
        async with httpx.AsyncClient(base_url=busy_model.url, timeout=120, limits=limits) as c:
            return await asyncio.gather(*(one(c, i) for i in range(6)))

    answers = asyncio.run(all_at_once())
    served = refused = 0
    for status, content, headers in answers:
        if status == 200:
            reader = protocol.reader()
            reader.feed(content)
            assert reader.done and reader.error is None and reader.texts
            served += 1
        else:
            kind = error_type_of(protocol.family, status, headers, content)
            assert (status, kind) == OVERLOAD[protocol.name]
            refused += 1
    assert served >= 1 and refused >= 1, (served, refused)
