"""The Anthropic Messages codec without a server: parsing, frames, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamchat.errors import InvalidRequestError, OverloadedError, RequestTooLargeError
from streamchat.events import ErrorBody, ErrorEvent
from streamchat.providers.base import message_end, message_start, text_delta
from streamchat.request import build_request
from streamchat.wire import anthropic as wire
from streamchat.wire.sse import SSEDecoder

BODY = {
    "model": "claude-3-5-sonnet-latest",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "system": [{"type": "text", "text": "be ", "cache_control": {"type": "ephemeral"}}, "brief"],
    "temperature": 0,
    "top_k": 5,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u1"},
    "stream": True,
}


def test_request_becomes_build_request_kwargs() -> None:
    kwargs, stream = wire.parse_messages_request(BODY)
    assert stream is True
    request = build_request(**kwargs)
    assert request.model == "claude-3-5-sonnet-latest"
    assert request.max_tokens == 64
    assert request.system == "be brief"
    assert (request.temperature, request.top_k, request.stop_sequences) == (0.0, 5, ["END"])
    assert request.messages[0].content == "hi"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_tokens": None}, "max_tokens: field required"),
        ({"model": None}, "model: field required"),
        ({"stream": "yes"}, "stream: expected a boolean"),
        ({"tools": [{"type": "web_search_20250305", "name": "web"}]}, "tools.0.type:"),
        ({"output_config": {"format": {"type": "text"}}}, "output_config.format.type:"),
        ({"output_format": "json"}, "output_format.type:"),
    ],
)
def test_invalid_requests_name_the_field(change: dict, field: str) -> None:
    body = {**BODY, **change}
    with pytest.raises(InvalidRequestError, match=field):
        wire.parse_messages_request({k: v for k, v in body.items() if v is not None})


def test_non_object_body_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="expected a JSON object"):
        wire.parse_messages_request([1, 2])


def test_count_tokens_needs_no_max_tokens() -> None:
    kwargs = wire.parse_count_tokens_request({"model": "m", "messages": BODY["messages"]})
    assert kwargs == {"model": "m", "messages": BODY["messages"]}


def test_events_encode_as_sse_frames_the_decoder_reads_back() -> None:
    events = [message_start("m", 3), text_delta("Hi"), *message_end("end_turn", 1)]
    stream = b"".join(wire.encode_event(event) for event in events)
    assert stream.startswith(b"event: message_start\ndata: {")
    decoded = SSEDecoder().feed(stream)
    assert [m.event for m in decoded] == [event.type for event in events]
    assert [m.json() for m in decoded] == [event.to_dict() for event in events]


def test_errors_render_with_the_status_table() -> None:
    assert wire.error_response(OverloadedError("busy")) == (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    )
    assert wire.error_response(RequestTooLargeError("big"))[0] == 413


def test_in_stream_error_is_an_error_event_frame() -> None:
    frame = wire.encode_error_event(OverloadedError("Overloaded"))
    event = ErrorEvent(ErrorBody("overloaded_error", "Overloaded"))
    assert frame == wire.encode_event(event)
    [message] = SSEDecoder().feed(frame)
    assert message.event == "error"
    assert json.loads(message.data)["error"] == {
        "type": "overloaded_error",
        "message": "Overloaded",
    }


def test_models_page_shape() -> None:
    body = wire.models_body([("a", "A"), ("b", "B")])
    assert body["has_more"] is False
    assert (body["first_id"], body["last_id"]) == ("a", "b")
    assert body["data"][0] == {
        "type": "model",
        "id": "a",
        "display_name": "A",
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "active",
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(
    ["model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
     "stop_sequences", "stream", "metadata", "tools"]
)  # fmt: skip


@given(st.dictionaries(fields, json_values) | json_values)
def test_any_json_body_is_accepted_or_refused_with_invalid_request(body: object) -> None:
    """Whatever a client sends, the answer is a request or a 400, never a server error."""
    try:
        kwargs, _ = wire.parse_messages_request(body)
        build_request(**kwargs)
    except InvalidRequestError as error:
        assert ":" in error.message
