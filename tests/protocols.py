"""The server's four streaming APIs as plain data, for tests and the load benchmark.

Each :class:`Protocol` knows its endpoints, how to ask for a reply, how to read its stream back
with streamchat's own sans-IO decoders (no SDK: cheap enough for a thousand streams at once),
and what its errors look like. One table, so fuzzing, faults, security and load all cover every
protocol the same way.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamchat.errors import ERROR_STATUS
from streamchat.wire import bedrock as bedrock_wire
from streamchat.wire import openai as openai_wire
from streamchat.wire.eventstream import EventStreamDecoder
from streamchat.wire.sse import SSEDecoder

BEDROCK_CODES = {error.code: error.status for error in bedrock_wire.ERRORS.values()}


@dataclass
class StreamReader:
    """What one response stream said: text deltas in order, its ids, how it ended."""

    family: str
    texts: list[str] = field(default_factory=list)
    json_fragments: list[str] = field(default_factory=list)  # tool-call input, in order
    thinking: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # event names, in order
    ids: set[str] = field(default_factory=set)
    done: bool = False  # the protocol's own end-of-stream marker arrived
    error: str | None = None  # error type of an in-stream error
    _decoder: Any = None

    def __post_init__(self) -> None:
        sse = self.family in ("anthropic", "openai")
        self._decoder = SSEDecoder() if sse else EventStreamDecoder()

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def feed(self, data: bytes) -> int:
        """Decode bytes of the body; returns how many text deltas they completed."""
        before = len(self.texts)
        for message in self._decoder.feed(data):
            if self.family == "anthropic":
                self._anthropic(message.event or "", message.json())
            elif self.family == "openai":
                self._openai(message.data)
            else:
                self._bedrock(message.headers, message.payload)
        return len(self.texts) - before

    def _anthropic(self, kind: str, data: Mapping[str, Any]) -> None:
        self.kinds.append(kind)
        if kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                self.texts.append(delta["text"])
            elif delta["type"] == "input_json_delta":
                self.json_fragments.append(delta["partial_json"])
            elif delta["type"] == "thinking_delta":
                self.thinking.append(delta["thinking"])
        elif kind == "message_start":
            self.ids.add(data["message"]["id"])
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = data["error"]["type"]

    def _openai(self, data: str) -> None:
        if data == "[DONE]":
            self.kinds.append("[DONE]")
            self.done = True
            return
        chunk = json.loads(data)
        if "error" in chunk:
            self.kinds.append("error")
            self.error = chunk["error"]["type"]
            return
        self.kinds.append("chunk")
        self.ids.add(chunk["id"])
        for choice in chunk["choices"]:
            if choice["delta"].get("content"):
                self.texts.append(choice["delta"]["content"])
            for call in choice["delta"].get("tool_calls") or ():
                if call.get("function", {}).get("arguments"):
                    self.json_fragments.append(call["function"]["arguments"])

    def _bedrock(self, headers: Mapping[str, Any], payload: bytes) -> None:
        if headers.get(":message-type") == "exception":
            self.kinds.append("exception")
            self.error = str(headers[":exception-type"])
            return
        kind, data = str(headers[":event-type"]), json.loads(payload)
        if kind == "chunk":  # invoke-with-response-stream: an Anthropic event inside
            event = json.loads(base64.b64decode(data["bytes"]))
            self._anthropic(event["type"], event)
            return
        self.kinds.append(kind)
        if kind == "contentBlockDelta":
            delta = data["delta"]
            if "text" in delta:
                self.texts.append(delta["text"])
            elif "toolUse" in delta:
                self.json_fragments.append(delta["toolUse"]["input"])
            elif "text" in delta.get("reasoningContent", {}):
                self.thinking.append(delta["reasoningContent"]["text"])
        elif kind == "metadata":
            self.done = True


@dataclass(frozen=True)
class Protocol:
    """One API: its streaming and non-streaming endpoints and its request and error shapes."""

    name: str
    family: str  # "anthropic" | "openai" | "bedrock" (error shape; invoke speaks Anthropic inside)
    stream_path: str
    plain_path: str

    def body(self, prompt: str, max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
        """A valid request asking for a reply to ``prompt``."""
        if self.name == "anthropic":
            user = [{"role": "user", "content": prompt}]
            return {"model": "m", "max_tokens": max_tokens, "messages": user, "stream": stream}
        if self.name == "openai":
            user = [{"role": "user", "content": prompt}]
            return {"model": "m", "max_completion_tokens": max_tokens, "messages": user,
                    "stream": stream}  # fmt: skip
        if self.name == "bedrock":
            user = [{"role": "user", "content": [{"text": prompt}]}]
            return {"messages": user, "inferenceConfig": {"maxTokens": max_tokens}}
        user = [{"role": "user", "content": prompt}]
        return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens,
                "messages": user}  # fmt: skip

    def path(self, stream: bool = True) -> str:
        return self.stream_path if stream else self.plain_path

    def reader(self) -> StreamReader:
        return StreamReader("anthropic" if self.name == "anthropic" else self.family)

    def plain_text(self, body: Mapping[str, Any]) -> str:
        """The reply text of a non-streaming response."""
        if self.name == "openai":
            return body["choices"][0]["message"]["content"]
        if self.name == "bedrock":
            return "".join(block["text"] for block in body["output"]["message"]["content"])
        return "".join(block["text"] for block in body["content"])


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("anthropic", "anthropic", "/v1/messages", "/v1/messages"),
        Protocol("openai", "openai", "/v1/chat/completions", "/v1/chat/completions"),
        Protocol("bedrock", "bedrock", "/model/m/converse-stream", "/model/m/converse"),
        Protocol("invoke", "bedrock", "/model/m/invoke-with-response-stream", "/model/m/invoke"),
    )
}


def family_of(path: str, headers: Mapping[str, str] | None = None) -> str:
    """Which error shape a path answers in (``/v1/models`` follows ``anthropic-version``)."""
    if path.startswith("/model/"):
        return "bedrock"
    if path.startswith(("/v1/chat/", "/v1/responses")) or (
        path == "/v1/models" and "anthropic-version" not in (headers or {})
    ):
        return "openai"
    return "anthropic"


def error_type_of(family: str, status: int, headers: Mapping[str, str], body: bytes) -> str:
    """Check an error response has its protocol's exact shape; return its error type/code.

    Anthropic: ``{"type": "error", "error": {"type", "message"}}`` with the type's status;
    OpenAI: ``{"error": {"message", "type", "param", "code"}}``; Bedrock: ``x-amzn-ErrorType``
    naming a modelled error with that status, and ``{"message"}``.
    """
    data = json.loads(body)
    if family == "bedrock":
        code = headers["x-amzn-errortype"]
        assert BEDROCK_CODES[code] == status, (code, status)
        assert set(data) == {"message"} and isinstance(data["message"], str), data
        return code
    if family == "openai":
        error = data["error"]
        assert set(data) == {"error"} and set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"], data
        override = openai_wire.ERRORS.get(error["type"], (None, None))[0]
        assert (override or ERROR_STATUS[error["type"]]) == status, (error["type"], status)
        return error["type"]
    assert data["type"] == "error" and set(data) == {"type", "error"}, data
    error = data["error"]
    assert set(error) == {"type", "message"} and isinstance(error["message"], str), data
    assert ERROR_STATUS[error["type"]] == status, (error["type"], status)
    return error["type"]
