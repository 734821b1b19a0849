"""``streamchat ask`` as a script uses it: a real process, the prompt from arguments and/or
stdin, the reply (or events as JSON lines) on stdout, stats and errors on stderr."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedded_model import check_limit
from serving import received, recording
from streamchat.providers.local import LocalProvider
from streamchat.request import build_request

# What must not leak in from the user's environment: a history file, remote credentials.
DROPPED = ("STREAMCHAT_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY")


def text_turns(request: dict) -> list[dict]:
    """A recorded request's turns as ``{role, content}``, checked to hold text only."""
    assert all(not m.get("blocks") for m in request["messages"]), request["messages"]
    return [{"role": m["role"], "content": m["content"]} for m in request["messages"]]


def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in DROPPED}
    return {**environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "streamchat.cli.main", *map(str, args)]


def ask(tmp_path: Path, *args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("ask", "--no-history", *args),
        input=stdin,
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=60,
    )


def test_the_prompt_comes_from_the_arguments(tmp_path: Path) -> None:
    result = ask(tmp_path, "-m", "scripted", "hello", "there")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "[turn 1] You said: hello there\n",
        "",
    )


def test_the_prompt_comes_from_stdin(tmp_path: Path) -> None:
    result = ask(tmp_path, "-m", "scripted", stdin="piped question\n")
    assert (result.returncode, result.stdout) == (0, "[turn 1] You said: piped question\n")


def test_arguments_come_first_then_stdin(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    result = ask(tmp_path, "-m", recording(record), "Summarise", "this:", stdin="the file\n")
    assert result.returncode == 0, result.stderr
    ((request),) = received(record)
    assert text_turns(request) == [{"role": "user", "content": "Summarise this:\n\nthe file"}]


def test_options_reach_the_model(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    result = ask(
        tmp_path,
        *("-m", recording(record), "--system", "be brief", "--max-tokens", "7"),
        *("--temperature", "0.3", "--top-p", "0.9", "--seed", "11", "--stop", "END", "hi"),
    )
    assert result.returncode == 0, result.stderr
    ((request),) = received(record)
    sent = {k: request[k] for k in ("system", "max_tokens", "temperature", "top_p", "seed")}
    assert sent == {
        "system": "be brief",
        "max_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 11,
    }
    assert request["stop_sequences"] == ["END"]


def test_json_prints_the_canonical_events_in_order(tmp_path: Path) -> None:
    result = ask(tmp_path, "--json", "-m", "scripted?text=Hello%20world", "hi")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == (
        "Hello world"
    )
    assert events[0]["message"]["role"] == "assistant"
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"]["output_tokens"] == 2


def test_stats_go_to_stderr_after_the_reply(tmp_path: Path) -> None:
    plain = ask(tmp_path, "-m", "scripted?delay=0.01", "count these words")
    assert (plain.returncode, plain.stderr) == (0, "")
    result = ask(tmp_path, "--stats", "-m", "scripted?delay=0.01", "count these words")
    assert result.returncode == 0
    assert result.stdout == plain.stdout == "[turn 1] You said: count these words\n"
    ((line),) = result.stderr.splitlines()
    pattern = r"TTFT \d+ ms · total [\d.]+ s · 3 in / 7 out tokens · [\d.]+ tokens/s"
    assert re.fullmatch(pattern, line), line


@pytest.fixture
def corrupt_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"this is not a model\x00\x01\x02" * 200)
    return path


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (("-m", "{tmp}/missing.gguf", "hi"), "", "model file not found"),
        (("-m", "{tmp}/broken.gguf", "hi"), "", "not a valid GGUF file"),
        ((), "  \n\n", "empty prompt"),
        (("-m", "scripted", "", " "), "", "empty prompt"),
        (("--max-tokens", "x", "hi"), "", "--max-tokens: expected an integer, got 'x'"),
        (("--max-tokens", "0", "hi"), "", "--max-tokens: must be between"),
        (("--temperature", "5", "hi"), "", "--temperature: must be between 0 and 2, got 5"),
        (("--top-p", "lots", "hi"), "", "--top-p: expected a number"),
        (("--model", "openai/x", "hi"), "", "no credentials"),
        (("--base-url", "http://127.0.0.1:9", "hi"), "", "--base-url needs --model"),
    ],
    ids=[
        "missing-model",
        "corrupt-gguf",
        "empty-stdin",
        "blank-args",
        "max-tokens-x",
        "max-tokens-0",
        "temperature-5",
        "top-p-word",
        "openai-no-key",
        "base-url-without-provider",
    ],
)
def test_a_user_error_is_one_line_on_stderr_and_a_non_zero_exit(
    tmp_path: Path, corrupt_gguf: Path, args: tuple[str, ...], stdin: str, says: str
) -> None:
    result = ask(tmp_path, *(a.format(tmp=tmp_path) for a in args), stdin=stdin)
    assert result.returncode != 0
    assert result.stdout == ""
    ((line),) = result.stderr.splitlines()
    assert line.startswith("streamchat") and says in line, line


