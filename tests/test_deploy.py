"""streamchat as deployed for a team, on loopback: a real PostgreSQL (Debian's binaries), real
nginx running deploy/nginx.conf, two ``streamchat serve`` replicas sharing the history, the
official clients as judges.

Skips (with the reason) only where the PostgreSQL binaries or nginx are absent; ``make test``
installs nginx when it runs as root. The tests run in any order: the ones that kill or stop a
replica start one of their own. Clients wait up to ``WAIT`` seconds (the SDKs' own connect
timeout, 5 s, is a wall-clock bound that a loaded machine can miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import boto3
import httpx
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError

import deployment as parts
from serving import Server, serve
from waiting import wait_until

pytest.importorskip("psycopg", reason="the postgres extra is not installed")
NGINX, CONF = parts.NGINX, parts.NGINX_CONF
WHY_NO_POSTGRES = parts.unavailable()
WHY_NO_NGINX = parts.nginx_unavailable()

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(WHY_NO_POSTGRES is not None, reason=str(WHY_NO_POSTGRES)),
    pytest.mark.skipif(WHY_NO_NGINX is not None, reason=str(WHY_NO_NGINX)),
]

REPEAT = 12  # a reply is 12 x "[turn N] You said: <prompt>": ~70 text deltas
MODEL = f"scripted?delay=0.02&repeat={REPEAT}"
STREAMS = 200
WAIT = 120  # every client's timeout: a hang guard, never a speed test
REPLICA = "x-streamchat-replica"


def expected(prompt: str, turn: int = 1, repeat: int = REPEAT) -> str:
    return " ".join([f"[turn {turn}] You said: {prompt}"] * repeat)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@dataclass
class Deployment:
    db: parts.Cluster
    url: str  # nginx, in front of a and b
    a: Server
    b: Server

    def rows(self, statement: str) -> list[list[str]]:
        out = self.db.sql(statement)
        return [line.split("|") for line in out.splitlines()] if out else []

    def reply_to(self, prompt: str) -> dict[str, Any] | None:
        """The stored reply to the user message ``prompt`` (the latest such), or None; a
        reply cut short has its text in its row and the deltas that streamed after it."""
        found = self.rows(
            "SELECT a.text || coalesce((SELECT string_agg(d.text, '' ORDER BY d.seq) FROM "
            "message_deltas d WHERE d.message_id = a.id), ''), a.interrupted, a.output_tokens, "
            "a.stop_reason FROM messages a "
            "JOIN messages u ON u.conversation_id = a.conversation_id AND u.role = 'user' "
            f"WHERE a.role = 'assistant' AND u.text = '{prompt}' ORDER BY a.id DESC LIMIT 1"
        )
        if not found:
            return None
        text, interrupted, tokens, stop = found[0]
        return {
            "text": text,
            "interrupted": interrupted == "1",
            "output_tokens": int(tokens or 0),
            "stop_reason": stop,
        }


def refused(url: str) -> bool:
    """Whether nothing accepts connections at ``url`` any more."""
    try:
        httpx.get(url, timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.TimeoutException:  # still there, slow to answer: ask again
        return False
    except (httpx.RemoteProtocolError, httpx.ReadError):  # queued as the listener closed and
        return False  # dropped unanswered (the kernel's backlog): ask again
    return False


def replica(db_url: str, name: str, *extra: str) -> contextlib.AbstractContextManager[Server]:
    """``streamchat serve`` on the scripted model, history in PostgreSQL, strict commits."""
    return serve(
        *("--model", MODEL, "--history", db_url, "--replica", name, "--history-strict"),
        *extra,
        env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
    )


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with (
        parts.cluster() as db,
        replica(db.url, "a") as a,
        replica(db.url, "b") as b,
        parts.nginx([a.url.removeprefix("http://"), b.url.removeprefix("http://")]) as url,
    ):
        yield Deployment(db, url, a, b)


def test_nginx_config_is_valid() -> None:
    with tempfile.TemporaryDirectory() as directory:
        text = CONF.read_text().replace("streamchat-1:8080", "127.0.0.1:1")
        text = text.replace("streamchat-2:8080", "127.0.0.1:2")
        conf = Path(directory) / "nginx.conf"
        conf.write_text(text)
        result = subprocess.run(
            [NGINX, "-t", "-p", directory, "-c", str(conf), "-g", f"pid {directory}/n.pid;"],
            capture_output=True,
            text=True,
        )
    assert result.returncode == 0, result.stderr


async def _stream_all(url: str, count: int) -> list[tuple[str, str, str | None]]:
    """``count`` concurrent Anthropic streams through ``url``: (prompt, text, replica)."""
    # the SDK's own pool allows 1000 connections: one per stream
    async with anthropic.AsyncAnthropic(
        base_url=url, api_key="x", max_retries=0, timeout=WAIT
    ) as client:

        async def one(i: int) -> tuple[str, str, str | None]:
            prompt = f"stream {i}"
            raw = await client.messages.with_raw_response.create(
                model="claude-any", max_tokens=500, messages=user(prompt), stream=True
            )
            text, stop = [], None
            async for event in await raw.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
                elif event.type == "message_delta":
                    stop = event.delta.stop_reason
            assert stop == "end_turn", prompt
            return prompt, "".join(text), raw.headers.get(REPLICA)

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_200_concurrent_streams_spread_over_both_replicas_and_complete(
    deployment: Deployment,
) -> None:
    results = asyncio.run(_stream_all(deployment.url, STREAMS))
    assert [text for _, text, _ in results] == [expected(p) for p, _, _ in results]
    spread = Counter(name for _, _, name in results)
    assert set(spread) == {"a", "b"}, spread
    assert min(spread.values()) >= STREAMS // 4, spread  # least_conn: roughly half each

    def whole() -> bool:  # ...and every reply is in PostgreSQL, whole, marked complete
        stored = deployment.rows(
            "SELECT u.text, a.text, a.interrupted FROM messages a JOIN messages u ON "
            "u.conversation_id = a.conversation_id AND u.role = 'user' "
            "WHERE a.role = 'assistant' AND u.text LIKE 'stream %'"
        )
        return len(stored) == STREAMS and all(
            reply == expected(prompt) and flag == "0" for prompt, reply, flag in stored
        )

    wait_until(whole, what="all 200 replies stored whole")


def test_a_conversation_started_on_a_continues_on_b(deployment: Deployment) -> None:
    a, b = deployment.a.url, deployment.b.url
    # the web page's way: a conversation id in a header
    created = httpx.post(f"{a}/api/conversations", json={}, timeout=WAIT).json()
    header = {"x-streamchat-conversation": str(created["id"])}
    first = anthropic.Anthropic(
        base_url=a, api_key="x", max_retries=0, timeout=WAIT, default_headers=header
    )
    reply = first.messages.create(model="m", max_tokens=500, messages=user("web one"))
    second = anthropic.Anthropic(
        base_url=b, api_key="x", max_retries=0, timeout=WAIT, default_headers=header
    )
    turns = [*user("web one"), {"role": "assistant", "content": reply.content[0].text}]
    second.messages.create(model="m", max_tokens=500, messages=[*turns, *user("web two")])
    conversation = httpx.get(f"{b}/api/conversations/{created['id']}", timeout=WAIT).json()
    assert [m["text"] for m in conversation["messages"]] == [
        "web one",
        expected("web one"),
        "web two",
        expected("web two", turn=2),
    ]
    # an SDK resending the conversation: replica B joins the conversation that A logged
    on_a = anthropic.Anthropic(base_url=a, api_key="x", max_retries=0, timeout=WAIT)
    on_b = anthropic.Anthropic(base_url=b, api_key="x", max_retries=0, timeout=WAIT)
    answer = on_a.messages.create(model="m", max_tokens=500, messages=user("thread one"))
    follow = [*user("thread one"), {"role": "assistant", "content": answer.content[0].text}]
    on_b.messages.create(model="m", max_tokens=500, messages=[*follow, *user("thread two")])
    listed = httpx.get(f"{b}/api/conversations", params={"limit": 5}, timeout=WAIT).json()["data"]
    (thread,) = [c for c in listed if c["preview"] == "thread one"]
    assert thread["turns"] == 2
    # the Responses API: previous_response_id stored by A, continued by B
    first_response = openai.OpenAI(
        base_url=f"{a}/v1", api_key="x", max_retries=0, timeout=WAIT
    ).responses
    started = first_response.create(model="m", input="responses one")
    later = openai.OpenAI(
        base_url=f"{b}/v1", api_key="x", max_retries=0, timeout=WAIT
    ).responses.create(model="m", input="responses two", previous_response_id=started.id)
    assert later.output_text == expected("responses two", turn=2)
    assert httpx.get(f"{b}/v1/responses/{started.id}", timeout=WAIT).json()["id"] == started.id


def test_readyz_reports_a_database_outage_and_history_writes_resume(
    deployment: Deployment,
) -> None:
    """PostgreSQL restarted under load: streams in flight finish byte for byte, /readyz says
    503 meanwhile, and every reply's final row is written once the database is back."""
    assert httpx.get(f"{deployment.a.url}/readyz", timeout=WAIT).status_code == 200
    prompts = [f"outage {i}" for i in range(20)]

    async def load() -> list[str]:
        async with anthropic.AsyncAnthropic(
            base_url=deployment.url, api_key="x", max_retries=0, timeout=WAIT
        ) as client:

            async def one(prompt: str) -> str:
                body = await client.messages.create(
                    model="m", max_tokens=500, messages=user(prompt), stream=True
                )
                parts = []
                async for event in body:
                    if event.type == "content_block_delta":
                        parts.append(event.delta.text)
                return "".join(parts)

            return await asyncio.gather(*map(one, prompts))

    def restart() -> dict[str, Any]:
        wait_until(lambda: deployment.reply_to(prompts[-1]), what="the streams to start")
        deployment.db.stop()
        unready = httpx.get(f"{deployment.a.url}/readyz", timeout=WAIT)
        deployment.db.start()
        return {"status": unready.status_code, "body": unready.json()}

    async def both() -> tuple[list[str], dict[str, Any]]:
        texts, outage = await asyncio.gather(load(), asyncio.to_thread(restart))
        return texts, outage

    texts, outage = asyncio.run(both())
    assert outage["status"] == 503 and "history" in outage["body"]["failing"], outage
    assert texts == [expected(p) for p in prompts]
    wait_until(
        lambda: httpx.get(f"{deployment.a.url}/readyz", timeout=WAIT).status_code == 200,
        what="ready",
    )

    def all_stored() -> bool:
        replies = [deployment.reply_to(p) for p in prompts]
        pairs = zip(prompts, replies, strict=True)
        return all(r and r["text"] == expected(p) and not r["interrupted"] for p, r in pairs)

    wait_until(all_stored, what="every reply's final row")


