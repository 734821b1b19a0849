"""``streamchat serve``: what it prints, what it warns about, what it hands to uvicorn."""

from __future__ import annotations

from typing import Any

import pytest

from serving import serve
from streamchat.cli.main import main
from streamchat.server import listen


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What serve hands its ASGI server (``listen.run``), as uvicorn's option names."""
    calls: list[dict[str, Any]] = []

    def run(app: Any, listener: listen.Listener, server: str = "dual") -> None:
        calls.append({
            "app": app, "host": listener.host, "port": listener.port,
            "log_level": listener.log_level, "backlog": listener.backlog,
            "timeout_graceful_shutdown": listener.graceful_seconds, "http_server": server,
        })  # fmt: skip

    monkeypatch.setattr(listen, "run", run)
    monkeypatch.delenv("STREAMCHAT_API_KEY", raising=False)
    return calls


def test_banner_names_the_base_url_for_each_sdk() -> None:
    with serve("--model", "scripted") as server:
        output = server.output()
    assert f"streamchat serving scripted at {server.url}" in output
    assert f'anthropic.Anthropic(base_url="{server.url}"' in output
    assert f'openai.OpenAI(base_url="{server.url}/v1"' in output
    assert f'endpoint_url="{server.url}"' in output
    assert f"Web chat:  {server.url}/" in output


def test_options_reach_uvicorn_and_the_app(uvicorn_calls: list[dict[str, Any]]) -> None:
    argv = ["serve", "--model", "scripted", "--port", "9123", "--max-body-bytes", "5000"]
    assert main([*argv, "--api-key", "k", "--log-level", "warning"]) == 0
    [call] = uvicorn_calls
    assert (call["host"], call["port"], call["log_level"]) == ("127.0.0.1", 9123, "warning")
    assert call["timeout_graceful_shutdown"] > 0
    config = call["app"].state.config
    assert (config.default_model, config.api_key, config.max_body_bytes) == ("scripted", "k", 5000)


def test_api_key_can_come_from_the_environment(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMCHAT_API_KEY", "from-env")
    assert main(["serve", "--model", "scripted"]) == 0
    assert uvicorn_calls[0]["app"].state.config.api_key == "from-env"


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        (["--host", "0.0.0.0"], True),
        (["--host", "::"], True),
        (["--host", "0.0.0.0", "--api-key", "k"], False),
        (["--host", "127.0.0.1"], False),
        (["--host", "localhost"], False),
        (["--host", "::1"], False),
    ],
)
def test_warns_once_when_exposed_without_a_key(
    uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    warned: bool,
) -> None:
    assert main(["serve", "--model", "scripted", *args]) == 0
    err = capsys.readouterr().err
    assert (err.count("warning") == 1) is warned
    assert len(err.splitlines()) == (1 if warned else 0)


def test_unknown_model_is_one_line_error(
    uvicorn_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err == "streamchat: error: --model: unknown model 'no-such-model'\n"
    assert uvicorn_calls == []


def test_a_bad_flash_attention_setting_is_one_line_error(
    uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["serve", "--model", "smollm2"]) == 0  # a provider for the unset setting
    capsys.readouterr()
    uvicorn_calls.clear()
    monkeypatch.setenv("STREAMCHAT_FLASH_ATTN", "sometimes")  # read anew, not from a cache
    assert main(["serve", "--model", "smollm2"]) == 1
    err = capsys.readouterr().err
    assert err == "streamchat: error: STREAMCHAT_FLASH_ATTN: 'sometimes' is not on or off\n"
    assert uvicorn_calls == []
