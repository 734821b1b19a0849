"""Resumable streams kept in the history database (issue 24 §1, §5): a resume that lands on
another server sharing the database (SQLite here; PostgreSQL behind nginx in test_deploy.py)
reads the log there and follows its live tail; a generator killed mid-reply leaves everything
committed, then the protocol's error, and the reply marked interrupted; a cancel reaches the
server generating; expired logs are each protocol's 404."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from resuming import ENDLESS, PROTOCOLS, QUICK, STEADY, ids, read, read_until_cut, resume
from serving import serve, serve_in_thread
from streamchat.server.common import ServerConfig
from streamchat.testing.proxy import TCPProxy
from streamchat.wire.sse import SSEDecoder, SSEMessage
from waiting import wait_until

MODELS = [QUICK, STEADY, ENDLESS]


def config(history: Path, **options: float) -> ServerConfig:
    return ServerConfig(default_model=QUICK, models=MODELS, history_path=str(history), **options)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume") / "history.db"


@pytest.fixture(scope="module")
def pair(history: Path) -> Iterator[tuple[str, str]]:
    """Two servers sharing one history database: ``a`` generates, ``b`` is the other replica."""
    with (
        serve_in_thread(config(history, resume_grace_seconds=60)) as a,
        serve_in_thread(config(history, resume_grace_seconds=60)) as b,
    ):
        yield a, b


def streams(history: Path, reply_id: str) -> tuple[str, int] | None:
    """The log's (status, frames) as the database has it."""
    with sqlite3.connect(history) as db:
        key = reply_id.split("_", 1)[-1].removeprefix("chatcmpl-")
        row = db.execute("SELECT status, frames FROM streams WHERE id = ?", (key,)).fetchone()
    return None if row is None else (row[0], int(row[1]))


@pytest.mark.parametrize("name", PROTOCOLS)
def test_a_resume_on_the_other_server_follows_the_live_tail(
    pair: tuple[str, str], history: Path, name: str
) -> None:
    a, b = pair
    protocol = PROTOCOLS[name]
    whole = protocol.text(read(a, protocol, STEADY))
    with TCPProxy(int(a.rsplit(":", 1)[1])) as proxy:
        reply_id, got = read_until_cut(a, protocol, STEADY, proxy, frames=8)
    rest = resume(b, reply_id, got[-1].id)
    assert ids(got + rest) == list(range(len(got + rest)))
    assert protocol.ended(rest)
    assert protocol.text(got + rest) == whole
    wait_until(lambda: streams(history, reply_id) == ("completed", len(got + rest)))


def test_a_resume_on_the_other_server_after_the_end_replays_the_log(
    pair: tuple[str, str], history: Path
) -> None:
    a, b = pair
    protocol = PROTOCOLS["anthropic"]
    with TCPProxy(int(a.rsplit(":", 1)[1])) as proxy:
        reply_id, _ = read_until_cut(a, protocol, QUICK, proxy, frames=3)
    first = resume(a, reply_id, None)  # from a's memory, once it has ended
    assert protocol.ended(first)
    wait_until(lambda: streams(history, reply_id) == ("completed", len(first)))
    assert [m.data for m in resume(b, reply_id, None)] == [m.data for m in first]
    assert [m.data for m in resume(b, reply_id, "5")] == [m.data for m in first[6:]]


def test_a_cancel_sent_to_the_other_server_stops_the_generator(
    pair: tuple[str, str], history: Path
) -> None:
    a, b = pair
    body = {**PROTOCOLS["anthropic"].body, "model": ENDLESS, "stream": True}
    headers = {"x-streamchat-resumable": "true"}
    with httpx.stream("POST", a + "/v1/messages", json=body, headers=headers, timeout=30) as r:
        reply_id = r.headers["x-streamchat-reply"]
        chunks = r.iter_raw()
        assert next(chunks)
        wait_until(lambda: streams(history, reply_id) is not None)
        cancelled = httpx.post(f"{b}/v1/streams/{reply_id}/cancel", timeout=30)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        rest = SSEDecoder().feed(b"".join(chunks))  # a's stream ends (it was endless)
    assert not PROTOCOLS["anthropic"].ended(rest)
    assert streams(history, reply_id)[0] == "cancelled"


def test_a_killed_generator_leaves_what_was_committed_then_the_protocols_error(
    history: Path, pair: tuple[str, str]
) -> None:
    """The generating server is SIGKILLed mid-reply: a resume elsewhere gets every committed
    frame, then Anthropic's error event (the SDK raises it); log and reply say interrupted."""
    _, b = pair
    killed_prompt = [{"role": "user", "content": "killed mid-reply"}]
    body = {"max_tokens": 4000, "messages": killed_prompt, "model": ENDLESS, "stream": True}
    got: list[SSEMessage] = []
    with serve("--model", ENDLESS, "--history", str(history)) as killed:
        decoder = SSEDecoder()
        headers = {"x-streamchat-resumable": "true"}
        url = killed.url + "/v1/messages"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as r:
            reply_id = r.headers["x-streamchat-reply"]
            for chunk in r.iter_raw():
                got += decoder.feed(chunk)
                if len(got) >= 20:
                    break
        wait_until(lambda: (streams(history, reply_id) or ("", 0))[1] >= 20)
        os.kill(killed.process.pid, signal.SIGKILL)
        killed.process.wait(30)
    rest = resume(b, reply_id, got[-1].id)  # waits out the heartbeat's silence
    assert ids(got + rest) == list(range(len(got + rest)))
    assert rest[-1].event == "error" and rest[-1].json()["error"]["type"] == "api_error"
    assert "interrupted" in rest[-1].json()["error"]["message"]
    assert streams(history, reply_id)[0] == "interrupted"
    with sqlite3.connect(history) as db:
        (interrupted,) = db.execute(
            "SELECT a.interrupted FROM messages a JOIN messages u ON u.conversation_id = "
            "a.conversation_id WHERE a.role = 'assistant' AND u.text = 'killed mid-reply'"
        ).fetchone()
    assert interrupted == 1
    # the official SDK reads such a resumed stream to its error
    client = anthropic.Anthropic(base_url=b, api_key="x", max_retries=0)
    resumed = client.get(
        f"/v1/streams/{reply_id}",
        cast_to=anthropic.types.RawMessageStreamEvent,
        options={"headers": {"Last-Event-ID": got[-1].id}},
        stream=True,
        stream_cls=anthropic.Stream[anthropic.types.RawMessageStreamEvent],
    )
    with pytest.raises(anthropic.APIStatusError, match="interrupted"):
        for _ in resumed:
            pass


def test_an_expired_log_is_each_protocols_404(tmp_path: Path) -> None:
    history = tmp_path / "history.db"
    with (
        serve_in_thread(config(history, resume_seconds=1.0)) as a,
        serve_in_thread(config(history, resume_seconds=1.0)) as b,
    ):
        with TCPProxy(int(a.rsplit(":", 1)[1])) as proxy:
            reply_id, _ = read_until_cut(a, PROTOCOLS["openai"], STEADY, proxy, frames=3)
        assert resume(b, reply_id, None)  # found in the database while it is kept
        wait_until(lambda: httpx.get(f"{b}/v1/streams/{reply_id}", timeout=30).status_code == 404)
        gone = httpx.get(f"{b}/v1/streams/{reply_id}", timeout=30)
        assert gone.json()["error"]["message"].startswith("no resumable stream")
