"""Tool calls and thinking downstream of the events: history, tapes and replay, metrics, faults.

Real parts throughout: the scripted provider scripts tool calls (JSON input in 8-character
fragments) and thinking; the history is a real SQLite file; tapes are recorded by the real
recorder and served by the replay provider, through ``streamchat.Client`` and through a server
with the official clients. The CLI and the web page have files of their own
(``test_tools_cli.py``, ``test_tools_web.py``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from serving import serve_in_thread
from streamchat import Client
from streamchat.history import MIGRATIONS, SCHEMA_VERSION, HistoryStore, turns_for_model
from streamchat.metrics import MetricsRecorder
from streamchat.providers.scripted import ScriptedConfig, ScriptedProvider
from streamchat.recording.commit import group_commit
from streamchat.recording.reply import ReplyRecorder
from streamchat.recording.tap import record_stream
from streamchat.request import build_request
from streamchat.server.common import ServerConfig
from streamchat.server.faults import FaultInjector, Faults, inject
from streamchat.tape import load_tapes, record_tape, request_key

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "array"}},
        "required": ["city"],
    },
}
CALL_INPUT = {"city": "Paris", "days": ["mon", "tue"]}
SPEC = "scripted?" + "&".join(
    [f"tool_input={json.dumps(CALL_INPUT)}", "thinking=Rain is likely, check first"]
)
THINKING = {"type": "enabled", "budget_tokens": 1024}


def weather_request(messages: list[dict[str, Any]], **extra: Any) -> Any:
    params = {"model": SPEC, "max_tokens": 2000, "tools": [WEATHER], "thinking": THINKING}
    return build_request(messages=messages, **{**params, **extra})


def events_of(request: Any, spec: str = SPEC) -> list[Any]:
    """The scripted provider's whole stream for ``request``."""
    provider = ScriptedProvider(ScriptedConfig.parse(spec))

    async def collect() -> list[Any]:
        return [event async for event in provider.stream(request)]

    return asyncio.run(collect())


def agent_turns(call_id: str, result: str = "18°C, light rain") -> list[dict[str, Any]]:
    """An agent loop's second request: the question, the call, the tool's result."""
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Rain is likely, check first", "signature": "s"},
                {"type": "tool_use", "id": call_id, "name": "get_weather", "input": CALL_INPUT},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": result}],
        },
    ]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with HistoryStore(tmp_path / "h.db") as opened:
        yield opened


# -- history: the recorder keeps every block ----------------------------------------------------


def test_a_reply_with_thinking_and_tool_calls_is_stored_block_by_block(store: HistoryStore) -> None:
    request = weather_request([{"role": "user", "content": "Weather in Paris?"}])
    events = events_of(request)
    conversation_id = store.new_conversation(model=SPEC)
    store.add_message(conversation_id, "user", "Weather in Paris?")
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in events:
        recorder.observe(event)
    recorder.finish_and_wait()
    (_, reply) = store.conversation(conversation_id)["messages"]
    thinking, call = reply["blocks"]
    assert thinking == {
        "type": "thinking",
        "thinking": "Rain is likely, check first",
        "signature": f"scripted-signature-{len('Rain is likely, check first')}",
    }
    (start,) = [e for e in events if e.type == "content_block_start" and e.index == 1]
    assert call == {
        "type": "tool_use",
        "id": start.content_block.id,
        "name": "get_weather",
        "input": CALL_INPUT,
    }
    assert (reply["text"], reply["stop_reason"], reply["interrupted"]) == ("", "tool_use", False)


def test_a_reply_cut_in_the_middle_of_a_tool_call_keeps_what_arrived(store: HistoryStore) -> None:
    request = weather_request([{"role": "user", "content": "Weather?"}], thinking=None)
    events = events_of(request)
    fragments = [e for e in events if e.type == "content_block_delta"]
    assert len(fragments) >= 4  # the input really streams in pieces
    cut = events.index(fragments[2]) + 1  # after 3 fragments: '{"city": "Paris", "days"'
    conversation_id = store.new_conversation()
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in events[:cut]:
        recorder.observe(event)
    recorder.committer.sync().result(10)
    # the row is written as the call streams (a killed process leaves the partial input)...
    (written,) = store.conversation(conversation_id)["messages"]
    assert written["interrupted"] is True and written["blocks"][0]["type"] == "tool_use"
    recorder.finish_and_wait(interrupted=True)
    (reply,) = store.conversation(conversation_id)["messages"]
    (call,) = reply["blocks"]
    arrived = "".join(e.delta.partial_json for e in fragments[:3])
    assert call["partial_json"] == arrived  # exactly what came, never repaired
    assert call["input"] == {"city": "Paris"}  # the members that arrived whole
    assert reply["interrupted"] is True and reply["stop_reason"] is None


