"""The history on PostgreSQL: the same store operations and semantics as SQLite, versioned
migrations, the CLI with ``--history postgresql://…`` / ``STREAMCHAT_DB``, one-line errors that
never print the password, and writes that resume after the database restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import deployment as postgres_cluster
from streamchat.errors import ConversationNotFoundError, HistoryError
from streamchat.history import HistoryUnavailableError, open_store
from waiting import wait_until

pytest.importorskip("psycopg", reason="the postgres extra is not installed")
from streamchat.history.postgres import SCHEMA_VERSION, PostgresStore
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.recording.commit import GroupCommit
from streamchat.recording.reply import ReplyRecorder

WHY_NOT = postgres_cluster.unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))
SECRET = "s3cret-Pa55"


@pytest.fixture(scope="module")
def cluster() -> Iterator[postgres_cluster.Cluster]:
    with postgres_cluster.cluster() as found:
        yield found


@pytest.fixture
def url(cluster: postgres_cluster.Cluster) -> str:
    """A fresh, empty database for each test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    cluster.sql(f"CREATE DATABASE {name}")
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    with open_store(url) as opened:
        assert isinstance(opened, PostgresStore)
        yield opened


def reply(words: list[str], *, end: bool = True) -> list:
    events = [message_start("m1", 3), text_block_start(), *map(text_delta, words)]
    return events + (message_end("end_turn", len(words)) if end else [])


def test_conversations_messages_search_export_and_delete(store: PostgresStore) -> None:
    first = store.new_conversation(model="m", provider="p", parameters={"max_tokens": 5})
    store.add_message(first, "user", "where do rivers go")
    store.add_message(first, "assistant", "Rivers flow into the sea.", output_tokens=6)
    second = store.new_conversation(model="m")
    store.add_message(second, "user", "something else entirely")
    assert [(c["id"], c["turns"], c["preview"]) for c in store.conversations()] == [
        (second, 1, "something else entirely"),
        (first, 1, "where do rivers go"),
    ]
    loaded = store.conversation(first)
    assert loaded["parameters"] == {"max_tokens": 5}
    assert [(m["role"], m["text"], m["interrupted"]) for m in loaded["messages"]] == [
        ("user", "where do rivers go", False),
        ("assistant", "Rivers flow into the sea.", False),
    ]
    (hit,) = store.search("rivers sea")
    assert hit["conversation_id"] == first and hit["role"] == "assistant"
    assert "\x02Rivers\x03" in hit["snippet"] and "\x02sea\x03" in hit["snippet"]
    assert store.search("   ") == []
    copy = store.import_conversation(store.export(first))
    assert [m["text"] for m in store.conversation(copy)["messages"]] == [
        m["text"] for m in loaded["messages"]
    ]
    store.delete(first)
    with pytest.raises(ConversationNotFoundError):
        store.conversation(first)
    with pytest.raises(ConversationNotFoundError):
        store.delete(first)
    assert {h["conversation_id"] for h in store.search("rivers")} == {copy}  # both messages


def test_a_streamed_reply_is_group_committed_with_its_token_count(store: PostgresStore) -> None:
    conversations = [store.new_conversation() for _ in range(5)]
    committer = GroupCommit(store, interval=3600)  # commits only when asked
    recorders = [ReplyRecorder(store, c, committer=committer) for c in conversations]
    events = reply([f" w{i}" for i in range(10)], end=False)
    for event in events:
        for recorder in recorders:
            recorder.observe(event)
    assert committer.sync().result(10) is True
    assert (committer.commits, committer.rows) == (1, 5)  # five replies, one transaction
    for conversation in conversations:
        (message,) = store.conversation(conversation)["messages"]
        assert message["text"] == "".join(f" w{i}" for i in range(10))
        assert (message["interrupted"], message["output_tokens"]) == (True, 10)
    for event in message_end("end_turn", 10):
        recorders[0].observe(event)
    recorders[0].finish()
    (done,) = store.conversation(conversations[0])["messages"]
    assert (done["interrupted"], done["stop_reason"]) == (False, "end_turn")


def test_stored_responses(store: PostgresStore) -> None:
    store.put_response({"id": "resp_1", "output": []}, [{"role": "user", "content": "hi"}])
    assert store.get_response("resp_1") == (
        {"id": "resp_1", "output": []},
        [{"role": "user", "content": "hi"}],
    )
    assert store.delete_response("resp_1") is True
    assert store.get_response("resp_1") is None and store.delete_response("resp_1") is False


def test_replicas_starting_together_migrate_once_and_ids_never_collide(
    url: str, cluster: postgres_cluster.Cluster
) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(stores) == 4
    database = url.rsplit("/", 1)[1]
    versions = cluster.run(
        "psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", database,
        "-At", "-c", "SELECT version FROM streamchat_schema",
    ).stdout.split()  # fmt: skip
    assert versions == [str(SCHEMA_VERSION)]
    ids: list[int] = []

    def write(store: PostgresStore) -> None:
        for _ in range(20):
            ids.append(store.new_conversation())

    writers = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert len(set(ids)) == len(ids) == 80
    for opened in stores:
        opened.close()


