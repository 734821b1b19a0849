"""The chat's commands, multi-line input, attachments and the context window, in a pseudo-terminal
as a person types them and reads the screen; what reached the model is read back from a
recording scripted model."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from media_files import make_png
from serving import received, recording
from terminal import flowed
from test_cli_chat import Chat, StartChat, chat, text_turns

__all__ = ["chat"]  # the fixture, imported for these tests

ESC_ENTER = "\x1b\r"  # what Alt-Enter sends, and Esc then Enter


def contents(request: dict) -> list[str]:
    return [turn["content"] for turn in text_turns(request)]


def test_help_lists_every_command(chat: StartChat) -> None:
    session = chat("-m", "scripted")
    shown = session.command("/help")
    for name in ("model", "system", "new", "retry", "undo", "save", "stats", "history",
                 "resume", "file", "tokens"):  # fmt: skip
        assert f"/{name}" in shown, name
    assert "Alt-Enter" in shown
    assert "unknown command /nope" in session.command("/nope")
    assert session.leave("/quit\r") == 0


def complete(session: Chat, keys: str, completed: str) -> None:
    """Type ``keys`` ending in Tab and wait until the line being typed shows ``completed``."""
    session.term.send(keys)
    session.term.wait_for(lambda: session.editing() == completed)


def test_tab_completes_commands_and_their_arguments(chat: StartChat, tmp_path: Path) -> None:
    session = chat("-m", recording(tmp_path / "r.jsonl"))
    complete(session, "/sta\t", "/stats")
    assert "Stats on." in session.command(" on")
    complete(session, "/model scr\t", "/model scripted")
    assert "Now chatting with scripted" in session.command("")
    reply = session.turn("hi")
    assert "[turn 1] You said: hi" in reply
    assert "TTFT" in reply  # stats still on
    session.leave("\x04")


def test_model_switches_and_the_conversation_carries_over(chat: StartChat, tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    session = chat("-m", recording(first))
    session.turn("one")
    shown = session.command(f"/model {recording(second)}")
    assert "Now chatting with" in shown and "carries over" in shown
    assert "You said: two" in session.turn("two")
    assert len(received(first)) == 1
    (request,) = received(second)
    assert contents(request) == ["one", "[turn 1] You said: one", "two"]
    assert "Chatting with" in session.command("/model")
    session.leave("\x04")


def test_an_unknown_model_is_refused_with_the_closest_name(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    shown = session.command("/model smolm2")
    assert "unknown model 'smolm2'" in shown and "did you mean 'smollm2'?" in shown
    session.turn("still here")
    assert len(received(record)) == 1  # the same model answered
    session.leave("\x04")


def test_system_sets_and_clears_the_system_prompt(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    assert "System prompt set." in session.command("/system answer in French")
    assert "answer in French" in session.command("/system")
    session.turn("a")
    assert "cleared" in session.command("/system off")
    session.turn("b")
    first, second = received(record)
    assert first["system"] == "answer in French"
    assert not second["system"]
    session.leave("\x04")


def test_new_starts_a_new_conversation_in_memory_and_in_the_history(
    chat: StartChat, tmp_path: Path
) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    session.turn("old topic")
    assert "New conversation." in session.command("/new")
    session.turn("fresh topic")
    assert contents(received(record)[-1]) == ["fresh topic"]
    listed = session.command("/history")
    assert "fresh topic" in listed and "old topic" in listed
    assert "(this one)" in listed.split("fresh topic")[1].splitlines()[0]
    session.leave("\x04")


def test_retry_regenerates_the_last_reply(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    session.turn("question")
    assert session.turn("/retry") == "[turn 1] You said: question"
    session.turn("next")
    first, again, last = received(record)
    assert contents(first) == contents(again) == ["question"]  # the old reply was not sent
    assert contents(last) == ["question", "[turn 1] You said: question", "next"]
    session.leave("\x04")


def test_undo_drops_the_last_exchange(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    session.turn("keep")
    session.turn("regret")
    assert "Dropped the last exchange (You: regret)" in session.command("/undo")
    session.turn("instead")
    assert contents(received(record)[-1]) == ["keep", "[turn 1] You said: keep", "instead"]
    session.command("/new")
    assert "Nothing to undo" in session.command("/undo")
    session.leave("\x04")


def test_save_writes_the_conversation_as_markdown(chat: StartChat, tmp_path: Path) -> None:
    session = chat("-m", "scripted", "-s", "be brief")
    session.turn("hello there")
    target = tmp_path / "saved.md"
    assert f"Saved 2 turns to {target}" in session.command(f"/save {target}")
    text = target.read_text()
    assert text.startswith("# Conversation with scripted")
    assert "System prompt: be brief" in text
    assert "## You\n\nhello there\n" in text
    assert "## Assistant\n\n[turn 1] You said: hello there\n" in text
    assert "cannot save" in session.command(f"/save {tmp_path}/missing/dir/x.md")
    session.leave("\x04")


def test_stats_on_and_off(chat: StartChat) -> None:
    session = chat("-m", "scripted")
    session.command("/stats on")
    assert "TTFT" in session.turn("a")
    assert "Stats off." in session.command("/stats off")
    assert "TTFT" not in session.turn("b")
    assert "usage: /stats on|off" in session.command("/stats maybe")
    session.leave("\x04")


def test_history_and_resume_continue_an_earlier_conversation(
    chat: StartChat, tmp_path: Path
) -> None:
    record = tmp_path / "r.jsonl"
    earlier = chat("-m", recording(record))
    earlier.turn("remember the word banana")
    earlier.leave("\x04")
    session = chat("-m", recording(record))
    session.turn("unrelated")
    listed = session.command("/history")
    line = next(ln for ln in listed.splitlines() if "banana" in ln)
    conversation_id = line.split()[0]
    shown = session.command(f"/resume {conversation_id}")
    assert f"Resuming conversation {conversation_id}" in shown
    session.turn("what was the word?")
    assert contents(received(record)[-1]) == [
        "remember the word banana",
        "[turn 1] You said: remember the word banana",
        "what was the word?",
    ]
    assert "no conversation 999" in session.command("/resume 999")
    session.leave("\x04")


def test_file_attaches_a_text_file_to_the_next_message(chat: StartChat, tmp_path: Path) -> None:
    notes = tmp_path / "notes.py"
    notes.write_text("def f():\n    return 42\n")
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    shown = session.command(f"/file {notes}")
    assert f"📎 {notes} (2 lines, 23 bytes)" in shown
    session.turn("what does it return?")
    session.turn("thanks")
    with_file, after = received(record)
    assert contents(with_file)[-1] == (
        f"what does it return?\n\nFile {notes}:\n```python\ndef f():\n    return 42\n```"
    )
    assert contents(after)[-1] == "thanks"  # attached once
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02")
    assert "not a text file" in session.command(f"/file {binary}")
    assert "cannot read" in session.command(f"/file {tmp_path}/nothing.txt")
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_png())
    assert f"📎 {photo} (image/png, {len(make_png())} bytes)" in session.command(f"/file {photo}")
    session.turn("and this?")  # a model that reads images gets it as an image block
    blocks = received(record)[-1]["messages"][-1]["blocks"]
    assert [block["type"] for block in blocks] == ["text", "image"]
    assert base64.b64decode(blocks[1]["source"]["data"]) == make_png()
    session.command("/model smollm2")
    refused = session.command(f"/file {photo}")  # the embedded model reads text only
    assert "reads no images" in refused and "attached" not in refused
    session.leave("\x04")


def test_tokens_shows_the_context_used(chat: StartChat) -> None:
    session = chat("-m", "scripted?context=100")
    session.turn("one two three")
    shown = session.command("/tokens")
    assert "context: 11 tokens of 100 (11%) · 2 turns" in shown  # with a one-word message
    session.leave("\x04")


def test_the_oldest_turns_are_left_out_when_the_context_is_full(
    chat: StartChat, tmp_path: Path
) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record, context=60), "--max-tokens", "10")
    words = "alpha beta gamma delta epsilon zeta"
    for n in range(3):
        session.turn(f"{n} {words}")
    assert not session.term.shows("left out")
    notice = flowed(session.command(f"3 {words}").split("Assistant:")[0])
    assert "[the oldest 2 turns left out" in notice and "context window of 60" in notice
    last = contents(received(record)[-1])
    assert last[-1] == f"3 {words}"  # the newest turn whole
    assert last[0] == f"1 {words}"  # the oldest exchange left out
    assert "left out to fit" in session.command("/tokens")
    session.leave("\x04")


def test_a_turn_too_long_for_the_window_is_sent_whole_and_the_error_shown(
    chat: StartChat, tmp_path: Path
) -> None:
    session = chat("-m", "scripted?context=5")
    reply = flowed(session.turn("one two three four five six seven"))
    assert "[error: messages: prompt is too long: 7 tokens > 5 maximum" in reply
    assert "You said" not in reply
    session.leave("\x04")


def test_alt_enter_and_esc_enter_insert_a_newline(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    session.turn("three", keys="line one" + ESC_ENTER + "line two" + ESC_ENTER)
    assert contents(received(record)[-1]) == ["line one\nline two\nthree"]
    session.leave("\x04")


def test_pasted_text_keeps_its_newlines(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    session.turn(" (pasted)", keys="\x1b[200~first line\nsecond line\n\nfourth\x1b[201~")
    assert contents(received(record)[-1]) == ["first line\nsecond line\n\nfourth (pasted)"]
    session.leave("\x04")


def test_a_double_slash_sends_a_line_starting_with_a_slash(chat: StartChat, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    session = chat("-m", recording(record))
    session.turn("//usr/bin is a directory")
    assert contents(received(record)[-1]) == ["/usr/bin is a directory"]
    session.leave("\x04")


@pytest.mark.parametrize("line", ["/help", "/tokens", "/stats on"])
def test_commands_work_through_pipes_too(tmp_path: Path, line: str) -> None:
    import subprocess
    import sys

    from test_cli_chat import env

    result = subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", "chat", "--no-history", "-m", "scripted"],
        input=f"{line}\nhello\n",
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[turn 1] You said: hello")
    assert "\x1b" not in result.stdout + result.stderr
