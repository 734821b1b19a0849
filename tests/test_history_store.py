"""The history store and recorder in-process: schema, privacy, flushing, search, round trips."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streamchat.errors import ConversationNotFoundError, HistoryError
from streamchat.events import ErrorBody, ErrorEvent
from streamchat.history import SCHEMA_VERSION, HistoryStore, db_path, turns_for_model
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.recording.commit import GroupCommit, group_commit
from streamchat.recording.reply import ReplyRecorder


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    with HistoryStore(tmp_path / "h.db") as opened:
        yield opened


def reply_events(words: list[str], *, end: bool = True) -> list:
    events = [message_start("m1", 3), text_block_start()]
    events += [text_delta(word) for word in words]
    if end:
        events += message_end("end_turn", len(words))
    return events


def test_schema_is_versioned_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HistoryStore(path) as store:
        conversation_id = store.new_conversation(model="m")
        store.add_message(conversation_id, "user", "kept")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with HistoryStore(path) as store:
        assert store.conversation(conversation_id)["messages"][0]["text"] == "kept"


def test_database_from_a_newer_streamchat_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    HistoryStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer"):
        HistoryStore(path)


def test_database_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "h.db"
    with HistoryStore(path) as store:
        store.new_conversation()
        for file in path.parent.iterdir():  # the -wal and -shm files too
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_db_path_prefers_flag_then_environment_then_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STREAMCHAT_DB", raising=False)
    assert db_path() == tmp_path / "xdg" / "streamchat" / "history.db"
    monkeypatch.setenv("STREAMCHAT_DB", str(tmp_path / "env.db"))
    assert db_path() == tmp_path / "env.db"
    assert db_path(tmp_path / "flag.db") == tmp_path / "flag.db"


def test_junk_file_is_a_history_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(HistoryError, match=r"h\.db is unusable: file is not a database"):
        HistoryStore(path)


def deltas(store: HistoryStore) -> list[tuple[int, str]]:
    rows = store._db.execute("SELECT seq, text FROM message_deltas ORDER BY seq").fetchall()
    return [tuple(row) for row in rows]


def test_reply_row_appears_at_its_first_commit_marked_interrupted(store: HistoryStore) -> None:
    conversation_id = store.new_conversation()
    committer = GroupCommit(store, interval=3600)  # commits only when asked
    recorder = ReplyRecorder(committer, conversation_id=conversation_id)
    for event in reply_events(["Hello", " there"], end=False)[:3]:
        recorder.observe(event)
    assert store.conversation(conversation_id)["messages"] == []  # nothing written per token
    assert committer.sync().result(10) is True
    (message,) = store.conversation(conversation_id)["messages"]
    assert (message["text"], message["interrupted"], message["model"]) == ("Hello", True, "m1")


def test_each_commit_appends_only_what_streamed_since_the_last(store: HistoryStore) -> None:
    """A commit's cost does not grow with the reply: it adds one delta row with the new text;
    the reply's own row (and its search index) is written whole once, at the end."""
    conversation_id = store.new_conversation()
    committer = GroupCommit(store, interval=3600)
    recorder = ReplyRecorder(committer, conversation_id=conversation_id)
    for event in reply_events(["a", "b"], end=False):
        recorder.observe(event)
    committer.sync().result(10)
    for word in ("c", "d", "e"):
        recorder.observe(text_delta(word))
    committer.sync().result(10)
    assert deltas(store) == [(1, "ab"), (2, "cde")]
    row = store._db.execute("SELECT text, output_tokens FROM messages").fetchone()
    assert tuple(row) == ("", 5)  # the row holds the count; the text is in the deltas
    assert store.conversation(conversation_id)["messages"][0]["text"] == "abcde"
    assert store.search("abcde") == []  # indexed once, when whole
    for event in message_end("end_turn", 5):
        recorder.observe(event)
    assert recorder.finish().result(10) is True
    assert deltas(store) == []
    (message,) = store.conversation(conversation_id)["messages"]
    assert (message["text"], message["interrupted"]) == ("abcde", False)
    assert len(store.search("abcde")) == 1


def test_records_applied_twice_change_nothing(store: HistoryStore) -> None:
    """A spool drained up to a crash is drained again: the same records a second time."""
    conversation_id = store.new_conversation()
    recorder = ReplyRecorder(GroupCommit(store, interval=3600), conversation_id=conversation_id)
    for event in reply_events(["x", "y"], end=False):
        recorder.observe(event)
    records = recorder.take_records()
    recorder.observe(text_delta("z"))
    records += recorder.take_records()
    store.apply(records)
    store.apply(records)
    (message,) = store.conversation(conversation_id)["messages"]
    assert message["text"] == "xyz"


def test_normal_end_clears_interrupted_and_stores_usage(store: HistoryStore) -> None:
    from streamchat.metrics import Metrics

    conversation_id = store.new_conversation()
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in reply_events(["a", "b"]):
        recorder.observe(event)
    recorder.finish_and_wait(Metrics(ttft=0.25, total_time=1.5, output_tokens=2))
    (message,) = store.conversation(conversation_id)["messages"]
    assert message["text"] == "ab"
    assert message["interrupted"] is False
    assert (message["input_tokens"], message["output_tokens"]) == (3, 2)
    assert (message["ttft"], message["total_time"], message["stop_reason"]) == (
        0.25,
        1.5,
        "end_turn",
    )


