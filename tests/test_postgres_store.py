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
    recorders = [ReplyRecorder(committer, conversation_id=c) for c in conversations]
    events = reply([f" w{i}" for i in range(10)], end=False)
    for event in events:
        for recorder in recorders:
            recorder.observe(event)
    assert committer.sync().result(10) is True
    assert (committer.commits, committer.records) == (1, 10)  # five replies, one transaction
    for conversation in conversations:
        (message,) = store.conversation(conversation)["messages"]
        assert message["text"] == "".join(f" w{i}" for i in range(10))
        assert (message["interrupted"], message["output_tokens"]) == (True, 10)
    for event in message_end("end_turn", 10):
        recorders[0].observe(event)
    recorders[0].finish_and_wait()
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


def test_cli_says_why_in_one_line_without_the_password() -> None:
    bad = f"postgresql://someone:{SECRET}@127.0.0.1:1/history"
    result = cli("history", "list", "--db", bad)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and SECRET not in result.stderr, result.stderr
    assert "someone:***@127.0.0.1:1/history" in lines[0] and "refused" in lines[0]


def test_writes_resume_after_the_database_restarts(cluster: postgres_cluster.Cluster) -> None:
    store = PostgresStore(cluster.url, timeout=1)
    conversation = store.new_conversation()
    committer = GroupCommit(store, interval=0.02)  # no spool: records wait in memory
    recorder = ReplyRecorder(committer, conversation_id=conversation)
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


# -- a server's history through a database outage (serve --history postgresql://…) ---------------
BODY = {"model": "m", "max_tokens": 50, "stream": True}


def ask_server(url: str, text: str) -> str:
    """One streamed Anthropic request; the text the client received."""
    import json

    import httpx

    body = {**BODY, "messages": [{"role": "user", "content": text}]}
    received = []
    with httpx.stream("POST", f"{url}/v1/messages", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            data = json.loads(line[6:]) if line.startswith("data: ") else {}
            if data.get("type") == "content_block_delta":
                received.append(data["delta"]["text"])
            if data.get("type") == "error":
                raise AssertionError(data)
    return "".join(received)


def replies(url: str) -> dict[str, dict]:
    """Every stored conversation's question -> its reply, as the history shows them."""
    with open_store(url) as store:
        found = {}
        for listed in store.conversations(limit=100):
            question, answer = store.conversation(listed["id"])["messages"]
            found[question["text"]] = answer
    return found


def replies_stored(url: str, expected: dict[str, str]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            stored = replies(url)
        except HistoryError:
            return False
        return {q: (a["text"], a["interrupted"]) for q, a in stored.items()} == {
            q: (text, False) for q, text in expected.items()
        }

    return check


def status(url: str, path: str) -> int:
    import httpx

    return httpx.get(url + path, timeout=30).status_code


def test_serve_starts_with_the_database_down_and_records_what_it_served(
    url: str, cluster: postgres_cluster.Cluster
) -> None:
    """Unready (healthy) while the database is away, every request served all the same and
    spooled; once the database answers, ready, and every reply is in the history in full."""
    from serving import serve

    store = open_store(url)  # the schema exists; the server must connect on its own
    store.close()
    cluster.stop()
    try:
        with serve("--model", "scripted", "--history", url) as server:
            assert (status(server.url, "/healthz"), status(server.url, "/readyz")) == (200, 503)
            served = {f"q{i}": ask_server(server.url, f"q{i}") for i in range(3)}
            assert all(served.values())
            assert SECRET not in server.log.read_text()
            cluster.start()
            wait_until(lambda: status(server.url, "/readyz") == 200, what="ready once it answers")
            wait_until(replies_stored(url, served), what="the spooled replies in the history")
            served["after"] = ask_server(server.url, "after")
            wait_until(replies_stored(url, served), what="a reply written directly again")
    finally:
        cluster.start()


def test_what_was_spooled_by_a_killed_server_is_drained_by_the_next(
    url: str, cluster: postgres_cluster.Cluster
) -> None:
    """The spool is durable: a server killed (SIGKILL) during the outage loses nothing, and
    the next one to write to that database drains it, in order."""
    import signal

    from serving import serve

    with serve("--model", "scripted", "--history", url) as server:
        served = {"before": ask_server(server.url, "before")}
        wait_until(replies_stored(url, served), what="the first reply stored")
        cluster.stop()
        try:
            served["during"] = ask_server(server.url, "during")
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
        finally:
            cluster.start()
    wait_until(reachable(open_store(url)), what="the database back")
    assert set(replies(url)) == {"before"}  # "during" is in the spool alone
    with serve("--model", "scripted", "--history", url):
        wait_until(replies_stored(url, served), what="the killed server's spool drained")


def test_the_first_token_never_waits_for_the_database(url: str) -> None:
    """With the database hanging (every byte held by a proxy), a request streams in full;
    its reply is recorded once the database answers again."""
    from serving import serve
    from streamchat.testing.proxy import TCPProxy

    port = int(url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    with TCPProxy(port) as proxy:
        proxied = url.replace(f":{port}/", f":{proxy.port}/")
        with serve("--model", "scripted", "--history", proxied) as server:
            served = {"warm": ask_server(server.url, "warm")}
            wait_until(replies_stored(url, served), what="the connection pool in use")
            proxy.pause()
            served["hung"] = ask_server(server.url, "hung")
            assert served["hung"] == "[turn 1] You said: hung"
            proxy.resume()
            wait_until(replies_stored(url, served), what="the reply recorded after the hang")


def test_strict_mode_fails_the_stream_when_nothing_can_keep_the_reply(
    url: str, cluster: postgres_cluster.Cluster, tmp_path: Path
) -> None:
    """--history-strict with the database down and the spool unwritable (its folder is a
    file): the stream ends with Anthropic's error event, not a token it could not keep."""
    import json

    import httpx

    from serving import serve

    data = tmp_path / "data"
    (data / "streamchat").mkdir(parents=True)
    (data / "streamchat" / "spool").write_text("not a folder")
    cluster.stop()
    try:
        environment = {"XDG_DATA_HOME": str(data)}
        with serve("--model", "scripted", "--history", url, "--history-strict",
                   env=environment) as server:  # fmt: skip
            body = {**BODY, "messages": [{"role": "user", "content": "hi"}]}
            with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=60) as r:
                events = [json.loads(line[6:]) for line in r.iter_lines()
                          if line.startswith("data: ")]  # fmt: skip
    finally:
        cluster.start()
    kinds = [event["type"] for event in events]
    assert "content_block_delta" not in kinds and kinds[-1] == "error", kinds
    assert "history" in events[-1]["error"]["message"]
