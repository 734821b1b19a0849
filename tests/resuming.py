"""What the resume tests share: the three protocols that resume, reading a stream, cutting it
with a real TCP proxy, resuming it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from streamchat.testing.proxy import TCPProxy
from streamchat.wire.sse import SSEDecoder, SSEMessage

QUICK = "scripted?delay=0.005&repeat=40"  # ~300 frames, well under a second
STEADY = "scripted?delay=0.02&repeat=30"  # ~2 s of frames: time to leave and come back
ENDLESS = "scripted?delay=0.02&repeat=100000"  # never ends by itself within a test
RESUMABLE = {"x-streamchat-resumable": "true"}


@dataclass(frozen=True)
class Protocol:
    path: str
    body: dict[str, Any]
    last: str  # the terminal frame's event (or data) that says the reply is whole

    def text(self, messages: list[SSEMessage]) -> str:
        out = []
        for m in messages:
            if m.data == "[DONE]":
                continue
            data = m.json()
            if m.event == "content_block_delta" and data["delta"]["type"] == "text_delta":
                out.append(data["delta"]["text"])
            elif m.event == "response.output_text.delta":
                out.append(data["delta"])
            elif m.event is None and data.get("choices"):
                out.append(data["choices"][0]["delta"].get("content") or "")
        return "".join(out)

    def ended(self, messages: list[SSEMessage]) -> bool:
        return bool(messages) and self.last in (messages[-1].event, messages[-1].data)


USER = [{"role": "user", "content": "hi"}]
PROTOCOLS = {
    "anthropic": Protocol("/v1/messages", {"max_tokens": 4000, "messages": USER}, "message_stop"),
    "openai": Protocol("/v1/chat/completions", {"messages": USER}, "[DONE]"),
    "responses": Protocol("/v1/responses", {"input": "hi"}, "response.completed"),
}


def read(url: str, protocol: Protocol, model: str, **kwargs: Any) -> list[SSEMessage]:
    body = {**protocol.body, "model": model, "stream": True}
    with httpx.stream("POST", url + protocol.path, json=body, timeout=30, **kwargs) as response:
        assert response.status_code == 200, response.read()
        return SSEDecoder().feed(response.read())


def read_until_cut(
    url: str, protocol: Protocol, model: str, proxy: TCPProxy, frames: int
) -> tuple[str, list[SSEMessage]]:
    """A resumable stream through ``proxy``, cut after ``frames`` frames: ``(reply id, the
    whole frames the client got)``."""
    body = {**protocol.body, "model": model, "stream": True}
    decoder, got = SSEDecoder(), []
    proxied = f"http://127.0.0.1:{proxy.port}"
    with httpx.stream(
        "POST", proxied + protocol.path, json=body, headers=RESUMABLE, timeout=30
    ) as response:
        assert response.status_code == 200
        reply_id = response.headers["x-streamchat-reply"]
        try:
            for chunk in response.iter_raw():
                got += decoder.feed(chunk)
                if len(got) >= frames:
                    proxy.cut()  # the network drops: the client keeps what had arrived
        except httpx.HTTPError:
            pass
    assert not protocol.ended(got), "the cut came too late to test anything"
    return reply_id, got


def resume(url: str, reply_id: str, last: str | None) -> list[SSEMessage]:
    headers = {"Last-Event-ID": last} if last is not None else {}
    with httpx.stream("GET", f"{url}/v1/streams/{reply_id}", headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["x-streamchat-reply"] == reply_id
        return SSEDecoder().feed(r.read())


def ids(messages: list[SSEMessage]) -> list[int]:
    return [int(m.id) for m in messages if m.id is not None]