def test_markdown_shows_a_cut_call_as_it_arrived_and_lays_out_a_long_one() -> None:
    from streamchat.cli.history import block_lines

    cut = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
    shown = "\n".join(block_lines([{**cut, "partial_json": '{"a": 1, "b": "éx'}]))
    assert "· `toolu_1` (cut short)" in shown and 'f({"a": 1, "b": "éx)' in shown
    long = {**cut, "input": {"text": "é" * 120}}
    shown = "\n".join(block_lines([long]))
    assert 'f(\n{\n  "text": "éééé' in shown
    # fenced, longer than any backtick run inside: Markdown in an input cannot break out
    lines = block_lines([{**cut, "input": {"md": "```\n# not a heading"}}])
    assert (lines[-3], lines[-1]) == ("````", "````")


def test_text_only_replies_are_stored_as_before(store: HistoryStore) -> None:
    request = build_request(model="scripted", messages=[{"role": "user", "content": "hi"}])
    conversation_id = store.new_conversation()
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in events_of(request, "scripted"):
        recorder.observe(event)
    recorder.finish_and_wait()
    (reply,) = store.conversation(conversation_id)["messages"]
    assert (reply["text"], reply["blocks"]) == ("[turn 1] You said: hi", None)


def test_a_version_1_database_is_migrated_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:  # what streamchat wrote before tool use existed
        for statement in MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
        raw.execute(
            "INSERT INTO conversations (created_at, updated_at) VALUES ('2026-01-01', '2026-01-01')"
        )
        raw.execute(
            "INSERT INTO messages (conversation_id, role, text, created_at) "
            "VALUES (1, 'user', 'an old question', '2026-01-01')"
        )
    assert SCHEMA_VERSION >= 2  # 3 added stored responses (issue 17)
    with HistoryStore(path) as store:
        (old,) = store.conversation(1)["messages"]
        assert (old["text"], old["blocks"]) == ("an old question", None)
        store.add_message(1, "assistant", "", blocks=[{"type": "thinking", "thinking": "hm"}])
        assert store.search("old question")[0]["conversation_id"] == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_export_and_import_carry_the_blocks_and_search_finds_the_text(
    store: HistoryStore, tmp_path: Path
) -> None:
    asyncio.run(log_agent_loop(store))
    (conversation,) = store.conversations()
    exported = json.loads(json.dumps(store.export(conversation["id"])))
    with HistoryStore(tmp_path / "other.db") as other:
        copy = other.export(other.import_conversation(exported))
    keep = ("role", "text", "blocks", "stop_reason")
    assert [{k: m[k] for k in keep} for m in copy["messages"]] == [
        {k: m[k] for k in keep} for m in exported["messages"]
    ]
    (hit,) = store.search("sunny answer")
    assert hit["role"] == "assistant"


async def log_agent_loop(store: HistoryStore | Path) -> list[Any]:
    """Both requests of an agent loop through :func:`record_stream` (what serve --history
    does): the tool call, then the answer from its result. Returns the two replies' events."""
    first = weather_request([{"role": "user", "content": "Weather in Paris?"}])
    one = [event async for event in record_stream(store, first, stream_of(first))]
    call_id = next(e.content_block.id for e in one if e.type == "content_block_start" and e.index)
    second = weather_request(agent_turns(call_id), thinking=None)
    answer = "scripted?text=A sunny answer, after all."
    two = [event async for event in record_stream(store, second, stream_of(second, answer))]
    return [one, two]


def stream_of(request: Any, spec: str = SPEC) -> Any:
    return ScriptedProvider(ScriptedConfig.parse(spec)).stream(request)


def test_an_agent_loop_logged_by_a_server_is_one_conversation_with_every_block(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    asyncio.run(log_agent_loop(path))
    with HistoryStore(path) as store:
        (listed,) = store.conversations()  # the second request continued the first
        assert listed["turns"] == 1  # one question: the tool result is not a turn
        messages = store.conversation(listed["id"])["messages"]
    question, call, result, answer = messages
    assert (question["role"], question["text"], question["blocks"]) == (
        "user",
        "Weather in Paris?",
        None,
    )
    assert [b["type"] for b in call["blocks"]] == ["thinking", "tool_use"]
    assert call["stop_reason"] == "tool_use"
    (tool_result,) = result["blocks"]
    assert tool_result == {
        "type": "tool_result",
        "tool_use_id": call["blocks"][1]["id"],
        "content": "18°C, light rain",
    }
    assert (answer["text"], answer["blocks"]) == ("A sunny answer, after all.", None)
    # a text chat resuming it gets the question and the final answer, never broken turns
    assert turns_for_model(messages) == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "A sunny answer, after all."},
    ]


