"""The remote ``anthropic/`` and ``bedrock/`` providers relay tools and thinking both ways.

official client → streamchat B (a ``streamchat serve`` subprocess whose provider is the anthropic
SDK or boto3 ``converse_stream``) → streamchat A (in this process, scripted tool calls and
thinking). A's tool-use ids are made recognisable here, so the client can tell that B relayed
them rather than minting its own; fragments, names, inputs, thinking text and signatures must
arrive as A sent them, and what the client sends back must reach A intact.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import boto3
import pydantic
import pytest
from botocore.config import Config

import streamchat.providers.base
from streamchat.providers.scripted import JSON_FRAGMENT
from test_remote_providers import gateway, upstream

PROVIDERS = ["anthropic", "bedrock"]
CITY = {"city": "Paris", "days": 3, "units": ["C", "F"]}
RAW = json.dumps(CITY)
FRAGMENTS = [RAW[i : i + JSON_FRAGMENT] for i in range(0, len(RAW), JSON_FRAGMENT)]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
WEATHER = {"name": "get_weather", "description": "The weather in a city", "input_schema": SCHEMA}
TIME = {"name": "get_time", "description": "The time in a city", "input_schema": SCHEMA}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
THOUGHT = "Paris is in France; the tool knows its weather."
SIGNATURE = f"scripted-signature-{len(THOUGHT)}"


@pytest.fixture(autouse=True)
def _setup(sdk_credentials: None, fresh_providers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for every SDK, and A's tool-use ids marked as A's."""
    numbers = itertools.count(1)
    monkeypatch.setattr(
        streamchat.providers.base, "new_tool_use_id", lambda: f"toolu_A{next(numbers)}"
    )


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)


def a_spec(provider: str, test: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"tool_input": RAW, **options}.items())
    return f"scripted?{query}&tag={test}-{provider}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_parallel_calls_stream_through_fragment_by_fragment(provider, monkeypatch) -> None:
    server_a, scripted = upstream(a_spec(provider, "parallel", calls="2"))
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        with client(b.url).messages.stream(
            model="m",
            max_tokens=300,
            messages=QUESTION,
            tools=[WEATHER, TIME],
            tool_choice={"type": "tool", "name": "get_time"},
        ) as stream:
            events = list(stream)
            message = stream.get_final_message()
    for index in (0, 1):
        parts = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.index == index
        ]
        assert parts == FRAGMENTS  # relayed as they came, not re-chunked or buffered
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [
        ("tool_use", "toolu_A1", "get_time", CITY),
        ("tool_use", "toolu_A2", "get_time", CITY),
    ]
    assert message.stop_reason == "tool_use"
    [seen] = scripted.requests
    assert (seen.tool_choice.type, seen.tool_choice.name) == ("tool", "get_time")
    assert [(t.name, t.description, t.input_schema) for t in seen.tools] == [
        ("get_weather", "The weather in a city", SCHEMA),
        ("get_time", "The time in a city", SCHEMA),
    ]


def test_disable_parallel_tool_use_reaches_the_anthropic_upstream(monkeypatch) -> None:
    server_a, scripted = upstream(a_spec("anthropic", "serial", calls="3"))
    with server_a as a_url, gateway("anthropic", a_url, monkeypatch) as b:
        message = client(b.url).messages.create(
            model="m",
            max_tokens=300,
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
        )
    assert [b.id for b in message.content] == ["toolu_A1"]
    assert scripted.requests[0].tool_choice.disable_parallel_tool_use is True


