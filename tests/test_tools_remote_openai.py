"""The ``openai/`` provider with tools, JSON output and reasoning, end to end across two servers.

official client (openai, anthropic) → streamchat B (``openai/upstream-model``, a real ``serve``
subprocess) → streamchat A (the scripted provider in this process, whose tool-use ids carry this
process's prefix, so an id that B made up instead of relaying would show). A last upstream is a
bare OpenAI-compatible server sending what vLLM-style servers do and streamchat never does:
calls interleaved by index, an id before its name, reasoning, ``finish_reason: "stop"`` after
calls.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import anthropic
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from serving import HOST, free_port, wait_healthy
from streamchat.providers import base
from test_remote_providers import gateway, upstream

CITY = {"city": "Paris", "days": 3}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "Now"}},
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
A_IDS = "toolu_" + base._PREFIX  # what A's scripted provider names its calls


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Dummy credentials for every SDK."""


def spec(tag: str, **options: object) -> str:
    return "scripted?" + urlencode({**options, "tag": f"remote-openai-{tag}"})


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def test_parallel_calls_stream_through_and_their_results_come_back(monkeypatch, fresh_providers):
    server_a, scripted = upstream(spec("loop", tool_input=json.dumps(CITY), calls=2))
    with server_a as a_url, gateway("openai", a_url, monkeypatch) as b:
        client = openai_client(b.url)
        chunks = list(
            client.chat.completions.create(
                model="m", messages=QUESTION, tools=TOOLS, tool_choice="required", stream=True
            )
        )
        entries = [
            call
            for chunk in chunks
            if chunk.choices
            for call in chunk.choices[0].delta.tool_calls or ()
        ]
        opened = [(e.index, e.id, e.function.name) for e in entries if e.id]
        assert [(index, name) for index, _, name in opened] == [
            (0, "get_weather"),
            (1, "get_weather"),
        ]
        ids = [call_id for _, call_id, _ in opened]
        assert all(call_id.startswith(A_IDS) for call_id in ids) and len(set(ids)) == 2
        for number in (0, 1):
            fragments = [e.function.arguments for e in entries if e.index == number and not e.id]
            assert len(fragments) > 1  # relayed fragment by fragment, not gathered
            assert json.loads("".join(fragments)) == CITY
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

        messages: list[Any] = [
            *QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": i,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps(CITY)},
                    }
                    for i in ids
                ],
            },
            {"role": "tool", "tool_call_id": ids[0], "content": "18 C"},
            {"role": "tool", "tool_call_id": ids[1], "content": "sunny"},
        ]
        answer = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert answer.choices[0].message.content == "[turn 2] Tool result: 18 C sunny"
    first, second = scripted.requests
    assert first.tool_choice.type == "any"
    assert [t.name for t in first.tools] == ["get_weather", "get_time"]
    assert first.tools[1].description == "Now"
    assert [(b.id, b.input) for b in second.messages[1].blocks] == [(i, CITY) for i in ids]
    assert [(b.tool_use_id, b.text) for b in second.messages[2].blocks] == [
        (ids[0], "18 C"),
        (ids[1], "sunny"),
    ]


def test_choices_json_output_and_reasoning_reach_the_upstream(monkeypatch, fresh_providers):
    server_a, scripted = upstream(
        spec("options", text='{"ok": true}', thinking="Think first", tool_input=json.dumps(CITY))
    )
    with server_a as a_url, gateway("openai", a_url, monkeypatch) as b:
        client = openai_client(b.url)
        named = client.chat.completions.create(
            model="m",
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            parallel_tool_calls=False,
        )
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        answer = client.chat.completions.create(
            model="m",
            messages=QUESTION,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Ok", "schema": schema},
            },
            reasoning_effort="low",
        )
    [call] = named.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", CITY)
    choice = scripted.requests[0].tool_choice
    assert (choice.type, choice.name, choice.disable_parallel_tool_use) == (
        "tool",
        "get_time",
        True,
    )
    message = answer.choices[0].message
    assert json.loads(message.content) == {"ok": True}
    assert message.model_extra["reasoning_content"] == "Think first"
    output = scripted.requests[1].output_format
    assert (output.name, output.schema) == ("Ok", schema)
    assert scripted.requests[1].thinking is not None