def test_sigkill_mid_stream_leaves_the_partial_reply_and_b_takes_over(
    deployment: Deployment,
) -> None:
    """Replica K, beside B behind an nginx of its own, is killed mid-stream (the module's A and
    B go on serving the other tests)."""
    with (
        replica(deployment.db.url, "k") as k,
        parts.nginx(
            [k.url.removeprefix("http://"), deployment.b.url.removeprefix("http://")]
        ) as url,
    ):
        check_sigkill_mid_stream(deployment, k, url)


def check_sigkill_mid_stream(deployment: Deployment, killed: Server, url: str) -> None:
    prompt = "killed midway"
    body = {"model": "m", "max_tokens": 500, "stream": True, "messages": user(prompt)}
    received: list[str] = []
    with httpx.stream("POST", f"{killed.url}/v1/messages", json=body, timeout=WAIT) as r:
        for line in r.iter_lines():
            data = json.loads(line.removeprefix("data: ")) if line.startswith("data: ") else {}
            if data.get("type") == "content_block_delta":
                received.append(data["delta"]["text"])
            if len(received) == 15:
                os.kill(killed.process.pid, signal.SIGKILL)
                break
    killed.process.wait(WAIT)
    text = "".join(received)
    stored = deployment.reply_to(prompt)
    assert stored is not None and stored["interrupted"] and stored["stop_reason"] == ""
    # strict commits: everything the client received was stored before it was sent
    assert stored["text"].startswith(text), (stored["text"], text)
    assert expected(prompt).startswith(stored["text"]) and stored["text"] != expected(prompt)
    assert stored["output_tokens"] >= len(received)
    # new requests through nginx keep succeeding (on B)
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=WAIT)
    for i in range(4):
        raw = client.messages.with_raw_response.create(
            model="m", max_tokens=500, messages=user(f"after {i}")
        )
        assert raw.headers[REPLICA] == "b"
        assert raw.parse().content[0].text == expected(f"after {i}")


