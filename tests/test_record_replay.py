"""Record / replay: ``serve --record DIR`` writes one tape per stream; ``serve --replay DIR`` (or
``replay/DIR``) serves tapes back over every protocol, with the recorded text, event order,
usage, errors and timing."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import boto3
import botocore.exceptions
import httpx
import openai
import pytest
from botocore.config import Config

from serving import serve, serve_in_thread
from streamchat.providers.replay import ReplayProvider
from streamchat.request import build_request
from streamchat.server.common import ServerConfig
from streamchat.tape import load_tapes, request_key
from streamchat.wire.sse import SSEDecoder

REPLY = "Recorded once, replayed anywhere, token by token."
TOKENS = ["Recorded", " once,", " replayed", " anywhere,", " token", " by", " token."]


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Every test here talks through the official SDKs."""


def recording(spec: str, directory: Path) -> Iterator[str]:
    """A server in this process that records every stream it serves to ``directory``."""
    return serve_in_thread(ServerConfig(default_model=spec, models=[], record_dir=str(directory)))


def replaying(directory: Path, options: str = "speed=0") -> Iterator[str]:
    return serve_in_thread(ServerConfig(default_model=f"replay/{directory}?{options}", models=[]))


def anthropic_client(url: str, **kwargs: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, **kwargs)


def ask(url: str, prompt: str) -> str:
    message = anthropic_client(url).messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": prompt}]
    )
    return message.content[0].text


def raw_sse(url: str, prompt: str = "go") -> tuple[list[tuple[float, str, dict]], float]:
    """``([(seconds since the request, event name, data)], total)`` of one streamed reply."""
    body = {"model": "m", "max_tokens": 100, "stream": True}
    body["messages"] = [{"role": "user", "content": prompt}]
    decoder, frames = SSEDecoder(), []
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/messages", json=body, timeout=30) as response:
        for chunk in response.iter_bytes():
            now = time.perf_counter() - started
            frames += [(now, frame.event, frame.json()) for frame in decoder.feed(chunk)]
    return frames, time.perf_counter() - started


def text_of(frames: list[tuple[float, str, dict]]) -> str:
    return "".join(d["delta"]["text"] for _, kind, d in frames if kind == "content_block_delta")


def test_each_stream_becomes_one_tape_with_request_events_times_usage_and_no_secret(tmp_path):
    secret = "sekrit-key-7f3a"
    spec = f"scripted?text={REPLY}&delay=0.05"
    with serve("--model", spec, "--record", str(tmp_path), "--api-key", secret) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key=secret, max_retries=0)
        for prompt in ("first", "second"):
            client.messages.create(
                model="claude-x",
                max_tokens=100,
                system="be brief",
                extra_body={"temperature": 0.5},  # the current SDK takes no temperature argument
                messages=[{"role": "user", "content": prompt}],
                extra_headers={"authorization": f"Bearer {secret}"},
            )
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) == 2
    raw = "".join(path.read_text() for path in files)
    assert secret not in raw and "authorization" not in raw.lower() and "x-api-key" not in raw
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    header, *steps, end = lines
    assert header["provider"] == "scripted" and header["model"] == "claude-x"
    request = header["request"]
    assert request["messages"] == [{"role": "user", "content": "first"}]
    assert (request["system"], request["temperature"], request["max_tokens"]) == (
        "be brief",
        0.5,
        100,
    )
    kinds = [step["event"]["type"] for step in steps]
    assert kinds == [
        "message_start",
        "content_block_start",
        *(["content_block_delta"] * len(TOKENS)),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    times = [step["t"] for step in steps]
    assert times == sorted(times)
    deltas = [s["t"] for s in steps if s["event"]["type"] == "content_block_delta"]
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(deltas))  # the delay
    assert end == {
        "end": "complete",
        "t": times[-1],
        "usage": {"input_tokens": 1, "output_tokens": 7},
    }


