"""Failures as each official SDK must see them: overload, mid-stream errors, auth, disconnects."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from serving import Server, serve, serve_in_thread
from streamchat.providers import ScriptedProvider
from streamchat.server.common import ServerConfig

USER = [{"role": "user", "content": "one two three four five six seven"}]
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def overloaded() -> Iterator[Server]:
    with serve("--model", "scripted?error_before=overloaded_error") as running:
        yield running


@pytest.fixture(scope="module")
def failing_mid_stream() -> Iterator[Server]:
    with serve("--model", "scripted?error_after=3&error=overloaded_error") as running:
        yield running


@pytest.fixture(scope="module")
def locked() -> Iterator[Server]:
    with serve("--model", "scripted", "--api-key", KEY) as running:
        yield running


def anthropic_client(server: Server, key: str = "x", **options: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, **options)


def openai_client(server: Server, key: str = "x", **options: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, **options)


# -- overload before streaming: the protocol's own status ----------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_overload_is_anthropic_529_overloaded_error(overloaded: Server, stream: bool) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        anthropic_client(overloaded).messages.create(
            model="m", max_tokens=5, messages=USER, stream=stream
        )
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("stream", [False, True])
def test_overload_is_openai_429_rate_limit(overloaded: Server, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(overloaded).chat.completions.create(model="m", messages=USER, stream=stream)
    assert caught.value.status_code == 429
    assert caught.value.type == "overloaded_error"


# -- errors after the stream began: in-stream error frames -----------------------------------------
def test_anthropic_sdk_raises_the_mid_stream_error(failing_mid_stream: Server) -> None:
    client = anthropic_client(failing_mid_stream)
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="m", max_tokens=50, messages=USER) as stream,
    ):
        seen.extend(stream.text_stream)
    assert len(seen) == 3
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "scripted overloaded_error"},
    }
    raw = client.messages.create(model="m", max_tokens=50, messages=USER, stream=True)
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        list(raw)


def test_openai_sdk_raises_api_error_mid_stream(failing_mid_stream: Server) -> None:
    stream = openai_client(failing_mid_stream).chat.completions.create(
        model="m", messages=USER, stream=True
    )
    contents: list[str] = []
    with pytest.raises(openai.APIError, match="scripted overloaded_error") as caught:
        for chunk in stream:
            contents.append(chunk.choices[0].delta.content or "")
    assert len([c for c in contents if c]) == 3
    assert caught.value.body["type"] == "overloaded_error"


def test_mid_stream_error_without_streaming_is_an_error_status(failing_mid_stream: Server) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        anthropic_client(failing_mid_stream).messages.create(model="m", max_tokens=9, messages=USER)
    assert caught.value.status_code == 529
    with pytest.raises(openai.RateLimitError):
        openai_client(failing_mid_stream).chat.completions.create(model="m", messages=USER)


# -- API key --------------------------------------------------------------------------------------
def test_wrong_or_missing_key_is_401_in_each_shape(locked: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_client(locked, "wrong").messages.create(model="m", max_tokens=5, messages=USER)
    assert caught.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as caught_openai:
        openai_client(locked, "wrong").chat.completions.create(model="m", messages=USER)
    assert caught_openai.value.code == "invalid_api_key"
    bare = httpx.post(f"{locked.url}/v1/messages", json={"model": "m", "max_tokens": 5})
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "authentication_error"
    models = httpx.get(f"{locked.url}/v1/models")
    assert (models.status_code, models.json()["error"]["code"]) == (401, "invalid_api_key")


def test_right_key_works_as_x_api_key_or_bearer(locked: Server) -> None:
    reply = anthropic_client(locked, KEY).messages.create(model="m", max_tokens=5, messages=USER)
    assert reply.stop_reason == "max_tokens"
    bearer = anthropic.Anthropic(base_url=locked.url, auth_token=KEY, max_retries=0)
    assert bearer.messages.count_tokens(model="m", messages=USER).input_tokens == 7
    completion = openai_client(locked, KEY).chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content
    assert anthropic_client(locked, KEY).models.list().data[0].id == "scripted"


def test_healthz_needs_no_key(locked: Server) -> None:
    assert httpx.get(f"{locked.url}/healthz").json() == {"status": "ok"}


# -- disconnects stop generation ------------------------------------------------------------------
LONG = " ".join(f"w{i}" for i in range(200))  # 200 tokens x 50 ms = 10 s if never cancelled


def wait_for(condition: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def slow(
    scripted: Callable[..., tuple[str, ScriptedProvider]],
) -> Iterator[tuple[str, ScriptedProvider]]:
    spec, provider = scripted(text=LONG, delay=0.05)
    with serve_in_thread(ServerConfig(default_model=spec)) as url:
        yield url, provider


def assert_cancelled(provider: ScriptedProvider) -> None:
    assert wait_for(lambda: provider.cancelled == 1 and provider.active == 0), (
        f"generation went on: active={provider.active} cancelled={provider.cancelled}"
    )
    assert provider.completed == 0


def test_closing_an_anthropic_stream_stops_generation(slow: tuple[str, ScriptedProvider]) -> None:
    url, provider = slow
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    with client.messages.stream(model="m", max_tokens=1000, messages=USER) as stream:
        for i, _ in enumerate(stream.text_stream):
            if i == 2:
                break
        assert provider.active == 1
    assert_cancelled(provider)


def test_closing_an_openai_stream_stops_generation(slow: tuple[str, ScriptedProvider]) -> None:
    url, provider = slow
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    assert provider.active == 1
    stream.close()
    assert_cancelled(provider)


def test_a_non_streaming_client_that_gives_up_stops_generation(
    slow: tuple[str, ScriptedProvider],
) -> None:
    url, provider = slow
    client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="m", max_tokens=1000, messages=USER)
    assert_cancelled(provider)
