"""The Chat Completions codec without a server: parsing, chunk sequence, errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamchat.errors import InvalidRequestError, OverloadedError, error_from_type
from streamchat.events import ErrorBody, ErrorEvent, PingEvent
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.request import build_request
from streamchat.wire import openai as wire
from streamchat.wire.sse import SSEDecoder


def parse(**body: object) -> tuple[dict, wire.ChatOptions]:
    return wire.parse_chat_request(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **body}
    )


def test_system_and_developer_messages_fold_into_system() -> None:
    kwargs, _ = wire.parse_chat_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]},
            ],
        }
    )
    request = build_request(**kwargs)
    assert request.system == "one\n\ntwo"
    assert [(t.role, t.content) for t in request.messages] == [("user", "ab")]


def test_parameters_map_to_canonical_names() -> None:
    kwargs, options = parse(
        max_completion_tokens=7, max_tokens=99, stop="X", seed=3, temperature=0.5, top_p=0.9,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    request = build_request(**kwargs)
    assert (request.max_tokens, request.stop_sequences, request.seed) == (7, ["X"], 3)
    assert (request.temperature, request.top_p) == (0.5, 0.9)
    assert (options.stream, options.include_usage) == (True, True)
    assert build_request(**parse(max_tokens=5, stop=["a", "b"])[0]).max_tokens == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 2}, "n: only n=1"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "function", "content": "x"}]},
         r"messages\.1\.role: must be one of"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "tool", "content": "x"}]},
         r"messages\.1\.tool_call_id: field required"),
        ({"messages": [{"role": "user"}]}, r"messages\.0\.content: field required"),
        ({"messages": []}, "messages: at least one"),
        ({"model": ""}, "model: field required"),
        ({"stream": 1}, "stream: expected a boolean"),
        ({"stream": 0}, "stream: expected a boolean"),
    ],
)  # fmt: skip
def test_invalid_requests_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        parse(**body)


def test_validation_messages_use_the_parameter_the_client_sent() -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        kwargs, options = parse(**{name: 0})
        with pytest.raises(InvalidRequestError) as caught:
            build_request(**kwargs)
        assert options.rename(caught.value).message.startswith(f"{name}: must be between")
    kwargs, options = parse(stop=[""])
    with pytest.raises(InvalidRequestError) as caught:
        build_request(**kwargs)
    assert options.rename(caught.value).message.startswith("stop: ")


def test_a_validation_error_carries_its_field_apart_from_its_message() -> None:
    function = {"name": "no spaces", "parameters": {"type": "object"}}
    kwargs, options = parse(tools=[{"type": "function", "function": function}])
    with pytest.raises(InvalidRequestError) as caught:
        build_request(**kwargs)
    error = caught.value
    assert error.path == "tools.0.name"
    assert error.message == f"tools.0.name: {error.detail}"
    assert options.rename(error) is error and error.path == "tools.0.function.name"
    assert error.message == f"tools.0.function.name: {error.detail}" == str(error)
    assert wire.error_response(error)[1]["error"]["param"] == "tools.0.function.name"


def test_param_is_the_errors_path_never_read_back_from_its_text() -> None:
    body = wire.error_response(InvalidRequestError("max_tokens: only looks like a field"))[1]
    assert body["error"]["param"] is None


def chunks_for(events: list, include_usage: bool) -> list:
    encoder = wire.ChunkEncoder("gpt-x", include_usage=include_usage, created=5)
    return SSEDecoder().feed(b"".join(encoder.encode(event) for event in events))


def test_events_become_the_chunk_sequence_and_done() -> None:
    events = [
        message_start("gpt-x", 4),
        PingEvent(),
        text_block_start(),
        text_delta("Hel"),
        text_delta("lo"),
        *message_end("max_tokens", 2),
    ]
    messages = chunks_for(events, include_usage=True)
    assert messages[-1].data == "[DONE]"
    chunks = [m.json() for m in messages[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-x" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert all(c["usage"] is None for c in chunks[:4])


def test_without_include_usage_there_is_no_usage_chunk() -> None:
    messages = chunks_for([message_start("m", 1), *message_end("stop_sequence", 1)], False)
    assert [m.data for m in messages][-1] == "[DONE]"
    chunks = [m.json() for m in messages[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_error_event_becomes_an_error_chunk_without_done() -> None:
    events = [message_start("m", 1), ErrorEvent(ErrorBody("overloaded_error", "busy"))]
    messages = chunks_for(events, False)
    assert messages[-1].json() == {
        "error": {"message": "busy", "type": "overloaded_error", "param": None,
                  "code": "server_overloaded"},
    }  # fmt: skip
    assert all(m.data != "[DONE]" for m in messages)


def test_error_statuses_follow_openai() -> None:
    assert wire.error_response(OverloadedError("busy"))[0] == 429
    status, body = wire.error_response(InvalidRequestError("must be between", path="max_tokens"))
    assert (status, body["error"]["param"]) == (400, "max_tokens")
    assert body["error"]["message"] == "max_tokens: must be between"
    status, body = wire.error_response(error_from_type("authentication_error", "no key"))
    assert (status, body["error"]["code"], body["error"]["param"]) == (401, "invalid_api_key", None)


def test_models_list_shape() -> None:
    assert wire.models_body(["a"]) == {
        "object": "list",
        "data": [{"id": "a", "object": "model", "created": 0, "owned_by": "streamchat"}],
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(
    ["model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p",
     "seed", "n", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
     "response_format", "reasoning_effort"]
)  # fmt: skip


@given(st.dictionaries(fields, json_values) | json_values)
def test_any_json_body_is_accepted_or_refused_with_invalid_request(body: object) -> None:
    """Whatever a client sends, the answer is a request or a 400, never a server error."""
    try:
        kwargs, _ = wire.parse_chat_request(body)
        build_request(**kwargs)
    except InvalidRequestError as error:
        assert ":" in error.message


tool_calls = st.lists(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["a", "b", ""]) | json_values, "type": st.just("function")},
        optional={
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", ""]) | json_values},
                optional={"arguments": st.sampled_from(["{}", '{"x": 1}', "[]", "", "{"])},
            )
        },
    ),
    max_size=3,
)
chat_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system"])},
        optional={
            "content": st.none() | st.text(max_size=5) | json_values,
            "tool_calls": tool_calls | json_values,
            "tool_call_id": st.sampled_from(["a", "b"]) | json_values,
        },
    ),
    min_size=1,
    max_size=5,
)
tool_lists = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "x"])},
        optional={
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "g", "bad name"])},
                optional={"parameters": st.just({"type": "object"}) | json_values},
            )
        },
    ),
    max_size=3,
)


@given(
    chat_messages,
    tool_lists | json_values,
    st.sampled_from(["auto", "none", "required"]) | json_values,
    st.none() | st.booleans() | json_values,
)
def test_any_tool_conversation_is_accepted_or_refused_with_invalid_request(
    messages: object, tools: object, tool_choice: object, parallel: object
) -> None:
    """Tool calls, tool messages and tool lists in any shape: a request or a 400 naming a field."""
    body = {"messages": messages, "tools": tools, "tool_choice": tool_choice}
    body["parallel_tool_calls"] = parallel
    try:
        kwargs, options = wire.parse_chat_request({"model": "m", **body})
    except InvalidRequestError as error:
        assert ":" in error.message
        return
    try:
        build_request(**kwargs)
    except InvalidRequestError as error:
        canonical = r"tools\.\d+\.(input_schema|name|description)|tool_choice\.name|output_format"
        assert not re.match(canonical, options.rename(error).message)  # OpenAI's names only
