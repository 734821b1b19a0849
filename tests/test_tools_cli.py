"""``ask`` and ``chat`` with tool calls and thinking, as people and scripts use them: real
processes through pipes and a pseudo-terminal, the scripted provider calling a tool (offered with
``--tools FILE``) and thinking first (``--thinking BUDGET``).

What a pipe gets: stdout carries the answer — text, and each tool call on its own line,
``⚙ get_weather({...})`` — while thinking goes to stderr (dimmed on a terminal)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from serving import received, recording
from test_cli_ask import env as ask_env
from test_cli_chat import Chat
from test_cli_chat import env as chat_env

CALL_INPUT = {"city": "Paris", "days": ["mon", "tue"]}
THOUGHT = "Rain is likely, check first"
CALL_LINE = '⚙ get_weather({"city": "Paris", "days": ["mon", "tue"]})'
OPTIONS = {"tool_input": json.dumps(CALL_INPUT), "thinking": THOUGHT}
MODEL = "scripted?" + urlencode(OPTIONS)


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    path = tmp_path / "tools.json"
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tool = {"name": "get_weather", "description": "The weather", "input_schema": schema}
    path.write_text(json.dumps([tool]))
    return path


def run(
    tmp_path: Path, command: str, *args: str | Path, stdin: str = ""
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", command, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=ask_env(tmp_path),
        timeout=60,
    )


THINK = ("--thinking", "1024", "--max-tokens", "2000")
CHAT = (sys.executable, "-m", "streamchat.cli.main", "chat")


def test_ask_prints_each_tool_call_on_its_own_line_and_thinking_on_stderr(
    tmp_path: Path, tools: Path
) -> None:
    model = MODEL + "&calls=2"
    result = run(tmp_path, "ask", "--no-history", "-m", model, "--tools", tools, *THINK, "Paris?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{CALL_LINE}\n{CALL_LINE}\n"
    assert result.stderr == f"{THOUGHT}\n"  # not a terminal: no escape codes


def test_ask_without_thinking_or_tools_is_unchanged(tmp_path: Path, tools: Path) -> None:
    result = run(tmp_path, "ask", "--no-history", "-m", MODEL, "hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, "[turn 1] You said: hi\n", "")
    result = run(tmp_path, "ask", "--no-history", "-m", MODEL, *THINK, "hi")
    assert (result.stdout, result.stderr) == ("[turn 1] You said: hi\n", f"{THOUGHT}\n")


def test_ask_json_prints_every_canonical_event_and_no_helper_events(
    tmp_path: Path, tools: Path
) -> None:
    args = ("--json", "--no-history", "-m", MODEL, "--tools", tools, *THINK, "Paris?")
    result = run(tmp_path, "ask", *args)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"thinking_delta", "signature_delta", "input_json_delta"}
    assert "".join(d.get("thinking", "") for d in deltas) == THOUGHT
    fragments = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert len(fragments) > 1 and json.loads("".join(fragments)) == CALL_INPUT
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [s["type"] for s in starts] == ["thinking", "tool_use"]
    assert starts[1]["name"] == "get_weather" and starts[1]["id"].startswith("toolu_")
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    kinds = {e["type"] for e in events}  # messages.stream()'s SDK helpers are not printed
    assert not kinds & {"text", "input_json", "thinking", "signature"}
    assert result.stderr == ""


def test_ask_logs_the_tool_call_and_thinking_to_the_history(tmp_path: Path, tools: Path) -> None:
    db = tmp_path / "h.db"
    result = run(tmp_path, "ask", "--db", db, "-m", MODEL, "--tools", tools, *THINK, "Paris?")
    assert result.returncode == 0, result.stderr
    shown = run(tmp_path, "history", "show", "1", "--db", db)
    assert CALL_LINE.removeprefix("⚙ ") in shown.stdout
    assert f"> {THOUGHT}" in shown.stdout
    assert "tool_use" in shown.stdout  # the stop reason
    exported = json.loads(
        run(tmp_path, "history", "export", "1", "--db", db, "--format", "json").stdout
    )
    reply = exported["messages"][1]
    assert [b["type"] for b in reply["blocks"]] == ["thinking", "tool_use"]
    assert reply["blocks"][1]["input"] == CALL_INPUT
    assert exported["conversation"]["parameters"]["thinking"]["budget_tokens"] == 1024


def test_a_bad_tools_file_is_one_line_naming_the_option_or_the_field(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    result = run(tmp_path, "ask", "--no-history", "-m", MODEL, "--tools", junk, "hi")
    assert result.returncode == 2 and "--tools" in result.stderr and "not JSON" in result.stderr
    unnamed = tmp_path / "unnamed.json"
    unnamed.write_text(json.dumps([{"input_schema": {"type": "object"}}]))
    result = run(tmp_path, "ask", "--no-history", "-m", MODEL, "--tools", unnamed, "hi")
    assert result.returncode != 0 and "tools.0.name" in result.stderr
    assert result.stdout == ""


def test_chat_through_pipes_keeps_tool_calls_on_stdout_and_thinking_on_stderr(
    tmp_path: Path, tools: Path
) -> None:
    record = tmp_path / "requests.jsonl"
    model = recording(record, **OPTIONS)
    result = subprocess.run(
        [*CHAT, "--no-history", "-m", model, "--tools", str(tools), *THINK],
        input="weather?\nand now?\n",
        capture_output=True,
        text=True,
        env=chat_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{CALL_LINE}\n{CALL_LINE}\n"
    assert result.stderr.count(THOUGHT) == 2
    _, second = received(record)
    # a reply that only called a tool keeps nothing: the next turn starts afresh, alternating
    assert [(m["role"], m["content"]) for m in second["messages"]] == [("user", "and now?")]


def test_chat_in_a_terminal_shows_the_call_compactly_and_thinking_dimmed(
    tmp_path: Path, tools: Path
) -> None:
    session = Chat(tmp_path, "-m", MODEL, "--tools", str(tools), *THINK)
    try:
        shown = session.turn("weather in Paris?")
        assert shown == f"{THOUGHT}\n{CALL_LINE}"  # thinking, then the call on its own line
        thought, call = session.term.style(THOUGHT), session.term.style(CALL_LINE)
        assert thought.italics and "\x1b[2;3mRain" in session.term.output  # dimmed (pyte: no dim)
        assert call.bold and call.fg == "cyan"  # the call stands out
        again = session.turn("and a plain question")  # the chat goes on after a tool call
        assert again == f"{THOUGHT}\n{CALL_LINE}"
        assert session.leave("quit\r") == 0
    finally:
        session.close()
    shown = run(tmp_path, "history", "show", "1", "--db", tmp_path / "history.db").stdout
    assert shown.count("**Tool call**") == 2


def test_text_then_a_call_then_text_each_call_on_its_own_line() -> None:
    """The printer ``ask`` uses, on a reply mixing text and calls (real models do)."""
    import io

    from streamchat.cli.ask import _Printer
    from streamchat.cli.blocks import ReplyView
    from streamchat.providers.base import (
        block_stop,
        input_json_delta,
        message_finish,
        message_start,
        text_block_start,
        text_delta,
        tool_use_start,
    )

    events = [
        message_start("m", 1),
        text_block_start(0),
        text_delta("Let me check.", 0),
        block_stop(0),
        tool_use_start(1, "get_weather", "toolu_1"),
        input_json_delta('{"city":', 1),
        input_json_delta(' "Paris"}', 1),
        block_stop(1),
        text_block_start(2),
        text_delta("Done.", 2),
        block_stop(2),
        *message_finish("end_turn", 4),
    ]
    out, err = io.StringIO(), io.StringIO()
    printer, view = _Printer(out, err), ReplyView()
    for event in events:
        printer.show(view.feed(event))
    printer.end()
    assert out.getvalue() == 'Let me check.\n⚙ get_weather({"city": "Paris"})\nDone.\n'
    assert err.getvalue() == ""
