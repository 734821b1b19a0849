"""The embedded model calls tools through ``streamchat serve`` (its default), judged by the official
clients: anthropic (sync and async), AnthropicBedrock, boto3 Converse/ConverseStream and openai.
Forced calls are grammar-constrained, so every input validates (jsonschema is the judge); a tool
result sent back reaches the prompt and gets a text answer.

What the model chooses (which city, how many calls, its words) is never asserted: ``max_tokens``
is the grammar's bound (``embedded_model.forced_budget``), so every call certainly closes, and an
answer to a tool result is text by construction (its first token is under a grammar that refuses
a space or a call's ``<``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import jsonschema
import openai
import pytest
from botocore.config import Config

from embedded_model import call_budget, check_limit, forced_budget
from serving import Server, serve

pytestmark = pytest.mark.model

MODEL = "claude-sonnet-4-5"  # any name: the server's default model (SmolLM2) answers
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
}
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": SCHEMA,
}
ASK = "What's the weather in Paris?"
RESULT = "18 degrees Celsius and sunny"
GREEDY = {"temperature": 0}  # the current anthropic SDK takes it only as an extra
ONE_CALL = forced_budget([WEATHER])  # max_tokens under which a forced call certainly closes
CALLS = forced_budget([WEATHER], parallel=True)  # ... and every parallel one


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve() as running:  # no --model: the embedded default
        yield running


def messages_client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)


def answer_turns(call: Any, result: str = RESULT) -> list[dict[str, Any]]:
    """The Anthropic history after ``call``: the call, then its result."""
    return [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}],
        },
    ]


def test_anthropic_stream_forced_tool_then_the_result_is_answered(server: Server) -> None:
    client = messages_client(server)
    with client.messages.stream(
        model=MODEL,
        max_tokens=ONE_CALL,
        messages=[{"role": "user", "content": ASK}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the SDK's own helper events for the fragments
    assert final.stop_reason == "tool_use"
    (call,) = final.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, SCHEMA)
    answer = client.messages.create(
        model=MODEL,
        max_tokens=40,
        messages=answer_turns(call),
        tools=[WEATHER],
        extra_body=GREEDY,
    )
    assert [block.type for block in answer.content] == ["text"]
    assert answer.content[0].text[:1].strip() and answer.content[0].text[0] != "<"
    assert answer.stop_reason in ("end_turn", "max_tokens")
    check_limit(answer.stop_reason, answer.usage.output_tokens, 40)

    # the result reached the prompt: it is what the server counted, and a longer one counts more
    def count(result: str) -> int:
        turns = answer_turns(call, result)
        return client.messages.count_tokens(
            model=MODEL, messages=turns, tools=[WEATHER]
        ).input_tokens

    usage = answer.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == count(RESULT)
    assert count(RESULT + " with a light breeze from the west") > count(RESULT)


@pytest.mark.anyio
async def test_async_anthropic_forced_call_validates(server: Server) -> None:
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)
    async with client.messages.stream(
        model=MODEL,
        max_tokens=CALLS,
        messages=[{"role": "user", "content": "Weather in Tokyo for 3 days, in fahrenheit?"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    for block in final.content:
        assert block.type == "tool_use"
        jsonschema.validate(block.input, SCHEMA)


def test_anthropic_bedrock_forced_call_validates(server: Server, sdk_credentials: None) -> None:
    client = anthropic.AnthropicBedrock(
        base_url=server.url,
        aws_access_key="x",
        aws_secret_key="y",
        aws_region="us-west-2",
        max_retries=0,
        timeout=120,
    )
    message = client.messages.create(
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
        max_tokens=ONE_CALL,
        messages=[{"role": "user", "content": ASK}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    )
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    jsonschema.validate(call.input, SCHEMA)


def bedrock(server: Server) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=server.url,
        region_name="us-west-2",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


def tool_config(choice: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "name": "get_weather",
        "description": "Get the weather",
        "inputSchema": {"json": SCHEMA},
    }
    return {"tools": [{"toolSpec": spec}], "toolChoice": choice}


CONVERSE_ASK = [{"role": "user", "content": [{"text": ASK}]}]


def test_converse_stream_forced_then_converse_answers_the_tool_result(
    server: Server, sdk_credentials: None
) -> None:
    client = bedrock(server)
    response = client.converse_stream(
        modelId="m",
        messages=CONVERSE_ASK,
        toolConfig=tool_config({"any": {}}),
        inferenceConfig={"maxTokens": CALLS, "temperature": 0},
    )
    events = [(kind, body) for event in response["stream"] for kind, body in event.items()]
    starts = [body["start"]["toolUse"] for kind, body in events if kind == "contentBlockStart"]
    assert len(starts) >= 1 and starts[0]["name"] == "get_weather"
    first = [
        body["delta"]["toolUse"]["input"]
        for kind, body in events
        if kind == "contentBlockDelta" and body["contentBlockIndex"] == 0
    ]
    assert len(first) > 1  # streamed in fragments
    tool_input = json.loads("".join(first))
    jsonschema.validate(tool_input, SCHEMA)
    assert [body["stopReason"] for kind, body in events if kind == "messageStop"] == ["tool_use"]
    use = {"toolUseId": starts[0]["toolUseId"], "name": "get_weather", "input": tool_input}
    answer = client.converse(
        modelId="m",
        messages=[
            *CONVERSE_ASK,
            {"role": "assistant", "content": [{"toolUse": use}]},
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": RESULT}]}}
                ],
            },
        ],
        toolConfig=tool_config({"auto": {}}),
        inferenceConfig={"maxTokens": 40, "temperature": 0},
    )
    content = answer["output"]["message"]["content"]
    assert [list(block) for block in content] == [["text"]]
    assert content[0]["text"][:1].strip() and content[0]["text"][0] != "<"
    assert answer["stopReason"] in ("end_turn", "max_tokens")
    check_limit(answer["stopReason"], answer["usage"]["outputTokens"], 40)


@pytest.mark.parametrize("choice", [{"auto": {}}, {"tool": {"name": "get_weather"}}])
def test_converse_gives_text_or_a_valid_call(
    server: Server, sdk_credentials: None, choice: dict[str, Any]
) -> None:
    """``auto``: text or calls as the model chooses (its text may run to the limit, cutting a
    call); ``tool``: calls, all closed within the grammar's budget."""
    limit = CALLS if "tool" in choice else 60
    answer = bedrock(server).converse(
        modelId="m",
        messages=CONVERSE_ASK,
        toolConfig=tool_config(choice),
        inferenceConfig={"maxTokens": limit, "temperature": 0},
    )
    content = answer["output"]["message"]["content"]
    uses = [block["toolUse"] for block in content if "toolUse" in block]
    stop = answer["stopReason"]
    check_limit(stop, answer["usage"]["outputTokens"], limit)
    closed = uses[:-1] if stop == "max_tokens" else uses  # the last one may be cut
    for use in closed:
        jsonschema.validate(use["input"], SCHEMA)
    if "tool" in choice:
        assert uses and stop == "tool_use"
    else:
        assert stop in (("tool_use", "max_tokens") if uses else ("end_turn", "max_tokens"))