def test_sigterm_drains_then_ends_the_rest_with_each_protocols_error_frame(
    deployment: Deployment,
) -> None:
    slow = "scripted?delay=0.05&repeat=100"  # ~25 s of tokens: longer than the drain (5 s)
    with serve(
        *("--model", slow, "--history", deployment.db.url, "--replica", "c"),
        *("--drain-seconds", "5"),  # "short" has 1 s of tokens left at most: 5 s under load
    ) as c:
        short = {"model": "m", "max_tokens": 20, "stream": True, "messages": user("short")}
        long_ = {"model": "m", "max_tokens": 2000, "stream": True, "messages": user("long")}
        chat = {"model": "m", "stream": True, "messages": user("long openai")}
        with contextlib.ExitStack() as stack:
            streams = {
                name: stack.enter_context(
                    httpx.stream("POST", f"{c.url}{path}", json=body, timeout=WAIT)
                )
                for name, path, body in (
                    ("short", "/v1/messages", short),
                    ("long", "/v1/messages", long_),
                    ("openai", "/v1/chat/completions", chat),
                )
            }
            lines = {name: stream.iter_lines() for name, stream in streams.items()}
            for name, stream_lines in lines.items():  # each has started
                assert any("delta" in line for line in stream_lines), name
            bedrock = boto3.client(
                "bedrock-runtime",
                endpoint_url=c.url,
                region_name="us-west-2",
                aws_access_key_id="x",
                aws_secret_access_key="x",
                config=Config(
                    retries={"total_max_attempts": 1}, read_timeout=WAIT, connect_timeout=WAIT
                ),
            )
            converse = bedrock.converse_stream(
                modelId="m", messages=[{"role": "user", "content": [{"text": "long bedrock"}]}]
            )
            events = iter(converse["stream"])
            assert any("contentBlockDelta" in event for event in events)
            c.process.send_signal(signal.SIGTERM)
            wait_until(lambda: refused(f"{c.url}/healthz"), what="the listener to close")
            rest = {name: "\n".join(stream_lines) for name, stream_lines in lines.items()}
            with pytest.raises(EventStreamError, match="shutting down"):
                for _ in events:  # the official client raises the error frame it reads
                    pass
        assert c.process.wait(WAIT) == 0
    assert "event: message_stop" in rest["short"]  # finished within the grace period
    assert "event: error" in rest["long"] and "overloaded_error" in rest["long"]
    assert "shutting down" in rest["openai"] and '"error"' in rest["openai"]
    assert "[DONE]" not in rest["openai"]
    long_reply = deployment.reply_to("long")
    assert long_reply["interrupted"] and long_reply["text"].startswith("[turn 1] You said: long")
    assert not deployment.reply_to("short")["interrupted"]


