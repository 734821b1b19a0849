"""``streamchat chat`` as a person uses it, in a pseudo-terminal read off its screen
(``terminal.Terminal``): turns that carry the conversation, colours and Markdown styling, input
history, Ctrl-C, leaving; and through pipes, where it is plain text without a single escape
code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from serving import received, recording
from terminal import Terminal

STATS = re.compile(r"TTFT \d+ ms · total [\d.]+ s · \d+ in / \d+ out tokens · [\d.]+ tokens/s")
UP = "\x1b[A"
CTRL_C = "\x03"
ROWS, COLUMNS = 50, 200  # the terminal: wide enough for a line of /history on one row


def text_turns(request: dict) -> list[dict]:
    """A recorded request's turns as ``{role, content}``, checked to hold text only."""
    assert all(not m.get("blocks") for m in request["messages"]), request["messages"]
    return [{"role": m["role"], "content": m["content"]} for m in request["messages"]]


def env(tmp_path: Path, columns: int = COLUMNS) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "STREAMCHAT_DB"}
    return {
        **environ,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "PYTHONUNBUFFERED": "1",
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "COLUMNS": str(columns),
        "LINES": str(ROWS),
    }


class Chat:
    """One ``streamchat chat`` in a pseudo-terminal. A prompt is a line starting with the bold
    ``You:`` label; an exchange ends when the next prompt is drawn."""

    def __init__(self, tmp_path: Path, *args: str, columns: int = COLUMNS) -> None:
        argv = [sys.executable, "-m", "streamchat.cli.main", "chat",
                "--db", str(tmp_path / "history.db"), *args]  # fmt: skip
        self.term = Terminal(argv, env=env(tmp_path, columns), rows=ROWS, columns=columns)
        self.term.wait_for(self.prompts)

    def prompts(self) -> list[int]:
        """The lines (indexes in ``term.lines()``) where a prompt was drawn."""
        return self.term.labels("You:")

    def editing(self) -> str:
        """The line being typed at the last prompt, as shown."""
        return self.term.lines()[self.prompts()[-1]].removeprefix("You:").strip()

    def exchange(self, keys: str, *, stop_when: str | Callable[[], object] | None = None) -> str:
        """Type ``keys``, then (if ``stop_when``) press Ctrl-C once the screen shows that; wait
        for the next prompt. What was shown below the typed line, up to that prompt."""
        before = len(self.prompts())
        self.term.send(keys)
        if stop_when is not None:
            self.term.wait_for(stop_when)
            self.term.send(CTRL_C)
        self.term.wait_for(lambda: len(self.prompts()) > before)
        typed, prompt = self.prompts()[before - 1 : before + 1]
        return "\n".join(self.term.lines()[typed + 1 : prompt])

    def command(self, line: str, *, keys: str = "") -> str:
        """Type ``keys`` then ``line`` and Enter; what it printed, up to the next prompt."""
        return self.exchange(keys + line + "\r")

    def turn(self, line: str, *, keys: str = "", stop_when: str | None = None) -> str:
        """Type ``keys`` then ``line`` and Enter; the reply as it ends up on screen (below the
        ``Assistant:`` label, up to the next prompt)."""
        shown = self.exchange(keys + line + "\r", stop_when=stop_when).split("\n")
        (label,) = [i for i, text in enumerate(shown) if text.startswith("Assistant:")]
        return "\n".join(shown[label + 1 :]).rstrip("\n")

    def leave(self, keys: str) -> int | None:
        """Send ``keys`` at the prompt; the exit status once the process has ended."""
        self.term.send(keys)
        return self.term.wait_for_exit()

    def close(self) -> None:
        self.term.close()


StartChat = Callable[..., Chat]


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[StartChat]:
    """``chat(*args)`` starts a chat in a terminal; all are closed after the test."""
    started: list[Chat] = []

    def start(*args: str) -> Chat:
        started.append(Chat(tmp_path, *args))
        return started[-1]

    yield start
    for one in started:
        one.close()


def test_welcome_line_and_coloured_labels(chat: StartChat) -> None:
    session = chat("-m", "scripted")
    reply = session.turn("hello")
    assert session.term.shows("Welcome to streamchat! Chatting with scripted (scripted).")
    assert session.term.shows("Ctrl-D")
    assert reply == "[turn 1] You said: hello"
    assert session.term.labels("You:") and session.term.labels("Assistant:")  # both bold
    assert session.term.style("You:").fg != session.term.style("Assistant:").fg != "default"
    assert session.leave("quit\r") == 0


def test_the_second_request_carries_the_first_turn(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    session = chat("-m", recording(record), "--system", "be kind")
    assert "[turn 1] You said: first" in session.turn("first")
    assert "[turn 2] You said: second" in session.turn("second")
    assert session.leave("quit\r") == 0
    first, second = received(record)
    assert text_turns(first) == [{"role": "user", "content": "first"}]
    assert text_turns(second) == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "[turn 1] You said: first"},
        {"role": "user", "content": "second"},
    ]
    assert first["system"] == second["system"] == "be kind"


@pytest.mark.parametrize("keys", ["quit\r", " Exit\r", "\x04"], ids=["quit", "exit", "ctrl-d"])
def test_quit_exit_and_ctrl_d_leave_with_a_goodbye(
    chat: StartChat, tmp_path: Path, keys: str
) -> None:
    record = tmp_path / "requests.jsonl"
    session = chat("-m", recording(record))
    session.turn("one")
    assert session.leave(keys) == 0
    assert session.term.shows("Goodbye!")
    assert len(received(record)) == 1  # the quit word was not sent as a prompt


