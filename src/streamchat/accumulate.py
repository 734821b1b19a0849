"""The one place a message is built from its events: a fold from canonical events to a
:class:`Message`, for clients, the server's encoders and the history's recorder alike.

:func:`accumulate_event` is the fold a consumer uses: it raises a stream's ``error`` event and
refuses a tool call whose JSON does not parse. :func:`fold_event` is the same fold without
judging the stream, for a recorder that keeps whatever arrived.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from .errors import APIError, error_from_type
from .events import (
    DELTA_TYPES,
    ContentBlock,
    Message,
    MessageDeltaUsage,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)

_EMPTY_BLOCKS: dict[str, type] = {"text": TextBlock, "thinking": ThinkingBlock}
# delta type -> the attribute its fragment extends, named alike on the delta and on the block
_DELTA_ATTRIBUTES: dict[str, str] = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
    "signature_delta": "signature",
}


def parse_partial_json(text: str) -> Any:
    """What a cut-off JSON text holds so far (the Anthropic SDK's snapshot of a streaming tool
    input): complete members only, ``{}`` before the first one."""
    if not text.strip():
        return {}
    import jiter

    try:
        return jiter.from_json(text.encode(), partial_mode=True)
    except ValueError:
        return {}


def _block(snapshot: Message, index: int, kind: str) -> ContentBlock:
    """The block at ``index``, checked to be of ``kind`` (text blocks may start implicitly)."""
    content = snapshot.content
    if index >= len(content) and kind in _EMPTY_BLOCKS:
        while len(content) <= index:
            content.append(_EMPTY_BLOCKS[kind]())
    if index >= len(content):
        raise ValueError(f"content_block_delta for block {index} before its content_block_start")
    block = content[index]
    if block.type != kind:
        raise ValueError(f"content block {index} is {block.type!r}, not {kind!r}")
    return block


def parse_tool_input(text: str) -> tuple[Any, bool]:
    """A tool call's joined JSON: ``(value, True)`` when it parses, else ``(its complete members
    so far, False)``."""
    try:
        return json.loads(text), True
    except ValueError:
        return parse_partial_json(text), False


def _finish_tool_input(block: ToolUseBlock) -> None:
    """Parse a finished tool call's joined JSON; a text that does not parse stays in
    ``partial_json`` (its complete members in ``input``) for :func:`_check_tool_inputs`."""
    if not block.partial_json:
        return
    block.input, complete = parse_tool_input(block.partial_json)
    if complete:
        block.partial_json = ""


def _append(block: ContentBlock, attribute: str, fragment: str) -> None:
    """``block.<attribute> += fragment`` in amortized O(1): with the block's own reference
    dropped first, CPython grows the string in place rather than copying it (measured at 40,000
    deltas: 0.2 µs a delta, against 30 µs for a copy). Not atomic: a reader on another thread
    must hold a lock around the fold (as the recorder does)."""
    text = getattr(block, attribute)
    setattr(block, attribute, "")
    text += fragment
    setattr(block, attribute, text)


def _check_tool_inputs(snapshot: Message, stop_reason: str | None) -> None:
    """A malformed tool input is an error, unless ``max_tokens`` cut the call short (then the
    message keeps the partial input, as the Anthropic API reports it)."""
    if stop_reason == "max_tokens":
        return
    for index, block in enumerate(snapshot.content):
        if block.type == "tool_use" and block.partial_json:
            raise APIError(
                f"content block {index}: the input of tool call {block.name!r} is not valid JSON"
            )


def merge_usage(usage: Usage, final: MessageDeltaUsage) -> None:
    """Fold a stream's final usage (``message_delta``) into what ``message_start`` said: the
    output count always; the prompt and prompt-cache counts only where the backend sends them
    late (Bedrock, OpenAI-compatible servers). Every encoder that reports usage folds it here."""
    usage.output_tokens = final.output_tokens
    if final.input_tokens is not None:
        usage.input_tokens = final.input_tokens
    if final.cache_read_input_tokens is not None:
        usage.cache_read_input_tokens = final.cache_read_input_tokens
    if final.cache_creation_input_tokens is not None:
        usage.cache_creation_input_tokens = final.cache_creation_input_tokens


def accumulate_event(snapshot: Message | None, event: StreamEvent) -> Message | None:
    """Apply one event to the snapshot and return it (updated in place: O(1) per delta).

    Raises the matching :class:`~streamchat.errors.StreamchatError` on an ``error`` event, so a
    consumer can never mistake a failed stream for a complete one.
    """
    kind = event.type
    if kind == "error":
        raise error_from_type(event.error.type, event.error.message)
    if kind == "message_delta" and snapshot is not None:
        _check_tool_inputs(snapshot, event.delta.stop_reason)
    return fold_event(snapshot, event)


def fold_event(snapshot: Message | None, event: StreamEvent) -> Message | None:
    """:func:`accumulate_event` without judging the stream: an ``error`` event and a tool input
    that does not parse are left to the caller (a recorder stores them as they came). Raises
    ``ValueError`` only for events out of order (a delta before its message or block)."""
    kind = event.type
    if kind == "content_block_delta":
        if snapshot is None:
            raise ValueError("content_block_delta before message_start")
        delta = event.delta
        delta_type = delta.type
        block = _block(snapshot, event.index, DELTA_TYPES[delta_type])
        attribute = _DELTA_ATTRIBUTES[delta_type]
        _append(block, attribute, getattr(delta, attribute))
        return snapshot
    if kind == "message_start":
        message = event.message
        return Message(
            id=message.id,
            model=message.model,
            content=[dataclasses.replace(b) for b in message.content],
            stop_reason=message.stop_reason,
            stop_sequence=message.stop_sequence,
            usage=dataclasses.replace(message.usage),
        )
    if kind == "content_block_start":
        if snapshot is None:
            raise ValueError("content_block_start before message_start")
        content = snapshot.content
        while len(content) < event.index:
            content.append(TextBlock())
        block = dataclasses.replace(event.content_block)
        if block.type == "tool_use":
            block.input = dict(block.input) if isinstance(block.input, dict) else block.input
        if event.index < len(content):
            content[event.index] = block
        else:
            content.append(block)
        return snapshot
    if kind == "content_block_stop":
        if snapshot is not None and event.index < len(snapshot.content):
            block = snapshot.content[event.index]
            if block.type == "tool_use":
                _finish_tool_input(block)
        return snapshot
    if kind == "message_delta":
        if snapshot is None:
            raise ValueError("message_delta before message_start")
        snapshot.stop_reason = event.delta.stop_reason
        snapshot.stop_sequence = event.delta.stop_sequence
        merge_usage(snapshot.usage, event.usage)
        return snapshot
    return snapshot  # message_stop, ping, error


def accumulate(events: Iterable[StreamEvent]) -> Message:
    """Fold a whole event sequence into its final message."""
    snapshot: Message | None = None
    for event in events:
        snapshot = accumulate_event(snapshot, event)
    if snapshot is None:
        raise ValueError("the stream ended before message_start")
    return snapshot