def read_events(url: str, reply_id: str, after: int) -> list[dict[str, Any]]:
    """Resume ``reply_id`` at ``url`` after frame ``after``: its frames as (id, event, data)."""
    headers = {"Last-Event-ID": str(after)}
    with httpx.stream("GET", f"{url}/v1/streams/{reply_id}", headers=headers, timeout=WAIT) as r:
        assert r.status_code == 200, r.read()
        return frames_of(r.read().decode())


def frames_of(text: str) -> list[dict[str, Any]]:
    frames = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            frames.append({"id": int(fields["id"]), "event": fields.get("event"),
                           "data": json.loads(fields["data"])})  # fmt: skip
    return frames


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(
        f["data"]["delta"]["text"]
        for f in frames
        if f["event"] == "content_block_delta" and f["data"]["delta"]["type"] == "text_delta"
    )


def start_resumable(url: str, prompt: str, frames: int) -> tuple[str, str, list[dict[str, Any]]]:
    """A resumable Anthropic stream at ``url``, left after ``frames`` frames: (reply id, the
    replica that generates it, the frames read)."""
    body = {"model": "m", "max_tokens": 500, "stream": True, "messages": user(prompt)}
    headers = {"x-streamchat-resumable": "true"}
    got = ""
    with httpx.stream("POST", f"{url}/v1/messages", json=body, headers=headers, timeout=WAIT) as r:
        for line in r.iter_lines():
            got += line + "\n"
            if got.count("\n\n") >= frames:
                break
        return r.headers["x-streamchat-reply"], r.headers[REPLICA], frames_of(got)


