"""The library's remote providers resume transparently (issue 24 §6): a reply streamed by the
official SDKs from a streamchat server whose connection a real TCP proxy cuts mid-body goes on
where it broke — same text as an uninterrupted run, generated once upstream — and a reader that
stops early still stops generation upstream (through the resumable reply's cancel)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from serving import serve_in_thread
from streamchat.events import StreamEvent
from streamchat.providers import get_provider
from streamchat.providers.anthropic import AnthropicProvider
from streamchat.providers.openai_compat import OpenAIProvider
from streamchat.providers.resuming import last_id, split_frames
from streamchat.providers.scripted import ScriptedProvider
from streamchat.request import build_request
from streamchat.server.common import ServerConfig
from streamchat.testing.proxy import TCPProxy

SPEC = "scripted?delay=0.02&repeat=8&tag=remote-resume"  # ~50 deltas, ~1 s
USER = [{"role": "user", "content": "hi"}]
PROVIDERS = {"anthropic": ("ANTHROPIC_BASE_URL", ""), "openai": ("OPENAI_BASE_URL", "/v1")}


@pytest.fixture
def upstream(
    fresh_providers: None, sdk_credentials: None
) -> Iterator[tuple[str, ScriptedProvider]]:
    """A streamchat server in this process (its scripted provider's counters readable)."""
    with serve_in_thread(ServerConfig(default_model=SPEC, models=[])) as url:
        scripted = get_provider(SPEC)
        assert isinstance(scripted, ScriptedProvider)
        yield url, scripted


def provider(name: str, url: str, monkeypatch: pytest.MonkeyPatch) -> object:
    variable, suffix = PROVIDERS[name]
    monkeypatch.setenv(variable, url + suffix)
    return (AnthropicProvider if name == "anthropic" else OpenAIProvider)("upstream-model")


async def text_of(stream: object, cut: TCPProxy | None = None, after: int = 0) -> str:
    """The reply's text; ``cut``'s connections are cut after ``after`` text deltas."""
    request = build_request(
        model="m", max_tokens=4000, messages=[{"role": "user", "content": "hi"}]
    )
    out: list[str] = []
    events = stream.stream(request)  # type: ignore[attr-defined]
    async for event in events:
        assert event.type != "error", event
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            out.append(event.delta.text)
            if cut is not None and len(out) == after:
                cut.cut()  # the network drops mid-reply
    return "".join(out)


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_dropped_connection_is_resumed_transparently(
    name: str, upstream: tuple[str, ScriptedProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, scripted = upstream
    whole = asyncio.run(text_of(provider(name, url, monkeypatch)))
    with TCPProxy(int(url.rsplit(":", 1)[1])) as proxy:
        remote = provider(name, f"http://127.0.0.1:{proxy.port}", monkeypatch)
        assert asyncio.run(text_of(remote, proxy, after=10)) == whole
    assert (len(scripted.requests), scripted.completed) == (2, 2)  # generated once each


def test_a_reader_that_stops_early_stops_the_upstream(
    upstream: tuple[str, ScriptedProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, scripted = upstream
    remote = provider("anthropic", url, monkeypatch)

    async def read_three() -> None:
        request = build_request(
            model="m", max_tokens=4000, messages=[{"role": "user", "content": "hi"}]
        )
        events = remote.stream(request)  # type: ignore[attr-defined]
        seen: list[StreamEvent] = []
        async for event in events:
            seen.append(event)
            if len(seen) == 3:
                break
        await events.aclose()

    asyncio.run(read_three())
    deadline = time.monotonic() + 10  # not the 30 s grace period: the cancel stops it
    while scripted.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (scripted.cancelled, scripted.completed) == (1, 0)


def test_frames_are_split_whole_and_their_ids_read() -> None:
    assert split_frames(b"id: 1\ndata: {}\n\nid: 2\nda") == (b"id: 1\ndata: {}\n\n", b"id: 2\nda")
    assert split_frames(b"id: 1\r\ndata: {}\r\n\r\n") == (b"id: 1\ndata: {}\n\n", b"")
    assert last_id(b"id: 1\ndata: {}\n\nid: 2\ndata: {}\n\n", -1) == 2
    assert last_id(b": ping\n\n", 7) == 7
