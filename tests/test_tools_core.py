"""The canonical model of tool use and thinking: blocks, deltas, the fold, requests, helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamchat import Client
from streamchat.accumulate import accumulate
from streamchat.errors import APIError, InvalidRequestError
from streamchat.events import (
    ContentBlockDeltaEvent,
    InputJSONDelta,
    SignatureDelta,
    TextBlock,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolUseBlock,
    event_from_dict,
)
from streamchat.providers.base import (
    block_stop,
    input_json_delta,
    message_finish,
    message_start,
    signature_delta,
    text_block_start,
    text_delta,
    thinking_delta,
    thinking_start,
    tool_use_start,
)
from streamchat.request import MAX_TOOLS, build_request

WEATHER = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
USER = {"role": "user", "content": "Weather in Paris?"}


def tool_call_events(fragments: list[str], stop_reason: str = "tool_use") -> list[Any]:
    return [
        message_start("m", 5),
        thinking_start(0),
        thinking_delta("Paris, ", 0),
        thinking_delta("so weather.", 0),
        signature_delta("sig", 0),
        block_stop(0),
        text_block_start(1),
        text_delta("Checking.", 1),
        block_stop(1),
        tool_use_start(2, "get_weather", "toolu_1"),
        *(input_json_delta(fragment, 2) for fragment in fragments),
        block_stop(2),
        *message_finish(stop_reason, 9),
    ]


# -- the fold ----------------------------------------------------------------------------------
def test_accumulate_joins_tool_input_fragments_and_keeps_every_block() -> None:
    message = accumulate(tool_call_events(['{"ci', 'ty": "Pa', 'ris"}']))
    assert message.content == [
        ThinkingBlock("Paris, so weather.", "sig"),
        TextBlock("Checking."),
        ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"}),
    ]
    assert message.text == "Checking."
    assert message.tool_calls[0].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    assert message.to_dict()["content"][2] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }


def test_malformed_tool_input_is_an_error_not_an_empty_object() -> None:
    with pytest.raises(APIError, match="not valid JSON"):
        accumulate(tool_call_events(['{"city": "Par']))


def test_max_tokens_inside_a_call_keeps_the_partial_input_as_generated() -> None:
    message = accumulate(tool_call_events(['{"city": "Paris", "unit', '": "c'], "max_tokens"))
    call = message.tool_calls[0]
    assert message.stop_reason == "max_tokens"
    assert call.partial_json == '{"city": "Paris", "unit": "c'
    assert call.input == {"city": "Paris"}  # complete members only: nothing invented


def test_a_delta_for_another_kind_of_block_is_refused() -> None:
    events = [message_start("m", 1), text_block_start(0), input_json_delta("{}", 0)]
    with pytest.raises(ValueError, match="is 'text', not 'tool_use'"):
        accumulate(events)


@pytest.mark.parametrize(
    "data",
    [
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "h"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
    ],
)
def test_tool_and_thinking_events_round_trip_through_their_json(data: dict[str, Any]) -> None:
    assert event_from_dict(data).to_dict() == data


def test_delta_types_serialise_in_the_anthropic_shape() -> None:
    deltas = [InputJSONDelta('{"a'), ThinkingDelta("hm"), SignatureDelta("s")]
    assert [ContentBlockDeltaEvent(d, 3).to_dict()["delta"] for d in deltas] == [
        {"type": "input_json_delta", "partial_json": '{"a'},
        {"type": "thinking_delta", "thinking": "hm"},
        {"type": "signature_delta", "signature": "s"},
    ]


# -- requests ----------------------------------------------------------------------------------
def agent_turns(result: Any = "18°C and sunny", tool_use_id: str = "toolu_1") -> list[Any]:
    return [
        USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": result}],
        },
    ]


def test_a_whole_tool_loop_is_a_valid_conversation() -> None:
    request = build_request(
        model="m",
        messages=agent_turns([{"type": "text", "text": "18°C"}]),
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
    )
    call = request.messages[1].blocks[1]
    result = request.messages[2].blocks[0]
    assert call == ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"})
    assert isinstance(result, ToolResultBlock) and result.text == "18°C"
    assert request.tools[0].input_schema["required"] == ["city"]
    assert request.tool_choice.disable_parallel_tool_use
    assert request.thinking is not None and request.thinking.budget_tokens == 1024
    assert request.wants_tools


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools.1.name"),
        ({"tools": [{**WEATHER, "input_schema": {"type": "array"}}]}, "tools.0.input_schema"),
        ({"tools": [{**WEATHER, "name": "has space"}]}, "tools.0.name"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        (
            {"tools": [{**WEATHER, "name": f"t{i}"} for i in range(MAX_TOOLS + 1)]},
            "tools",
        ),
        (
            {"tools": [{**WEATHER, "input_schema": {"type": "object", "x": "y" * 70_000}}]},
            "tools.0",
        ),
        ({"tool_choice": {"type": "any"}, "tools": []}, "tool_choice"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": 10}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 5000}}, "thinking.budget_tokens"),
        ({"output_format": {"type": "json_schema", "schema": {"type": "string"}}}, "output_format"),
        ({"messages": agent_turns(tool_use_id="toolu_9")}, "messages.2.content.0.tool_use_id"),
    ],
)
def test_bad_tool_requests_name_the_field(params: dict[str, Any], field: str) -> None:
    kwargs = {"model": "m", "messages": [USER], "tools": [WEATHER], "max_tokens": 2048, **params}
    with pytest.raises(InvalidRequestError) as info:
        build_request(**kwargs)
    assert info.value.message.startswith(field)


def test_tool_results_must_answer_the_assistant_turn_just_before() -> None:
    turns = agent_turns()
    turns[1] = {"role": "assistant", "content": "no call here"}
    with pytest.raises(InvalidRequestError, match="matches no tool_use"):
        build_request(model="m", messages=turns, tools=[WEATHER])


def test_tool_blocks_belong_to_their_roles() -> None:
    call = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    with pytest.raises(InvalidRequestError, match="tool_use blocks belong in assistant"):
        build_request(model="m", messages=[{"role": "user", "content": [call]}])


# -- the client on the scripted provider -------------------------------------------------------
def test_create_with_a_forced_tool_returns_the_call(scripted) -> None:
    spec, provider = scripted(tool_input=json.dumps({"city": "Paris"}))
    message = Client().messages.create(
        model=spec,
        max_tokens=100,
        messages=[USER],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    assert [(c.name, c.input) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert message.tool_calls[0].id.startswith("toolu_")
    assert provider.requests[0].tool_choice.name == "get_weather"


def test_the_stream_helper_yields_the_sdks_input_json_and_thinking_events(scripted) -> None:
    spec, _ = scripted(tool_input=json.dumps({"city": "Paris", "days": 3}), thinking="Let me see")
    with Client().messages.stream(
        model=spec,
        max_tokens=2000,
        messages=[USER],
        tools=[WEATHER],
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    snapshots = [e.snapshot for e in events if e.type == "input_json"]
    thinking = [e.snapshot for e in events if e.type == "thinking"]
    assert snapshots[0] == {} or "city" in snapshots[0]
    assert snapshots[-1] == {"city": "Paris", "days": 3}
    assert (
        len(snapshots)
        == len([e for e in events if e.type == "content_block_delta"]) - len(thinking) - 1
    )  # one signature delta
    assert thinking[-1] == "Let me see"
    assert [e.signature for e in events if e.type == "signature"] == [final.content[0].signature]
    assert [b.type for b in final.content] == ["thinking", "tool_use"]


def test_create_stream_true_yields_only_the_wire_events(scripted) -> None:
    spec, _ = scripted(tool_input="{}")
    events = list(
        Client().messages.create(
            model=spec, max_tokens=50, messages=[USER], tools=[WEATHER], stream=True
        )
    )
    assert {e.type for e in events} <= {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }


def test_text_stream_leaves_out_thinking_and_tool_input(scripted) -> None:
    spec, _ = scripted(text="Sunny.", thinking="hmm")
    with Client().messages.stream(
        model=spec,
        max_tokens=2000,
        messages=[USER],
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        assert "".join(stream.text_stream) == "Sunny."


def test_an_agent_loop_runs_on_the_library(scripted) -> None:
    spec, _ = scripted(tool_input=json.dumps({"city": "Paris"}))
    client = Client()
    messages: list[Any] = [USER]
    first = client.messages.create(model=spec, max_tokens=100, messages=messages, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = first.tool_calls[0]
    messages += [
        {"role": "assistant", "content": [b.to_dict() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C"}],
        },
    ]
    answer = client.messages.create(model=spec, max_tokens=100, messages=messages, tools=[WEATHER])
    assert answer.stop_reason == "end_turn"
    assert answer.text == "[turn 2] Tool result: 18°C"


def test_parallel_calls_unless_disabled(scripted) -> None:
    spec, _ = scripted(tool_input="{}", calls=3)
    client = Client()
    many = client.messages.create(model=spec, max_tokens=100, messages=[USER], tools=[WEATHER])
    one = client.messages.create(
        model=spec,
        max_tokens=100,
        messages=[USER],
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert len(many.tool_calls) == 3 and len({c.id for c in many.tool_calls}) == 3
    assert len(one.tool_calls) == 1


def test_tool_choice_none_answers_in_text(scripted) -> None:
    spec, _ = scripted(tool_input="{}")
    message = Client().messages.create(
        model=spec, max_tokens=100, messages=[USER], tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert message.tool_calls == [] and message.stop_reason == "end_turn"