def test_error_event_keeps_text_and_records_the_error(store: HistoryStore) -> None:
    conversation_id = store.new_conversation()
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in reply_events(["partial"], end=False):
        recorder.observe(event)
    recorder.observe(ErrorEvent(ErrorBody("overloaded_error", "busy")))
    recorder.finish_and_wait()
    (message,) = store.conversation(conversation_id)["messages"]
    assert message["text"] == "partial"
    assert message["interrupted"] is True
    assert message["error"] == "overloaded_error: busy"


def test_a_refused_write_is_reported_and_never_raised(store: HistoryStore) -> None:
    conversation_id = store.new_conversation()
    committer = GroupCommit(store, interval=3600)
    errors: list[HistoryError] = []
    committer.on_error = errors.append
    recorder = ReplyRecorder(committer, conversation_id=conversation_id)
    store._db.close()  # e.g. the disk went away
    for event in reply_events(["a", "b", "c"]):
        recorder.observe(event)
    recorder.finish_and_wait()
    assert len(errors) == 1


def test_search_sees_streamed_updates_and_forgets_deleted(store: HistoryStore) -> None:
    conversation_id = store.new_conversation()
    store.add_message(conversation_id, "user", "tell me about pelicans")
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in reply_events(["Pelicans", " are", " large", " waterbirds"]):
        recorder.observe(event)
    recorder.finish_and_wait()
    (hit,) = store.search("waterbirds")
    assert hit["conversation_id"] == conversation_id
    assert "\x02waterbirds\x03" in hit["snippet"]
    assert len(store.search("pelicans")) == 2
    assert store.search('odd "quotes" AND-syntax') == []  # user text is never FTS syntax
    store.delete(conversation_id)
    assert store.search("pelicans") == []
    with pytest.raises(ConversationNotFoundError):
        store.conversation(conversation_id)
    with pytest.raises(ConversationNotFoundError):
        store.delete(conversation_id)


def test_list_is_latest_first_with_turns_and_preview(store: HistoryStore) -> None:
    first = store.new_conversation(model="a")
    store.add_message(first, "user", "first question")
    second = store.new_conversation(model="b")
    store.add_message(second, "user", "second question")
    store.add_message(second, "assistant", "answer")
    store.add_message(second, "user", "again")
    listed = store.conversations()
    assert [c["id"] for c in listed] == [second, first]
    assert (listed[0]["turns"], listed[0]["preview"]) == (2, "second question")
    assert store.last_conversation_id() == second
    store.add_message(first, "user", "back to the first")
    assert store.last_conversation_id() == first


def test_json_export_reimports_to_the_same_messages(store: HistoryStore, tmp_path: Path) -> None:
    conversation_id = store.new_conversation(model="m", system="be brief", parameters={"seed": 1})
    store.add_message(conversation_id, "user", "hi ünïcode")
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation_id)
    for event in reply_events(["a", "b"], end=False):
        recorder.observe(event)
    recorder.finish_and_wait()
    exported = json.loads(json.dumps(store.export(conversation_id)))
    with HistoryStore(tmp_path / "other.db") as other:
        new_id = other.import_conversation(exported)
        again = other.export(new_id)

    def strip(data: dict) -> dict:
        messages = [
            {k: v for k, v in m.items() if k not in ("id", "conversation_id")}
            for m in data["messages"]
        ]
        return {"conversation": {**data["conversation"], "id": None}, "messages": messages}

    assert strip(again) == strip(exported)
    assert exported["messages"][1]["interrupted"] is True


def test_turns_for_model_keep_the_conversation_alternating() -> None:
    def m(role: str, text: str) -> dict:
        return {"role": role, "text": text}

    stored = [
        m("user", "q1"),
        m("assistant", "a1"),
        m("user", "q2 failed"),
        m("assistant", ""),  # an error before any text
        m("user", "q3"),
        m("assistant", "partial a3"),  # interrupted, kept as the chat kept it
        m("user", "q4 unanswered (killed)"),
    ]
    assert turns_for_model(stored) == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "partial a3"},
    ]


WRITER = """
import sys
from streamchat.history import HistoryStore
from streamchat.recording.commit import group_commit
from streamchat.recording.reply import ReplyRecorder
from streamchat.providers.base import message_start, text_delta, message_end
store = HistoryStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    cid = store.new_conversation(source=sys.argv[3])
    store.add_message(cid, "user", f"q{i}")
    rec = ReplyRecorder(group_commit(store), conversation_id=cid)
    events = [message_start("m", 1), text_delta("x"), text_delta("y")]
    for event in [*events, *message_end("end_turn", 2)]:
        rec.observe(event)
    rec.finish_and_wait()
"""


def test_several_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"  # fresh: the processes also race to create the schema
    count = 60
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count), name])
        for name in ("a", "b", "c")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    with sqlite3.connect(path) as raw:
        rows = raw.execute(
            "SELECT c.source, count(*), sum(m.text = 'xy' AND NOT m.interrupted) FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'assistant' "
            "GROUP BY c.source ORDER BY c.source"
        ).fetchall()
        assert raw.execute("SELECT count(*) FROM messages").fetchone()[0] == 3 * count * 2
    assert rows == [(name, count, count) for name in ("a", "b", "c")]
