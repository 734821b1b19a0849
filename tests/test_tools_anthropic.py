"""Tool use, thinking and structured output on ``POST /v1/messages``, judged by the ``anthropic``
SDK (sync and async) against a real server on the scripted provider."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.errors import InvalidRequestError
from streamchat.providers.scripted import JSON_FRAGMENT, ScriptedProvider
from streamchat.request import MAX_SCHEMA_BYTES, MAX_TOOLS, build_request
from streamchat.server.common import estimate_tokens
from streamchat.wire import anthropic as wire
from test_serve_seed_sdk import seed_python  # noqa: F401  (the seed-era client venv fixture)

CITY = {"city": "Paris", "days": 3, "units": ["C", "F"]}
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "units": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city"],
}
WEATHER = {"name": "get_weather", "description": "The weather in a city", "input_schema": SCHEMA}
TIME = {"name": "get_time", "description": "The time in a city", "input_schema": SCHEMA}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
THOUGHT = "The user wants Paris weather, so I call the tool."
THINKING = {"type": "enabled", "budget_tokens": 1024}

Start = Callable[..., tuple[str, ScriptedProvider]]


@pytest.fixture
def start(scripted_server: Start) -> Start:
    """``start(**scripted options)`` -> (URL of a server on that script, its provider)."""
    return scripted_server


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)


def tool_spec(**options: object) -> dict[str, object]:
    return {"tool_input": json.dumps(CITY), **options}


# -- streaming -----------------------------------------------------------------------------------
def test_stream_of_a_forced_call_gives_input_json_snapshots_and_a_tool_use_block(start) -> None:
    url, _ = start(**tool_spec())
    with client(url).messages.stream(
        model="m", max_tokens=200, messages=QUESTION, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    fragments = [e for e in events if e.type == "input_json"]
    raw = json.dumps(CITY)
    assert [e.partial_json for e in fragments] == [
        raw[i : i + JSON_FRAGMENT] for i in range(0, len(raw), JSON_FRAGMENT)
    ]
    assert fragments[-1].snapshot == CITY  # the SDK's own partial-JSON snapshot, complete
    assert fragments[0].snapshot == {}  # '{"city":' holds no complete member yet
    [call] = message.content
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", CITY)
    assert call.id.startswith("toolu_")
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == len(fragments)


def test_raw_stream_events_have_the_api_shapes(start) -> None:
    url, _ = start(**tool_spec())
    with httpx.stream(
        "POST",
        f"{url}/v1/messages",
        json={"model": "m", "max_tokens": 200, "messages": QUESTION, "stream": True,
              "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
    ) as response:  # fmt: skip
        frames = [json.loads(line[6:]) for line in response.iter_lines() if line[:6] == "data: "]
    block_start = next(f for f in frames if f["type"] == "content_block_start")
    assert block_start["index"] == 0
    assert set(block_start["content_block"]) == {"type", "id", "name", "input"}
    assert block_start["content_block"]["input"] == {}
    deltas = [f["delta"] for f in frames if f["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == CITY
    stop = next(f for f in frames if f["type"] == "message_delta")
    assert stop["delta"]["stop_reason"] == "tool_use"


def test_create_stream_true_yields_typed_tool_events(start) -> None:
    url, _ = start(**tool_spec(calls=2))
    events = list(
        client(url).messages.create(
            model="m", max_tokens=200, messages=QUESTION, tools=[WEATHER, TIME], stream=True,
            tool_choice={"type": "tool", "name": "get_time"},
        )
    )  # fmt: skip
    starts = [e for e in events if e.type == "content_block_start"]
    assert [(e.index, e.content_block.type, e.content_block.name) for e in starts] == [
        (0, "tool_use", "get_time"),
        (1, "tool_use", "get_time"),
    ]
    assert len({e.content_block.id for e in starts}) == 2  # parallel calls, distinct ids
    for index in (0, 1):
        parts = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.index == index
        ]
        assert json.loads("".join(parts)) == CITY


def test_disable_parallel_tool_use_gives_one_call(start) -> None:
    url, provider = start(**tool_spec(calls=3))
    message = client(url).messages.create(
        model="m",
        max_tokens=200,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert [b.type for b in message.content] == ["tool_use"]
    assert provider.requests[0].tool_choice.disable_parallel_tool_use is True


def test_tool_choice_none_answers_in_text(start) -> None:
    url, provider = start(**tool_spec())
    message = client(url).messages.create(
        model="m", max_tokens=200, messages=QUESTION, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.stop_reason == "end_turn"
    assert provider.requests[0].tool_choice.type == "none"


def test_tools_and_their_schemas_reach_the_provider(start) -> None:
    url, provider = start(**tool_spec())
    client(url).messages.create(
        model="m", max_tokens=200, messages=QUESTION, tools=[WEATHER, TIME]
    )  # tool_choice left out: auto
    [request] = provider.requests
    assert [(t.name, t.description) for t in request.tools] == [
        ("get_weather", "The weather in a city"),
        ("get_time", "The time in a city"),
    ]
    assert request.tools[0].input_schema == SCHEMA
    assert request.tool_choice.type == "auto"


# -- the agent loop --------------------------------------------------------------------------------
def test_agent_loop_ask_call_result_answer(start) -> None:
    url, provider = start(**tool_spec())
    sdk = client(url)
    messages: list[Any] = list(QUESTION)
    with sdk.messages.stream(
        model="m", max_tokens=200, messages=messages, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        first = stream.get_final_message()
    [call] = first.content
    messages += [
        {"role": "assistant", "content": first.content},  # the SDK's own block objects
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C"}],
        },
    ]
    answer = sdk.messages.create(model="m", max_tokens=200, messages=messages, tools=[WEATHER])
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == "[turn 2] Tool result: 18 C"
    history = provider.requests[1].messages
    assert history[1].blocks[0].id == call.id and history[1].blocks[0].input == CITY
    assert history[2].blocks[0].tool_use_id == call.id


def test_tool_result_error_flag_and_text_blocks_reach_the_provider(start) -> None:
    url, provider = start(**tool_spec())
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": CITY}
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "is_error": True,
        "content": [{"type": "text", "text": "no such "}, {"type": "text", "text": "city"}],
    }
    message = client(url).messages.create(
        model="m",
        max_tokens=200,
        tools=[WEATHER],
        messages=[*QUESTION, {"role": "assistant", "content": [call]},
                  {"role": "user", "content": [result]}],
    )  # fmt: skip
    assert message.content[0].text == "[turn 2] Tool result: no such city"
    seen = provider.requests[0].messages[2].blocks[0]
    assert (seen.is_error, seen.text) == (True, "no such city")


@pytest.mark.anyio
async def test_async_agent_loop(start) -> None:
    url, _ = start(**tool_spec())
    sdk = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
    messages: list[Any] = list(QUESTION)
    snapshots = []
    async with sdk.messages.stream(
        model="m", max_tokens=200, messages=messages, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        async for event in stream:
            if event.type == "input_json":
                snapshots.append(event.snapshot)
        first = await stream.get_final_message()
    assert snapshots[-1] == CITY
    call = first.content[0]
    messages += [
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "sunny"}]},
    ]  # fmt: skip
    stream = await sdk.messages.create(
        model="m", max_tokens=200, messages=messages, tools=[WEATHER], stream=True
    )
    texts = [e.delta.text async for e in stream if e.type == "content_block_delta"]
    assert "".join(texts) == "[turn 2] Tool result: sunny"


# -- thinking --------------------------------------------------------------------------------------
def test_thinking_streams_with_its_signature_before_the_call(start) -> None:
    url, _ = start(**tool_spec(thinking=THOUGHT))
    with client(url).messages.stream(
        model="m", max_tokens=2048, messages=QUESTION, tools=[WEATHER], thinking=THINKING
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    thoughts = [e for e in events if e.type == "thinking"]
    assert "".join(e.thinking for e in thoughts) == THOUGHT
    assert thoughts[-1].snapshot == THOUGHT
    [signature] = [e for e in events if e.type == "signature"]
    thinking, call = message.content
    assert (thinking.type, thinking.thinking) == ("thinking", THOUGHT)
    assert thinking.signature == signature.signature != ""
    assert (call.type, call.input) == ("tool_use", CITY)


def test_non_streaming_body_carries_every_block(start) -> None:
    url, _ = start(**tool_spec(thinking=THOUGHT, calls=2))
    response = httpx.post(
        f"{url}/v1/messages",
        json={"model": "m", "max_tokens": 2048, "messages": QUESTION, "tools": [WEATHER],
              "thinking": THINKING},
    )  # fmt: skip
    body = response.json()
    assert [b["type"] for b in body["content"]] == ["thinking", "tool_use", "tool_use"]
    assert set(body["content"][0]) == {"type", "thinking", "signature"}
    assert body["content"][1]["input"] == body["content"][2]["input"] == CITY
    assert body["stop_reason"] == "tool_use"


def test_no_thinking_unless_asked(start) -> None:
    url, provider = start(text="Sunny.", thinking=THOUGHT)
    message = client(url).messages.create(model="m", max_tokens=2048, messages=QUESTION)
    assert [b.type for b in message.content] == ["text"]
    assert provider.requests[0].thinking is None


def test_thinking_blocks_in_history_keep_their_signature(start) -> None:
    url, provider = start(**tool_spec(thinking=THOUGHT))
    sdk = client(url)
    first = sdk.messages.create(
        model="m", max_tokens=2048, messages=QUESTION, tools=[WEATHER], thinking=THINKING
    )
    thinking, call = first.content
    messages = [
        *QUESTION,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "sunny"}]},
    ]  # fmt: skip
    answer = sdk.messages.create(
        model="m", max_tokens=2048, messages=messages, tools=[WEATHER], thinking=THINKING
    )
    assert [b.type for b in answer.content] == ["thinking", "text"]
    replayed = provider.requests[1].messages[1].blocks[0]
    assert (replayed.thinking, replayed.signature) == (THOUGHT, thinking.signature)


# -- structured output -------------------------------------------------------------------------
class Weather(pydantic.BaseModel):
    city: str
    days: int


def test_parse_with_an_output_format_type_sends_output_config(start) -> None:
    url, provider = start(text=json.dumps({"city": "Paris", "days": 3}))
    message = client(url).messages.parse(
        model="m", max_tokens=200, messages=QUESTION, output_format=Weather
    )
    assert message.parsed_output == Weather(city="Paris", days=3)
    schema = provider.requests[0].output_format.schema
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"city", "days"}


def test_beta_output_format_field_is_accepted(start) -> None:
    url, provider = start(text="{}")
    response = httpx.post(
        f"{url}/v1/messages",
        json={"model": "m", "max_tokens": 20, "messages": QUESTION,
              "output_format": {"type": "json_schema", "schema": SCHEMA}},
    )  # fmt: skip
    assert response.status_code == 200
    assert provider.requests[0].output_format.schema == SCHEMA


# -- count_tokens -------------------------------------------------------------------------------
def test_count_tokens_accepts_tools_and_thinking(start) -> None:
    url, _ = start(**tool_spec())
    count = client(url).messages.count_tokens(
        model="m", messages=QUESTION, tools=[WEATHER], thinking=THINKING, system="be brief"
    )
    assert count.input_tokens > 0
    with pytest.raises(anthropic.BadRequestError, match=r"tools\.1\.name"):
        client(url).messages.count_tokens(model="m", messages=QUESTION, tools=[WEATHER, WEATHER])


def test_token_estimate_counts_tools_system_and_tool_blocks() -> None:
    """Providers that cannot count exactly estimate; tools and tool blocks are input too."""
    bare = build_request(model="m", messages=QUESTION)
    with_tools = build_request(model="m", messages=QUESTION, tools=[WEATHER], system="be brief")
    call = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": CITY}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "a long answer " * 20}
    loop = build_request(
        model="m",
        messages=[*QUESTION, {"role": "assistant", "content": [call]},
                  {"role": "user", "content": [result]}],
    )  # fmt: skip
    assert estimate_tokens(with_tools) > estimate_tokens(bare) + len(json.dumps(SCHEMA)) // 5
    assert estimate_tokens(loop) > estimate_tokens(bare) + 60


# -- bad input: the API's 400, naming the field, and nothing reaches the model -------------------
def _call_and_result(tool_use_id: str) -> list[dict[str, Any]]:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": CITY}
    result = {"type": "tool_result", "tool_use_id": tool_use_id, "content": "x"}
    return [*QUESTION, {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]}]  # fmt: skip


BAD_REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown tool in tool_choice": (
        {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_time"}},
        "tool_choice.name: no tool named 'get_time'",
    ),
    "duplicate tool names": ({"tools": [WEATHER, WEATHER]}, "tools.1.name: duplicate"),
    "non-object schema": (
        {"tools": [{"name": "t", "input_schema": {"type": "array"}}]},
        "tools.0.input_schema: must be a JSON Schema of type 'object'",
    ),
    "result for no call": (
        {"tools": [WEATHER], "messages": _call_and_result("toolu_2")},
        "messages.2.content.0.tool_use_id: 'toolu_2' matches no tool_use",
    ),
    "too many tools": (
        {"tools": [{**WEATHER, "name": f"t{i}"} for i in range(MAX_TOOLS + 1)]},
        f"tools: at most {MAX_TOOLS} tools",
    ),
    "oversized schema": (
        {"tools": [{**WEATHER, "input_schema": {**SCHEMA, "description": "x" * MAX_SCHEMA_BYTES}}]},
        "tools.0.input_schema: the schema is",
    ),
    "server tool": (
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "tools.0.type: server tools",
    ),
    "image of an unknown type": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/tiff",
                                "data": "AAAA",
                            },
                        }
                    ],
                }
            ]
        },
        "messages.0.content.0.source.media_type: unsupported image media type 'image/tiff'",
    ),
    "unknown block": (
        {"messages": [{"role": "user", "content": [{"type": "audio", "data": "AAAA"}]}]},
        "messages.0.content.0: content blocks of type 'audio' are not supported",
    ),
    "tool_use in a user turn": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}
                    ],
                }
            ]
        },
        "messages.0.content.0: tool_use blocks belong in assistant messages",
    ),
    "thinking budget": (
        {"thinking": {"type": "enabled", "budget_tokens": 10}},
        "thinking.budget_tokens: must be at least 1024",
    ),
    "output_config format type": (
        {"output_config": {"format": {"type": "regex", "schema": {}}}},
        "output_config.format.type",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_tool_input_is_a_400_naming_the_field(case: str, start) -> None:
    url, provider = start(**tool_spec())
    change, message = BAD_REQUESTS[case]
    kwargs: dict[str, Any] = {"model": "m", "max_tokens": 200, "messages": QUESTION, **change}
    sdk = client(url)
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(**kwargs)
    assert raised.value.status_code == 400
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert message in raised.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="invalid_request_error"):
        with sdk.messages.stream(**kwargs) as stream:
            stream.get_final_message()
    assert provider.requests == []  # nothing reached the model


# -- any tool-bearing body: a request or a 400 naming a field -----------------------------------
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_tools = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["get_weather", "get_time", "bad name"]) | _values,
            "description": st.text(max_size=5) | _values,
            "input_schema": st.just(SCHEMA) | _values,
            "type": st.sampled_from(["custom", "bash_20250124"]) | _values,
        },
    )
    | _values,
    max_size=3,
)
_choices = st.fixed_dictionaries(
    {"type": st.sampled_from(["auto", "any", "tool", "none"]) | _values},
    optional={"name": st.sampled_from(["get_weather", "nope"]) | _values,
              "disable_parallel_tool_use": _values},
)  # fmt: skip
_formats = st.fixed_dictionaries(
    {"type": st.sampled_from(["json_schema", "text"]) | _values},
    optional={"schema": st.just(SCHEMA) | _values},
)
_FIELD = re.compile(r"^(request body|[A-Za-z_][\w.]*): \S")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"model": st.just("m"), "max_tokens": st.just(2048), "messages": st.just(QUESTION)},
        optional={
            "tools": _tools | _values,
            "tool_choice": _choices | _values,
            "thinking": st.just(THINKING) | _values,
            "output_format": _formats | _values,
            "output_config": st.fixed_dictionaries({"format": _formats | _values}) | _values,
        },
    )
)
def test_any_tool_body_is_a_request_or_names_the_field(body) -> None:
    try:
        build_request(**wire.parse_messages_request(body)[0])
        build_request(**wire.parse_count_tokens_request(body), max_tokens=2048)
    except InvalidRequestError as error:
        assert _FIELD.match(error.message), error.message


# -- the seed-era SDK (anthropic 0.40.0, its own venv) runs the same tool loop ------------------
SEED_TOOL_LOOP = """
import json
import sys

