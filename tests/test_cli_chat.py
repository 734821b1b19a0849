"""``streamchat chat`` as a person uses it, in a pseudo-terminal (pexpect): turns that carry the
conversation, colours and Markdown styling, input history, Ctrl-C, leaving; and through pipes,
where it is plain text without a single escape code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pexpect
import pytest

from serving import received, recording
from test_markdown_stream import Screen

ESCAPE = re.compile(r"\x1b[\[\]()][\d;?]*[A-Za-z]?")  # any escape sequence
STATS = re.compile(r"TTFT \d+ ms · total [\d.]+ s · \d+ in / \d+ out tokens · [\d.]+ tokens/s")
UP = "\x1b[A"


def text_turns(request: dict) -> list[dict]:
    """A recorded request's turns as ``{role, content}``, checked to hold text only."""
    assert all(not m.get("blocks") for m in request["messages"]), request["messages"]
    return [{"role": m["role"], "content": m["content"]} for m in request["messages"]]


def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "STREAMCHAT_DB"}
    return {
        **environ,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "PYTHONUNBUFFERED": "1",
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "COLUMNS": "120",
        "LINES": "40",
    }


def styled(screen: str, label: str) -> bool:
    """Whether ``label`` is shown in a colour or weight (not merely after a reset)."""
    codes = re.findall(r"\x1b\[([\d;]*)m" + re.escape(label), screen)
    return bool(codes) and all(set(c.split(";")) - {"", "0"} for c in codes)


def plain(screen: str) -> str:
    """What the terminal shows as text: escape sequences and carriage returns removed."""
    return ESCAPE.sub("", screen).replace("\r", "")


def screen(output: str) -> str:
    """What a terminal shows at the end of ``output`` (a reply: its previews erased)."""
    return "\n".join(Screen(120).feed(output).lines())


class Chat:
    """One ``streamchat chat`` in a pseudo-terminal."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "streamchat.cli.main", "chat", "--db", str(tmp_path / "history.db"), *args],
            env=env(tmp_path),
            dimensions=(40, 120),
            encoding="utf-8",
            timeout=30,
        )
        self.screen = ""  # everything read so far, escape codes included
        self.expect("You:")

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern``; the output before it."""
        self.child.expect(pattern)
        after = self.child.after if isinstance(self.child.after, str) else ""  # not at EOF
        self.screen += self.child.before + after
        return self.child.before

    def turn(self, line: str, *, keys: str = "") -> str:
        """Type ``keys`` then ``line`` and Enter; the reply as shown, up to the next prompt."""
        self.child.send(keys + line + "\r")
        self.expect("Assistant:")
        return self.expect("You:")

    def leave(self, keys: str) -> int:
        """Send ``keys`` at the prompt; the exit status once the process has ended."""
        self.child.send(keys)
        self.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        self.child.close(force=True)


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
    assert "Welcome to streamchat! Chatting with scripted (scripted)." in plain(session.screen)
    assert "Ctrl-D" in plain(session.screen)
    assert screen(reply).strip() == "[turn 1] You said: hello"
    assert styled(session.screen, "You:") and styled(session.screen, "Assistant:")
    assert session.leave("quit\r") == 0


def test_the_second_request_carries_the_first_turn(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    session = chat("-m", recording(record), "--system", "be kind")
    assert "[turn 1] You said: first" in screen(session.turn("first"))
    assert "[turn 2] You said: second" in screen(session.turn("second"))
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
    assert "Goodbye!" in plain(session.screen)
    assert len(received(record)) == 1  # the quit word was not sent as a prompt


def test_ctrl_c_stops_the_reply_and_the_next_turn_carries_the_partial_text(
    chat: StartChat, tmp_path: Path
) -> None:
    record = tmp_path / "requests.jsonl"
    session = chat("-m", recording(record, delay="0.1", repeat="20"))
    session.child.send("go on\r")
    session.expect("You said")
    time.sleep(0.5)
    session.child.sendintr()
    session.expect(r"\[stopped\]")
    session.expect("You:")
    session.child.sendintr()  # at the prompt: a fresh prompt, not the end of the chat
    session.expect("You:")
    session.child.send("next\r")
    session.expect(r"\[turn 2\] You said: next")
    session.child.sendintr()
    session.expect("You:")
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
        reply = screen(session.turn(f"count {word}"))
        assert f"You said: count {word}" in reply
        assert STATS.search(reply), reply
    session.leave("quit\r")


def test_markdown_is_styled_as_it_streams(chat: StartChat) -> None:
    text = "Use **bold** and `code`.\n- first item\n## Heading\n"
    session = chat("-m", "scripted?" + urlencode({"text": text, "delay": "0.01"}))
    reply = session.turn("show me")
    shown = screen(reply)
    assert "Use bold and code." in shown and "**" not in shown and "`" not in shown
    assert "• first item" in shown and "- first" not in shown
    assert "Heading" in shown and "#" not in shown
    assert re.search(r"\x1b\[1mbold", reply)  # bold is bold
    session.leave("quit\r")


def test_up_arrow_recalls_the_previous_input_even_in_a_new_session(chat: StartChat) -> None:
    session = chat("-m", "scripted")
    session.turn("remember me")
    assert "[turn 2] You said: remember me" in screen(session.turn("", keys=UP))
    assert session.leave("\x04") == 0
    later = chat("-m", "scripted")
    assert "[turn 1] You said: remember me" in plain(later.turn("", keys=UP))
    later.leave("\x04")


def test_no_history_keeps_typed_input_off_the_disk(chat: StartChat, tmp_path: Path) -> None:
    session = chat("-m", "scripted", "--no-history")
    session.turn("secret words")
    assert "[turn 2] You said: secret words" in screen(session.turn("", keys=UP))
    assert session.leave("\x04") == 0
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not [path for path in files if b"secret words" in path.read_bytes()]


@pytest.mark.model
def test_a_turn_on_the_embedded_model(chat: StartChat) -> None:
    session = chat("--max-tokens", "12", "--temperature", "0")
    assert "(local)" in plain(session.screen) or "SmolLM2" in plain(session.screen)
    reply = screen(session.turn("Say hello."))
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
    first, *lines = screen(reply).splitlines()  # the rest of the label's line, then the reply
    assert first == "" and lines == shown_lines(rich_lines(text, 120))
    assert re.search(r"\x1b\[[\d;]*38;[25];[\d;]+mdef", reply)  # a keyword's colour
    session.leave("quit\r")
