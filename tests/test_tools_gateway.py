"""Agent loops across two servers, for every pair of client protocol and upstream provider.

official client (Anthropic, Bedrock Converse, OpenAI) → streamchat B (``anthropic/``,
``bedrock/`` or ``openai/`` provider) → streamchat A (scripted tool calls and thinking). The tool
call's id, name and input must arrive intact, and the tool result sent back with that id must
reach A (which refuses a result whose id matches no call) and come back as its answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config

from test_remote_providers import gateway, upstream

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
QUESTION = "What is the weather in Paris?"
RESULT = "18 C and sunny"
ANSWER = f"[turn 2] Tool result: {RESULT}"


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Dummy credentials for every SDK (B signs its upstream calls too)."""


def anthropic_loop(url: str) -> tuple[list[tuple[str, str, Any]], str]:
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with client.messages.stream(
        model="m", max_tokens=200, messages=messages, tools=tools, tool_choice={"type": "any"}
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    calls = [(b.id, b.name, b.input) for b in first.content if b.type == "tool_use"]
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": calls[0][0], "content": RESULT}],
        },
    ]
    answer = client.messages.create(model="m", max_tokens=200, messages=messages, tools=tools)
    return calls, answer.content[0].text


def bedrock_loop(url: str) -> tuple[list[tuple[str, str, Any]], str]:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-west-2",
        config=Config(retries={"max_attempts": 1}),
    )
    tool_config = {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather",
                    "inputSchema": {"json": SCHEMA},
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    messages: list[Any] = [{"role": "user", "content": [{"text": QUESTION}]}]
    first = client.converse(modelId="m", messages=messages, toolConfig=tool_config)
    assert first["stopReason"] == "tool_use"
    content = first["output"]["message"]["content"]
    calls = [
        (b["toolUse"]["toolUseId"], b["toolUse"]["name"], b["toolUse"]["input"])
        for b in content
        if "toolUse" in b
    ]
    result = {"toolResult": {"toolUseId": calls[0][0], "content": [{"text": RESULT}]}}
    messages += [{"role": "assistant", "content": content}, {"role": "user", "content": [result]}]
    tool_config["toolChoice"] = {"auto": {}}
    answer = client.converse(modelId="m", messages=messages, toolConfig=tool_config)
    return calls, answer["output"]["message"]["content"][0]["text"]


def openai_loop(url: str) -> tuple[list[tuple[str, str, Any]], str]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(
        model="m", messages=messages, tools=tools, tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments))
        for c in choice.message.tool_calls or []
    ]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0][0], "content": RESULT},
    ]
    answer = client.chat.completions.create(model="m", messages=messages, tools=tools)
    return calls, answer.choices[0].message.content or ""


LOOPS: dict[str, Callable[[str], tuple[list[tuple[str, str, Any]], str]]] = {
    "anthropic": anthropic_loop,
    "bedrock": bedrock_loop,
    "openai": openai_loop,
}


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "openai"])
@pytest.mark.parametrize("client", list(LOOPS))
def test_an_agent_loop_crosses_the_gateway_intact(client, provider, monkeypatch, fresh_providers):
    spec = f"scripted?tool_input={json.dumps(CITY)}&tag=gw-{client}-{provider}"
    server_a, scripted = upstream(spec)
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        calls, answer = LOOPS[client](b.url)
    assert [(name, arguments) for _, name, arguments in calls] == [("get_weather", CITY)]
    assert calls[0][0]  # an id, carried back to A with the result
    assert answer == ANSWER
    first, second = scripted.requests
    assert [t.name for t in first.tools] == ["get_weather"]
    assert first.tools[0].input_schema["properties"] == SCHEMA["properties"]
    call = second.messages[1].blocks[-1]
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", CITY)
    result = second.messages[2].blocks[0]
    assert (result.type, result.tool_use_id, result.text) == ("tool_result", call.id, RESULT)


@pytest.mark.parametrize("provider", ["anthropic", "bedrock"])
def test_thinking_and_its_signature_cross_the_gateway(provider, monkeypatch, fresh_providers):
    server_a, _ = upstream(f"scripted?text=Sunny.&thinking=Paris is in France&tag=th-{provider}")
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        client = anthropic.Anthropic(base_url=b.url, api_key="x", max_retries=0)
        with client.messages.stream(
            model="m",
            max_tokens=2048,
            messages=[{"role": "user", "content": QUESTION}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as stream:
            message = stream.get_final_message()
    thinking, text = message.content
    assert (thinking.type, thinking.thinking) == ("thinking", "Paris is in France")
    assert thinking.signature == "scripted-signature-18"
    assert (text.type, text.text) == ("text", "Sunny.")