def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


FUNCTION = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Get the weather", "parameters": SCHEMA},
}


def test_openai_streamed_required_call_then_the_tool_message_is_answered(server: Server) -> None:
    client = openai_client(server)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": ASK}],
            tools=[FUNCTION],
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=ONE_CALL,
            temperature=0,
            stream=True,
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [call for delta in deltas for call in delta.tool_calls or []]
    assert calls[0].id and calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls)
    assert len([call for call in calls if call.function.arguments]) > 1  # fragments
    jsonschema.validate(json.loads(arguments), SCHEMA)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    answer = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": ASK},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": calls[0].id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": RESULT},
        ],
        tools=[FUNCTION],
        max_tokens=40,
        temperature=0,
    )
    text = answer.choices[0].message.content
    assert text[:1].strip() and text[0] != "<"
    assert not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_openai_named_function_not_streamed(server: Server) -> None:
    reply = openai_client(server).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Oslo for 2 days?"}],
        tools=[FUNCTION],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_tokens=ONE_CALL,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), SCHEMA)


def test_openai_response_format_json_schema_is_valid(server: Server) -> None:
    words = {"type": "string", "maxLength": 24}
    schema = {
        "type": "object",
        "properties": {
            "name": words,
            "age": {"type": "integer"},
            "likes": {"type": "array", "items": words, "maxItems": 3},
        },
        "required": ["name", "age", "likes"],
        "additionalProperties": False,
    }
    client = openai_client(server)
    reply = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Describe a cat called Felix."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "cat", "schema": schema, "strict": True},
        },
        max_tokens=call_budget(schema),  # the grammar's longest object: it closes
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "A JSON object about Paris."}],
            response_format={"type": "json_object"},
            max_tokens=100,
            temperature=0,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert text.startswith("{")  # any object, unbounded: it may be cut, but it is one
    if finish == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert finish == "length"


def test_strict_schema_the_grammar_cannot_enforce_is_the_protocols_own_400(
    server: Server,
) -> None:
    loose = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 5}}}
    function = {"name": "f", "parameters": loose, "strict": True}
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(server).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": ASK}],
            tools=[{"type": "function", "function": function}],
            tool_choice="required",
            max_tokens=10,
        )
    assert info.value.status_code == 400
    assert "multipleOf" in str(info.value)
    with pytest.raises(anthropic.BadRequestError) as error:
        messages_client(server).messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": ASK}],
            tools=[{"name": "f", "input_schema": loose, "strict": True}],
            tool_choice={"type": "any"},
        )
    assert (
        "tools.0.input_schema.properties.n: JSON Schema keyword 'multipleOf' cannot be enforced"
        " with strict: true"
    ) in str(error.value)
