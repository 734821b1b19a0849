"""Model names say what they do: the CLI refuses a name nothing resolves (closest known name,
the known names and prefixes, exit 2, nothing sent or logged); the library answers it with the
default model but warns once, naming that model; ``serve --strict-models`` makes it a not-found
error in each protocol's own shape, through the official clients."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from serving import Server, serve
from streamchat import Client
from streamchat.client import UnknownModelWarning
from streamchat.providers import closest_model, is_known, unknown_model_message

PROMPT = [{"role": "user", "content": "hello"}]


def cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "STREAMCHAT_DB"}
    return subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", *args, "--db", str(tmp_path / "h.db")],
        input=stdin,
        capture_output=True,
        text=True,
        env={**environ, "XDG_DATA_HOME": str(tmp_path / "xdg")},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("smolm2", "smollm2"), ("SmolLM", "smollm2"), ("gemma-270m", "gemma3-270m"),
     ("scriptd", "scripted"), ("opnai/gpt-4o", "openai/gpt-4o"), ("antropic/x", "anthropic/x")],
)  # fmt: skip
def test_the_closest_known_name_is_suggested(typo: str, meant: str) -> None:
    assert not is_known(typo)
    assert closest_model(typo) == meant


def test_known_names_and_prefixes_resolve() -> None:
    for name in ("smollm2", "gemma3", "scripted", "scripted?text=hi", "model.gguf", "local",
                 "openai/gpt-4o", "anthropic/claude", "bedrock/x", None):  # fmt: skip
        assert is_known(name), name


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_the_cli_refuses_an_unknown_model_in_one_line_with_exit_2(
    tmp_path: Path, command: str
) -> None:
    result = cli(tmp_path, command, "--model", "smolm2", *(["hi"] if command == "ask" else []),
                 stdin="hello\n")  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("streamchat: error: --model: unknown model 'smolm2'")
    assert "did you mean 'smollm2'?" in line
    for name in ("smollm2", "gemma3-270m", "scripted", "openai/", "anthropic/", "bedrock/"):
        assert name in line
    assert not (tmp_path / "h.db").exists() or b"smolm2" not in (tmp_path / "h.db").read_bytes()


def test_a_name_far_from_any_gets_no_suggestion_but_the_list(tmp_path: Path) -> None:
    result = cli(tmp_path, "ask", "-m", "qqqqqqqq", "hi")
    assert result.returncode == 2
    assert "did you mean" not in result.stderr
    assert "known models: smollm2" in result.stderr
    assert unknown_model_message("qqqqqqqq") in result.stderr


def test_a_known_model_still_answers(tmp_path: Path) -> None:
    result = cli(tmp_path, "ask", "-m", "scripted", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[turn 1] You said: hi\n"


def test_the_library_answers_an_unknown_id_with_the_default_and_warns_once() -> None:
    client = Client(default_model="scripted")
    with pytest.warns(UnknownModelWarning) as caught:
        message = client.messages.create(model="gpt-4o-typo", max_tokens=20, messages=PROMPT)
    assert message.model == "gpt-4o-typo"  # the id is echoed, as before
    assert message.text == "[turn 1] You said: hello"
    (warning,) = caught
    assert "'gpt-4o-typo'" in str(warning.message) and "scripted answers it" in str(warning.message)
    assert warning.filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.messages.create(model="gpt-4o-typo", max_tokens=20, messages=PROMPT)  # once
        client.messages.create(model="scripted", max_tokens=20, messages=PROMPT)  # known
        client.messages.create(max_tokens=20, messages=PROMPT)  # the default


def test_the_library_warning_names_the_embedded_model_that_answers() -> None:
    import streamchat.client

    with pytest.warns(UnknownModelWarning, match="SmolLM2-135M-Instruct \\(smollm2\\)"):
        streamchat.client.warn_unknown_model("claude-typo", "SmolLM2-135M-Instruct (smollm2)")


@pytest.fixture(scope="module")
def strict() -> Iterator[Server]:
    with serve("--model", "scripted", "--strict-models") as running:
        yield running


@pytest.fixture(scope="module")
def lenient() -> Iterator[Server]:
    with serve("--model", "scripted") as running:
        yield running


def bedrock(url: str) -> object:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-west-2",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


def test_strict_models_is_a_not_found_in_the_anthropic_shape(strict: Server) -> None:
    client = anthropic.Anthropic(base_url=strict.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="claude-typo", max_tokens=10, messages=PROMPT)
    assert raised.value.status_code == 404
    body = raised.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "'claude-typo'" in body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):  # streaming too, before any event
        with client.messages.stream(model="claude-typo", max_tokens=10, messages=PROMPT) as s:
            s.get_final_message()
    ok = client.messages.create(model="scripted", max_tokens=10, messages=PROMPT)
    assert ok.content[0].text.startswith("[turn")


def test_strict_models_is_a_not_found_in_the_openai_shape(strict: Server) -> None:
    client = openai.OpenAI(base_url=strict.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-typo", messages=PROMPT, stream=True)
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert "'gpt-typo'" in raised.value.message


def test_strict_models_is_a_not_found_in_the_bedrock_shape(strict: Server) -> None:
    client = bedrock(strict.url)
    with pytest.raises(ClientError) as raised:
        client.converse_stream(  # type: ignore[attr-defined]
            modelId="anthropic.claude-typo",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
        )
    error = raised.value.response
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "'anthropic.claude-typo'" in error["Error"]["Message"]


def test_without_strict_models_the_default_model_answers(lenient: Server) -> None:
    client = anthropic.Anthropic(base_url=lenient.url, api_key="x", max_retries=0)
    message = client.messages.create(model="claude-typo", max_tokens=10, messages=PROMPT)
    assert message.model == "claude-typo"
    assert message.content[0].text == "[turn 1] You said: hello"
    response = bedrock(lenient.url).converse(  # type: ignore[attr-defined]
        modelId="anthropic.claude-typo", messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )
    assert response["output"]["message"]["content"][0]["text"].startswith("[turn")
