"""What a provider is: something that turns a :class:`MessageRequest` into canonical events."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Protocol

from ..events import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    Message,
    MessageDeltaBody,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    StopReason,
    StreamEvent,
    TextDelta,
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
_PREFIX = f"{os.getpid():x}{int(time.time()):x}"


def new_message_id() -> str:
    return f"msg_{_PREFIX}{next(_ids):06d}"


def message_start(model: str, input_tokens: int, message_id: str | None = None) -> StreamEvent:
    message = Message(id=message_id or new_message_id(), model=model, usage=Usage(input_tokens, 0))
    return MessageStartEvent(message=message)


def text_block_start(index: int = 0) -> StreamEvent:
    return ContentBlockStartEvent(index=index)


def text_delta(text: str, index: int = 0) -> StreamEvent:
    return ContentBlockDeltaEvent(delta=TextDelta(text=text), index=index)


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
