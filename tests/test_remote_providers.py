"""Remote providers end to end: official client → streamchat B (remote provider) → streamchat A.

A runs in this process with the scripted provider, so the test can count the attempts it saw and
the streams it had cancelled; B is a real ``streamchat serve`` subprocess whose provider is the
official SDK of each backend, pointed at A.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config

from serving import serve, serve_in_thread
from streamchat.providers import get_provider
from streamchat.providers.scripted import ScriptedProvider
from streamchat.server.common import ServerConfig

PROVIDERS = ["openai", "anthropic", "bedrock"]
ENDPOINT_ENV = {
    "openai": ("OPENAI_BASE_URL", "/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", ""),
    "bedrock": ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", ""),
}
REPLY = "Streams cross two servers and arrive intact, token by token."


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCHAT_MAX_ATTEMPTS", "3")


def upstream(spec: str) -> tuple[Iterator[str], ScriptedProvider]:
    """Server A serving the scripted ``spec`` in this process, and its provider instance."""
    config = ServerConfig(default_model=spec, models=[])
    return serve_in_thread(config), get_provider(spec)


def gateway(provider: str, a_url: str, monkeypatch: pytest.MonkeyPatch, **env: str):
    """Server B relaying to A through ``provider``'s official SDK."""
    name, suffix = ENDPOINT_ENV[provider]
    monkeypatch.setenv(name, a_url + suffix)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return serve("--model", f"{provider}/upstream-model")


def anthropic_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)


def ask(url: str, max_tokens: int = 200, **kwargs: object):
    return anthropic_client(url).messages.create(
        model="any-model",
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "relay this"}],
        **kwargs,
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_usage_and_stop_reason_arrive_intact(provider, monkeypatch, fresh_providers):
    server_a, scripted = upstream(f"scripted?text={REPLY}&delay=0.005&tag={provider}")
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        message = ask(b.url, system="be brief")
        with anthropic_client(b.url).messages.stream(
            model="any-model", max_tokens=3, messages=[{"role": "user", "content": "relay this"}]
        ) as stream:
            cut = "".join(stream.text_stream)
            cut_message = stream.get_final_message()
    assert message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(REPLY.split())
    assert message.usage.input_tokens == 2  # the scripted provider counts words: "relay this"
    assert message.model == "any-model"
    assert cut == " ".join(REPLY.split()[:3])
    assert cut_message.stop_reason == "max_tokens"
    assert scripted.requests[0].system == "be brief"
    assert scripted.requests[0].max_tokens == 200


def test_sampling_parameters_and_stop_sequences_are_relayed(monkeypatch, fresh_providers):
    server_a, scripted = upstream(f"scripted?text={REPLY}&tag=params")
    with server_a as a_url, gateway("openai", a_url, monkeypatch) as b:
        client = openai.OpenAI(base_url=b.url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-any",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.3,
            top_p=0.9,
            stop=["token"],
            max_completion_tokens=50,
        )
    seen = scripted.requests[0]
    assert (seen.temperature, seen.top_p, seen.stop_sequences) == (0.3, 0.9, ["token"])
    assert reply.choices[0].message.content == "Streams cross two servers and arrive intact, "
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_overload_before_the_first_token_is_retried_then_reported(
    provider, monkeypatch, fresh_providers
):
    server_a, scripted = upstream(f"scripted?error_before=overloaded_error&tag={provider}")
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        with pytest.raises(anthropic.APIStatusError) as raised:
            ask(b.url)
    assert len(scripted.requests) == 3  # STREAMCHAT_MAX_ATTEMPTS
    assert raised.value.status_code in (429, 529)  # overload, as each backend protocol names it


def test_invalid_requests_are_not_retried(monkeypatch, fresh_providers):
    server_a, scripted = upstream("scripted?error_before=invalid_request_error&tag=bad")
    with server_a as a_url, gateway("anthropic", a_url, monkeypatch) as b:
        with pytest.raises(anthropic.BadRequestError):
            ask(b.url)
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_after_first_token_keeps_partial_text_and_is_never_retried(
    provider, monkeypatch, fresh_providers
):
    server_a, scripted = upstream(f"scripted?text={REPLY}&error_after=4&tag={provider}")
    received: list[str] = []
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        with pytest.raises(anthropic.APIStatusError):
            with anthropic_client(b.url).messages.stream(
                model="m", max_tokens=100, messages=[{"role": "user", "content": "go"}]
            ) as stream:
                for text in stream.text_stream:
                    received.append(text)
    assert "".join(received) == " ".join(REPLY.split()[:4])
    assert len(scripted.requests) == 1


