"""Fault injection: every fault reaches each official client as that client's own error or event,
reproducibly from the seed, and streamchat's own remote providers recover from injected overloads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import anthropic
import boto3
import botocore.exceptions
import httpx
import openai
import pytest
import urllib3.exceptions
from botocore.config import Config

from serving import serve, serve_in_thread
from streamchat.errors import InvalidRequestError
from streamchat.events import event_from_dict
from streamchat.providers import get_provider
from streamchat.providers.base import message_end, message_start, text_block_start, text_delta
from streamchat.server.common import ServerConfig
from streamchat.server.faults import (
    FAULT_HEADER,
    DroppedConnection,
    FaultInjector,
    FaultPlan,
    Faults,
    inject,
    request_rng,
)
from streamchat.wire.sse import SSEDecoder

WORDS = ["one", "two", "three", "four", "five", "six"]
REPLY = " ".join(WORDS)
PROMPT = [{"role": "user", "content": "hi"}]
CLIENTS = ["anthropic", "openai", "bedrock"]


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Every test here talks through the official SDKs."""


# -- the plan: pure, seeded --------------------------------------------------------------------
def test_the_documented_spec_parses_into_faults() -> None:
    plan = FaultPlan.parse(
        "overload=0.2,midstream_error=0.1@5,ping=0.3,stall=2s@10,slow=50ms,disconnect=0.05@20"
    )
    faults = plan.faults
    assert (faults["overload"].probability, faults["midstream_error"].at) == (0.2, 5)
    assert (faults["stall"].seconds, faults["stall"].at, faults["stall"].probability) == (2, 10, 1)
    assert faults["slow"].seconds == pytest.approx(0.05)
    assert (faults["disconnect"].probability, faults["disconnect"].at) == (0.05, 20)
    assert FaultPlan.parse("stall=0.5:1.5s@3").faults["stall"].probability == 0.5
    assert FaultPlan.parse("midstream_error@2,error_type=api_error").error_type == "api_error"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("overlaod=0.2", "overlaod"),
        ("overload=2", "overload"),
        ("stall=2@1", "stall"),
        ("ping=0.5@3", "ping"),
        ("disconnect=0.1@x", "disconnect"),
        ("error_type=teapot", "error_type"),
    ],
)
def test_a_bad_spec_names_the_offending_fault(spec: str, named: str) -> None:
    with pytest.raises(InvalidRequestError, match=named):
        FaultPlan.parse(spec)


def test_same_seed_same_fault_sequence_different_seed_different() -> None:
    spec = "overload=0.3,midstream_error=0.3@2,disconnect=0.2@4,ping=0.5"
    first = FaultInjector(spec, seed=42)
    again = FaultInjector(spec, seed=42)
    other = FaultInjector(spec, seed=43)
    runs = [[injector.decide() for _ in range(40)] for injector in (first, again, other)]
    assert runs[0] == runs[1]
    assert [f.describe() for f in runs[0]] != [f.describe() for f in runs[2]]
    assert {f.overload for f in runs[0]} == {True, False}  # the plan is really random


def test_a_faults_draws_do_not_depend_on_the_other_faults_named() -> None:
    alone = FaultPlan.parse("overload=0.4")
    mixed = FaultPlan.parse("ping=1,overload=0.4,disconnect=0.5@2")
    for n in range(30):
        assert alone.decide(request_rng(9, n)).overload == mixed.decide(request_rng(9, n)).overload


def test_the_header_asks_for_one_fault_and_none_for_a_clean_request() -> None:
    injector = FaultInjector("overload=1", seed=0)
    assert injector.decide().overload
    assert not injector.decide({FAULT_HEADER: "none"}).overload
    wanted = injector.decide({FAULT_HEADER: "midstream_error@3"})
    assert (wanted.overload, wanted.error_at) == (False, 3)
    with pytest.raises(InvalidRequestError, match=FAULT_HEADER):
        injector.decide({FAULT_HEADER: "meteor"})
    assert [f.sequence for f in injector.decisions] == [0, 1, 2]


# -- the wrapper: faults applied to canonical events -------------------------------------------
def reply_events(words: list[str]) -> list:
    return [
        message_start("m", 1),
        text_block_start(),
        *(text_delta(w) for w in words),
        *message_end("end_turn", len(words)),
    ]


