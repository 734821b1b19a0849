"""History through real ``streamchat`` processes: killed mid-reply, in parallel, resumed,
exported, searched, deleted, and with a broken database file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from serving import received
from streamchat.errors import HistoryError
from streamchat.history import HistoryStore
from terminal import Terminal
from test_cli_chat import Chat
from waiting import wait_until

SLOW = "scripted?delay=0.1&repeat=20"


def env(tmp_path: Path) -> dict[str, str]:
    """No user data touched: XDG points into the test's folder, no inherited STREAMCHAT_DB."""
    environ = {k: v for k, v in os.environ.items() if k != "STREAMCHAT_DB"}
    return {**environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "streamchat.cli.main", *map(str, args)]


def run(tmp_path: Path, *args: str | Path, stdin: str = "", prefix: tuple[str, ...] = ()):
    return subprocess.run(
        [*prefix, *command(*args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=60,
    )


def conversations(db: Path) -> list[dict]:
    with HistoryStore(db, readonly=True) as store:
        return [store.conversation(c["id"]) for c in store.conversations(limit=100)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.db"


def test_sigkill_mid_reply_leaves_the_partial_text_marked_interrupted(
    tmp_path: Path, db: Path
) -> None:
    process = subprocess.Popen(
        command("ask", "--db", db, "--model", SLOW, "count slowly"),
        stdout=subprocess.PIPE,
        env=env(tmp_path),
    )

    def partial_words() -> int:
        """Words of the reply as the history holds it so far (the ask is still running)."""
        try:
            found = conversations(db)
        except (HistoryError, sqlite3.Error):  # not created yet
            return 0
        replies = [m["text"] for c in found for m in c["messages"] if m["role"] == "assistant"]
        return len(replies[0].split()) if replies else 0

    try:
        assert os.read(process.stdout.fileno(), 100)  # the reply has started
        wait_until(lambda: partial_words() >= 3, what="a partial reply of 3 words in the history")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    full = " ".join(["[turn 1] You said: count slowly"] * 20)
    ((conversation),) = conversations(db)
    user, reply = conversation["messages"]
    assert user["text"] == "count slowly"
    assert reply["interrupted"] is True
    assert reply["stop_reason"] is None
    assert len(reply["text"].split()) >= 3, reply["text"]  # flushed after the first token
    assert full.startswith(reply["text"]) and reply["text"] != full


def test_a_normal_ask_is_a_one_turn_conversation_with_metrics(tmp_path: Path, db: Path) -> None:
    result = run(tmp_path, "ask", "--db", db, "--model", "scripted?delay=0.01", "-s", "sys", "hi")
    assert result.returncode == 0, result.stderr
    ((conversation),) = conversations(db)
    assert (conversation["source"], conversation["system"]) == ("ask", "sys")
    assert conversation["provider"] == "scripted"
    _, reply = conversation["messages"]
    assert reply["text"] == result.stdout.strip() == "[turn 1] You said: hi"
    assert (reply["interrupted"], reply["stop_reason"]) == (False, "end_turn")
    assert reply["output_tokens"] == 5 and reply["ttft"] is not None
    assert reply["total_time"] >= reply["ttft"]


def test_an_error_mid_reply_is_kept_with_the_error(tmp_path: Path, db: Path) -> None:
    model = "scripted?error_after=3&error=overloaded_error"
    result = run(tmp_path, "ask", "--db", db, "--model", model, "fail please")
    assert result.returncode == 1
    (reply,) = [m for m in conversations(db)[0]["messages"] if m["role"] == "assistant"]
    assert reply["text"] == "[turn 1] You"
    assert reply["interrupted"] is True
    assert reply["error"].startswith("overloaded_error")


def test_two_asks_at_once_lose_nothing(tmp_path: Path, db: Path) -> None:
    model = "scripted?delay=0.02&repeat=8"  # ~40 tokens each, several flushes that interleave
    processes = [
        subprocess.Popen(
            command("ask", "--db", db, "--model", model, f"question {i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(tmp_path),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all(not err for _, err in outputs), outputs
    stored = sorted(
        (c["messages"][0]["text"], c["messages"][1]["text"], c["messages"][1]["interrupted"])
        for c in conversations(db)
    )
    expected = [
        (f"question {i}", " ".join([f"[turn 1] You said: question {i}"] * 8), False)
        for i in range(2)
    ]
    assert stored == expected


def test_no_history_writes_nothing(tmp_path: Path, db: Path) -> None:
    result = run(tmp_path, "ask", "--db", db, "--no-history", "--model", "scripted", "secret")
    assert result.returncode == 0
    assert not db.exists()
    result = run(tmp_path, "chat", "--db", db, "--no-history", "-m", "scripted", stdin="x\n")
    assert result.returncode == 0
    assert not db.exists()


def test_default_database_is_private_under_xdg_data_home(tmp_path: Path) -> None:
    result = run(tmp_path, "ask", "--model", "scripted", "where do I go")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "xdg" / "streamchat" / "history.db"
    assert conversations(path)[0]["messages"][0]["text"] == "where do I go"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_chat_logs_every_turn(tmp_path: Path, db: Path) -> None:
    result = run(tmp_path, "chat", "--db", db, "-m", "scripted", stdin="one\ntwo\nquit\n")
    assert result.returncode == 0, result.stderr
    ((conversation),) = conversations(db)
    assert conversation["source"] == "chat"
    assert [(m["role"], m["text"]) for m in conversation["messages"]] == [
        ("user", "one"),
        ("assistant", "[turn 1] You said: one"),
        ("user", "two"),
        ("assistant", "[turn 2] You said: two"),
    ]


def test_continue_and_resume_send_the_whole_prior_conversation(tmp_path: Path, db: Path) -> None:
    record = tmp_path / "requests.jsonl"
    recording = f"scripted?record={record}"
    assert (
        run(tmp_path, "chat", "--db", db, "-m", "scripted", stdin="hello\nsecond\n").returncode == 0
    )
    assert run(tmp_path, "chat", "--db", db, "-m", "scripted", stdin="other\n").returncode == 0
    first, latest = sorted(c["id"] for c in conversations(db))

    resumed = run(tmp_path, "chat", "--db", db, "-m", recording, "--continue", stdin="more\n")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming conversation {latest}" in resumed.stderr
    (request,) = received(record)
    assert [(m["role"], m["content"]) for m in request["messages"]] == [
        ("user", "other"),
        ("assistant", "[turn 1] You said: other"),
        ("user", "more"),
    ]

    record.unlink()
    resumed = run(tmp_path, "chat", "--db", db, "-m", recording, "--resume", first, stdin="third\n")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming conversation {first}" in resumed.stderr
    assert "You: second" in resumed.stderr  # the recap
    (request,) = received(record)
    assert [(m["role"], m["content"]) for m in request["messages"]] == [
        ("user", "hello"),
        ("assistant", "[turn 1] You said: hello"),
        ("user", "second"),
        ("assistant", "[turn 2] You said: second"),
        ("user", "third"),
    ]
    by_id = {c["id"]: c for c in conversations(db)}
    assert len(by_id) == 2  # resumed turns are appended, no new conversations
    assert by_id[first]["messages"][-1]["text"] == "[turn 3] You said: third"


def test_resume_of_an_unknown_id_is_a_one_line_error(tmp_path: Path, db: Path) -> None:
    run(tmp_path, "ask", "--db", db, "--model", "scripted", "x")
    result = run(tmp_path, "chat", "--db", db, "-m", "scripted", "--resume", "99", stdin="y\n")
    assert result.returncode == 1
    assert result.stderr.strip() == "streamchat: error: no conversation 99"


@pytest.fixture
def junk_db(db: Path) -> Path:
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(8192))
    return db


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("streamchat: warning:")]


def test_corrupt_database_warns_once_and_ask_and_chat_still_work(
    tmp_path: Path, junk_db: Path
) -> None:
    before = junk_db.read_bytes()
    result = run(tmp_path, "ask", "--db", junk_db, "--model", "scripted", "still there?")
    assert (result.returncode, result.stdout) == (0, "[turn 1] You said: still there?\n")
    assert "Traceback" not in result.stderr
    (warning,) = warnings(result.stderr)
    assert str(junk_db) in warning and "not a database" in warning and "history is off" in warning

    result = run(tmp_path, "chat", "--db", junk_db, "-m", "scripted", "--continue", stdin="a\n")
    assert result.returncode == 0 and "[turn 1] You said: a" in result.stdout
    assert "Traceback" not in result.stderr and len(warnings(result.stderr)) == 2
    assert junk_db.read_bytes() == before  # never "repaired" by overwriting


def test_corrupt_database_is_a_one_line_error_for_history_commands(
    tmp_path: Path, junk_db: Path
) -> None:
    for args in (("list",), ("show", "1"), ("search", "x"), ("delete", "1"), ("export", "1")):
        result = run(tmp_path, "history", *args, "--db", junk_db)
        assert result.returncode == 1, args
        (line,) = result.stderr.splitlines()
        assert line.startswith("streamchat: error: history database") and "not a database" in line


def drop_file_permission_override() -> tuple[str, ...]:
    """Root ignores file modes; without CAP_DAC_OVERRIDE it obeys them like any user."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def test_read_only_database_warns_and_ask_still_works(tmp_path: Path, db: Path) -> None:
    prefix = drop_file_permission_override()
    assert run(tmp_path, "ask", "--db", db, "--model", "scripted", "first").returncode == 0
    db.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        result = run(tmp_path, "ask", "--db", db, "-m", "scripted", "second", prefix=prefix)
        assert (result.returncode, result.stdout) == (0, "[turn 1] You said: second\n")
        (warning,) = warnings(result.stderr)
        assert "readonly" in warning and "history is off" in warning, warning
        assert "Traceback" not in result.stderr

        result = run(tmp_path, "history", "delete", "1", "--db", db, prefix=prefix)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("streamchat: error: history database") and "readonly" in line
    finally:
        db.parent.chmod(0o700)
        db.chmod(0o600)
    assert len(conversations(db)) == 1


@pytest.fixture
def two_conversations(tmp_path: Path, db: Path) -> Path:
    for prompt in ("tell me about pelicans", "and what about albatrosses"):
        assert run(tmp_path, "ask", "--db", db, "--model", "scripted", prompt).returncode == 0
    return db


def test_history_list_shows_latest_first(tmp_path: Path, two_conversations: Path) -> None:
    result = run(tmp_path, "history", "list", "--db", two_conversations)
    assert result.returncode == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("2", "scripted", "1", "and what about albatrosses"),
        ("1", "scripted", "1", "tell me about pelicans"),
    ]
    limited = run(tmp_path, "history", "list", "--limit", "1", "--db", two_conversations)
    assert [line.split("\t")[0] for line in limited.stdout.splitlines()] == ["2"]


def test_history_list_draws_a_table_on_a_terminal(tmp_path: Path, two_conversations: Path) -> None:
    shown = Terminal(command("history", "list", "--db", two_conversations), env=env(tmp_path))
    assert shown.wait_for_exit() == 0
    assert shown.shows("First words") and shown.shows("━") and shown.shows("albatrosses")


def test_history_show_and_search(tmp_path: Path, two_conversations: Path) -> None:
    shown = run(tmp_path, "history", "show", "1", "--db", two_conversations).stdout
    assert "## User\n\ntell me about pelicans\n" in shown
    assert "## Assistant (" in shown and "[turn 1] You said: tell me about pelicans" in shown

    found = run(tmp_path, "history", "search", "albatrosses", "--db", two_conversations)
    rows = [line.split("\t") for line in found.stdout.splitlines()]
    assert sorted((r[0], r[1]) for r in rows) == [("2", "assistant"), ("2", "user")]
    assert all("[albatrosses]" in r[3] for r in rows)
    nothing = run(tmp_path, "history", "search", "zebras", "--db", two_conversations)
    assert (nothing.returncode, nothing.stdout) == (0, "")


def test_history_delete_removes_it_everywhere(tmp_path: Path, two_conversations: Path) -> None:
    db = two_conversations
    result = run(tmp_path, "history", "delete", "1", "--db", db)
    assert (result.returncode, result.stdout) == (0, "deleted conversation 1\n")
    listed = run(tmp_path, "history", "list", "--db", db).stdout
    assert [line.split("\t")[0] for line in listed.splitlines()] == ["2"]
    assert run(tmp_path, "history", "search", "pelicans", "--db", db).stdout == ""
    again = run(tmp_path, "history", "show", "1", "--db", db)
    assert (again.returncode, again.stderr) == (1, "streamchat: error: no conversation 1\n")


def test_export_markdown_and_json_round_trip(tmp_path: Path, two_conversations: Path) -> None:
    db = two_conversations
    markdown = run(tmp_path, "history", "export", "1", "--format", "md", "--db", db).stdout
    assert markdown.startswith("# Conversation 1\n") and "tell me about pelicans" in markdown

    out = tmp_path / "one.json"
    result = run(tmp_path, "history", "export", "1", "-o", out, "--db", db)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    exported = json.loads(out.read_text())
    with HistoryStore(db, readonly=True) as store:
        assert exported["messages"] == store.conversation(1)["messages"]
    with HistoryStore(tmp_path / "other.db") as other:
        copy = other.conversation(other.import_conversation(exported))
    keep = ("role", "text", "model", "input_tokens", "output_tokens", "ttft", "stop_reason")
    assert [{k: m[k] for k in keep} for m in copy["messages"]] == [
        {k: m[k] for k in keep} for m in exported["messages"]
    ]


def test_ctrl_c_in_the_terminal_chat_keeps_the_partial_reply(tmp_path: Path) -> None:
    session = Chat(tmp_path, "-m", SLOW)
    try:
        halfway = lambda: session.term.count("You said: go on") >= 2  # noqa: E731 (1 of 20 shown)
        assert session.turn("go on", stop_when=halfway).endswith("[stopped]")
        assert session.turn("next", stop_when="[turn 2]").endswith("[stopped]")
        assert session.leave("quit\r") == 0
    finally:
        session.close()
    ((conversation),) = conversations(tmp_path / "history.db")
    texts = [(m["role"], m["interrupted"]) for m in conversation["messages"]]
    assert texts == [("user", False), ("assistant", True), ("user", False), ("assistant", True)]
    partial = conversation["messages"][1]["text"]
    full = " ".join(["[turn 1] You said: go on"] * 20)
    assert partial.startswith("[turn 1] You said: go on") and full.startswith(partial)
    assert partial != full
