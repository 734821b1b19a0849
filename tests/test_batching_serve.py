"""Continuous batching behind ``streamchat serve --parallel 16`` (issue 15), judged by the
official clients: concurrent streams each get their own reply, a conversation's next turn reports
its reused prefix as each protocol reports prompt-cache reads, and ``/metrics`` shows the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import boto3
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import Server, serve

pytestmark = pytest.mark.model

SLOTS = 16
TOPICS = [
    "rivers", "bread", "the moon", "cats", "trains", "music", "winter", "coffee",
    "volcanoes", "libraries", "bees", "chess", "the ocean", "bicycles", "clocks", "tea",
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("--parallel", str(SLOTS), timeout=180) as running:  # the embedded default model
        yield running


def metrics(server: Server) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_sixteen_concurrent_openai_streams_each_get_their_own_reply(server: Server) -> None:
    prompts = [f"Write one sentence about {topic}." for topic in TOPICS]

    async def one(client: openai.AsyncOpenAI, prompt: str) -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=20,
            temperature=0,
            stream=True,
        )
        text, reason = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
        return text, reason

    async def run(together: bool) -> list[tuple[str, str | None]]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                                    timeout=180)  # fmt: skip
        async with client:
            if together:
                return await asyncio.gather(*(one(client, p) for p in prompts))
            return [await one(client, p) for p in prompts]

    alone = asyncio.run(run(together=False))
    before = metrics(server)
    together = asyncio.run(run(together=True))
    after = metrics(server)
    assert together == alone  # no crossed tokens: each stream is its prompt's reply
    model = frozenset({("model", "smollm2")})
    full = ("streamchat_local_batch_size_bucket", model | {("le", "16")})
    half = ("streamchat_local_batch_size_bucket", model | {("le", "8")})
    assert after[full] - after[half] > before[full] - before[half]  # steps of 9-16 sequences
    assert after[("streamchat_local_slots", model)] == SLOTS
    assert after[("streamchat_local_active_slots", model)] == 0


def test_a_next_turn_reports_its_reused_prefix_in_every_protocol(
    server: Server, sdk_credentials: None
) -> None:
    """The next turn's prompt starts with the whole first prompt, whatever the model answered
    (the answer here is a fixed one): that much is read from the slot's cells, the rest only is
    prefilled, and every protocol counts both."""
    question = {"role": "user", "content": "What is the capital of France?"}
    answer = {"role": "assistant", "content": "Paris."}
    follow_up = {"role": "user", "content": "And of Italy?"}

    claude = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)
    first = claude.messages.create(model="smollm2", max_tokens=12,
                                   messages=[question])  # fmt: skip
    whole = first.usage.input_tokens + (first.usage.cache_read_input_tokens or 0)
    turn2 = [question, answer, follow_up]
    prompt2 = claude.messages.count_tokens(model="smollm2", messages=turn2).input_tokens
    second = claude.messages.create(model="smollm2", max_tokens=4, messages=turn2)
    assert second.usage.cache_read_input_tokens >= whole  # the first turn came from the cells
    # only the new tokens were prefilled
    assert second.usage.input_tokens == prompt2 - second.usage.cache_read_input_tokens

    gpt = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    reply = gpt.chat.completions.create(model="smollm2", max_tokens=4, temperature=0,
                                        messages=[question, answer, follow_up])  # fmt: skip
    assert reply.usage.prompt_tokens_details.cached_tokens >= whole
    assert (
        reply.usage.prompt_tokens
        == second.usage.input_tokens + second.usage.cache_read_input_tokens
    )

    bedrock = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-west-2")
    as_converse = lambda m: {"role": m["role"], "content": [{"text": m["content"]}]}  # noqa: E731
    response = bedrock.converse(
        modelId="smollm2",
        messages=[as_converse(m) for m in (question, answer, follow_up)],
        inferenceConfig={"maxTokens": 4, "temperature": 0},
    )
    assert response["usage"]["cacheReadInputTokens"] >= whole
    assert response["usage"]["inputTokens"] <= prompt2 - whole


def test_responses_usage_reports_a_repeated_prompts_reuse_as_chat_completions_does(
    server: Server,
) -> None:
    """A repeated prompt is served from the cache: the Responses API reports the reused tokens
    as ``cached_tokens`` inside ``input_tokens``, the total Chat Completions calls
    ``prompt_tokens`` for the same prompt."""
    gpt = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "Name three colours of the rainbow, briefly."}]
    chat = gpt.chat.completions.create(model="smollm2", max_tokens=4, temperature=0,
                                       messages=messages).usage  # fmt: skip
    usage = gpt.responses.create(model="smollm2", max_output_tokens=4, temperature=0,
                                 input=messages).usage  # fmt: skip
    assert usage.input_tokens_details.cached_tokens > 0
    assert usage.input_tokens == chat.prompt_tokens
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