@pytest.mark.parametrize("provider", PROVIDERS)
def test_thinking_loop_keeps_signatures_upstream(provider, monkeypatch) -> None:
    server_a, scripted = upstream(a_spec(provider, "think", thinking=THOUGHT))
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        sdk = client(b.url)
        with sdk.messages.stream(
            model="m", max_tokens=2048, messages=QUESTION, tools=[WEATHER], thinking=thinking
        ) as stream:
            events = list(stream)
            first = stream.get_final_message()
        thought, call = first.content
        messages: list[Any] = [
            *QUESTION,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C"}],
            },
        ]
        answer = sdk.messages.create(
            model="m", max_tokens=2048, messages=messages, tools=[WEATHER], thinking=thinking
        )
    assert [e.thinking for e in events if e.type == "thinking"] == [
        " " * (i > 0) + word for i, word in enumerate(THOUGHT.split())
    ]
    assert (thought.thinking, thought.signature) == (THOUGHT, SIGNATURE)
    assert (call.id, call.input) == ("toolu_A1", CITY)
    assert [b.type for b in answer.content] == ["thinking", "text"]
    assert answer.content[1].text == "[turn 2] Tool result: 18 C"
    first_seen, second_seen = scripted.requests
    assert (first_seen.thinking.type, first_seen.thinking.budget_tokens) == ("enabled", 1024)
    replayed_thought, replayed_call = second_seen.messages[1].blocks
    assert (replayed_thought.thinking, replayed_thought.signature) == (THOUGHT, SIGNATURE)
    assert (replayed_call.id, replayed_call.name, replayed_call.input) == (
        "toolu_A1",
        "get_weather",
        CITY,
    )
    assert second_seen.messages[2].blocks[0].tool_use_id == "toolu_A1"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_converse_stream_client_through_each_provider(provider, monkeypatch) -> None:
    server_a, scripted = upstream(a_spec(provider, "converse"))
    spec = {"toolSpec": {"name": "get_weather", "inputSchema": {"json": SCHEMA}}}
    tool_config = {"tools": [spec], "toolChoice": {"any": {}}}
    question = [{"role": "user", "content": [{"text": "Weather in Paris?"}]}]
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        bedrock = boto3.client(
            "bedrock-runtime",
            endpoint_url=b.url,
            region_name="us-west-2",
            config=Config(retries={"total_max_attempts": 1}),
        )
        response = bedrock.converse_stream(modelId="m", messages=question, toolConfig=tool_config)
        events = [(kind, body) for event in response["stream"] for kind, body in event.items()]
        [tool] = [body["start"]["toolUse"] for kind, body in events if kind == "contentBlockStart"]
        fragments = [
            body["delta"]["toolUse"]["input"]
            for kind, body in events
            if kind == "contentBlockDelta"
        ]
        result = {
            "toolUseId": tool["toolUseId"],
            "status": "error",
            "content": [{"json": {"error": "rate limited"}}],
        }
        messages = [
            *question,
            {"role": "assistant", "content": [{"toolUse": {**tool, "input": CITY}}]},
            {"role": "user", "content": [{"toolResult": result}]},
        ]
        answer = bedrock.converse(modelId="m", messages=messages, toolConfig=tool_config)
    assert tool == {"toolUseId": "toolu_A1", "name": "get_weather"}
    assert fragments == FRAGMENTS
    assert [body for kind, body in events if kind == "messageStop"] == [{"stopReason": "tool_use"}]
    expected = '{"error": "rate limited"}'
    assert answer["output"]["message"]["content"] == [{"text": f"[turn 2] Tool result: {expected}"}]
    seen = scripted.requests[1].messages[2].blocks[0]
    assert (seen.tool_use_id, seen.is_error, seen.text) == ("toolu_A1", True, expected)


class Weather(pydantic.BaseModel):
    city: str
    days: int


@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_output_request_reaches_the_upstream(provider, monkeypatch) -> None:
    server_a, scripted = upstream(f"scripted?text={json.dumps(CITY)}&tag=json-{provider}")
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        message = client(b.url).messages.parse(
            model="m", max_tokens=100, messages=QUESTION, output_format=Weather
        )
    assert message.parsed_output == Weather(city="Paris", days=3)
    schema = scripted.requests[0].output_format.schema
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"city", "days"}
    assert set(schema["required"]) == {"city", "days"}


def test_count_tokens_asks_the_anthropic_upstream(monkeypatch) -> None:
    """B's anthropic/ provider counts exactly by asking A (which counts the words of the
    messages), not by estimating (which would count the tools' schemas as well)."""
    server_a, _ = upstream(a_spec("anthropic", "count"))
    with server_a as a_url, gateway("anthropic", a_url, monkeypatch) as b:
        sdk = client(b.url)
        count = sdk.messages.count_tokens(
            model="m", messages=QUESTION, tools=[WEATHER, TIME], system="be brief"
        )
        with pytest.raises(anthropic.BadRequestError, match=r"tool_choice\.name"):
            sdk.messages.count_tokens(
                model="m",
                messages=QUESTION,
                tools=[WEATHER],
                tool_choice={"type": "tool", "name": "nope"},
            )
    assert count.input_tokens == len(QUESTION[0]["content"].split())