def test_stall_after_first_token_hits_the_idle_timeout(monkeypatch, fresh_providers):
    server_a, scripted = upstream(f"scripted?text={REPLY}&stall_after=2&stall=30&tag=stall")
    with (
        server_a as a_url,
        gateway("openai", a_url, monkeypatch, STREAMCHAT_IDLE_TIMEOUT="0.5") as b,
    ):
        client = openai.OpenAI(base_url=b.url + "/v1", api_key="x", max_retries=0)
        received: list[str] = []
        with pytest.raises(openai.APIError, match="no token within"):
            for chunk in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "go"}], stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
        deadline = time.monotonic() + 10
        while scripted.cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "".join(received) == " ".join(REPLY.split()[:2])
    assert len(scripted.requests) == 1
    assert scripted.cancelled == 1  # B closed its upstream connection when it gave up


def test_stall_before_first_token_is_retried_within_bounds(monkeypatch, fresh_providers):
    server_a, scripted = upstream("scripted?first_delay=30&tag=slowstart")
    env = {"STREAMCHAT_FIRST_TOKEN_TIMEOUT": "0.4", "STREAMCHAT_MAX_ATTEMPTS": "2"}
    with server_a as a_url, gateway("anthropic", a_url, monkeypatch, **env) as b:
        with pytest.raises(anthropic.APIStatusError, match="first token"):
            ask(b.url)
    assert len(scripted.requests) == 2


def test_closing_the_client_stream_cancels_the_upstream_stream(monkeypatch, fresh_providers):
    server_a, scripted = upstream(f"scripted?text={REPLY}&delay=0.2&tag=cancel")
    with server_a as a_url, gateway("bedrock", a_url, monkeypatch) as b:
        client = boto3.client(
            "bedrock-runtime", endpoint_url=b.url, config=Config(retries={"total_max_attempts": 1})
        )
        response = client.converse_stream(
            modelId="m", messages=[{"role": "user", "content": [{"text": "go"}]}]
        )
        for event in response["stream"]:
            if "contentBlockDelta" in event:
                break
        response["stream"].close()
        deadline = time.monotonic() + 10
        while scripted.cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert scripted.cancelled == 1
    assert scripted.completed == 0


def test_dropped_upstream_connection_becomes_an_error_event(monkeypatch, fresh_providers):
    with serve("--model", f"scripted?text={REPLY}&delay=0.1") as a:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", a.url)
        with serve("--model", "anthropic/upstream-model") as b:
            received: list[str] = []
            with pytest.raises(anthropic.APIStatusError):
                with anthropic_client(b.url).messages.stream(
                    model="m", max_tokens=100, messages=[{"role": "user", "content": "go"}]
                ) as stream:
                    for text in stream.text_stream:
                        received.append(text)
                        if len(received) == 2:
                            a.process.kill()
    assert "".join(received).startswith("Streams cross")


def test_unreachable_endpoint_and_missing_credentials_are_one_line_errors(monkeypatch, tmp_path):
    import subprocess
    import sys

    monkeypatch.setenv("STREAMCHAT_MAX_ATTEMPTS", "1")
    monkeypatch.delenv("OPENAI_API_KEY")
    base = [sys.executable, "-m", "streamchat.cli.main", "ask", "hi"]
    cases = {
        "openai: no credentials": ["--model", "openai/gpt-x"],
        "cannot reach": ["--model", "openai/gpt-x", "--base-url", "http://127.0.0.1:9/v1"],
    }
    for expected, args in cases.items():
        result = subprocess.run(
            base + args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
        assert result.returncode == 1
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_serve_base_url_points_the_gateway_at_its_backend(monkeypatch, fresh_providers):
    """`serve --model openai/<id> --base-url URL`: the README's vLLM recipe, end to end."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server_a, scripted = upstream(f"scripted?text={REPLY}&tag=base-url")
    with server_a as a_url, serve("--model", "openai/served", "--base-url", a_url + "/v1") as b:
        message = ask(b.url)
    assert message.content[0].text == REPLY
    assert len(scripted.requests) == 1