def test_history_show_and_export_render_calls_results_and_thinking(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    asyncio.run(log_agent_loop(path))

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "streamchat.cli.main", "history", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    shown = cli("show", "1", "--db", str(path))
    assert shown == cli("export", "1", "--db", str(path), "--format", "md")
    assert "> *Thinking*\n> Rain is likely, check first" in shown
    assert 'get_weather({"city": "Paris", "days": ["mon", "tue"]})' in shown
    assert "**Tool result** for `toolu_" in shown and "18°C, light rain" in shown
    assert shown.index("Thinking") < shown.index("get_weather") < shown.index("18°C")
    exported = json.loads(cli("export", "1", "--db", str(path), "--format", "json"))
    assert [m["blocks"] and [b["type"] for b in m["blocks"]] for m in exported["messages"]] == [
        None,
        ["thinking", "tool_use"],
        ["tool_result"],
        None,
    ]
    assert "sunny" in cli("search", "sunny", "--db", str(path))


def test_the_history_api_returns_the_blocks(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    asyncio.run(log_agent_loop(path))
    config = ServerConfig(default_model="scripted", models=[], history_path=str(path))
    with serve_in_thread(config) as url:
        (listed,) = httpx.get(f"{url}/api/conversations").json()["data"]
        body = httpx.get(f"{url}/api/conversations/{listed['id']}").json()
    call = body["messages"][1]["blocks"][1]
    assert (call["name"], call["input"]) == ("get_weather", CALL_INPUT)
    assert body["messages"][2]["blocks"][0]["content"] == "18°C, light rain"


# -- tapes: keys, record and replay --------------------------------------------------------------


def test_the_tape_key_includes_tool_calls_results_and_tools() -> None:
    text_only = build_request(model="m", messages=[{"role": "user", "content": "hi"}])
    with_tools = build_request(
        model="m", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER]
    )
    assert request_key(with_tools) != request_key(text_only)
    other_schema = {**WEATHER, "input_schema": {"type": "object", "properties": {}}}
    assert request_key(with_tools) != request_key(
        build_request(model="m", messages=[{"role": "user", "content": "hi"}], tools=[other_schema])
    )
    step = weather_request(agent_turns("toolu_1"))
    assert request_key(step) != request_key(weather_request(agent_turns("toolu_2")))
    assert request_key(step) != request_key(weather_request(agent_turns("toolu_1", "sunny")))
    # what protocols differ in does not matter: thinking settings, the model, key order
    same = build_request(
        model="other",
        messages=agent_turns("toolu_1"),
        tools=[{**WEATHER, "input_schema": dict(reversed(WEATHER["input_schema"].items()))}],
    )
    assert request_key(same) == request_key(step)


def test_text_only_tape_keys_are_unchanged() -> None:
    """The digest of a text-only request is the one tapes recorded before tool use carry."""
    import hashlib

    request = build_request(model="m", system="s", messages=[{"role": "user", "content": "hi"}])
    old = hashlib.sha256(json.dumps(["s", ["user", "hi"]]).encode()).hexdigest()
    assert request_key(request) == old


async def record_agent_tapes(directory: Path) -> str:
    """Tapes of both steps of an agent loop, recorded from the scripted provider."""
    first = weather_request([{"role": "user", "content": "Weather in Paris?"}])
    tape = record_tape(directory, first, stream_of(first), provider="scripted")
    one = [event async for event in tape]
    call_id = next(e.content_block.id for e in one if e.type == "content_block_start" and e.index)
    second = weather_request(agent_turns(call_id), thinking=None)
    tape = record_tape(directory, second, stream_of(second), provider="scripted")
    _ = [event async for event in tape]
    return call_id


def test_a_tape_keeps_tool_calls_thinking_and_the_request_blocks(tmp_path: Path) -> None:
    call_id = asyncio.run(record_agent_tapes(tmp_path))
    first, second = load_tapes(tmp_path)
    kinds = [
        (d["type"], d.get("content_block", d.get("delta", {})).get("type")) for _, d in first.steps
    ]
    assert kinds[1:4] == [
        ("content_block_start", "thinking"),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "thinking_delta"),
    ]
    assert ("content_block_delta", "signature_delta") in kinds
    assert ("content_block_start", "tool_use") in kinds and (
        "content_block_delta",
        "input_json_delta",
    ) in kinds
    assert first.header["request"]["tools"][0]["name"] == "get_weather"
    turns = second.header["request"]["messages"]
    assert turns[0] == {"role": "user", "content": "Weather in Paris?"}
    assert turns[1]["blocks"][1] == {
        "type": "tool_use",
        "id": call_id,
        "name": "get_weather",
        "input": CALL_INPUT,
    }
    assert turns[2]["blocks"][0]["tool_use_id"] == call_id
    assert second.end["end"] == "complete"


