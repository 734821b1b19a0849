"""Run by ``test_serve_seed_sdk.py`` inside the seed-era client venv (anthropic 0.40.0).

The notebook's Anthropic cells, against ``sys.argv[1]``; prints one JSON object of what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import anthropic

URL = sys.argv[1]
MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
PROMPT = [{"role": "user", "content": "Write me a long essay about the American Revolution"}]


def non_streaming(client: anthropic.Anthropic) -> dict:
    response = client.messages.create(max_tokens=500, messages=PROMPT, temperature=0, model=MODEL)
    return {
        "text": response.content[0].text,
        "output_tokens": response.usage.output_tokens,
        "model": response.model,
        "stop_reason": response.stop_reason,
    }


def streaming(client: anthropic.Anthropic) -> dict:
    start_time = time.time()
    stream = client.messages.create(
        max_tokens=500, messages=PROMPT, temperature=0, model=MODEL, stream=True
    )
    types, texts, ttft, output_tokens, total_time = [], [], None, None, None
    for event in stream:
        types.append(event.type)
        if event.type == "content_block_delta":
            if ttft is None:
                ttft = time.time() - start_time
            texts.append(event.delta.text)
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
            total_time = time.time() - start_time
    return {"types": types, "texts": texts, "ttft": ttft, "total_time": total_time,
            "output_tokens": output_tokens}  # fmt: skip


async def helpers(client: anthropic.AsyncAnthropic | anthropic.AsyncAnthropicBedrock) -> dict:
    async with client.messages.stream(
        max_tokens=1024, messages=[{"role": "user", "content": "Write me sonnet about orchids"}],
        model=MODEL,
    ) as stream:  # fmt: skip
        pieces = [text async for text in stream.text_stream]
    final_message = await stream.get_final_message()
    return {"pieces": pieces, "final": json.loads(final_message.to_json())}


def sync_helpers(client: anthropic.Anthropic) -> dict:
    with client.messages.stream(max_tokens=3, messages=PROMPT, model=MODEL) as stream:
        return {
            "final_text": stream.get_final_text(),
            "stop": stream.get_final_message().stop_reason,
        }


def main() -> None:
    client = anthropic.Anthropic(base_url=URL, api_key="x", max_retries=0)
    aws = {"aws_access_key": "x", "aws_secret_key": "y", "aws_region": "us-west-2"}
    bedrock = anthropic.AnthropicBedrock(base_url=URL, max_retries=0, **aws)
    async_bedrock = anthropic.AsyncAnthropicBedrock(base_url=URL, max_retries=0, **aws)
    report = {
        "version": anthropic.__version__,
        "create": non_streaming(client),
        "stream": streaming(client),
        "helpers": asyncio.run(
            helpers(anthropic.AsyncAnthropic(base_url=URL, api_key="x", max_retries=0))
        ),
        "sync_helpers": sync_helpers(client),
        # The notebook's client on Bedrock: AnthropicBedrock over /model/{id}/invoke(-with-...)
        "bedrock": {
            "create": non_streaming(bedrock),
            "stream": streaming(bedrock),
            "helpers": asyncio.run(helpers(async_bedrock)),
        },
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
