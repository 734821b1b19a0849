"""The fold from canonical events to the final message."""

from __future__ import annotations

import pytest

from streamchat import errors
from streamchat.accumulate import accumulate, accumulate_event, fold_event, merge_usage
from streamchat.events import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorBody,
    ErrorEvent,
    InputJSONDelta,
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
)


def start(input_tokens: int = 9) -> MessageStartEvent:
    return MessageStartEvent(message=Message(id="msg_1", model="m", usage=Usage(input_tokens, 1)))


def delta(text: str, index: int = 0) -> ContentBlockDeltaEvent:
    return ContentBlockDeltaEvent(delta=TextDelta(text), index=index)


def end(stop_reason: str = "end_turn", output: int = 3, stop: str | None = None) -> list:
    return [
        ContentBlockStopEvent(),
        MessageDeltaEvent(
            delta=MessageDeltaBody(stop_reason=stop_reason, stop_sequence=stop),  # type: ignore[arg-type]
            usage=MessageDeltaUsage(output),
        ),
        MessageStopEvent(),
    ]


def test_full_sequence_folds_into_the_final_message() -> None:
    events = [start(), ContentBlockStartEvent(), PingEvent(), delta("Hi"), delta("!"), *end()]
    message = accumulate(events)
    assert message.to_dict() == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 3},
    }


def test_many_deltas_concatenate_in_order() -> None:
    pieces = ["Dogs", " chase", " cats", ".", " ünï", "cödé", "\n"]
    message = accumulate([start(), ContentBlockStartEvent(), *map(delta, pieces), *end()])
    assert message.text == "".join(pieces)
    assert len(message.content) == 1


def test_deltas_go_to_the_block_at_their_index() -> None:
    events = [
        start(),
        ContentBlockStartEvent(index=0),
        delta("first", 0),
        ContentBlockStartEvent(index=1, content_block=TextBlock("pre-")),
        delta("second", 1),
        delta(" more", 0),
        *end(),
    ]
    message = accumulate(events)
    assert [block.text for block in message.content] == ["first more", "pre-second"]


def test_message_delta_sets_stop_reason_stop_sequence_and_output_tokens() -> None:
    message = accumulate(
        [
            start(input_tokens=40),
            ContentBlockStartEvent(),
            delta("1, 2, "),
            *end("stop_sequence", 6, "3"),
        ]
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "3"
    assert message.usage == Usage(input_tokens=40, output_tokens=6)


def test_snapshot_is_partial_until_message_delta() -> None:
    snapshot = None
    for event in [start(), ContentBlockStartEvent(), delta("Hel"), delta("lo")]:
        snapshot = accumulate_event(snapshot, event)
    assert snapshot is not None
    assert snapshot.text == "Hello"
    assert snapshot.stop_reason is None


def test_accumulating_does_not_modify_the_message_start_event() -> None:
    first = start()
    accumulate([first, ContentBlockStartEvent(), delta("text"), *end(output=42)])
    assert first.message.content == []
    assert first.message.usage == Usage(9, 1)
    assert first.message.stop_reason is None


@pytest.mark.parametrize(
    ("error_type", "exception"),
    [
        ("overloaded_error", errors.OverloadedError),
        ("rate_limit_error", errors.RateLimitError),
        ("invalid_request_error", errors.InvalidRequestError),
        ("authentication_error", errors.AuthenticationError),
        ("permission_error", errors.PermissionDeniedError),
        ("not_found_error", errors.NotFoundError),
        ("request_too_large", errors.RequestTooLargeError),
        ("api_error", errors.APIError),
    ],
)
def test_error_event_raises_the_matching_exception(
    error_type: str, exception: type[errors.StreamchatError]
) -> None:
    events = [
        start(),
        ContentBlockStartEvent(),
        delta("partial"),
        ErrorEvent(ErrorBody(error_type, "boom")),
    ]
    with pytest.raises(exception) as info:
        accumulate(events)
    assert info.value.error_type == error_type
    assert info.value.message == "boom"
    assert info.value.status_code == errors.ERROR_STATUS[error_type]


def test_error_event_of_unknown_type_raises_api_error_keeping_the_type() -> None:
    with pytest.raises(errors.APIError) as info:
        accumulate([start(), ErrorEvent(ErrorBody("teapot_error", "short and stout"))])
    assert info.value.error_type == "teapot_error"
    assert info.value.status_code == 500


def test_overloaded_error_maps_to_status_529_and_the_anthropic_error_body() -> None:
    with pytest.raises(errors.OverloadedError) as info:
        accumulate([ErrorEvent(ErrorBody("overloaded_error", "Overloaded"))])
    assert info.value.status_code == 529
    assert info.value.to_dict() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


@pytest.mark.parametrize(
    "first",
    [
        delta("orphan"),
        ContentBlockStartEvent(),
        MessageDeltaEvent(delta=MessageDeltaBody("end_turn"), usage=MessageDeltaUsage(1)),
    ],
    ids=lambda e: e.type,
)
def test_events_before_message_start_are_rejected(first: StreamEvent) -> None:
    with pytest.raises(ValueError, match="before message_start"):
        accumulate([first, start(), *end()])


@pytest.mark.parametrize("events", [[], [PingEvent()], [PingEvent(), MessageStopEvent()]])
def test_stream_without_message_start_is_rejected(events: list[StreamEvent]) -> None:
    with pytest.raises(ValueError, match="before message_start"):
        accumulate(events)


def tool_call_cut_short() -> list[StreamEvent]:
    """A tool call whose JSON never closes, then an end that does not say max_tokens."""
    return [
        start(),
        ContentBlockStartEvent(content_block=ToolUseBlock(id="toolu_1", name="f")),
        ContentBlockDeltaEvent(delta=InputJSONDelta('{"a": 1, "b"')),
        *end(stop_reason="tool_use"),
    ]


def test_fold_event_keeps_what_arrived_where_accumulate_event_refuses() -> None:
    with pytest.raises(errors.APIError, match="not valid JSON"):
        accumulate(tool_call_cut_short())
    snapshot = None
    for event in [*tool_call_cut_short(), ErrorEvent(ErrorBody("api_error", "boom"))]:
        snapshot = fold_event(snapshot, event)
    assert snapshot is not None and snapshot.stop_reason == "tool_use"
    (call,) = snapshot.tool_calls
    assert (call.input, call.partial_json) == ({"a": 1}, '{"a": 1, "b"')


def test_merge_usage_takes_the_late_counts_a_backend_sends_and_keeps_the_others() -> None:
    usage = Usage(input_tokens=9, output_tokens=1, cache_read_input_tokens=4)
    merge_usage(usage, MessageDeltaUsage(output_tokens=7, cache_creation_input_tokens=2))
    assert usage == Usage(9, 7, cache_read_input_tokens=4, cache_creation_input_tokens=2)
    merge_usage(usage, MessageDeltaUsage(output_tokens=8, input_tokens=12))
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (12, 8, 4)