def test_ctrl_c_stops_the_reply_and_the_next_turn_carries_the_partial_text(
    chat: StartChat, tmp_path: Path
) -> None:
    record = tmp_path / "requests.jsonl"
    session = chat("-m", recording(record, delay="0.1", repeat="20"))
    halfway = lambda: session.term.count("You said: go on") >= 2  # noqa: E731 (1 of 20 shown)
    shown = session.turn("go on", stop_when=halfway)
    assert shown.endswith("[stopped]")
    session.exchange(CTRL_C)  # at the prompt: a fresh prompt, not the end of the chat
    assert session.turn("next", stop_when="[turn 2] You said: next").endswith("[stopped]")
    assert session.leave("quit\r") == 0
    first, second = received(record)
    assert text_turns(first) == [{"role": "user", "content": "go on"}]
    user, partial, user_again = text_turns(second)
    full = " ".join(["[turn 1] You said: go on"] * 20)
    assert (user["content"], partial["role"], user_again["content"]) == (
        "go on",
        "assistant",
        "next",
    )
    assert partial["content"].startswith("[turn 1] You said: go on")
    assert full.startswith(partial["content"]) and partial["content"] != full


def test_stats_follow_each_reply(chat: StartChat) -> None:
    session = chat("-m", "scripted?delay=0.01", "--stats")
    for word in ("one", "two"):
        reply = session.turn(f"count {word}")
        assert f"You said: count {word}" in reply
        assert STATS.search(reply), reply
    session.leave("quit\r")


def test_markdown_is_styled_as_it_streams(chat: StartChat) -> None:
    text = "Use **bold** and `code`.\n- first item\n## Heading\n"
    session = chat("-m", "scripted?" + urlencode({"text": text, "delay": "0.01"}))
    shown = session.turn("show me")
    assert "Use bold and code." in shown and "**" not in shown and "`" not in shown
    assert "• first item" in shown and "- first" not in shown
    assert "Heading" in shown and "#" not in shown
    assert session.term.style("bold and").bold and not session.term.style("Use bold").bold
    session.leave("quit\r")


def test_up_arrow_recalls_the_previous_input_even_in_a_new_session(chat: StartChat) -> None:
    session = chat("-m", "scripted")
    session.turn("remember me")
    assert "[turn 2] You said: remember me" in session.turn("", keys=UP)
    assert session.leave("\x04") == 0
    later = chat("-m", "scripted")
    assert "[turn 1] You said: remember me" in later.turn("", keys=UP)
    later.leave("\x04")


def test_no_history_keeps_typed_input_off_the_disk(chat: StartChat, tmp_path: Path) -> None:
    session = chat("-m", "scripted", "--no-history")
    session.turn("secret words")
    assert "[turn 2] You said: secret words" in session.turn("", keys=UP)
    assert session.leave("\x04") == 0
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not [path for path in files if b"secret words" in path.read_bytes()]


@pytest.mark.model
def test_a_turn_on_the_embedded_model(chat: StartChat) -> None:
    session = chat("--max-tokens", "12", "--temperature", "0")
    assert session.term.shows("(local)") or session.term.shows("SmolLM2")
    reply = session.turn("Say hello.")
    assert reply.strip()
    assert session.leave("quit\r") == 0


def run_piped(tmp_path: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", "chat", "--no-history", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=60,
    )


def test_through_pipes_it_is_plain_text_without_escape_codes(tmp_path: Path) -> None:
    model = "scripted?" + urlencode({"text": "Some **bold**\n- item\n"})
    result = run_piped(tmp_path, "-m", model, "--stats", stdin="one\ntwo\n")
    assert result.returncode == 0
    assert result.stdout == "Some **bold**\n- item\n\n" * 2  # the Markdown as written
    assert "\x1b" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"Welcome to streamchat! Chatting with {model} (scripted)."
    assert lines[-1] == "Goodbye!"
    assert len([line for line in lines if STATS.fullmatch(line)]) == 2


def test_piped_turns_carry_the_conversation_and_the_system_prompt(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    result = run_piped(tmp_path, "-m", recording(record), "-s", "terse", stdin="a\nb\nquit\nc\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[turn 1] You said: a\n[turn 2] You said: b\n"  # nothing after quit
    first, second = received(record)
    assert first["system"] == second["system"] == "terse"
    assert [m["content"] for m in second["messages"]] == ["a", "[turn 1] You said: a", "b"]


def test_a_model_that_cannot_load_is_one_line_before_any_prompt(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"junk" * 1000)
    result = run_piped(tmp_path, "-m", str(broken), stdin="hello\n")
    assert result.returncode == 1
    ((line),) = result.stderr.splitlines()
    assert line.startswith("streamchat: error:") and "GGUF" in line
    assert result.stdout == ""


def test_a_reply_ends_up_on_screen_as_rich_renders_it(chat: StartChat) -> None:
    """Code highlighted, a table aligned, a long paragraph wrapped at words: what the terminal
    shows once the reply is done (its previews erased) is rich's rendering of the whole text."""
    from test_markdown_stream import rich_lines, shown_lines

    text = (
        "Here is **code**:\n\n```python\ndef add(a, b):\n    return a + b  # sum\n```\n\n"
        "| name | qty |\n|------|----:|\n| apple | 3 |\n| kiwi | 12 |\n\n"
        + "A long sentence that wraps at the edge of the terminal without cutting words. "
        * 4
    )
    session = chat("-m", "scripted?" + urlencode({"text": text, "delay": "0.005"}))
    reply = session.turn("show me")
    assert reply.split("\n") == shown_lines(rich_lines(text, COLUMNS))
    assert session.term.style("def add").fg not in ("default", session.term.style("add(").fg)
    session.leave("quit\r")
