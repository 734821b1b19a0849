"""The embedded model behind ``streamchat serve`` (its default), through both official SDKs.

What the model writes is its own: the checks are that the SDKs read a whole stream whose text,
usage and stop reason agree, and that the prompt was the embedded model's (its token count)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from embedded_model import check_limit
from serving import Server, serve

pytestmark = pytest.mark.model

NOTEBOOK_MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
PROMPT = [{"role": "user", "content": "Write me a 3 word sentence, without a preamble."}]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve() as running:  # no --model: the embedded default
        yield running


def test_anthropic_sdk_streams_from_the_embedded_model(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)
    with client.messages.stream(model=NOTEBOOK_MODEL, max_tokens=12, messages=PROMPT) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == final.content[0].text
    assert final.model == NOTEBOOK_MODEL
    assert final.stop_reason in ("end_turn", "max_tokens")
    check_limit(final.stop_reason, final.usage.output_tokens, 12)
    counted = client.messages.count_tokens(model=NOTEBOOK_MODEL, messages=PROMPT)
    assert counted.input_tokens == final.usage.input_tokens > len(PROMPT[0]["content"].split())


def test_openai_sdk_streams_from_the_embedded_model(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": "You are terse."}, *PROMPT],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    finish = chunks[-2].choices[0].finish_reason
    assert finish in ("stop", "length")
    stop_reason = {"stop": "end_turn", "length": "max_tokens"}[finish]
    check_limit(stop_reason, chunks[-1].usage.completion_tokens, 12)
    anthropic_client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    counted = anthropic_client.messages.count_tokens(
        model="m", system="You are terse.", messages=PROMPT
    )
    assert chunks[-1].usage.prompt_tokens == counted.input_tokens  # the embedded model's prompt
    assert {c.model for c in chunks} == {"gpt-4o"}
