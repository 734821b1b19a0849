"""An agent loop recorded once (``serve --record``, the Anthropic SDK) replays offline to every
official client: the same tool call (id, name, input), the same thinking, and — because the tape
key holds the call and its result — the answer that step got, in each protocol's own shapes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config

from serving import serve_in_thread
from streamchat.history import HistoryStore
from streamchat.providers.scripted import JSON_FRAGMENT
from streamchat.server.common import ServerConfig
from streamchat.tape import load_tapes

CALL_INPUT = {"city": "Paris", "days": ["mon", "tue"]}
THOUGHT = "Rain is likely, check first"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
DESCRIPTION = "The weather in a city"
QUESTION = "Weather in Paris?"
RESULT = "18°C, light rain"
ANSWER = f"[turn 2] Tool result: {RESULT}"
SPEC = "scripted?" + urlencode({"tool_input": json.dumps(CALL_INPUT), "thinking": THOUGHT})


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Every test here talks through the official SDKs."""


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def anthropic_loop(url: str) -> tuple[Any, Any]:
    """Both steps of the loop through the Anthropic SDK: (tool-call message, answer)."""
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    params: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 2000,
        "tools": [{"name": "get_weather", "description": DESCRIPTION, "input_schema": SCHEMA}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    question = {"role": "user", "content": QUESTION}
    with client.messages.stream(messages=[question], **params) as stream:
        called = stream.get_final_message()
    call = called.content[-1]
    result = {"type": "tool_result", "tool_use_id": call.id, "content": RESULT}
    answer = client.messages.create(
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump() for b in called.content]},
            {"role": "user", "content": [result]},
        ],
        **params,
    )
    return called, answer


def openai_loop(url: str) -> tuple[dict[str, Any], str]:
    """Both steps through the openai SDK, streamed: (the call as accumulated, the answer)."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    function = {"name": "get_weather", "description": DESCRIPTION, "parameters": SCHEMA}
    tools = [{"type": "function", "function": function}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    call: dict[str, Any] = {"arguments": "", "reasoning": ""}
    for chunk in client.chat.completions.create(
        model="gpt-x", messages=messages, tools=tools, stream=True
    ):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        call["reasoning"] += getattr(delta, "reasoning_content", None) or ""
        for piece in delta.tool_calls or []:
            call["id"] = piece.id or call.get("id")
            if piece.function.name:
                call["name"] = piece.function.name
            call["arguments"] += piece.function.arguments or ""
        call["finish"] = chunk.choices[0].finish_reason or call.get("finish")
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": RESULT})
    answer = client.chat.completions.create(model="gpt-x", messages=messages, tools=tools)
    return call, answer.choices[0].message.content


def converse_loop(url: str) -> tuple[dict[str, Any], str]:
    """Both steps through boto3's converse_stream: (the call as streamed, the answer)."""
    client = boto3.client(
        "bedrock-runtime", endpoint_url=url, config=Config(retries={"total_max_attempts": 1})
    )
    tool = {"toolSpec": {"name": "get_weather", "description": DESCRIPTION}}
    tool["toolSpec"]["inputSchema"] = {"json": SCHEMA}
    config = {"tools": [tool]}
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": QUESTION}]}]
    call: dict[str, Any] = {"input": "", "reasoning": ""}
    response = client.converse_stream(modelId="m", messages=messages, toolConfig=config)
    for event in response["stream"]:
        if "contentBlockStart" in event:
            call.update(event["contentBlockStart"]["start"].get("toolUse", {}))
        elif "contentBlockDelta" in event:
            delta = event["contentBlockDelta"]["delta"]
            call["input"] += delta.get("toolUse", {}).get("input", "")
            call["reasoning"] += delta.get("reasoningContent", {}).get("text", "")
        elif "messageStop" in event:
            call["stop"] = event["messageStop"]["stopReason"]
    use = {"toolUseId": call["toolUseId"], "name": call["name"], "input": json.loads(call["input"])}
    messages.append({"role": "assistant", "content": [{"toolUse": use}]})
    result = {"toolUseId": call["toolUseId"], "content": [{"text": RESULT}]}
    messages.append({"role": "user", "content": [{"toolResult": result}]})
    answer = client.converse(modelId="m", messages=messages, toolConfig=config)
    return call, "".join(part.get("text", "") for part in answer["output"]["message"]["content"])