async def run(faults: Faults, words: list[str] = WORDS) -> tuple[list, list[str]]:
    closed: list[str] = []

    async def source():
        try:
            for event in reply_events(words):
                yield event
        finally:
            closed.append("source")

    return [event async for event in inject(source(), faults)], closed


@pytest.mark.anyio
async def test_midstream_error_comes_after_n_tokens_or_at_the_end_of_a_shorter_reply() -> None:
    events, closed = await run(Faults(error_at=2))
    assert [e.delta.text for e in events if e.type == "content_block_delta"] == WORDS[:2]
    assert events[-1].type == "error" and events[-1].error.type == "overloaded_error"
    assert closed == ["source"]
    short, _ = await run(Faults(error_at=10), words=["a", "b"])
    assert [e.type for e in short][-2:] == ["content_block_delta", "error"]


@pytest.mark.anyio
async def test_pings_go_between_events_never_before_message_start() -> None:
    events, _ = await run(Faults(ping_rate=1.0))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[1] == "ping"
    plain = [k for k in kinds if k != "ping"]
    assert kinds.count("ping") == len(plain) - 1
    assert [e.type for e in reply_events(WORDS)] == plain


@pytest.mark.anyio
async def test_disconnect_raises_past_every_exception_handler() -> None:
    with pytest.raises(DroppedConnection):
        await run(Faults(disconnect_at=3))
    assert not issubclass(DroppedConnection, Exception)  # encode_stream must not catch it


# -- through the server, to each official client -----------------------------------------------
@pytest.fixture(scope="module")
def bench() -> Iterator[str]:
    """One server for the client tests: faults only when a request asks, by header."""
    spec = f"scripted?text={REPLY}&tag=fault-bench"
    config = ServerConfig(default_model=spec, models=[], faults=FaultInjector("none", seed=0))
    with serve_in_thread(config) as url:
        yield url


def with_header(client, fault: str):
    """boto3 has no extra_headers: add the header to every request before it is signed."""

    def add(request, **_: object) -> None:
        request.headers[FAULT_HEADER] = fault

    client.meta.events.register("before-sign.bedrock-runtime.*", add)
    return client


