"""Token counting with the model's real tokenizer: boto3 ``count_tokens`` (Bedrock Runtime
``CountTokens``, both input forms) and the anthropic SDK's ``messages.count_tokens``, against
``streamchat serve`` on the embedded model; each equals the embedded tokenizer's own count of
the same request (system prompt and tools included)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import boto3
import botocore.exceptions
import pytest

from serving import Server, serve
from streamchat.providers.local import LocalProvider
from streamchat.request import build_request

pytestmark = pytest.mark.model

MODEL_ID = "anthropic.claude-3-5-sonnet-20241022-v2:0"
SYSTEM = "You are a terse assistant who answers in one line."
TOOLS = [{
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}]  # fmt: skip
MESSAGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? Answer with the city's name only, please."},
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve() as running:  # the embedded default model
        yield running


@pytest.fixture
def bedrock(server: Server, sdk_credentials: None):  # type: ignore[no-untyped-def]
    return boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-west-2")


def expected(local_model: LocalProvider, **fields: object) -> int:
    return local_model.count_tokens(build_request(model="m", messages=MESSAGES, **fields))


def converse_messages() -> list[dict]:
    return [{"role": m["role"], "content": [{"text": m["content"]}]} for m in MESSAGES]


def test_boto3_count_tokens_converse_equals_the_embedded_tokenizer(
    bedrock, local_model: LocalProvider
) -> None:
    counted = bedrock.count_tokens(
        modelId=MODEL_ID, input={"converse": {"messages": converse_messages()}}
    )
    assert counted["inputTokens"] == expected(local_model)


def test_boto3_count_tokens_counts_system_and_tools(bedrock, local_model: LocalProvider) -> None:
    tool_config = {"tools": [{"toolSpec": {
        "name": TOOLS[0]["name"], "description": TOOLS[0]["description"],
        "inputSchema": {"json": TOOLS[0]["input_schema"]}}}]}  # fmt: skip
    converse = {"messages": converse_messages(), "system": [{"text": SYSTEM}]}
    with_system = bedrock.count_tokens(modelId=MODEL_ID, input={"converse": converse})
    assert with_system["inputTokens"] == expected(local_model, system=SYSTEM)
    with_tools = bedrock.count_tokens(
        modelId=MODEL_ID, input={"converse": {**converse, "toolConfig": tool_config}}
    )
    assert with_tools["inputTokens"] == expected(local_model, system=SYSTEM, tools=TOOLS)
    assert with_tools["inputTokens"] > with_system["inputTokens"]  # tools are prompt too


def test_boto3_count_tokens_invoke_model_body(bedrock, local_model: LocalProvider) -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "system": SYSTEM,
            "messages": MESSAGES}  # fmt: skip
    counted = bedrock.count_tokens(
        modelId=MODEL_ID, input={"invokeModel": {"body": json.dumps(body).encode()}}
    )
    assert counted["inputTokens"] == expected(local_model, system=SYSTEM)


def test_count_tokens_equals_the_input_tokens_of_a_reply(bedrock) -> None:
    counted = bedrock.count_tokens(
        modelId=MODEL_ID, input={"converse": {"messages": converse_messages()}}
    )
    reply = bedrock.converse(
        modelId=MODEL_ID, messages=converse_messages(), inferenceConfig={"maxTokens": 2}
    )
    usage = reply["usage"]  # a prompt prefix the model's KV cache kept is counted apart
    assert usage["inputTokens"] + usage.get("cacheReadInputTokens", 0) == counted["inputTokens"]


def test_boto3_count_tokens_bad_input_is_a_validation_error(bedrock) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock.count_tokens(modelId=MODEL_ID, input={"converse": {"messages": []}})
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException" and "messages" in error["Message"]


def test_anthropic_count_tokens_counts_tools_and_system(
    server: Server, local_model: LocalProvider
) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    plain = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=MESSAGES, system=SYSTEM
    )
    assert plain.input_tokens == expected(local_model, system=SYSTEM)
    full = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=MESSAGES, system=SYSTEM, tools=TOOLS
    )
    assert full.input_tokens == expected(local_model, system=SYSTEM, tools=TOOLS)
    assert full.input_tokens > plain.input_tokens