def test_a_newer_schema_is_refused(url: str, cluster: postgres_cluster.Cluster) -> None:
    open_store(url).close()
    database = url.rsplit("/", 1)[1]
    cluster.run(
        "psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", database,
        "-c", f"UPDATE streamchat_schema SET version = {SCHEMA_VERSION + 1}",
    )  # fmt: skip
    with pytest.raises(HistoryError, match="newer than this streamchat"):
        open_store(url)


@pytest.mark.parametrize(
    "bad",
    [
        f"postgresql://someone:{SECRET}@127.0.0.1:1/history",  # nothing listens there
        f"postgresql://someone:{SECRET}@[::1/history",  # not a URL
    ],
)
def test_unreachable_or_malformed_url_is_one_line_without_the_password(bad: str) -> None:
    with pytest.raises(HistoryError) as caught:
        open_store(bad)
    message = caught.value.message
    assert "\n" not in message and SECRET not in message
    assert "someone:***@" in message, message


def test_wrong_database_or_role_names_it(cluster: postgres_cluster.Cluster) -> None:
    base = cluster.url.rsplit("/", 1)[0]
    with pytest.raises(HistoryError, match='database "no_such_db" does not exist'):
        open_store(base + "/no_such_db")


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "STREAMCHAT_DB"}
    return subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=60,
    )


def test_ask_chat_and_history_commands_on_postgresql(url: str, tmp_path: Path) -> None:
    empty = cli("history", "list", "--history", url)  # a new database reads as empty
    assert (empty.returncode, empty.stderr.strip()) == (0, "no conversations yet"), empty
    asked = cli("ask", "--history", url, "--model", "scripted", "hello postgres")
    assert asked.returncode == 0, asked.stderr
    environment = {"STREAMCHAT_DB": url, "XDG_DATA_HOME": str(tmp_path)}
    listed = cli("history", "list", env=environment)
    assert listed.returncode == 0, listed.stderr
    conversation_id = listed.stdout.split("\t", 1)[0]
    assert "hello postgres" in listed.stdout
    shown = cli("history", "show", conversation_id, "--db", url)
    assert "[turn 1] You said: hello postgres" in shown.stdout
    found = cli("history", "search", "postgres", env=environment)
    assert "[postgres]" in found.stdout, found.stdout + found.stderr
    exported = cli("history", "export", conversation_id, "--format", "json", env=environment)
    assert '"streamchat.conversation/1"' in exported.stdout
    chat = cli("chat", "--model", "scripted", "-c", env=environment, stdin="and again\n")
    assert "[turn 2] You said: and again" in chat.stdout, chat.stdout + chat.stderr
    assert cli("history", "delete", conversation_id, env=environment).returncode == 0
    assert cli("history", "list", env=environment).stderr.strip() == "no conversations yet"


def test_cli_and_serve_say_why_in_one_line_without_the_password() -> None:
    bad = f"postgresql://someone:{SECRET}@127.0.0.1:1/history"
    for args in (
        ("history", "list", "--db", bad),
        ("serve", "--model", "scripted", "--history", bad),
    ):
        result = cli(*args)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and SECRET not in result.stderr, result.stderr
        assert "someone:***@127.0.0.1:1/history" in lines[0] and "refused" in lines[0]


def test_writes_resume_after_the_database_restarts(cluster: postgres_cluster.Cluster) -> None:
    store = PostgresStore(cluster.url, timeout=1)
    conversation = store.new_conversation()
    committer = GroupCommit(store, interval=0.02)
    recorder = ReplyRecorder(store, conversation, committer=committer)
    for event in reply(["before"], end=False):
        recorder.observe(event)
    assert committer.sync().result(10) is True
    cluster.stop()
    try:
        with pytest.raises(HistoryUnavailableError, match="unreachable"):
            store.ping()
        recorder.observe(text_delta(" during"))
        assert committer.sync().result(10) is False  # kept for later, the stream not held
    finally:
        cluster.start()
    for event in message_end("end_turn", 2):
        recorder.observe(event)
    recorder.finish()
    wait_until(reachable(store), what="the restarted database to accept the store again")

    def stored() -> dict | None:
        (message,) = store.conversation(conversation)["messages"]
        done = message["text"] == "before during" and not message["interrupted"]
        return message if done else None

    wait_until(stored, what="the reply written in full after the restart", every=0.1)
    store.close()


def reachable(store: PostgresStore) -> Callable[[], bool]:
    """Whether the store reaches its database now (a restarted server takes a moment, and the
    pool a reconnect)."""

    def ping() -> bool:
        try:
            store.ping()
        except HistoryUnavailableError:
            return False
        return True

    return ping
