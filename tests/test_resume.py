"""Streams that survive the network (issue 24): every SSE frame numbered; a resumable stream cut
by a real TCP proxy and resumed gives, joined, exactly what an uninterrupted run gives; background
responses as OpenAI's API has them, with the openai SDK as the judge; grace period, cancel,
unknown and expired ids."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from resuming import (
    ENDLESS,
    PROTOCOLS,
    QUICK,
    RESUMABLE,
    STEADY,
    USER,
    ids,
    read,
    read_until_cut,
    resume,
)
from serving import serve_in_thread
from streamchat.server.common import ServerConfig
from streamchat.testing.proxy import TCPProxy
from streamchat.wire.sse import SSEDecoder, SSEMessage


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    config = ServerConfig(
        default_model=QUICK, models=[QUICK, STEADY, ENDLESS], resume_grace_seconds=60
    )
    with serve_in_thread(config) as url:
        yield url


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_frame_of_a_plain_stream_is_numbered(server: str, name: str) -> None:
    messages = read(server, PROTOCOLS[name], QUICK)
    assert PROTOCOLS[name].ended(messages)
    assert ids(messages) == list(range(len(messages)))
    if name == "responses":  # the id is the event's own sequence number
        assert all(m.json()["sequence_number"] == int(m.id) for m in messages)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_a_stream_cut_by_the_network_resumes_where_it_broke(server: str, name: str) -> None:
    protocol = PROTOCOLS[name]
    whole = protocol.text(read(server, protocol, STEADY))
    with TCPProxy(int(server.rsplit(":", 1)[1])) as proxy:
        reply_id, got = read_until_cut(server, protocol, STEADY, proxy, frames=12)
    rest = resume(server, reply_id, got[-1].id)
    assert ids(got + rest) == list(range(len(got + rest)))  # nothing lost, nothing twice
    assert protocol.ended(rest)
    assert protocol.text(got + rest) == whole  # byte-exact with the uninterrupted run
    assert reply_id.startswith({"anthropic": "msg_", "openai": "chatcmpl-"}.get(name, "resp_"))


def test_a_resume_without_last_event_id_replays_from_the_start(server: str) -> None:
    protocol = PROTOCOLS["anthropic"]
    with TCPProxy(int(server.rsplit(":", 1)[1])) as proxy:
        reply_id, got = read_until_cut(server, protocol, STEADY, proxy, frames=5)
    replay = resume(server, reply_id, None)
    assert [m.data for m in replay[: len(got)]] == [m.data for m in got]
    assert protocol.ended(replay)


def test_the_sdks_read_numbered_streams(server: str) -> None:
    """The official Python SDKs parse frames that carry ``id:`` (resumable ones too)."""
    whole = PROTOCOLS["anthropic"].text(read(server, PROTOCOLS["anthropic"], QUICK))
    client = anthropic.Anthropic(base_url=server, api_key="x", max_retries=0)
    for headers in ({}, RESUMABLE):
        with client.messages.stream(
            model=QUICK, max_tokens=4000, messages=USER, extra_headers=headers
        ) as stream:
            assert stream.get_final_text() == whole
    oai = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0)
    for headers in ({}, RESUMABLE):
        chunks = oai.chat.completions.create(
            model=QUICK, messages=USER, stream=True, extra_headers=headers
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
        with oai.responses.stream(model=QUICK, input="hi", extra_headers=headers) as stream:
            assert stream.get_final_response().output_text == whole


# -- OpenAI Responses background mode, the openai SDK as judge -----------------------------------


@pytest.fixture
def oai(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0)


def test_a_background_response_is_polled_to_its_end(oai: openai.OpenAI) -> None:
    whole = oai.responses.create(model=STEADY, input="hi").output_text
    created = oai.responses.create(model=STEADY, input="hi", background=True)
    assert (created.status, created.background) == ("queued", True)
    assert created.id.startswith("resp_")
    seen = set()
    while (polled := oai.responses.retrieve(created.id)).status in ("queued", "in_progress"):
        seen.add(polled.status)
        time.sleep(0.05)
    assert "in_progress" in seen
    assert polled.status == "completed"
    assert polled.output_text == whole


def test_a_background_stream_resumes_after_a_sequence_number(oai: openai.OpenAI) -> None:
    stream = oai.responses.create(model=STEADY, input="hi", background=True, stream=True)
    first = []
    for event in stream:
        first.append(event)
        if len(first) == 9:
            break
    stream.close()  # the client goes away; a background response generates on
    response_id = first[0].response.id
    rest = list(
        oai.responses.retrieve(response_id, stream=True, starting_after=first[-1].sequence_number)
    )
    numbers = [event.sequence_number for event in first + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert text == oai.responses.retrieve(response_id).output_text
    with oai.responses.stream(response_id=response_id, starting_after=20) as again:
        events = list(again)  # the helper replays from the start and skips up to 20 itself
        assert events[0].sequence_number == 21
        assert again.get_final_response().output_text == text


def test_a_background_response_is_cancelled(oai: openai.OpenAI) -> None:
    created = oai.responses.create(model=ENDLESS, input="hi", background=True)
    while not oai.responses.retrieve(created.id).output_text:
        time.sleep(0.05)
    cancelled = oai.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_text  # what it had written is kept
    time.sleep(0.2)
    after = oai.responses.retrieve(created.id)
    assert (after.status, after.output_text) == ("cancelled", cancelled.output_text)
    assert oai.responses.cancel(created.id).status == "cancelled"  # again: as it is


def test_background_refusals_are_the_apis_own(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model=QUICK, input="hi", background=True, store=False)
    assert refused.value.body["param"] == "background"
    plain = oai.responses.create(model=QUICK, input="hi")
    with pytest.raises(openai.BadRequestError):
        list(oai.responses.retrieve(plain.id, stream=True))
    with pytest.raises(openai.BadRequestError):
        oai.responses.cancel(plain.id)
    for call in (
        lambda: oai.responses.cancel("resp_unknown"),
        lambda: list(oai.responses.retrieve("resp_unknown", stream=True)),
        lambda: oai.responses.retrieve("resp_unknown"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    created = oai.responses.create(model=QUICK, input="hi", background=True)
    with pytest.raises(openai.BadRequestError) as bad:
        list(oai.responses.retrieve(created.id, stream=True, starting_after="x"))  # type: ignore[arg-type]
    assert bad.value.body["param"] == "starting_after"


# -- the grace period, cancel, unknown and expired ids -----------------------------------------


@pytest.fixture(scope="module")
def short() -> Iterator[str]:
    """A server whose resumable streams wait 0.5 s for a client and are kept 1 s after."""
    config = ServerConfig(
        default_model=QUICK,
        models=[QUICK, STEADY, ENDLESS],
        resume_grace_seconds=0.5,
        resume_seconds=1.0,
    )
    with serve_in_thread(config) as url:
        yield url


def metric(url: str, outcome: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'streamchat_resumable_streams_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def leave_after(url: str, model: str, frames: int) -> tuple[str, list[SSEMessage]]:
    """A resumable Anthropic stream the client closes after ``frames`` frames."""
    body = {**PROTOCOLS["anthropic"].body, "model": model, "stream": True}
    decoder, got = SSEDecoder(), []
    with httpx.stream("POST", url + "/v1/messages", json=body, headers=RESUMABLE) as response:
        reply_id = response.headers["x-streamchat-reply"]
        for chunk in response.iter_raw():
            got += decoder.feed(chunk)
            if len(got) >= frames:
                break
    return reply_id, got


def test_a_client_back_within_the_grace_period_gets_the_whole_reply(short: str) -> None:
    protocol = PROTOCOLS["anthropic"]
    whole = protocol.text(read(short, protocol, STEADY))
    reply_id, got = leave_after(short, STEADY, 4)
    time.sleep(0.3)  # away, but less than the grace period
    rest = resume(short, reply_id, got[-1].id)
    assert protocol.text(got + rest) == whole
    assert ids(got + rest) == list(range(len(got + rest)))


def test_no_client_within_the_grace_period_stops_generation(short: str) -> None:
    abandoned = metric(short, "abandoned")
    reply_id, got = leave_after(short, ENDLESS, 4)
    time.sleep(1.0)  # past the grace period: generation stops; the log is kept
    kept = resume(short, reply_id, "-1")
    time.sleep(0.2)
    assert len(resume(short, reply_id, "-1")) == len(kept)  # nothing more is generated
    assert not PROTOCOLS["anthropic"].ended(kept)
    assert kept[: len(got)] == got
    assert metric(short, "abandoned") == abandoned + 1


def test_a_resumable_stream_is_cancelled_by_id(short: str) -> None:
    cancelled = metric(short, "cancelled")
    body = {**PROTOCOLS["openai"].body, "model": ENDLESS, "stream": True}
    with httpx.stream("POST", short + "/v1/chat/completions", json=body, headers=RESUMABLE) as r:
        reply_id = r.headers["x-streamchat-reply"]
        answer = httpx.post(f"{short}/v1/streams/{reply_id}/cancel")
        assert answer.status_code == 200
        assert answer.json()["status"] == "cancelled"
        r.read()  # the stream it was following ends
    assert metric(short, "cancelled") == cancelled + 1


def test_unknown_and_expired_ids_are_each_protocols_404(short: str) -> None:
    claude = anthropic.Anthropic(base_url=short, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        claude.get("/v1/streams/msg_unknown", cast_to=object)
    oai = openai.OpenAI(base_url=short + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        oai.get("/streams/chatcmpl-unknown", cast_to=object)
    body = {**PROTOCOLS["anthropic"].body, "model": QUICK, "stream": True}
    with httpx.stream("POST", short + "/v1/messages", json=body, headers=RESUMABLE) as r:
        reply_id = r.headers["x-streamchat-reply"]
        r.read()
    assert resume(short, reply_id, "-1")  # kept a while after its end
    time.sleep(1.3)  # past --resume-seconds
    with pytest.raises(anthropic.NotFoundError):
        claude.get(f"/v1/streams/{reply_id}", cast_to=object)
    bad = httpx.get(f"{short}/v1/streams/msg_x", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 404  # the id is looked up first
