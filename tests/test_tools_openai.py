"""Tools, tool_calls, response_format and reasoning on ``POST /v1/chat/completions``, judged by
the unmodified ``openai`` SDK (its types, ``stream()`` helper and ``parse()``) against a real
server on the scripted provider, which records what reached it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import openai
import pytest
from pydantic import BaseModel

from serving import serve_in_thread
from streamchat.providers import get_provider
from streamchat.providers.scripted import ScriptedProvider
from streamchat.request import MAX_TOOLS, MessageRequest
from streamchat.server.common import ServerConfig

CITY = {"city": "Paris", "days": 3}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time"}},
]  # fmt: skip
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
ANSWER_JSON = '{"city": "Paris", "temperature": 18, "sunny": true}'


class Weather(BaseModel):
    city: str
    temperature: int
    sunny: bool


class GetWeather(BaseModel):
    city: str
    days: int


def spec(tag: str, **options: object) -> str:
    return "scripted?" + urlencode({**options, "tag": f"openai-tools-{tag}"})


CALLS = spec("calls", tool_input=json.dumps(CITY))
PARALLEL = spec("parallel", tool_input=json.dumps(CITY), calls=2)
JSON_TEXT = spec("json", text=ANSWER_JSON)
THINKING = spec("thinking", text="Sunny.", thinking="Paris is in France")
LONG_CALL = spec("long", tool_input=json.dumps({"city": "Paris, the capital of France"}))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = ServerConfig(default_model=CALLS, models=[PARALLEL, JSON_TEXT, THINKING, LONG_CALL])
    with serve_in_thread(config) as running:
        yield running


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as made:
        yield made


def last_request(model: str) -> MessageRequest:
    provider = get_provider(model)
    assert isinstance(provider, ScriptedProvider)
    return provider.requests[-1]


def test_create_returns_tool_calls_with_null_content(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CALLS, messages=QUESTION, tools=TOOLS, tool_choice="required"
    )
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.type, call.function.name) == ("function", "get_weather")
    assert json.loads(call.function.arguments) == CITY
    assert call.id.startswith("toolu_")
    sent = last_request(CALLS)
    assert [(t.name, t.description) for t in sent.tools] == [
        ("get_weather", "Weather in a city"),
        ("get_time", ""),
    ]
    assert sent.tools[0].input_schema == SCHEMA
    assert sent.tools[1].input_schema == {"type": "object", "properties": {}}
    assert (sent.tool_choice.type, sent.tool_choice.disable_parallel_tool_use) == ("any", False)


def test_streamed_call_opens_with_id_and_name_then_argument_fragments(
    client: openai.OpenAI,
) -> None:
    chunks = list(
        client.chat.completions.create(model=CALLS, messages=QUESTION, tools=TOOLS, stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first, *rest = [d.tool_calls[0] for d in deltas]
    assert (first.index, first.type, first.function.name) == (0, "function", "get_weather")
    assert first.id.startswith("toolu_") and first.function.arguments == ""
    assert len(rest) > 1  # fragments, as they were generated
    assert all(f.index == 0 and f.id is None and f.function.name is None for f in rest)
    assert json.loads("".join(f.function.arguments for f in rest)) == CITY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert all(not (c.choices and c.choices[0].delta.content) for c in chunks)


def test_stream_helper_accumulates_and_parses_a_strict_tool(client: openai.OpenAI) -> None:
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    with client.chat.completions.stream(
        model=CALLS, messages=QUESTION, tools=[tool], tool_choice="required"
    ) as stream:
        kinds = [event.type for event in stream]
        completion = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds
    assert "tool_calls.function.arguments.done" in kinds
    [call] = completion.choices[0].message.tool_calls
    assert call.function.parsed_arguments == GetWeather(**CITY)
    assert completion.choices[0].finish_reason == "tool_calls"
    assert last_request(CALLS).tools[0].input_schema["additionalProperties"] is False


def test_parallel_calls_have_their_own_index_and_id(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=PARALLEL, messages=QUESTION, tools=TOOLS)
    calls = completion.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments) for c in calls] == [CITY, CITY]
    assert len({c.id for c in calls}) == 2
    chunks = client.chat.completions.create(
        model=PARALLEL, messages=QUESTION, tools=TOOLS, stream=True
    )
    opened = [
        (call.index, call.id)
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or ()
        if call.id
    ]
    assert [index for index, _ in opened] == [0, 1]
    with client.chat.completions.stream(model=PARALLEL, messages=QUESTION, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    assert [json.loads(c.function.arguments) for c in final.choices[0].message.tool_calls] == [
        CITY,
        CITY,
    ]


def test_parallel_tool_calls_false_asks_for_one_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=PARALLEL, messages=QUESTION, tools=TOOLS, parallel_tool_calls=False
    )
    assert len(completion.choices[0].message.tool_calls) == 1
    choice = last_request(PARALLEL).tool_choice
    assert (choice.type, choice.disable_parallel_tool_use) == ("auto", True)


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CALLS,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "get_time"
    choice = last_request(CALLS).tool_choice
    assert (choice.type, choice.name) == ("tool", "get_time")


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CALLS, messages=QUESTION, tools=TOOLS, tool_choice="none"
    )
    message = completion.choices[0].message
    assert (message.tool_calls, completion.choices[0].finish_reason) == (None, "stop")
    assert message.content == "[turn 1] You said: What is the weather in Paris?"


def test_an_agent_loop_runs_streamed(client: openai.OpenAI) -> None:
    """ask -> tool_calls -> tool messages (one per call) -> the answer from the results."""
    messages: list[Any] = [*QUESTION]
    with client.chat.completions.stream(model=PARALLEL, messages=messages, tools=TOOLS) as stream:
        first = stream.get_final_completion().choices[0].message
    messages.append(first.model_dump(exclude_none=True))
    results = ["18 C", "sunny"]
    for call, result in zip(first.tool_calls, results, strict=True):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    messages.append({"role": "user", "content": "Thanks"})
    with client.chat.completions.stream(model=PARALLEL, messages=messages, tools=TOOLS) as stream:
        answer = stream.get_final_completion().choices[0]
    assert answer.finish_reason == "stop"
    assert answer.message.content == "[turn 2] Tool result: 18 C sunny"
    sent = last_request(PARALLEL)
    assert [turn.role for turn in sent.messages] == ["user", "assistant", "user"]
    calls = sent.messages[1].blocks
    assert [(b.type, b.id, b.input) for b in calls] == [
        ("tool_use", c.id, CITY) for c in first.tool_calls
    ]
    *tool_results, text = sent.messages[2].blocks  # the tool messages and the user's text merge
    assert [(b.tool_use_id, b.text) for b in tool_results] == [
        (c.id, r) for c, r in zip(first.tool_calls, results, strict=True)
    ]
    assert (text.type, text.text) == ("text", "Thanks")


def test_response_format_json_schema_parses_into_the_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=JSON_TEXT, messages=QUESTION, response_format=Weather
    )
    assert completion.choices[0].message.parsed == Weather(city="Paris", temperature=18, sunny=True)
    output = last_request(JSON_TEXT).output_format
    assert output.name == "Weather"
    assert output.schema["properties"].keys() == {"city", "temperature", "sunny"}
    with client.chat.completions.stream(
        model=JSON_TEXT, messages=QUESTION, response_format=Weather
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Weather(city="Paris", temperature=18, sunny=True)


def test_response_format_json_object_and_text(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model=JSON_TEXT, messages=QUESTION, response_format={"type": "json_object"}
    )
    output = last_request(JSON_TEXT).output_format
    assert output is not None and output.schema is None
    client.chat.completions.create(
        model=JSON_TEXT, messages=QUESTION, response_format={"type": "text"}
    )
    assert last_request(JSON_TEXT).output_format is None


def test_reasoning_arrives_as_reasoning_content(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=THINKING, messages=QUESTION, reasoning_effort="low", stream=True
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == "Paris is in France"
    assert "".join(d.content or "" for d in deltas) == "Sunny."
    assert last_request(THINKING).thinking is not None
    completion = client.chat.completions.create(
        model=THINKING, messages=QUESTION, reasoning_effort="high"
    )
    message = completion.choices[0].message
    assert (message.content, message.model_extra["reasoning_content"]) == (
        "Sunny.",
        "Paris is in France",
    )
    plain = client.chat.completions.create(model=THINKING, messages=QUESTION).choices[0].message
    assert "reasoning_content" not in (plain.model_extra or {})
    assert last_request(THINKING).thinking is None


def test_a_call_cut_by_max_tokens_keeps_its_partial_arguments(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=LONG_CALL, messages=QUESTION, tools=TOOLS, max_completion_tokens=2
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    raw = json.dumps({"city": "Paris, the capital of France"})
    assert choice.message.tool_calls[0].function.arguments == raw[:16]  # two 8-character tokens
    chunks = client.chat.completions.create(
        model=LONG_CALL, messages=QUESTION, tools=TOOLS, max_completion_tokens=2, stream=True
    )
    fragments = [
        call.function.arguments
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or ()
    ]
    assert "".join(fragments) == raw[:16]


@pytest.mark.anyio
async def test_async_client_streams_tool_calls(url: str) -> None:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        async with client.chat.completions.stream(
            model=PARALLEL, messages=QUESTION, tools=TOOLS
        ) as stream:
            completion = await stream.get_final_completion()
    calls = completion.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", CITY),
        ("get_weather", CITY),
    ]


def tool(name: str, parameters: Any = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
ASKED = {"role": "assistant", "content": None, "tool_calls": [CALL]}


def with_arguments(arguments: str) -> dict[str, Any]:
    return {**ASKED, "tool_calls": [{**CALL, "function": {**CALL["function"],
                                                         "arguments": arguments}}]}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name"),
        ({"tools": [tool("twice"), tool("twice")]}, "tools.1.function.name"),
        ({"tools": [tool("list", {"type": "array"})]}, "tools.0.function.parameters"),
        ({"tools": [tool("bad", "not a schema")]}, "tools.0.function.parameters"),
        ({"tools": [tool("has space")]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"tools": [tool(f"t{i}") for i in range(MAX_TOOLS + 1)]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"messages": [*QUESTION, ASKED, {"role": "tool", "tool_call_id": "call_2",
                                          "content": "x"}]}, "messages.2.tool_call_id"),
        ({"messages": [*QUESTION, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
         "messages.1.tool_call_id"),
        ({"messages": [*QUESTION, with_arguments("[1, 2]"), *QUESTION]},
         "messages.1.tool_calls.0.function.arguments"),
        ({"messages": [*QUESTION, with_arguments('{"city": '), *QUESTION]},
         "messages.1.tool_calls.0.function.arguments"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema",
                              "json_schema": {"name": "n", "schema": {"type": "string"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
         "response_format.json_schema.name"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_bad_tool_requests_are_openai_400s_naming_the_parameter(
    client: openai.OpenAI, body: dict[str, Any], param: str, stream: bool
) -> None:
    provider = get_provider(CALLS)
    assert isinstance(provider, ScriptedProvider)
    before = len(provider.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(
            "/chat/completions",
            body={"model": CALLS, "messages": QUESTION, "stream": stream, **body},
            cast_to=openai.types.chat.ChatCompletion,
        )
    error = caught.value
    assert (error.status_code, error.type, error.param) == (400, "invalid_request_error", param)
    assert f"- {param}: " in error.message
    assert len(provider.requests) == before  # nothing reached the model
