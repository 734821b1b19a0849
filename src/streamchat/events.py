"""Canonical stream events: the Anthropic Messages streaming shape, shared by every part.

Events are slotted dataclasses (cheap to build once per token) whose attribute names match the
Anthropic SDK, so ``event.type``, ``event.delta.text`` and ``event.usage.output_tokens`` work as
users expect. Each event carries ``timestamp`` (``time.perf_counter()`` at creation) for metrics;
it is never serialised.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .media import MediaBlock

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
STOP_REASONS: tuple[str, ...] = ("end_turn", "max_tokens", "stop_sequence", "tool_use")


def _now() -> float:
    return time.perf_counter()


@dataclass(slots=True)
class Usage:
    """Token counts. The prompt-cache counts (tokens reused from an earlier request's cache, and
    tokens written to it) stay ``None`` where a backend has no prompt cache, and are then left
    out of the JSON."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        if self.cache_read_input_tokens is not None:
            body["cache_read_input_tokens"] = self.cache_read_input_tokens
        if self.cache_creation_input_tokens is not None:
            body["cache_creation_input_tokens"] = self.cache_creation_input_tokens
        return body


@dataclass(slots=True)
class TextBlock:
    text: str = ""
    type: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(slots=True)
class ToolUseBlock:
    """A tool call. Its JSON input streams as ``input_json_delta`` fragments that the accumulator
    joins in ``partial_json`` (never serialised) and parses at ``content_block_stop``."""

    id: str
    name: str
    input: Any = field(default_factory=dict)
    type: Literal["tool_use"] = "tool_use"
    partial_json: str = field(default="", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}


@dataclass(slots=True)
class ThinkingBlock:
    """Reasoning shown before the answer; ``signature`` lets a provider verify it next turn."""

    thinking: str = ""
    signature: str = ""
    type: Literal["thinking"] = "thinking"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "thinking", "thinking": self.thinking, "signature": self.signature}


@dataclass(slots=True)
class ToolResultBlock:
    """A tool's answer, sent back in a user turn. ``content`` holds text parts (``str``), JSON
    values (Bedrock's ``{"json": ...}``) and images or documents (:class:`MediaBlock`) in order."""

    tool_use_id: str
    content: list[Any] = field(default_factory=list)
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"

    @property
    def text(self) -> str:
        """The text and JSON parts as one text (JSON written compactly; media left out)."""
        return "".join(
            part if isinstance(part, str) else json.dumps(part, ensure_ascii=False)
            for part in self.content
            if not isinstance(part, MediaBlock)
        )

    @property
    def media(self) -> list[MediaBlock]:
        return [part for part in self.content if isinstance(part, MediaBlock)]

    def to_dict(self) -> dict[str, Any]:
        content: Any
        if all(isinstance(p, str) for p in self.content):
            content = self.text
        elif not self.media:
            content = [{"type": "text", "text": self.text}]
        else:  # in order, each text or JSON part its own text block
            content = [
                part.to_dict()
                if isinstance(part, MediaBlock)
                else {"type": "text", "text": ToolResultBlock("", [part]).text}
                for part in self.content
            ]
        body: dict[str, Any] = {"type": "tool_result", "tool_use_id": self.tool_use_id}
        body["content"] = content
        if self.is_error:
            body["is_error"] = True
        return body


ContentBlock = TextBlock | ToolUseBlock | ThinkingBlock
BLOCK_TYPES: tuple[str, ...] = ("text", "tool_use", "thinking")


@dataclass(slots=True)
class Message:
    """A complete (or partially accumulated) assistant message."""

    id: str
    model: str
    content: list[ContentBlock] = field(default_factory=list)
    role: Literal["assistant"] = "assistant"
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    type: Literal["message"] = "message"

    @property
    def text(self) -> str:
        """The text blocks joined (tool calls and thinking left out)."""
        return "".join(block.text for block in self.content if block.type == "text")

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        return [block for block in self.content if block.type == "tool_use"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": self.role,
            "model": self.model,
            "content": [block.to_dict() for block in self.content],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage.to_dict(),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


@dataclass(slots=True)
class TextDelta:
    text: str
    type: Literal["text_delta"] = "text_delta"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text_delta", "text": self.text}


@dataclass(slots=True)
class InputJSONDelta:
    """A fragment of a tool call's JSON input (fragments join to the whole input)."""

    partial_json: str
    type: Literal["input_json_delta"] = "input_json_delta"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "input_json_delta", "partial_json": self.partial_json}


@dataclass(slots=True)
class ThinkingDelta:
    thinking: str
    type: Literal["thinking_delta"] = "thinking_delta"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "thinking_delta", "thinking": self.thinking}


@dataclass(slots=True)
class SignatureDelta:
    signature: str
    type: Literal["signature_delta"] = "signature_delta"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "signature_delta", "signature": self.signature}


Delta = TextDelta | InputJSONDelta | ThinkingDelta | SignatureDelta
DELTA_TYPES: dict[str, str] = {  # delta type -> the block type it extends
    "text_delta": "text",
    "input_json_delta": "tool_use",
    "thinking_delta": "thinking",
    "signature_delta": "thinking",
}


@dataclass(slots=True)
class MessageDeltaBody:
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


@dataclass(slots=True)
class MessageDeltaUsage:
    """Usage at the end of a stream; ``input_tokens`` is set by backends that report it late,
    and so are the prompt-cache counts (Bedrock and OpenAI give them only at the end)."""

    output_tokens: int = 0
    input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


@dataclass(slots=True)
class ErrorBody:
    type: str
    message: str


@dataclass(slots=True)
class MessageStartEvent:
    message: Message
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["message_start"] = "message_start"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message.to_dict()}