def test_an_agent_loop_recorded_once_replays_to_every_official_client(
    tmp_path: Path, fresh_providers: None
) -> None:
    tapes = tmp_path / "tapes"
    config = ServerConfig(default_model=SPEC, models=[], record_dir=str(tapes))
    with serve_in_thread(config) as url:
        called, answer = anthropic_loop(url)
    assert [tape.header["request"]["messages"][-1]["content"] for tape in load_tapes(tapes)] == [
        QUESTION,
        "",  # the tool result's turn: its text is in its blocks
    ]
    thinking, call = called.content
    assert (thinking.thinking, call.name, call.input) == (THOUGHT, "get_weather", CALL_INPUT)
    assert called.stop_reason == "tool_use" and text_of(answer) == ANSWER

    # offline now: the scripted provider is gone, only the tapes answer
    replay = ServerConfig(default_model=f"replay/{tapes}?speed=0", models=[])
    with serve_in_thread(replay) as url:
        again, again_answer = anthropic_loop(url)
        openai_call, openai_answer = openai_loop(url)
        converse_call, converse_answer = converse_loop(url)

    assert [b.model_dump() for b in again.content] == [b.model_dump() for b in called.content]
    assert again.stop_reason == "tool_use" and text_of(again_answer) == ANSWER
    assert again_answer.content[0].thinking == THOUGHT  # the answering step thought first too

    assert (openai_call["id"], openai_call["name"]) == (call.id, "get_weather")
    assert json.loads(openai_call["arguments"]) == CALL_INPUT
    assert openai_call["reasoning"] == THOUGHT
    assert openai_call["finish"] == "tool_calls" and openai_answer == ANSWER

    assert (converse_call["toolUseId"], converse_call["name"]) == (call.id, "get_weather")
    assert json.loads(converse_call["input"]) == CALL_INPUT
    assert converse_call["reasoning"] == THOUGHT
    assert converse_call["stop"] == "tool_use" and converse_answer == ANSWER


def test_a_server_logs_each_protocols_agent_loop_as_one_conversation(
    tmp_path: Path, fresh_providers: None
) -> None:
    """The loop's second request carries the call and its result: the history recognises it as
    the continuation (whatever each protocol keeps of thinking) and stores every block."""
    path = tmp_path / "history.db"
    config = ServerConfig(default_model=SPEC, models=[], history_path=str(path))
    with serve_in_thread(config) as url:
        anthropic_loop(url)
        openai_loop(url)
        converse_loop(url)
    with HistoryStore(path) as store:
        logged = [store.conversation(c["id"]) for c in reversed(store.conversations())]
    assert len(logged) == 3
    for conversation in logged:
        question, call, result, answer = conversation["messages"]
        assert (question["text"], answer["text"]) == (QUESTION, ANSWER)
        (tool_use,) = [b for b in call["blocks"] if b["type"] == "tool_use"]
        assert (tool_use["name"], tool_use["input"]) == ("get_weather", CALL_INPUT)
        (tool_result,) = result["blocks"]
        assert tool_result["tool_use_id"] == tool_use["id"]
        assert tool_result["content"] in (RESULT, [{"type": "text", "text": RESULT}])
    # thinking where the protocol asked for it (Anthropic here), in order before the call
    assert [b["type"] for b in logged[0]["messages"][1]["blocks"]] == ["thinking", "tool_use"]
    assert logged[0]["messages"][1]["blocks"][0]["thinking"] == THOUGHT


def test_a_client_leaving_in_the_middle_of_a_tool_call_leaves_the_partial_call_logged(
    tmp_path: Path, fresh_providers: None
) -> None:
    """The server sends five fragments of the call, then nothing (``stall_after``): it is still
    in the call when the client leaves after three, however slowly the client reads (with a
    stream paced by a delay instead, a starved client could read its third fragment only after
    the server had sent the whole call)."""
    path = tmp_path / "history.db"
    long_input = {"city": "Paris", "notes": "x" * 200}
    spec = "scripted?" + urlencode({"tool_input": json.dumps(long_input), "stall_after": "5"})
    config = ServerConfig(default_model=spec, models=[], history_path=str(path))
    with serve_in_thread(config) as url:
        client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
        tool = {"name": "get_weather", "input_schema": SCHEMA}
        fragments: list[str] = []
        with client.messages.stream(
            model="m",
            max_tokens=500,
            messages=[{"role": "user", "content": QUESTION}],
            tools=[tool],
        ) as stream:
            for event in stream:
                if event.type == "input_json":
                    fragments.append(event.partial_json)
                    if len(fragments) == 3:
                        break  # leaving closes the connection

        def stored() -> dict[str, Any] | None:
            with HistoryStore(path) as store:
                conversations = store.conversations()
                if not conversations:  # its first commit is still to come
                    return None
                (conversation,) = conversations
                reply = store.conversation(conversation["id"])["messages"][-1]
            return reply if reply["ttft"] is not None else None  # the final write is done

        reply, deadline = None, time.monotonic() + 60
        while reply is None and time.monotonic() < deadline:  # the write follows the disconnect
            if (reply := stored()) is None:
                time.sleep(0.05)
    assert reply is not None and reply["interrupted"] is True and reply["stop_reason"] is None
    (call,) = reply["blocks"]
    sent = json.dumps(long_input)[: 5 * JSON_FRAGMENT]  # the five fragments, cut short
    assert call["partial_json"] == sent and sent.startswith("".join(fragments))
    assert call["input"] == {"city": "Paris"}  # the members that arrived whole
