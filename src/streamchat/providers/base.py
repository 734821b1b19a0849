"""What a provider is: something that turns a :class:`MessageRequest` into canonical events."""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Protocol

from ..events import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJSONDelta,
    Message,
    MessageDeltaBody,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    SignatureDelta,
    StopReason,
    StreamEvent,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from ..request import MessageRequest


class Provider(Protocol):
    """Adding a provider means one class with this method plus one line in the registry."""

    name: str

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        """Yield canonical events; closing the iterator must stop generation promptly."""
        ...


_ids = itertools.count(1)
# pid + start time + random bits: replicas in containers often share pid 1 and a start second.
_PREFIX = f"{os.getpid():x}{int(time.time()):x}{secrets.token_hex(3)}"


def new_message_id() -> str:
    return f"msg_{_PREFIX}{next(_ids):06d}"


def new_tool_use_id() -> str:
    """``toolu_…``: unique across processes and restarts, like the message ids."""
    return f"toolu_{_PREFIX}{next(_ids):06d}"


def message_start(model: str, input_tokens: int, message_id: str | None = None) -> StreamEvent:
    message = Message(id=message_id or new_message_id(), model=model, usage=Usage(input_tokens, 0))
    return MessageStartEvent(message=message)


def text_block_start(index: int = 0) -> StreamEvent:
    return ContentBlockStartEvent(index=index)


def text_delta(text: str, index: int = 0) -> StreamEvent:
    return ContentBlockDeltaEvent(delta=TextDelta(text=text), index=index)


def tool_use_start(index: int, name: str, tool_use_id: str | None = None) -> StreamEvent:
    """A tool call's block opens with its id and name; its input follows as JSON fragments."""
    block = ToolUseBlock(id=tool_use_id or new_tool_use_id(), name=name)
    return ContentBlockStartEvent(index=index, content_block=block)


def input_json_delta(partial_json: str, index: int) -> StreamEvent:
    return ContentBlockDeltaEvent(delta=InputJSONDelta(partial_json=partial_json), index=index)


def thinking_start(index: int = 0) -> StreamEvent:
    return ContentBlockStartEvent(index=index, content_block=ThinkingBlock())


def thinking_delta(thinking: str, index: int = 0) -> StreamEvent:
    return ContentBlockDeltaEvent(delta=ThinkingDelta(thinking=thinking), index=index)


def signature_delta(signature: str, index: int = 0) -> StreamEvent:
    return ContentBlockDeltaEvent(delta=SignatureDelta(signature=signature), index=index)


def block_stop(index: int) -> StreamEvent:
    return ContentBlockStopEvent(index=index)


def message_finish(
    stop_reason: StopReason,
    output_tokens: int,
    stop_sequence: str | None = None,
    input_tokens: int | None = None,
) -> list[StreamEvent]:
    """The last two events of every reply: the message delta (stop reason, usage) and stop."""
    return [
        MessageDeltaEvent(
            delta=MessageDeltaBody(stop_reason=stop_reason, stop_sequence=stop_sequence),
            usage=MessageDeltaUsage(output_tokens=output_tokens, input_tokens=input_tokens),
        ),
        MessageStopEvent(),
    ]


def with_cache_counts(
    events: list[StreamEvent], read: int | None, written: int | None
) -> list[StreamEvent]:
    """:func:`message_finish`'s events with a backend's prompt-cache counts (tokens read from
    and written to its cache) on the message delta; ``None`` where it reports none."""
    usage = events[0].usage  # type: ignore[union-attr]
    usage.cache_read_input_tokens = read
    usage.cache_creation_input_tokens = written
    return events


def message_end(
    stop_reason: StopReason,
    output_tokens: int,
    stop_sequence: str | None = None,
    index: int = 0,
    input_tokens: int | None = None,
) -> list[StreamEvent]:
    """The closing events of a one-block text reply: block stop, message delta, message stop."""
    return [
        ContentBlockStopEvent(index=index),
        *message_finish(stop_reason, output_tokens, stop_sequence, input_tokens),
    ]