def test_anthropic_client_through_an_openai_upstream(monkeypatch, fresh_providers):
    """Anthropic tools and thinking in, OpenAI on the hop between the servers, Anthropic out."""
    server_a, scripted = upstream(
        spec("anthropic", tool_input=json.dumps(CITY), calls=2, thinking="Weather needs a tool")
    )
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
    with server_a as a_url, gateway("openai", a_url, monkeypatch) as b:
        client = anthropic.Anthropic(base_url=b.url, api_key="x", max_retries=0)
        with client.messages.stream(
            model="m",
            max_tokens=2048,
            messages=QUESTION,
            tools=tools,
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as stream:
            kinds = {event.type for event in stream}
            first = stream.get_final_message()
        thinking, *calls = first.content
        results = [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": "18 C"},
            {"type": "tool_result", "tool_use_id": calls[1].id, "content": "no", "is_error": True},
        ]
        answer = client.messages.create(
            model="m",
            max_tokens=200,
            tools=tools,
            messages=[
                *QUESTION,
                {"role": "assistant", "content": [c.model_dump(exclude_none=True) for c in calls]},
                {"role": "user", "content": results},
            ],
        )
    assert {"input_json", "thinking"} <= kinds
    assert (thinking.type, thinking.thinking) == ("thinking", "Weather needs a tool")
    assert first.stop_reason == "tool_use"
    assert [(c.type, c.name, c.input) for c in calls] == [("tool_use", "get_weather", CITY)] * 2
    assert all(c.id.startswith(A_IDS) for c in calls)
    assert answer.content[0].text == "[turn 2] Tool result: 18 C no"
    sent = scripted.requests[0]
    assert (sent.tools[0].name, sent.tools[0].input_schema) == ("get_weather", SCHEMA)
    assert sent.thinking is not None


def test_a_call_cut_by_max_tokens_arrives_partial(monkeypatch, fresh_providers):
    long_input = {"city": "Paris, the capital of France"}
    server_a, _ = upstream(spec("cut", tool_input=json.dumps(long_input)))
    with server_a as a_url, gateway("openai", a_url, monkeypatch) as b:
        completion = openai_client(b.url).chat.completions.create(
            model="m", messages=QUESTION, tools=TOOLS, max_completion_tokens=2
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.tool_calls[0].function.arguments == json.dumps(long_input)[:16]


# A bare upstream: what other OpenAI-compatible servers stream, chunk by chunk.


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0,
            "model": "up", "choices": [choice]}  # fmt: skip


def call(index: int, **fields: Any) -> dict[str, Any]:
    function = {k: fields.pop(k) for k in ("name", "arguments") if k in fields}
    return {
        "tool_calls": [{"index": index, **fields, **({"function": function} if function else {})}]
    }


INTERLEAVED = [
    chunk({"role": "assistant", "content": None}),
    chunk({"reasoning_content": "Two cities, "}),
    chunk({"reasoning_content": "two calls."}),
    chunk(call(0, id="call_a", type="function", name="get_weather", arguments="")),
    chunk(call(1, id="call_b", type="function")),  # the id first, the name later
    chunk(call(0, arguments='{"city": ')),
    chunk(call(1, name="get_time", arguments='{"zone"')),
    chunk(call(0, arguments='"Paris"}')),
    chunk(call(1, arguments=': "CET"}')),
    chunk({}, "stop"),  # some servers say "stop" after tool calls
    {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0, "model": "up",
     "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}},
]  # fmt: skip


@contextlib.contextmanager
def bare_upstream(chunks: list[dict[str, Any]], seen: list[dict[str, Any]]) -> Iterator[str]:
    async def completions(request: Request) -> Response:
        seen.append(await request.json())
        lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="bare-upstream", daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, thread.is_alive, 30)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_interleaved_upstream_calls_become_canonical_blocks_as_they_arrive(monkeypatch):
    seen: list[dict[str, Any]] = []
    with bare_upstream(INTERLEAVED, seen) as up_url, gateway("openai", up_url, monkeypatch) as b:
        client = anthropic.Anthropic(base_url=b.url, api_key="x", max_retries=0)
        tools = [
            {"name": "get_weather", "input_schema": SCHEMA},
            {"name": "get_time", "input_schema": {"type": "object"}},
        ]
        with client.messages.stream(
            model="m", max_tokens=100, messages=QUESTION, tools=tools, tool_choice={"type": "any"}
        ) as stream:
            order = [
                (e.delta.type if e.type == "content_block_delta" else e.type, e.index)
                for e in stream
                if e.type.startswith("content_block_")
            ]
            message = stream.get_final_message()
        chat = openai_client(b.url).chat.completions.create(
            model="m", messages=QUESTION, tools=TOOLS
        )
    thinking, weather, clock = message.content
    assert thinking.thinking == "Two cities, two calls."
    assert (weather.id, weather.name, weather.input) == ("call_a", "get_weather", {"city": "Paris"})
    assert (clock.id, clock.name, clock.input) == ("call_b", "get_time", {"zone": "CET"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 9)
    # fragments are relayed in arrival order, interleaved, before either call closes
    deltas = [index for kind, index in order if kind == "input_json_delta"]
    assert deltas == [1, 2, 1, 2]
    assert order.index(("content_block_stop", 1)) > order.index(("input_json_delta", 2))
    [upstream_request, _] = seen
    assert upstream_request["tool_choice"] == "required"
    assert [t["function"]["name"] for t in upstream_request["tools"]] == ["get_weather", "get_time"]
    calls = chat.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"zone": "CET"}),
    ]
    assert chat.choices[0].finish_reason == "tool_calls"
    assert chat.choices[0].message.model_extra["reasoning_content"] == "Two cities, two calls."