def test_a_stream_resumes_on_the_other_replica(deployment: Deployment) -> None:
    """A resumable stream left mid-reply on one replica (through nginx) resumes on the other,
    which reads the log from PostgreSQL and follows its tail to the end."""
    reply_id, origin, got = start_resumable(deployment.url, "resumed elsewhere", 10)
    other = deployment.b.url if origin == "a" else deployment.a.url
    rest = read_events(other, reply_id, got[-1]["id"])
    assert [f["id"] for f in got + rest] == list(range(len(got + rest)))
    assert rest[-1]["event"] == "message_stop"
    assert text_of(got + rest) == expected("resumed elsewhere")
    # and through nginx, wherever it lands, from the start
    assert text_of(read_events(deployment.url, reply_id, -1)) == expected("resumed elsewhere")
    # a background response created on one replica: polled, streamed and found on the other
    on_a = openai.OpenAI(base_url=f"{deployment.a.url}/v1", api_key="x", max_retries=0)
    on_b = openai.OpenAI(base_url=f"{deployment.b.url}/v1", api_key="x", max_retries=0)
    created = on_a.responses.create(model="m", input="background", background=True)
    assert on_b.responses.retrieve(created.id).status in ("queued", "in_progress", "completed")
    streamed = on_b.responses.retrieve(created.id, stream=True, starting_after=3)
    events = list(streamed)
    assert events[0].sequence_number == 4 and events[-1].type == "response.completed"
    wait_until(lambda: on_b.responses.retrieve(created.id).status == "completed")
    assert on_b.responses.retrieve(created.id).output_text == expected("background")


def test_sigkill_of_the_generating_replica_ends_the_resumed_stream_with_an_error(
    deployment: Deployment,
) -> None:
    """Replica K generates a resumable reply and is killed: the resume on B gets every frame
    that was committed, then Anthropic's error event; log and reply are marked interrupted."""
    with replica(deployment.db.url, "k") as k:
        reply_id, _, got = start_resumable(k.url, "killed resumable", 15)
        os.kill(k.process.pid, signal.SIGKILL)
        k.process.wait(WAIT)
    rest = read_events(deployment.b.url, reply_id, got[-1]["id"])
    assert [f["id"] for f in got + rest] == list(range(len(got + rest)))
    assert rest[-1]["event"] == "error" and "interrupted" in rest[-1]["data"]["error"]["message"]
    assert expected("killed resumable").startswith(text_of(got + rest))
    key = reply_id.removeprefix("msg_")
    assert deployment.rows(f"SELECT status FROM streams WHERE id = '{key}'") == [["interrupted"]]
    stored = deployment.reply_to("killed resumable")
    assert stored is not None and stored["interrupted"]
    assert stored["text"] == text_of(got + rest)  # strict commits: the log and the reply agree


@pytest.mark.model
def test_two_replicas_on_the_embedded_model_behind_nginx() -> None:
    """The same deployment on the real embedded model: both replicas answer, byte for byte
    alike at temperature 0, and both log to the one PostgreSQL history."""
    prompt = [{"role": "user", "content": "Name a colour."}]
    with (
        parts.cluster() as db,
        serve("--history", db.url, "--replica", "m1", timeout=120) as one,
        serve("--history", db.url, "--replica", "m2", timeout=120) as two,
        parts.nginx([one.url.removeprefix("http://"), two.url.removeprefix("http://")]) as url,
    ):

        async def ask_all() -> list[tuple[str, str]]:
            async with anthropic.AsyncAnthropic(
                base_url=url, api_key="x", max_retries=0, timeout=120
            ) as client:

                async def one_stream() -> tuple[str, str]:
                    raw = await client.messages.with_raw_response.create(
                        model="claude-any",
                        max_tokens=8,
                        messages=prompt,
                        stream=True,
                        extra_body={"temperature": 0},  # the current SDK dropped the argument
                    )
                    parts_ = [
                        event.delta.text
                        async for event in await raw.parse()
                        if event.type == "content_block_delta"
                    ]
                    return "".join(parts_), raw.headers[REPLICA]

                return await asyncio.gather(*(one_stream() for _ in range(4)))

        answers = asyncio.run(ask_all())
        texts = {text for text, _ in answers}
        assert len(texts) == 1 and next(iter(texts)).strip(), answers
        assert {name for _, name in answers} == {"m1", "m2"}
        stored = wait_until(
            lambda: (
                db.sql("SELECT count(*) FROM messages WHERE role = 'assistant' AND interrupted = 0")
                == "4"
            ),
            what="four replies in PostgreSQL",
        )
        assert stored
