"""CPU cost per token of streamchat's remote providers versus iterating the raw SDK stream.

One streamchat server (scripted provider, no delay, a long reply) runs in a subprocess; this
process reads the same stream through each official SDK directly (boto3 ``EventStream``,
anthropic ``AsyncStream``, openai ``AsyncStream``) and through streamchat's provider for that SDK,
alternating (the order of raw and streamchat swaps every run), and measures this process's CPU
time (``time.process_time``: user + system, all threads) per text token. The server's CPU is not
counted: it is the same for both sides. Rows: median [min–max] over ``--runs`` (7). Target:
streamchat ≤ 1.10× raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from rich.console import Console
from rich.table import Table

from _common import compare, rotation, write_result
from serving import serve
from streamchat.providers import get_provider
from streamchat.request import build_request

RESULT_KEYS = ("runs", "tokens", "target", "samples", "comparisons")
PACKAGES = ("anthropic", "openai", "boto3", "botocore", "httpx")
TARGET = 1.10
MESSAGES = [{"role": "user", "content": "stream"}]


def raw_runners(url: str, tokens: int) -> dict[str, Callable[[], Awaitable[int]]]:
    """For each SDK, a coroutine factory that reads one stream raw and returns its text deltas."""
    import anthropic
    import boto3
    import openai
    from botocore.config import Config

    anthropic_client = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
    openai_client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    bedrock_client = boto3.client(
        "bedrock-runtime", endpoint_url=url, config=Config(retries={"total_max_attempts": 1})
    )

    async def raw_anthropic() -> int:
        count = 0
        stream = await anthropic_client.messages.create(
            model="m", max_tokens=tokens, messages=MESSAGES, stream=True
        )
        async for event in stream:
            if event.type == "content_block_delta":
                count += 1
        return count

    async def raw_openai() -> int:
        count = 0
        stream = await openai_client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            max_tokens=tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                count += 1
        return count

    async def raw_bedrock() -> int:
        response = bedrock_client.converse_stream(
            modelId="m",
            messages=[{"role": "user", "content": [{"text": "stream"}]}],
            inferenceConfig={"maxTokens": tokens},
        )
        return sum(1 for event in response["stream"] if "contentBlockDelta" in event)

    return {"anthropic": raw_anthropic, "openai": raw_openai, "bedrock": raw_bedrock}


def streamchat_runner(provider_name: str, tokens: int) -> Callable[[], Awaitable[int]]:
    provider = get_provider(f"{provider_name}/m")
    request = build_request(model="m", messages=MESSAGES, max_tokens=tokens)

    async def run() -> int:
        count = 0
        async for event in provider.stream(request):
            if event.type == "content_block_delta":
                count += 1
        return count

    return run


def bedrock_mapping_runner(tokens: int) -> Callable[[], Awaitable[int]]:
    """streamchat's Bedrock mapping alone, in the calling thread (no thread hand-off)."""
    import threading

    provider = get_provider("bedrock/m")
    request = build_request(model="m", messages=MESSAGES, max_tokens=tokens)

    async def run() -> int:
        events = provider._events(request, threading.Event())
        return sum(1 for event in events if event.type == "content_block_delta")

    return run


async def cpu_per_token(run: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """Microseconds of this process's CPU time per text token, and the token count."""
    start = time.process_time()
    tokens = await run()
    return (time.process_time() - start) / max(tokens, 1) * 1e6, tokens


async def measure(url: str, runs: int, tokens: int) -> dict[str, dict[str, list[float]]]:
    raw = raw_runners(url, tokens)
    ours = {name: streamchat_runner(name, tokens) for name in raw}
    # boto3 blocks: the provider runs it in a worker thread. Measure the mapping alone too, so
    # the table separates normalisation from the thread -> event loop hand-off.
    raw["bedrock (mapping only)"] = raw["bedrock"]
    ours["bedrock (mapping only)"] = bedrock_mapping_runner(tokens)
    samples: dict[str, dict[str, list[float]]] = {n: {"raw": [], "streamchat": []} for n in raw}
    for name in raw:  # warm-up: connections, imports, caches
        await raw[name]()
        await ours[name]()
    for i in range(runs):
        for name in raw:
            for side, run in rotation([("raw", raw[name]), ("streamchat", ours[name])], i):
                cost, count = await cpu_per_token(run)
                if count != tokens:
                    raise RuntimeError(f"{name}/{side}: {count} tokens, expected {tokens}")
                samples[name][side].append(cost)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=2000, help="text tokens per stream")
    parser.add_argument("--quick", action="store_true", help="3 runs of 500 tokens")
    parser.add_argument("--json", help="output path (default results/providers.json)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.tokens = 3, 500
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-west-2",
        "ANTHROPIC_API_KEY": "bench",
        "OPENAI_API_KEY": "bench",
    }.items():
        os.environ.setdefault(name, value)
    spec = f"scripted?text=tok%20&repeat={args.tokens}"
    with serve("--model", spec) as server:
        for env, suffix in (
            ("ANTHROPIC_BASE_URL", ""),
            ("OPENAI_BASE_URL", "/v1"),
            ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", ""),
        ):
            os.environ[env] = server.url + suffix
        samples = asyncio.run(measure(server.url, args.runs, args.tokens))

    table = Table(title=f"CPU per token (µs), {args.tokens} tokens × {args.runs} runs, medians")
    for column in ("SDK", "raw SDK", "streamchat", "ratio", f"≤ {TARGET:.2f}×"):
        table.add_column(column, justify="right")
    comparisons = []
    for name, sides in samples.items():
        row = compare(f"CPU per token, {name}", "µs CPU", "raw SDK stream", sides["raw"],
                      "streamchat provider", sides["streamchat"], "lower",
                      target=TARGET)  # fmt: skip
        comparisons.append(row)
        verdict = "yes" if row["ratio"] <= TARGET else "no"
        table.add_row(name, f"{row['baseline_value']:.1f}", f"{row['streamchat_value']:.1f}",
                      f"{row['ratio']:.3f}", verdict)  # fmt: skip
    Console().print(table)
    path = write_result(
        "providers",
        {
            "runs": args.runs,
            "tokens": args.tokens,
            "target": TARGET,
            "samples": samples,
            "comparisons": comparisons,
        },
        keys=RESULT_KEYS,
        packages=PACKAGES,
        path=args.json,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