def test_ctrl_c_exits_130_and_keeps_the_partial_reply(tmp_path: Path) -> None:
    process = subprocess.Popen(
        command("ask", "--no-history", "-m", "scripted?delay=0.1&repeat=20", "count slowly"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(tmp_path),
    )
    try:
        first = os.read(process.stdout.fileno(), 100)  # the reply has started
        time.sleep(0.4)
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    partial = (first + rest).decode()
    full = " ".join(["[turn 1] You said: count slowly"] * 20)
    assert partial.startswith("[turn 1]") and partial.endswith("\n")
    assert full.startswith(partial.rstrip("\n")) and len(partial) < len(full)
    assert err.decode() == "streamchat: interrupted\n"


@pytest.mark.model
def test_the_embedded_model_answers(tmp_path: Path, local_model: LocalProvider) -> None:
    """Its words are its own: the events say it read the prompt and ended within the limit."""
    result = ask(tmp_path, "--json", "--max-tokens", "12", "--temperature", "0", "Say hello.")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert (events[0]["type"], events[-1]["type"]) == ("message_start", "message_stop")
    assert events[0]["message"]["model"] == "SmolLM2-135M-Instruct"
    hello = build_request(model="m", messages=[{"role": "user", "content": "Say hello."}])
    assert events[0]["message"]["usage"]["input_tokens"] == local_model.count_tokens(hello)
    (end,) = [event for event in events if event["type"] == "message_delta"]
    check_limit(end["delta"]["stop_reason"], end["usage"]["output_tokens"], 12)
    texts = [e for e in events if e["type"] == "content_block_delta"]
    assert all(e["delta"]["type"] == "text_delta" for e in texts)


@pytest.mark.model
@pytest.mark.parametrize(
    "prompt",
    ["hi", "Say hello.", "é" * 300, "日本語のテキスト" * 60, "🙂" * 200, "word " * 2000],
)
@pytest.mark.parametrize("system", [None, "You are terse. " * 20])
def test_a_one_shot_window_holds_its_prompt_and_the_whole_reply(
    local_model: LocalProvider, prompt: str, system: str | None
) -> None:
    """``ask`` opens an engine sized to its request: the prompt as the model's template writes
    it, plus every token the reply may have, always fits (or it gets the default window)."""
    from streamchat.cli.ask import one_shot_context
    from streamchat.providers.local import DEFAULT_CONTEXT

    for max_tokens in (1, 1024, 4000):
        args = argparse.Namespace(system=system, max_tokens=max_tokens, tools=None, thinking=None)
        window = one_shot_context(prompt, args)
        request = build_request(
            model="m", system=system, max_tokens=max_tokens,
            messages=[{"role": "user", "content": prompt}],
        )  # fmt: skip
        tokens, _ = local_model.prompt_tokens(request)
        assert window == DEFAULT_CONTEXT or len(tokens) + max_tokens <= window
        assert window <= DEFAULT_CONTEXT