def test_replay_keeps_text_event_order_and_recorded_timing(tmp_path, fresh_providers):
    spec = f"scripted?text={REPLY}&first_delay=0.3&delay=0.12&tag=timing"
    with recording(spec, tmp_path) as url:
        recorded, _ = raw_sse(url)
    [tape] = load_tapes(tmp_path)
    with replaying(tmp_path, "speed=1") as url:
        replayed, _ = raw_sse(url)
    assert [kind for _, kind, _ in replayed] == [kind for _, kind, _ in recorded]
    assert text_of(replayed) == text_of(recorded) == REPLY
    assert replayed[-2][2] == recorded[-2][2]  # message_delta: stop reason and usage
    start = replayed[0][2]["message"]
    assert start["id"] != recorded[0][2]["message"]["id"] and start["model"] == "m"
    # each event arrives no sooner than it was recorded (a lower bound: never a speed assertion)
    due = [t for t, _ in tape.steps]
    assert due[2] >= 0.3  # the recorded time to first token is there to be kept
    for (arrived, kind, _), t in zip(replayed, due, strict=True):
        assert arrived >= t - 0.005, (kind, arrived, t)


def test_replay_waits_follow_the_recorded_schedule_at_any_speed(tmp_path, monkeypatch):
    lines = [
        {"tape": 1, "key": "k", "request": {}},
        {"t": 0.0, "event": {"type": "message_start", "message": {"id": "m1", "model": "x"}}},
        {"t": 0.4, "event": {"type": "content_block_delta", "delta": {"text": "a"}}},
        {"t": 1.0, "event": {"type": "content_block_delta", "delta": {"text": "b"}}},
        {"t": 1.6, "raise": {"type": "overloaded_error", "message": "late"}},
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    request = build_request(model="m", messages=[{"role": "user", "content": "q"}])

    def waits(speed: str) -> tuple[list[float], list[str], str]:
        asked: list[float] = []

        async def sleep(seconds: float) -> None:  # time stands still: waits are the schedule
            asked.append(seconds)

        async def run() -> tuple[list[str], str]:
            provider = ReplayProvider(f"{tmp_path}?speed={speed}&match=order")
            texts = []
            try:
                async for event in provider.stream(request):
                    texts.append(getattr(getattr(event, "delta", None), "text", event.type))
            except Exception as error:
                return texts, type(error).__name__
            return texts, ""

        with monkeypatch.context() as patch:
            patch.setattr(asyncio, "sleep", sleep)
            texts, raised = asyncio.run(run())
        return asked, texts, raised

    for speed, factor in (("1", 1.0), ("2", 0.5)):
        asked, texts, raised = waits(speed)
        assert asked == pytest.approx([0.4 * factor, 1.0 * factor, 1.6 * factor], abs=0.05)
        assert (texts, raised) == (["message_start", "a", "b"], "OverloadedError")
    assert waits("0")[0] == []


def test_a_stream_recorded_from_bedrock_replays_to_every_sdk(
    tmp_path, monkeypatch, fresh_providers
):
    tapes = tmp_path / "tapes"
    system, prompt = "answer in one line", "relay this"
    upstream = ServerConfig(default_model=f"scripted?text={REPLY}&tag=upstream", models=[])
    with serve_in_thread(upstream) as a_url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", a_url)
        with serve("--model", "bedrock/upstream-model", "--record", str(tapes)) as b:
            with anthropic_client(b.url).messages.stream(
                model="claude-x",
                max_tokens=100,
                system=system,
                messages=[{"role": "user", "content": prompt}],
            ) as stream:
                recorded = stream.get_final_message()
    [tape] = load_tapes(tapes)
    assert tape.header["provider"] == "bedrock"
    # offline now: both servers are gone
    with serve("--replay", str(tapes), "--replay-speed", "0") as replay:
        converse = boto3.client(
            "bedrock-runtime",
            endpoint_url=replay.url,
            config=Config(retries={"total_max_attempts": 1}),
        ).converse_stream(
            modelId="anthropic.claude-3-5-sonnet-20241022-v2:0",
            system=[{"text": system}],
            messages=[{"role": "user", "content": [{"text": prompt}]}],
        )
        events = list(converse["stream"])
        chat = openai.OpenAI(base_url=replay.url + "/v1", api_key="x", max_retries=0)
        chunks = list(
            chat.chat.completions.create(
                model="gpt-x",
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": prompt},
                ],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        again = anthropic_client(replay.url).messages.create(
            model="claude-y",
            max_tokens=5,
            system=system,
            messages=[{"role": "user", "content": prompt}],
        )
    assert recorded.content[0].text == REPLY
    bedrock_text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert bedrock_text == REPLY
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": recorded.usage.input_tokens,
        "outputTokens": recorded.usage.output_tokens,
        "totalTokens": recorded.usage.input_tokens + recorded.usage.output_tokens,
    }
    assert [e for e in events if "messageStop" in e] == [
        {"messageStop": {"stopReason": "end_turn"}}
    ]
    openai_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert openai_text == REPLY
    assert chunks[-1].usage.completion_tokens == recorded.usage.output_tokens
    assert chunks[-1].usage.prompt_tokens == recorded.usage.input_tokens  # reported late
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (again.content[0].text, again.model, again.usage) == (REPLY, "claude-y", recorded.usage)


def test_tapes_match_by_content_in_rotation_or_by_order(tmp_path, fresh_providers):
    for take in ("first take", "second take"):
        with recording(f"scripted?text={take}", tmp_path) as url:
            ask(url, "alpha")
    with recording("scripted?tag=echo", tmp_path) as url:
        ask(url, "beta")
    with replaying(tmp_path) as url:
        replies = [ask(url, prompt) for prompt in ("beta", "alpha", "alpha", "alpha")]
        with pytest.raises(anthropic.NotFoundError, match="no recorded stream matches"):
            ask(url, "gamma")
    assert replies == ["[turn 1] You said: beta", "first take", "second take", "first take"]
    with replaying(tmp_path, "speed=0&match=order") as url:
        in_order = [ask(url, "whatever") for _ in range(4)]
    assert in_order == ["first take", "second take", "[turn 1] You said: beta", "first take"]
    key = request_key(build_request(model="any", messages=[{"role": "user", "content": "alpha"}]))
    assert sum(tape.key == key for tape in load_tapes(tmp_path)) == 2


def test_errors_replay_where_they_happened(tmp_path, fresh_providers):
    with recording(f"scripted?text={REPLY}&error_after=2&error=overloaded_error", tmp_path) as url:
        with pytest.raises(anthropic.APIStatusError):
            with anthropic_client(url).messages.stream(
                model="m", max_tokens=100, messages=[{"role": "user", "content": "mid"}]
            ) as stream:
                stream.until_done()
    with recording("scripted?error_before=overloaded_error", tmp_path) as url:
        with pytest.raises(anthropic.OverloadedError):
            ask(url, "pre")
    received: list[str] = []
    with replaying(tmp_path) as url:
        with pytest.raises(anthropic.APIStatusError) as midstream:
            with anthropic_client(url).messages.stream(
                model="m", max_tokens=100, messages=[{"role": "user", "content": "mid"}]
            ) as stream:
                for text in stream.text_stream:
                    received.append(text)
        with pytest.raises(anthropic.OverloadedError):
            ask(url, "pre")
        bedrock = boto3.client(
            "bedrock-runtime", endpoint_url=url, config=Config(retries={"total_max_attempts": 1})
        )
        with pytest.raises(botocore.exceptions.ClientError) as throttled:
            bedrock.converse_stream(
                modelId="m", messages=[{"role": "user", "content": [{"text": "pre"}]}]
            )
    assert received == TOKENS[:2]
    assert midstream.value.body["error"]["type"] == "overloaded_error"
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert sorted(tape.end["end"] for tape in load_tapes(tmp_path)) == ["error", "raise"]
