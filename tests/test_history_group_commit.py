"""The group commit on SQLite: one transaction for every open reply, output tokens kept
current, and with ``serve --history-strict`` nothing a client received is missing from the
history, wherever the server is killed."""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import serve
from streamchat.history import HistoryStore
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.recording.commit import GroupCommit, group_commit
from streamchat.recording.reply import ReplyRecorder

SLOW = "scripted?delay=0.01&repeat=30"  # ~150 text deltas


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "h.db") as opened:
        yield opened


def test_every_open_reply_goes_in_one_transaction(store: HistoryStore) -> None:
    committer = GroupCommit(store, interval=3600)  # commits only when asked
    conversations = [store.new_conversation() for _ in range(20)]
    recorders = [ReplyRecorder(committer, conversation_id=c) for c in conversations]
    for event in [message_start("m", 1), text_block_start(), text_delta("a")]:
        for recorder in recorders:
            recorder.observe(event)
    for word in ("b", "c", "d"):
        for recorder in recorders:
            recorder.observe(text_delta(word))
    assert committer.commits == 0  # no write per token...
    assert committer.sync().result(10) is True
    assert committer.commits == 1  # ...one for all twenty replies (each opened, its text)
    assert committer.records == 2 * 20
    for conversation in conversations:
        (message,) = store.conversation(conversation)["messages"]
        assert (message["text"], message["output_tokens"], message["interrupted"]) == (
            "abcd",
            4,
            True,
        )


def test_the_final_write_goes_through_the_same_thread(store: HistoryStore) -> None:
    conversation = store.new_conversation()
    recorder = ReplyRecorder(group_commit(store), conversation_id=conversation)
    events = [message_start("m", 1), text_block_start(), *map(text_delta, "xyz")]
    for event in [*events, *message_end("end_turn", 3)]:
        recorder.observe(event)
    recorder.finish_and_wait()  # the row is final when it returns
    (message,) = store.conversation(conversation)["messages"]
    assert (message["text"], message["interrupted"], message["stop_reason"]) == (
        "xyz",
        False,
        "end_turn",
    )
    assert group_commit(store) is group_commit(store)  # one writer per store


def stored_reply(db: Path) -> dict:
    """The reply as the history shows it (a cut reply's text is its row's and its deltas')."""
    with HistoryStore(db) as store:
        (conversation,) = store.conversations()
        messages = store.conversation(conversation["id"])["messages"]
    (reply,) = [message for message in messages if message["role"] == "assistant"]
    return reply


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_loses_nothing_the_client_received(
    tmp_path: Path, seed: int
) -> None:
    db = tmp_path / "h.db"
    cut = random.Random(seed).randrange(1, 120)  # text deltas received before the kill
    with serve("--model", SLOW, "--history", str(db), "--history-strict") as server:
        body = {"model": "m", "max_tokens": 1000, "stream": True, "messages": []}
        body["messages"] = [{"role": "user", "content": "count"}]
        received: list[str] = []
        with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=30) as r:
            for line in r.iter_lines():
                data = json.loads(line[6:]) if line.startswith("data: ") else {}
                if data.get("type") == "content_block_delta":
                    received.append(data["delta"]["text"])
                    if len(received) == cut:
                        os.kill(server.process.pid, signal.SIGKILL)
                        break
        server.process.wait(10)
    reply = stored_reply(db)
    text = "".join(received)
    assert reply["interrupted"] == 1
    assert reply["text"].startswith(text), (cut, reply["text"], text)
    assert " ".join(["[turn 1] You said: count"] * 30).startswith(reply["text"])
    assert reply["output_tokens"] >= cut


def test_commit_interval_is_a_bounded_option(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", "serve", "--history-commit-ms", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--history-commit-ms" in result.stderr
