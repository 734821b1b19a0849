"""Canonical events serialise to exactly the Anthropic Messages streaming JSON, and parse back."""

from __future__ import annotations

import json

import pytest

from streamchat.events import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorBody,
    ErrorEvent,
    Message,
    MessageDeltaBody,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    PingEvent,
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
    Usage,
    event_from_dict,
    message_from_dict,
)


def _start(**message: object) -> MessageStartEvent:
    fields = {"id": "msg_1", "model": "claude-x", "usage": Usage(25, 1), **message}
    return MessageStartEvent(message=Message(**fields))  # type: ignore[arg-type]


# (event, the JSON the Anthropic API sends for it)
WIRE_SHAPES: list[tuple[StreamEvent, dict[str, object]]] = [
    (
        _start(),
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
    ),
    (
        ContentBlockStartEvent(index=0),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        ContentBlockDeltaEvent(delta=TextDelta("Hello"), index=0),
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
    ),
    (ContentBlockStopEvent(index=0), {"type": "content_block_stop", "index": 0}),
    (
        MessageDeltaEvent(
            delta=MessageDeltaBody(stop_reason="end_turn"), usage=MessageDeltaUsage(15)
        ),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    (MessageStopEvent(), {"type": "message_stop"}),
    (PingEvent(), {"type": "ping"}),
    (
        ErrorEvent(error=ErrorBody("overloaded_error", "Overloaded")),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ),
]

ROUND_TRIP: list[StreamEvent] = [
    *(event for event, _ in WIRE_SHAPES),
    _start(
        content=[TextBlock("partial"), TextBlock("second")],
        stop_reason="max_tokens",
        stop_sequence=None,
    ),
    ContentBlockStartEvent(index=2, content_block=TextBlock("prefilled")),
    ContentBlockDeltaEvent(delta=TextDelta("ünïcödé ✓ 🚀\n"), index=3),
    ContentBlockStopEvent(index=3),
    MessageDeltaEvent(
        delta=MessageDeltaBody(stop_reason="stop_sequence", stop_sequence="\n\nHuman:"),
        usage=MessageDeltaUsage(7),
    ),
    MessageDeltaEvent(delta=MessageDeltaBody(stop_reason="max_tokens"), usage=MessageDeltaUsage(0)),
    ErrorEvent(error=ErrorBody("invalid_request_error", "max_tokens: too big")),
]


@pytest.mark.parametrize(("event", "expected"), WIRE_SHAPES, ids=lambda v: getattr(v, "type", ""))
def test_to_dict_matches_anthropic_streaming_json(event: StreamEvent, expected: dict) -> None:
    assert event.to_dict() == expected
    # key order as the API sends it, and plain JSON (no timestamp, nothing unserialisable)
    assert list(event.to_dict()) == list(expected)
    assert json.loads(json.dumps(event.to_dict())) == expected


@pytest.mark.parametrize("event", ROUND_TRIP, ids=lambda e: e.type)
def test_event_from_dict_round_trips_every_type(event: StreamEvent) -> None:
    parsed = event_from_dict(event.to_dict())
    assert type(parsed) is type(event)
    assert parsed == event
    assert parsed.to_dict() == event.to_dict()


def test_round_trip_covers_every_event_type() -> None:
    assert {e.type for e in ROUND_TRIP} == {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }


def test_timestamp_is_neither_serialised_nor_compared() -> None:
    early = ContentBlockDeltaEvent(delta=TextDelta("x"), timestamp=1.0)
    late = ContentBlockDeltaEvent(delta=TextDelta("x"), timestamp=2.0)
    assert early == late
    assert "timestamp" not in early.to_dict()


def test_events_get_a_monotonic_timestamp_when_created() -> None:
    first, second = PingEvent(), PingEvent()
    assert 0 < first.timestamp <= second.timestamp


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        event_from_dict({"type": "content_block_explode"})


def test_message_to_json_is_the_anthropic_message_object() -> None:
    message = Message(
        id="msg_9",
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
        content=[TextBlock("Orchids "), TextBlock("bloom — ✿")],
        stop_reason="end_turn",
        usage=Usage(12, 34),
    )
    text = message.to_json()
    assert json.loads(text) == {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "content": [{"type": "text", "text": "Orchids "}, {"type": "text", "text": "bloom — ✿"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 34},
    }
    assert "✿" in text  # readable, not \u-escaped
    assert "\n  " in text  # pretty-printed by default, like the SDK
    assert "\n" not in message.to_json(indent=None)


def test_message_text_joins_its_blocks() -> None:
    message = Message(id="m", model="x", content=[TextBlock("Hello, "), TextBlock("world")])
    assert message.text == "Hello, world"


def test_message_from_dict_keeps_tool_calls_skips_unknown_blocks_and_null_usage() -> None:
    message = message_from_dict(
        {
            "id": "m",
            "model": "x",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
                {"type": "server_tool_use", "id": "s"},
            ],
            "usage": {"input_tokens": None, "output_tokens": 3},
        }
    )
    assert message.content == [TextBlock("hi"), ToolUseBlock("t", "f", {"a": 1})]
    assert message.text == "hi"
    assert message.usage == Usage(0, 3)