def test_an_agent_loop_replays_step_by_step_through_the_library(tmp_path: Path) -> None:
    """match=content: the loop's second request (carrying the recorded call id and the result)
    finds the second tape, so an agent runs offline exactly as recorded."""
    call_id = asyncio.run(record_agent_tapes(tmp_path))
    client = Client()
    model = f"replay/{tmp_path}?speed=0"
    params = {"model": model, "max_tokens": 2000, "tools": [WEATHER], "thinking": THINKING}
    with client.messages.stream(
        messages=[{"role": "user", "content": "Weather in Paris?"}], **params
    ) as stream:
        helpers = [e.type for e in stream if e.type in ("thinking", "input_json", "signature")]
        message = stream.get_final_message()
    assert {"thinking", "input_json", "signature"} <= set(helpers)
    thinking, call = message.content
    assert thinking.thinking == "Rain is likely, check first" and thinking.signature
    assert (call.id, call.name, call.input) == (call_id, "get_weather", CALL_INPUT)
    assert message.stop_reason == "tool_use"
    answer = client.messages.create(messages=agent_turns(call.id), **params)
    assert answer.text == "[turn 2] Tool result: 18°C, light rain"
    with pytest.raises(Exception, match="no recorded stream matches"):
        client.messages.create(messages=agent_turns(call.id, "a different result"), **params)


# -- metrics and faults ---------------------------------------------------------------------------


def test_ttft_is_the_first_content_delta_of_any_kind_and_signatures_are_not_tokens() -> None:
    events = events_of(weather_request([{"role": "user", "content": "Weather?"}]))
    recorder = MetricsRecorder(started_at=events[0].timestamp)
    for event in events:
        recorder.observe(event)
    first_thinking = next(e for e in events if e.type == "content_block_delta")
    assert first_thinking.delta.type == "thinking_delta"
    assert recorder.metrics().ttft == first_thinking.timestamp - events[0].timestamp
    deltas = [e for e in events if e.type == "content_block_delta"]
    signatures = [e for e in deltas if e.delta.type == "signature_delta"]
    assert len(signatures) == 1
    assert len(recorder.delta_times) == len(deltas) - 1


def test_a_midstream_error_strikes_inside_a_tool_calls_json() -> None:
    request = weather_request([{"role": "user", "content": "Weather?"}], thinking=None)

    async def run() -> list[Any]:
        return [e async for e in inject(stream_of(request), Faults(error_at=3))]

    events = asyncio.run(run())
    fragments = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert len(fragments) == 3 and events[-1].type == "error"
    with pytest.raises(ValueError):
        json.loads("".join(fragments))  # the call really was cut inside its JSON


def test_a_fault_inside_a_replayed_tool_call_reaches_the_anthropic_sdk(tmp_path: Path) -> None:
    """A recorded tool call served to a plain request (match=order), a fault in its JSON."""
    asyncio.run(record_agent_tapes(tmp_path))
    model = f"replay/{tmp_path}?speed=0&match=order"
    config = ServerConfig(default_model=model, models=[], faults=FaultInjector())
    with serve_in_thread(config) as url:
        client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as failure:
            with client.messages.stream(
                model="m",
                max_tokens=100,
                messages=[{"role": "user", "content": "go"}],
                extra_headers={"x-streamchat-fault": "midstream_error@7"},
            ) as stream:
                for event in stream:
                    if event.type == "input_json":
                        seen.append(event.partial_json)
    assert "Overloaded" in str(failure.value)
    # 5 thinking tokens (the signature is no token), then 2 of the input's 8-character pieces
    raw = json.dumps(CALL_INPUT)
    assert seen == [raw[:8], raw[8:16]]


def test_a_fault_past_the_end_strikes_at_the_last_blocks_end_not_the_first() -> None:
    request = weather_request([{"role": "user", "content": "Weather?"}])

    async def run() -> list[Any]:
        return [e async for e in inject(stream_of(request), Faults(error_at=1000))]

    events = asyncio.run(run())
    kinds = [e.type for e in events]
    assert kinds.count("content_block_start") == 2  # the thinking block ended, the call came
    assert kinds[-2:] == ["content_block_delta", "error"]
    assert events[-2].delta.type == "input_json_delta"