import anthropic

URL = sys.argv[1]
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


def loop(client: anthropic.Anthropic | anthropic.AnthropicBedrock) -> dict:
    with client.messages.stream(
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
        max_tokens=200,
        temperature=0,  # the seed era's habit
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "any"},
    ) as stream:
        snapshots = [e.snapshot for e in stream if e.type == "input_json"]
        first = stream.get_final_message()
    call = first.content[0]
    messages = [
        *QUESTION,
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "18 C"}]},
    ]  # fmt: skip
    answer = client.messages.create(
        model="m", max_tokens=200, temperature=0, messages=messages, tools=TOOLS
    )
    return {
        "snapshot": snapshots[-1],
        "call": [call.type, call.name, call.input],
        "stop_reason": first.stop_reason,
        "answer": answer.content[0].text,
    }


direct = anthropic.Anthropic(base_url=URL, api_key="x", max_retries=0)
bedrock = anthropic.AnthropicBedrock(
    base_url=URL, aws_access_key="x", aws_secret_key="y", aws_region="us-west-2", max_retries=0
)
print(json.dumps({"anthropic": loop(direct), "bedrock": loop(bedrock)}))
"""


def test_seed_era_sdk_runs_a_tool_loop(request, start) -> None:
    """Through ``Anthropic`` and ``AnthropicBedrock`` as 0.40.0 has them (``temperature=0``)."""
    python = request.getfixturevalue("seed_python")
    url, _ = start(**tool_spec())
    run = subprocess.run(
        [python, "-c", SEED_TOOL_LOOP, url], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    for api in ("anthropic", "bedrock"):
        assert seen[api] == {
            "snapshot": CITY,
            "call": ["tool_use", "get_weather", CITY],
            "stop_reason": "tool_use",
            "answer": "[turn 2] Tool result: 18 C",
        }


def test_max_tokens_cutting_a_call_keeps_the_partial_input(start) -> None:
    url, _ = start(**tool_spec())
    message = client(url).messages.create(
        model="m", max_tokens=2, messages=QUESTION, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert message.stop_reason == "max_tokens"
    assert message.content[0].input == {"city": "Paris"}