def stream_text(
    kind: str, url: str, fault: str, received: list[str] | None = None, timeout: float = 30
) -> list[str]:
    """Stream PROMPT through ``kind``'s official SDK, appending each text piece to ``received``
    (which the caller keeps when the SDK raises half way)."""
    received = [] if received is None else received
    headers = {FAULT_HEADER: fault}
    if kind == "anthropic":
        client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=timeout)
        with client.messages.stream(
            model="m", max_tokens=50, messages=PROMPT, extra_headers=headers
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    elif kind == "openai":
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=timeout)
        for chunk in client.chat.completions.create(
            model="m", messages=PROMPT, stream=True, extra_headers=headers
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    else:
        config = Config(retries={"total_max_attempts": 1}, read_timeout=timeout)
        client = with_header(
            boto3.client("bedrock-runtime", endpoint_url=url, config=config), fault
        )
        response = client.converse_stream(
            modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
        for event in response["stream"]:
            if "contentBlockDelta" in event:
                received.append(event["contentBlockDelta"]["delta"]["text"])
    return received


def stream_collecting(kind: str, url: str, fault: str, **kwargs: float):
    """``(text pieces received, the exception that ended the stream or None)``."""
    received: list[str] = []
    try:
        stream_text(kind, url, fault, received, **kwargs)
    except Exception as error:  # the point: which exception each client raises
        return received, error
    return received, None


OVERLOAD = {
    "anthropic": lambda e: isinstance(e, anthropic.OverloadedError) and e.status_code == 529,
    "openai": lambda e: isinstance(e, openai.RateLimitError) and e.status_code == 429,
    "bedrock": lambda e: (
        isinstance(e, botocore.exceptions.ClientError)
        and e.response["Error"]["Code"] == "ThrottlingException"
        and e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    ),
}


@pytest.mark.parametrize("kind", CLIENTS)
def test_overload_is_each_protocols_own_overload_before_streaming(bench, kind) -> None:
    received, error = stream_collecting(kind, bench, "overload")
    assert received == []
    assert OVERLOAD[kind](error), repr(error)


MIDSTREAM = {
    "anthropic": lambda e, kind: (
        isinstance(e, anthropic.APIStatusError) and e.body["error"]["type"] == kind
    ),
    "openai": lambda e, kind: isinstance(e, openai.APIError) and e.body["type"] == kind,
    "bedrock": lambda e, kind: (
        isinstance(e, botocore.exceptions.EventStreamError)
        and e.response["Error"]["Code"]
        == {
            "overloaded_error": "throttlingException",
            "timeout_error": "modelStreamErrorException",
        }[kind]
    ),
}


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("error_type", ["overloaded_error", "timeout_error"])
def test_midstream_error_arrives_after_n_tokens_as_the_clients_stream_error(
    bench, kind, error_type
) -> None:
    received, error = stream_collecting(kind, bench, f"midstream_error@2,error_type={error_type}")
    assert received == ["one", " two"]
    assert MIDSTREAM[kind](error, error_type), repr(error)


DROPPED = {
    "anthropic": (httpx.TransportError, anthropic.APIConnectionError),
    "openai": (openai.APIConnectionError,),
    "bedrock": (urllib3.exceptions.ProtocolError, botocore.exceptions.ResponseStreamingError),
}


@pytest.mark.parametrize("kind", CLIENTS)
def test_disconnect_breaks_the_stream_after_n_tokens(bench, kind) -> None:
    received, error = stream_collecting(kind, bench, "disconnect@3")
    assert received == ["one", " two", " three"]
    if kind == "anthropic":  # the anthropic SDK lets its transport's own error through
        assert "incomplete chunked read" in str(error), repr(error)
    else:
        assert isinstance(error, DROPPED[kind]), repr(error)


TIMED_OUT = {
    "anthropic": lambda e: (
        "ReadTimeout" in type(e).__name__ or isinstance(e, anthropic.APITimeoutError)
    ),
    "openai": lambda e: isinstance(e, openai.APITimeoutError),
    "bedrock": lambda e: isinstance(
        e, urllib3.exceptions.ReadTimeoutError | botocore.exceptions.ReadTimeoutError
    ),
}


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_stall_after_n_tokens_trips_the_clients_read_timeout(bench, kind) -> None:
    # the read timeout: far shorter than the stall, long enough for the first tokens under load
    received, error = stream_collecting(kind, bench, "stall=20s@2", timeout=3)
    assert received == ["one", " two"]
    assert TIMED_OUT[kind](error), repr(error)


@pytest.mark.parametrize("kind", CLIENTS)
def test_slow_delays_every_token_and_keeps_the_text(bench, kind) -> None:
    started = time.perf_counter()
    received = stream_text(kind, bench, "slow=80ms")
    assert "".join(received) == REPLY
    assert time.perf_counter() - started >= 0.08 * len(WORDS)  # a lower bound: sleeps happened


def raw_stream(url: str, path: str, body: dict, fault: str) -> bytes:
    with httpx.stream(
        "POST", url + path, json=body, headers={FAULT_HEADER: fault}, timeout=30
    ) as response:
        assert response.status_code == 200
        return response.read()


def test_pings_are_anthropic_ping_events_and_the_sdk_skips_them(bench) -> None:
    body = {"model": "m", "max_tokens": 50, "messages": PROMPT, "stream": True}
    frames = SSEDecoder().feed(raw_stream(bench, "/v1/messages", body, "ping"))
    kinds = [frame.event for frame in frames]
    assert kinds.count("ping") == len(kinds) - kinds.count("ping") - 1
    assert [event_from_dict(f.json()).type for f in frames] == kinds  # every frame is valid
    client = anthropic.Anthropic(base_url=bench, api_key="x", max_retries=0)
    events = list(
        client.messages.create(
            model="m",
            max_tokens=50,
            messages=PROMPT,
            stream=True,
            extra_headers={FAULT_HEADER: "ping"},
        )
    )
    assert "ping" not in {event.type for event in events}  # the SDK filters them out
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == REPLY


def test_pings_are_sse_comments_for_openai_which_its_sdk_ignores(bench) -> None:
    body = {"model": "m", "messages": PROMPT, "stream": True}
    raw = raw_stream(bench, "/v1/chat/completions", body, "ping")
    # a comment line without its blank line: the SDK, which keeps the last event id, would
    # read a blank line after it as an event with no data
    assert raw.count(b"\n: ping\nid: ") >= len(WORDS) - 1 and b": ping\n\n" not in raw
    assert stream_text("openai", bench, "ping") == [
        w if i == 0 else f" {w}" for i, w in enumerate(WORDS)
    ]


def test_pings_reach_boto3_invoke_streams_as_ping_chunks(bench) -> None:
    client = with_header(boto3.client("bedrock-runtime", endpoint_url=bench), "ping")
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": PROMPT}
    response = client.invoke_model_with_response_stream(modelId="m", body=json.dumps(body))
    kinds = [json.loads(event["chunk"]["bytes"])["type"] for event in response["body"]]
    assert "ping" in kinds and kinds[0] == "message_start" and kinds[-1] == "message_stop"
    converse = "".join(stream_text("bedrock", bench, "ping"))  # Converse has no ping: skipped
    assert converse == REPLY


# -- the seed, end to end ----------------------------------------------------------------------
SEEDED = "overload=0.4,midstream_error=0.4@1"


def outcomes(url: str, count: int) -> list[str]:
    """What each of ``count`` sequential requests got: ok, overload or midstream."""
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    seen = []
    for _ in range(count):
        try:
            with client.messages.stream(model="m", max_tokens=50, messages=PROMPT) as stream:
                stream.until_done()
            seen.append("ok")
        except anthropic.OverloadedError:
            seen.append("overload")
        except anthropic.APIStatusError:
            seen.append("midstream")
    return seen


def predicted(seed: int, count: int) -> list[str]:
    plan = FaultPlan.parse(SEEDED)
    faults = [plan.decide(request_rng(seed, n), n) for n in range(count)]
    return [
        "overload" if f.overload else "midstream" if f.error_at is not None else "ok"
        for f in faults
    ]


def test_the_seed_fixes_the_per_request_fault_sequence(fresh_providers) -> None:
    count = 12
    with serve("--model", f"scripted?text={REPLY}", "--faults", SEEDED, "--seed", "7") as server:
        by_cli = outcomes(server.url, count)
    config = ServerConfig(
        default_model=f"scripted?text={REPLY}&tag=seed8",
        models=[],
        faults=FaultInjector(SEEDED, seed=8),
    )
    with serve_in_thread(config) as url:
        other_seed = outcomes(url, count)
    assert by_cli == predicted(7, count)
    assert other_seed == predicted(8, count)
    assert by_cli != other_seed
    assert set(by_cli) == {"ok", "overload", "midstream"}


def test_a_bad_faults_spec_is_a_one_line_error() -> None:
    command = [sys.executable, "-m", "streamchat.cli.main", "serve", "--model", "scripted"]
    result = subprocess.run(
        [*command, "--faults", "overload=lots"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "streamchat: error: --faults: overload: expected a probability, got 'lots'"
    )


# -- streamchat's own providers recover ---------------------------------------------------------
ENDPOINT_ENV = {
    "openai": ("OPENAI_BASE_URL", "/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", ""),
    "bedrock": ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", ""),
}
RECOVERABLE = "overload=0.5,midstream_error=0.5@0"


def seed_for(pattern: list[str]) -> int:
    """A seed whose first requests go overload, midstream error before any token, clean."""
    plan = FaultPlan.parse(RECOVERABLE)
    for seed in range(10_000):
        faults = [plan.decide(request_rng(seed, n)) for n in range(len(pattern))]
        got = [
            "overload" if f.overload else "midstream" if f.error_at is not None else "ok"
            for f in faults
        ]
        if got == pattern:
            return seed
    raise AssertionError("no seed gives that pattern")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "bedrock"])
def test_remote_providers_retry_through_injected_overloads(provider, monkeypatch, fresh_providers):
    seed = seed_for(["overload", "midstream", "ok"])
    spec = f"scripted?text={REPLY}&tag=chain-{provider}"
    injector = FaultInjector(RECOVERABLE, seed=seed)
    monkeypatch.setenv("STREAMCHAT_MAX_ATTEMPTS", "3")
    name, suffix = ENDPOINT_ENV[provider]
    with serve_in_thread(ServerConfig(default_model=spec, models=[], faults=injector)) as a_url:
        monkeypatch.setenv(name, a_url + suffix)
        with serve("--model", f"{provider}/upstream-model") as b:
            client = anthropic.Anthropic(base_url=b.url, api_key="x", max_retries=0)
            message = client.messages.create(model="m", max_tokens=50, messages=PROMPT)
    assert message.content[0].text == REPLY
    assert [f.describe() for f in injector.decisions] == ["overload", "midstream_error@0", "none"]
    assert len(get_provider(spec).requests) == 2  # the overload never reached the model
