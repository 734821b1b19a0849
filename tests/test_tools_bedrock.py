"""Tool use and reasoning on Bedrock Runtime: Converse / ConverseStream judged by boto3 (every
member name checked against botocore's service model as it parses), invoke and
invoke-with-response-stream by ``anthropic.AnthropicBedrock``; scripted provider behind."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import anthropic
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.errors import InvalidRequestError
from streamchat.providers.scripted import JSON_FRAGMENT, ScriptedProvider
from streamchat.request import MAX_SCHEMA_BYTES, MAX_TOOLS
from streamchat.wire.bedrock import build_converse_request

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
THOUGHT = "The user wants Paris weather, so I call the tool."
THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
QUESTION = [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}]
SPEC = {
    "name": "get_weather",
    "description": "The weather in a city",
    "inputSchema": {"json": SCHEMA},
}
TIME_SPEC = {**SPEC, "name": "get_time", "description": "The time in a city"}


def tool_config(choice: dict[str, Any] | None = None, *specs: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"tools": [{"toolSpec": s} for s in specs or (SPEC,)]}
    if choice is not None:
        config["toolChoice"] = choice
    return config


Start = Callable[..., tuple[str, ScriptedProvider]]


@pytest.fixture
def start(scripted_server: Start, sdk_credentials: None) -> Start:
    """``start(**scripted options)`` -> (URL of a server on that script, its provider)."""
    return scripted_server


def tool_spec(**options: object) -> dict[str, object]:
    return {"tool_input": json.dumps(CITY), **options}


def bedrock(url: str) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-west-2",
        config=Config(retries={"total_max_attempts": 1}),
    )


def claude(url: str) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(
        base_url=url, aws_access_key="x", aws_secret_key="y", aws_region="us-west-2", max_retries=0
    )


def stream_events(response: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, body) for event in response["stream"] for kind, body in event.items()]


# -- ConverseStream --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("choice", "name"),
    [({"any": {}}, "get_weather"), ({"tool": {"name": "get_time"}}, "get_time"), (None, None)],
)
def test_converse_stream_streams_a_tool_call(choice, name, start) -> None:
    url, provider = start(**tool_spec())
    config = tool_config(choice, SPEC, TIME_SPEC)
    events = stream_events(
        bedrock(url).converse_stream(modelId="m", messages=QUESTION, toolConfig=config)
    )
    kinds = [kind for kind, _ in events]
    raw = json.dumps(CITY)
    fragments = [raw[i : i + JSON_FRAGMENT] for i in range(0, len(raw), JSON_FRAGMENT)]
    assert kinds == [
        "messageStart",
        "contentBlockStart",
        *["contentBlockDelta"] * len(fragments),
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    start_event = events[1][1]
    assert start_event["contentBlockIndex"] == 0
    tool = start_event["start"]["toolUse"]
    assert tool["name"] == (name or "get_weather")  # auto: the scripted model calls the first
    assert tool["toolUseId"].startswith("toolu_")
    deltas = [
        body["delta"]["toolUse"]["input"] for kind, body in events if kind == "contentBlockDelta"
    ]
    assert deltas == fragments
    assert events[-2][1] == {"stopReason": "tool_use"}
    expected = {"any": "any", "tool": "tool", None: "auto"}[choice and next(iter(choice))]
    assert provider.requests[0].tool_choice.type == expected


def test_converse_stream_streams_reasoning_then_text(start) -> None:
    url, _ = start(text="Sunny in Paris.", thinking=THOUGHT)
    events = stream_events(
        bedrock(url).converse_stream(
            modelId="m",
            messages=QUESTION,
            additionalModelRequestFields=THINKING,
            inferenceConfig={"maxTokens": 2048},
        )
    )
    reasoning = [
        body["delta"]["reasoningContent"]
        for kind, body in events
        if kind == "contentBlockDelta" and "reasoningContent" in body["delta"]
    ]
    assert "".join(r.get("text", "") for r in reasoning) == THOUGHT
    assert reasoning[-1] == {"signature": f"scripted-signature-{len(THOUGHT)}"}
    texts = [
        body["delta"]["text"]
        for kind, body in events
        if kind == "contentBlockDelta" and "text" in body["delta"]
    ]
    assert "".join(texts) == "Sunny in Paris."
    indices = {kind: set() for kind in ("reasoning", "text")}
    for kind, body in events:
        if kind == "contentBlockDelta":
            key = "reasoning" if "reasoningContent" in body["delta"] else "text"
            indices[key].add(body["contentBlockIndex"])
    assert indices == {"reasoning": {0}, "text": {1}}
    assert "contentBlockStart" not in [kind for kind, _ in events]  # only tool calls have one


# -- Converse and the agent loop ---------------------------------------------------------------
def test_converse_agent_loop_with_reasoning_kept_in_history(start) -> None:
    url, provider = start(**tool_spec(thinking=THOUGHT))
    client = bedrock(url)
    config = tool_config({"any": {}})
    extra = {"additionalModelRequestFields": THINKING, "inferenceConfig": {"maxTokens": 2048}}
    first = client.converse(modelId="m", messages=QUESTION, toolConfig=config, **extra)
    assert first["stopReason"] == "tool_use"
    reasoning, call = first["output"]["message"]["content"]
    assert reasoning["reasoningContent"]["reasoningText"] == {
        "text": THOUGHT,
        "signature": f"scripted-signature-{len(THOUGHT)}",
    }
    assert call["toolUse"]["name"] == "get_weather"
    assert call["toolUse"]["input"] == CITY
    tool_use_id = call["toolUse"]["toolUseId"]
    result = {"toolUseId": tool_use_id, "content": [{"json": {"temp": 18}}, {"text": " sunny"}]}
    messages = [
        *QUESTION,
        first["output"]["message"],
        {"role": "user", "content": [{"toolResult": result}]},
    ]
    answer = client.converse(
        modelId="m", messages=messages, toolConfig=tool_config({"auto": {}}), **extra
    )
    assert answer["stopReason"] == "end_turn"
    assert answer["output"]["message"]["content"][-1] == {
        "text": '[turn 2] Tool result: {"temp": 18} sunny'
    }
    history = provider.requests[1].messages
    thinking, replayed = history[1].blocks
    assert (thinking.thinking, thinking.signature) == (
        THOUGHT,
        f"scripted-signature-{len(THOUGHT)}",
    )
    assert (replayed.id, replayed.name, replayed.input) == (tool_use_id, "get_weather", CITY)
    [seen] = history[2].blocks
    assert (seen.tool_use_id, seen.content, seen.is_error) == (
        tool_use_id,
        [{"temp": 18}, " sunny"],
        False,
    )


def test_converse_stream_agent_loop_with_an_error_result(start) -> None:
    url, provider = start(**tool_spec())
    client = bedrock(url)
    config = tool_config({"tool": {"name": "get_weather"}})
    events = stream_events(
        client.converse_stream(modelId="m", messages=QUESTION, toolConfig=config)
    )
    tool = next(body for kind, body in events if kind == "contentBlockStart")["start"]["toolUse"]
    partial = "".join(
        body["delta"]["toolUse"]["input"] for kind, body in events if kind == "contentBlockDelta"
    )
    call = {"toolUse": {**tool, "input": json.loads(partial)}}
    result = {
        "toolResult": {
            "toolUseId": tool["toolUseId"],
            "status": "error",
            "content": [{"text": "city not found"}],
        }
    }
    messages = [
        *QUESTION,
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result, {"text": "try again?"}]},
    ]
    answer = stream_events(
        client.converse_stream(modelId="m", messages=messages, toolConfig=tool_config())
    )
    text = "".join(
        body["delta"].get("text", "") for kind, body in answer if kind == "contentBlockDelta"
    )
    assert text == "[turn 2] Tool result: city not found"
    assert answer[-2][1] == {"stopReason": "end_turn"}
    result_block = provider.requests[1].messages[2].blocks[0]
    assert (result_block.is_error, result_block.text) == (True, "city not found")


def test_converse_output_config_json_schema_reaches_the_provider(start) -> None:
    url, provider = start(text=json.dumps(CITY))
    text_format = {
        "type": "json_schema",
        "structure": {"jsonSchema": {"schema": json.dumps(SCHEMA), "name": "weather"}},
    }
    response = bedrock(url).converse(
        modelId="m", messages=QUESTION, outputConfig={"textFormat": text_format}
    )
    assert json.loads(response["output"]["message"]["content"][0]["text"]) == CITY
    output_format = provider.requests[0].output_format
    assert (output_format.schema, output_format.name) == (SCHEMA, "weather")


# -- invoke: the Anthropic body through AnthropicBedrock --------------------------------------
def test_anthropic_bedrock_streams_a_forced_call_and_thinking(start) -> None:
    url, _ = start(**tool_spec(thinking=THOUGHT))
    tools = [{"name": "get_weather", "input_schema": SCHEMA}]
    with claude(url).messages.stream(
        model="anthropic.claude-sonnet-4-v1:0",
        max_tokens=2048,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    assert [e for e in events if e.type == "input_json"][-1].snapshot == CITY
    assert "".join(e.thinking for e in events if e.type == "thinking") == THOUGHT
    thinking, call = message.content
    assert thinking.signature == f"scripted-signature-{len(THOUGHT)}"
    assert (call.name, call.input) == ("get_weather", CITY)
    assert message.stop_reason == "tool_use"


def test_anthropic_bedrock_agent_loop(start) -> None:
    url, provider = start(**tool_spec())
    client = claude(url)
    tools = [{"name": "get_weather", "input_schema": SCHEMA}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model="m", max_tokens=200, messages=messages, tools=tools)
    [call] = first.content
    messages += [
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C"}],
        },
    ]
    with client.messages.stream(model="m", max_tokens=200, messages=messages, tools=tools) as s:
        text = "".join(s.text_stream)
    assert text == "[turn 2] Tool result: 18 C"
    assert provider.requests[1].messages[2].blocks[0].tool_use_id == call.id


# -- bad input: ValidationException naming the Converse field; nothing reaches the model --------
def _with_result(tool_use_id: str) -> list[dict[str, Any]]:
    call = {"toolUse": {"toolUseId": "toolu_1", "name": "get_weather", "input": CITY}}
    result = {"toolResult": {"toolUseId": tool_use_id, "content": [{"text": "x"}]}}
    return [
        *QUESTION,
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"cachePoint": {"type": "default"}}, result]},
    ]


BAD_CONVERSE: dict[str, tuple[dict[str, Any], str]] = {
    "unknown tool in toolChoice": (
        {"toolConfig": tool_config({"tool": {"name": "get_time"}})},
        "toolConfig.toolChoice.tool.name: no tool named 'get_time'",
    ),
    "duplicate tool names": (
        {"toolConfig": tool_config(None, SPEC, SPEC)},
        "toolConfig.tools.1.toolSpec.name: duplicate",
    ),
    "non-object schema": (
        {"toolConfig": tool_config(None, {**SPEC, "inputSchema": {"json": {"type": "string"}}})},
        "toolConfig.tools.0.toolSpec.inputSchema.json: must be a JSON Schema of type 'object'",
    ),
    "result for no call (index past a cache point)": (
        {"messages": _with_result("toolu_2"), "toolConfig": tool_config()},
        "messages.2.content.1.toolResult.toolUseId: 'toolu_2' matches no tool_use",
    ),
    "too many tools": (
        {
            "toolConfig": tool_config(
                None, *({**SPEC, "name": f"t{i}"} for i in range(MAX_TOOLS + 1))
            )
        },
        f"toolConfig.tools: at most {MAX_TOOLS} tools",
    ),
    "oversized schema": (
        {
            "toolConfig": tool_config(
                None,
                {
                    **SPEC,
                    "inputSchema": {"json": {**SCHEMA, "description": "x" * MAX_SCHEMA_BYTES}},
                },
            )
        },
        "toolConfig.tools.0.toolSpec.inputSchema.json: the schema is",
    ),
    "image of an unknown format": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"image": {"format": "tiff", "source": {"bytes": b"x"}}}],
                }
            ]
        },
        "messages.0.content.0.image.format: must be one of png, jpeg, gif, webp",
    ),
    "unknown block": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"audio": {"format": "mp3", "source": {"bytes": b"x"}}}],
                }
            ]
        },
        "messages.0.content.0: content blocks of type audio are not supported",
    ),
    "bad image in a tool result": (
        {
            "messages": [
                *_with_result("toolu_1")[:2],
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "toolu_1",
                                "content": [
                                    {"image": {"format": "tiff", "source": {"bytes": b"x"}}}
                                ],
                            }
                        }
                    ],
                },
            ],
            "toolConfig": tool_config(),
        },
        "messages.2.content.0.toolResult.content.0.image.format: must be one of",
    ),
    "toolUse in a user turn": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"toolUse": {"toolUseId": "t", "name": "get_weather", "input": {}}}
                    ],
                }
            ]
        },
        "messages.0.content.0: toolUse blocks belong in assistant messages",
    ),
    "tool input not an object": (
        {
            "messages": [
                *QUESTION,
                {
                    "role": "assistant",
                    "content": [
                        {"toolUse": {"toolUseId": "t", "name": "get_weather", "input": [1]}}
                    ],
                },
                {"role": "user", "content": [{"text": "go on"}]},
            ]
        },
        "messages.1.content.0.toolUse.input: expected an object",
    ),
    "thinking budget": (
        {"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 5}}},
        "additionalModelRequestFields.thinking.budget_tokens: must be at least 1024",
    ),
    "output schema not JSON": (
        {
            "outputConfig": {
                "textFormat": {
                    "type": "json_schema",
                    "structure": {"jsonSchema": {"schema": "{nope"}},
                }
            }
        },
        "outputConfig.textFormat.structure.jsonSchema.schema: expected a JSON text",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONVERSE))
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_bad_tool_input_is_a_validation_exception_naming_the_field(case, operation, start) -> None:
    url, provider = start(**tool_spec())
    change, message = BAD_CONVERSE[case]
    kwargs = {"modelId": "m", "messages": QUESTION, **change}
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        getattr(bedrock(url), operation)(**kwargs)
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message in error["Message"]
    assert provider.requests == []


def test_bad_tool_input_on_invoke_is_a_validation_exception(start) -> None:
    url, provider = start(**tool_spec())
    weather = {"name": "get_weather", "input_schema": SCHEMA}
    with pytest.raises(anthropic.BadRequestError, match=r"tools\.1\.name: duplicate"):
        claude(url).messages.create(
            model="m",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            tools=[weather, weather],
        )
    assert provider.requests == []


# -- any Converse body with tools: a request or a ValidationException naming a Converse field ----
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_ids = st.sampled_from(["toolu_1", "toolu_2"]) | _values
_blocks = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=8) | _values}),
    st.fixed_dictionaries(
        {
            "toolUse": st.fixed_dictionaries(
                {},
                optional={
                    "toolUseId": _ids,
                    "name": st.just("get_weather") | _values,
                    "input": st.just(CITY) | _values,
                },
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "toolResult": st.fixed_dictionaries(
                {},
                optional={
                    "toolUseId": _ids,
                    "status": st.sampled_from(["success", "error"]) | _values,
                    "content": st.lists(
                        st.fixed_dictionaries({"text": _values})
                        | st.fixed_dictionaries({"json": _values})
                        | _values,
                        max_size=2,
                    )
                    | _values,
                },
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "reasoningContent": st.fixed_dictionaries(
                {},
                optional={
                    "reasoningText": st.fixed_dictionaries(
                        {}, optional={"text": st.text(max_size=8) | _values, "signature": _values}
                    )
                    | _values
                },
            )
        }
    ),
    st.just({"cachePoint": {"type": "default"}}),
    _values,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant"]),
            "content": st.lists(_blocks, min_size=1, max_size=3),
        }
    ),
    min_size=1,
    max_size=4,
)
_specs = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["get_weather", "get_time", "bad name"]) | _values,
        "description": st.text(max_size=5) | _values,
        "inputSchema": st.fixed_dictionaries({"json": st.just(SCHEMA) | _values}) | _values,
    },
)
_tool_configs = st.fixed_dictionaries(
    {
        "tools": st.lists(
            st.fixed_dictionaries({"toolSpec": _specs})
            | st.just({"cachePoint": {"type": "default"}})
            | _values,
            max_size=3,
        )
    },
    optional={
        "toolChoice": st.sampled_from([{"auto": {}}, {"any": {}}])
        | st.fixed_dictionaries({"tool": st.fixed_dictionaries({"name": _values})})
        | _values
    },
)
_FIELD = re.compile(r"^(request body|[A-Za-z_][\w.]*): \S")
_CANONICAL = re.compile(  # canonical (Anthropic-shaped) names that must not reach Converse users
    r"^(tools|tool_choice|thinking|output_format)\b"
    r"|^messages\.\d+\.content\.\d+\.(tool_use_id|input|id|name|content|thinking|is_error)\b"
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"messages": _messages},
        optional={
            "toolConfig": _tool_configs | _values,
            "additionalModelRequestFields": st.fixed_dictionaries(
                {"thinking": st.just(THINKING["thinking"]) | _values}
            ),
        },
    )
)
def test_any_converse_tool_body_is_a_request_or_names_a_converse_field(body) -> None:
    try:
        build_converse_request(body, model="m", max_tokens_limit=4096)
    except InvalidRequestError as error:
        assert _FIELD.match(error.message), error.message
        field = error.message.partition(":")[0]
        assert not _CANONICAL.search(field), error.message  # no canonical name leaks


def test_max_tokens_cutting_a_call_keeps_the_partial_input(start) -> None:
    """As the API reports it: stopReason max_tokens and the members complete so far."""
    url, _ = start(**tool_spec())
    response = bedrock(url).converse(
        modelId="m",
        messages=QUESTION,
        toolConfig=tool_config({"any": {}}),
        inferenceConfig={"maxTokens": 2},  # two 8-character fragments: '{"city": "Paris"'
    )
    assert response["stopReason"] == "max_tokens"
    [call] = response["output"]["message"]["content"]
    assert call["toolUse"]["input"] == {"city": "Paris"}
