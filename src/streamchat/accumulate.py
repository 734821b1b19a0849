"""The one place a final message is built: a fold from canonical events to a :class:`Message`."""

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


def _finish_tool_input(block: ToolUseBlock) -> None:
    """Parse a finished tool call's joined JSON; a text that does not parse stays in
    ``partial_json`` (its complete members in ``input``) for :func:`_check_tool_inputs`."""
    if not block.partial_json:
        return
    try:
        block.input = json.loads(block.partial_json)
    except ValueError:
        block.input = parse_partial_json(block.partial_json)
        return
    block.partial_json = ""


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
    if kind == "content_block_delta":
        if snapshot is None:
            raise ValueError("content_block_delta before message_start")
        delta = event.delta
        delta_type = delta.type
        block = _block(snapshot, event.index, DELTA_TYPES[delta_type])
        if delta_type == "text_delta":
            block.text += delta.text
        elif delta_type == "input_json_delta":
            block.partial_json += delta.partial_json
        elif delta_type == "thinking_delta":
            block.thinking += delta.thinking
        else:
            block.signature += delta.signature
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
        _check_tool_inputs(snapshot, event.delta.stop_reason)
        snapshot.stop_reason = event.delta.stop_reason
        snapshot.stop_sequence = event.delta.stop_sequence
        merge_usage(snapshot.usage, event.usage)
        return snapshot
    if kind == "error":
        raise error_from_type(event.error.type, event.error.message)
    return snapshot  # message_stop, ping


def accumulate(events: Iterable[StreamEvent]) -> Message:
    """Fold a whole event sequence into its final message."""
    snapshot: Message | None = None
    for event in events:
        snapshot = accumulate_event(snapshot, event)
    if snapshot is None:
        raise ValueError("the stream ended before message_start")
    return snapshot
