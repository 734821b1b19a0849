"""The one place a final message is built: a fold from canonical events to a :class:`Message`."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import error_from_type
from .events import Message, StreamEvent, TextBlock


def accumulate_event(snapshot: Message | None, event: StreamEvent) -> Message | None:
    """Apply one event to the snapshot and return it (updated in place: O(1) per delta).

    Raises the matching :class:`~streamchat.errors.StreamchatError` on an ``error`` event, so a
    consumer can never mistake a failed stream for a complete one.
    """
    kind = event.type
    if kind == "content_block_delta":
        if snapshot is None:
            raise ValueError("content_block_delta before message_start")
        while len(snapshot.content) <= event.index:
            snapshot.content.append(TextBlock())
        snapshot.content[event.index].text += event.delta.text
        return snapshot
    if kind == "message_start":
        message = event.message
        return Message(
            id=message.id,
            model=message.model,
            content=[TextBlock(text=b.text) for b in message.content],
            stop_reason=message.stop_reason,
            stop_sequence=message.stop_sequence,
            usage=type(message.usage)(message.usage.input_tokens, message.usage.output_tokens),
        )
    if kind == "content_block_start":
        if snapshot is None:
            raise ValueError("content_block_start before message_start")
        while len(snapshot.content) <= event.index:
            snapshot.content.append(TextBlock())
        snapshot.content[event.index].text = event.content_block.text
        return snapshot
    if kind == "message_delta":
        if snapshot is None:
            raise ValueError("message_delta before message_start")
        snapshot.stop_reason = event.delta.stop_reason
        snapshot.stop_sequence = event.delta.stop_sequence
        snapshot.usage.output_tokens = event.usage.output_tokens
        if event.usage.input_tokens is not None:
            snapshot.usage.input_tokens = event.usage.input_tokens
        return snapshot
    if kind == "error":
        raise error_from_type(event.error.type, event.error.message)
    return snapshot  # content_block_stop, message_stop, ping


def accumulate(events: Iterable[StreamEvent]) -> Message:
    """Fold a whole event sequence into its final message."""
    snapshot: Message | None = None
    for event in events:
        snapshot = accumulate_event(snapshot, event)
    if snapshot is None:
        raise ValueError("the stream ended before message_start")
    return snapshot