@dataclass(slots=True)
class ContentBlockStartEvent:
    index: int = 0
    content_block: ContentBlock = field(default_factory=TextBlock)
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["content_block_start"] = "content_block_start"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "index": self.index,
            "content_block": self.content_block.to_dict(),
        }


@dataclass(slots=True)
class ContentBlockDeltaEvent:
    delta: Delta
    index: int = 0
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["content_block_delta"] = "content_block_delta"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "index": self.index, "delta": self.delta.to_dict()}


@dataclass(slots=True)
class ContentBlockStopEvent:
    index: int = 0
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["content_block_stop"] = "content_block_stop"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "index": self.index}


@dataclass(slots=True)
class MessageDeltaEvent:
    delta: MessageDeltaBody
    usage: MessageDeltaUsage
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["message_delta"] = "message_delta"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "delta": {
                "stop_reason": self.delta.stop_reason,
                "stop_sequence": self.delta.stop_sequence,
            },
            "usage": {
                name: value
                for name, value in (
                    ("input_tokens", self.usage.input_tokens),
                    ("output_tokens", self.usage.output_tokens),
                    ("cache_read_input_tokens", self.usage.cache_read_input_tokens),
                    ("cache_creation_input_tokens", self.usage.cache_creation_input_tokens),
                )
                if value is not None
            },
        }


@dataclass(slots=True)
class MessageStopEvent:
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["message_stop"] = "message_stop"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


@dataclass(slots=True)
class PingEvent:
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["ping"] = "ping"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


@dataclass(slots=True)
class ErrorEvent:
    error: ErrorBody
    timestamp: float = field(default_factory=_now, repr=False, compare=False)
    type: Literal["error"] = "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "error": {"type": self.error.type, "message": self.error.message},
        }


StreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | PingEvent
    | ErrorEvent
)


async def close_events(events: AsyncIterator[StreamEvent]) -> None:
    """End a consumer's interest in a stream: closing an async generator stops its provider
    (generation, HTTP stream) at once; a plain iterator has nothing to release."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def block_from_dict(data: dict[str, Any]) -> ContentBlock | None:
    """A response content block from its Anthropic JSON shape (``None`` for unknown kinds)."""
    kind = data.get("type", "text")
    if kind == "text":
        return TextBlock(text=data.get("text") or "")
    if kind == "tool_use":
        return ToolUseBlock(
            id=data.get("id", ""), name=data.get("name", ""), input=data.get("input") or {}
        )
    if kind == "thinking":
        return ThinkingBlock(
            thinking=data.get("thinking") or "", signature=data.get("signature") or ""
        )
    return None


def delta_from_dict(data: dict[str, Any]) -> Delta:
    kind = data.get("type", "text_delta")
    if kind == "input_json_delta":
        return InputJSONDelta(partial_json=data.get("partial_json", ""))
    if kind == "thinking_delta":
        return ThinkingDelta(thinking=data.get("thinking", ""))
    if kind == "signature_delta":
        return SignatureDelta(signature=data.get("signature", ""))
    if kind == "text_delta":
        return TextDelta(text=data.get("text", ""))
    raise ValueError(f"unknown delta type: {kind!r}")


def message_from_dict(data: dict[str, Any]) -> Message:
    """Build a :class:`Message` from its Anthropic JSON shape."""
    usage = data.get("usage") or {}
    blocks = (block_from_dict(block) for block in data.get("content") or [])
    return Message(
        id=data.get("id", ""),
        model=data.get("model", ""),
        content=[block for block in blocks if block is not None],
        stop_reason=data.get("stop_reason"),
        stop_sequence=data.get("stop_sequence"),
        usage=Usage(
            input_tokens=usage.get("input_tokens") or 0,
            output_tokens=usage.get("output_tokens") or 0,
            cache_read_input_tokens=usage.get("cache_read_input_tokens"),
            cache_creation_input_tokens=usage.get("cache_creation_input_tokens"),
        ),
    )


def event_from_dict(data: dict[str, Any]) -> StreamEvent:
    """Parse one Anthropic-shaped event dict; raises ``ValueError`` on an unknown type."""
    kind = data.get("type")
    if kind == "content_block_delta":
        return ContentBlockDeltaEvent(
            delta=delta_from_dict(data["delta"]), index=data.get("index", 0)
        )
    if kind == "message_start":
        return MessageStartEvent(message=message_from_dict(data["message"]))
    if kind == "content_block_start":
        block = block_from_dict(data.get("content_block") or {})
        if block is None:
            raise ValueError(f"unknown content block type: {data.get('content_block')!r}")
        return ContentBlockStartEvent(index=data.get("index", 0), content_block=block)
    if kind == "content_block_stop":
        return ContentBlockStopEvent(index=data.get("index", 0))
    if kind == "message_delta":
        delta = data.get("delta") or {}
        usage = data.get("usage") or {}
        return MessageDeltaEvent(
            delta=MessageDeltaBody(
                stop_reason=delta.get("stop_reason"), stop_sequence=delta.get("stop_sequence")
            ),
            usage=MessageDeltaUsage(
                output_tokens=usage.get("output_tokens") or 0,
                input_tokens=usage.get("input_tokens"),
                cache_read_input_tokens=usage.get("cache_read_input_tokens"),
                cache_creation_input_tokens=usage.get("cache_creation_input_tokens"),
            ),
        )
    if kind == "message_stop":
        return MessageStopEvent()
    if kind == "ping":
        return PingEvent()
    if kind == "error":
        error = data.get("error") or {}
        return ErrorEvent(
            error=ErrorBody(type=error.get("type", "api_error"), message=error.get("message", ""))
        )
    raise ValueError(f"unknown event type: {kind!r}")
